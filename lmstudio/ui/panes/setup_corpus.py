"""Setup step 1: choose the text to learn from (a built-in corpus, a file or a folder) and look at it."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from lmstudio.ui import dialogs
from lmstudio.ui.controller import Controller
from lmstudio.ui.workers import TaskWorker, start_worker

STATS = (
    ("chars", "Characters"),
    ("distinct_chars", "Distinct characters"),
    ("lines", "Lines"),
    ("bytes", "Size (bytes)"),
    ("encoding", "Encoding"),
    ("path", "Location"),
    ("source", "Source"),
)


class CorpusPage(QWidget):
    """Emits ``corpus_changed(source)`` once a corpus has been read successfully."""

    corpus_changed = Signal(str)
    error_shown = Signal(str)

    def __init__(self, controller: Controller, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        self.source = ""
        self.info: dict = {}
        self._worker: TaskWorker | None = None

        intro = QLabel(
            "A language model learns to continue text. Pick the text it will learn from: "
            "a built-in corpus or your own <b>.txt</b> file or folder."
        )
        intro.setWordWrap(True)
        self.builtins = QListWidget()
        self.builtins.setObjectName("builtinCorpora")
        self.builtins.setMaximumHeight(110)
        self.builtins.itemClicked.connect(self._on_builtin_clicked)
        self.open_file_btn = QPushButton("Open file…")
        self.open_folder_btn = QPushButton("Open folder…")
        self.open_file_btn.clicked.connect(self.open_file)
        self.open_folder_btn.clicked.connect(self.open_folder)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_file_btn)
        buttons.addWidget(self.open_folder_btn)
        buttons.addStretch(1)

        self.error_label = QLabel()
        self.error_label.setObjectName("errorBanner")
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()
        self.title = QLabel()
        self.title.setObjectName("sectionTitle")
        self.stats: dict[str, QLabel] = {}
        stats_box = QGroupBox("Statistics")
        form = QFormLayout(stats_box)
        for key, label in STATS:
            value = QLabel("–")
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.stats[key] = value
            form.addRow(label, value)
        self.preview = QPlainTextEdit(readOnly=True)
        self.preview.setObjectName("corpusPreview")
        preview_box = QGroupBox("Preview")
        QVBoxLayout(preview_box).addWidget(self.preview)

        body = QHBoxLayout()
        body.addWidget(stats_box, 2)
        body.addWidget(preview_box, 3)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.builtins)
        layout.addLayout(buttons)
        layout.addWidget(self.error_label)
        layout.addWidget(self.title)
        layout.addLayout(body, 1)

    def populate_builtins(self) -> None:
        """Fill the built-in list off the GUI thread (the first look at 2 MB of text takes a second)."""
        worker = TaskWorker(lambda progress, cancel: self.controller.builtin_corpora())
        worker.done.connect(self._show_builtins)
        worker.failed.connect(self._builtins_failed)  # a slot, not a lambda: it must run in the GUI thread
        self._builtins_worker = worker
        start_worker(worker)

    def _builtins_failed(self, message: str) -> None:
        self.show_error(f"The built-in corpora could not be listed: {message}")

    def _show_builtins(self, corpora: list[dict]) -> None:
        self.builtins.clear()
        for c in corpora:
            item = QListWidgetItem(f"{c.get('title') or c['name']}  —  {c['chars']:,} characters")
            item.setData(Qt.ItemDataRole.UserRole, c["name"])
            item.setToolTip(str(c.get("source", "")))
            self.builtins.addItem(item)
        self._select_current()

    # ---- choosing ---------------------------------------------------------------------------
    def _on_builtin_clicked(self, item: QListWidgetItem) -> None:
        self.load(item.data(Qt.ItemDataRole.UserRole))

    def open_file(self) -> None:
        path = dialogs.open_file(self, "Open a text corpus")
        if path:
            self.load(path)

    def open_folder(self) -> None:
        path = dialogs.open_folder(self, "Open a folder of .txt files")
        if path:
            self.load(path)

    def is_busy(self) -> bool:
        return self._worker is not None

    def load(self, source: str) -> None:
        """Read the corpus's stats off the GUI thread (a folder of user files can be large)."""
        if self._worker is not None:
            self._worker.cancel()
        worker = TaskWorker(lambda progress, cancel: self.controller.corpus_info(source))
        worker.done.connect(self._on_info)
        worker.failed.connect(self.show_error)
        worker.finished.connect(self._on_finished)
        worker.setProperty("source", source)
        self._worker = worker
        self.title.setText(f"Reading {source}…")
        start_worker(worker)

    def _on_finished(self) -> None:
        if self.sender() is self._worker:
            self._worker = None

    def _on_info(self, info: dict) -> None:
        if self.sender() is not self._worker:
            return  # a newer choice superseded this one
        self.show_info(info)
        self.corpus_changed.emit(self.source)

    def show_info(self, info: dict) -> None:
        self.info = info
        self.source = info["name"] if info.get("builtin") else str(info.get("path") or info["name"])
        self.error_label.hide()
        self.title.setText(info.get("title") or info["name"])
        for key, label in self.stats.items():
            value = info.get(key, "")
            label.setText(
                f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
            )
        self.preview.setPlainText(info.get("preview", ""))
        self._select_current()

    def _select_current(self) -> None:
        for i in range(self.builtins.count()):
            item = self.builtins.item(i)
            item.setSelected(item.data(Qt.ItemDataRole.UserRole) == self.source)

    def show_error(self, message: str) -> None:
        self.error_label.setText(message.split("\n\n", 1)[0])
        self.error_label.setToolTip(message)
        self.error_label.show()
        self.title.setText(self.info.get("title") or self.info.get("name", "") if self.info else "")
        self.error_shown.emit(message)
