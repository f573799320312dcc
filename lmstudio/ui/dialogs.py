"""Every modal question the window asks, in one place so tests can replace them with monkeypatch.

Tests do ``monkeypatch.setattr(dialogs, "open_file", lambda *a, **k: str(path))``; the window always
calls these through the module (``dialogs.open_file(...)``), never the Qt functions directly.
"""

from __future__ import annotations

from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget


def open_file(parent: QWidget | None, title: str, filter: str = "Text files (*.txt);;All files (*)") -> str:
    path, _ = QFileDialog.getOpenFileName(parent, title, "", filter)
    return path


def save_file(parent: QWidget | None, title: str, start: str = "", filter: str = "All files (*)") -> str:
    # the caller asks before replacing anything (it may also be typed in), so the dialog does not
    options = QFileDialog.Option.DontConfirmOverwrite
    path, _ = QFileDialog.getSaveFileName(parent, title, start, filter, options=options)
    return path


def open_folder(parent: QWidget | None, title: str, start: str = "") -> str:
    return QFileDialog.getExistingDirectory(parent, title, start)


def ask_yes_no(parent: QWidget | None, title: str, text: str) -> bool:
    answer = QMessageBox.question(
        parent,
        title,
        text,
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def show_error(parent: QWidget | None, title: str, text: str) -> None:
    box = QMessageBox(
        QMessageBox.Icon.Warning, title, text.split("\n\n", 1)[0], QMessageBox.StandardButton.Ok, parent
    )
    if "\n\n" in text:  # a bug report's traceback goes into the details, not the headline
        box.setDetailedText(text.split("\n\n", 1)[1])
    box.exec()


def show_info(parent: QWidget | None, title: str, text: str) -> None:
    QMessageBox.information(parent, title, text)


def ask_text(parent: QWidget | None, title: str, label: str, text: str = "") -> str | None:
    """A line of text from the user, or None when they cancel."""
    from PySide6.QtWidgets import QInputDialog

    value, ok = QInputDialog.getText(parent, title, label, text=text)
    return value if ok else None
