"""Live tokenizer preview: type text, see how it splits, one alternating background colour per token.

The split comes from a callable (the controller's ``split``) returning ``[(piece, id), ...]`` whose
pieces concatenate back to the text; hovering a piece shows its id.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QColor, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QTextEdit, QVBoxLayout, QWidget

from lmstudio.ui.widgets.token_text import UNK_MARK, UNK_RGB

TOKEN_COLOURS = ("#cfe8ff", "#ffe0b3", "#d5f5d0", "#f3d1ee")


class TokenPreview(QWidget):
    updated = Signal(int)  # number of tokens shown

    def __init__(
        self,
        split: Callable[[str], list[tuple[str, int]]],
        parent: QWidget | None = None,
        is_unk: Callable[[int], bool] | None = None,
    ):
        super().__init__(parent)
        self._split = split
        self._is_unk = is_unk or (lambda _id: False)
        self.input = QPlainTextEdit()
        self.input.setPlaceholderText("Type text to see how it is split into tokens…")
        self.input.setMaximumHeight(70)
        self.output = QTextEdit(readOnly=True)
        self.output.setObjectName("tokenPreview")
        self.summary = QLabel("Build the tokenizer to see the split.")
        self._pieces: list[tuple[str, int]] = []
        self._timer = QTimer(self, singleShot=True, interval=80)  # coalesce fast typing
        self._timer.timeout.connect(self.refresh)
        self.input.textChanged.connect(self._timer.start)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.input)
        layout.addWidget(self.output, 1)
        layout.addWidget(self.summary)

    def pieces(self) -> list[tuple[str, int]]:
        return list(self._pieces)

    def refresh(self) -> None:
        text = self.input.toPlainText()
        self._pieces = self._split(text) if text else []
        self.output.clear()
        cursor = self.output.textCursor()
        unknown = 0
        for n, (piece, token_id) in enumerate(self._pieces):
            fmt = QTextCharFormat()
            if self._is_unk(token_id):  # a mark, not the typed text: the model never sees that text
                unknown += 1
                fmt.setBackground(QColor(*UNK_RGB))
                fmt.setForeground(QColor("white"))
                fmt.setToolTip(f"id {token_id}: <unk>, the unknown token. {piece!r} is not in the vocabulary")
                cursor.insertText(UNK_MARK + ("\n" if piece.endswith("\n") else ""), fmt)
                continue
            fmt.setBackground(QColor(TOKEN_COLOURS[n % len(TOKEN_COLOURS)]))
            fmt.setToolTip(f"id {token_id}: {piece!r}")
            # keep line breaks visible as a mark but still break the line
            cursor.insertText(piece.replace("\n", "↵\n"), fmt)
        cursor.movePosition(QTextCursor.MoveOperation.Start)
        self.output.setTextCursor(cursor)
        if text:
            n = len(self._pieces)
            self.summary.setText(
                f"{len(text)} characters → {n} tokens"
                + (f" ({len(text) / n:.2f} characters per token)" if n else "")
                + (f", {unknown} of them {UNK_MARK} (not in the vocabulary)" if unknown else "")
            )
        self.updated.emit(len(self._pieces))
