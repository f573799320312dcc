"""Read-only text made of tokens, each with a background shaded by how surprising it was.

Used by the Generate tab (each generated token) and by the Inspect tab's per-token loss view (the actual
next token). The shade follows the surprise -log2(p) in bits, not 1 - p: a character model spreads its bets,
so most tokens have p well below 0.5 and a linear scale would paint everything red. Clicking a token emits
its index; hovering shows its tooltip.
"""

from __future__ import annotations

import bisect
import math

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QColor, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QTextEdit, QToolTip, QWidget

# the strongest shade, for a token the model found very unlikely (probability near 0)
SURPRISE_RGB = (230, 70, 40)
# surprise (bits) that gets the strongest shade: p = 1/1024
FULL_SHADE_BITS = 10.0
# how the unknown token of a char or word tokenizer shows: a mark, never a character the model did not see
UNK_MARK = "\u27e8unk\u27e9"
UNK_RGB = (120, 140, 200)
UNK_TIP = (
    "<unk>: the unknown token. The model predicted a character or word that has no token of its own "
    "(it was not in the training vocabulary), so there is no text to show."
)


def strength_from_prob(prob: float) -> float:
    """0 for p = 1, 0.1 for p = 1/2, 0.33 for p = 0.1, 1 for p <= 1/1024."""
    return min(1.0, -math.log2(max(float(prob), 1e-30)) / FULL_SHADE_BITS)


def shade_color(strength: float) -> QColor:
    """White for 0 (expected), through orange to red for 1 (surprising)."""
    s = min(1.0, max(0.0, float(strength)))
    r, g, b = (round(255 + (c - 255) * s) for c in SURPRISE_RGB)
    return QColor(r, g, b)


class TokenText(QTextEdit):
    token_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setUndoRedoEnabled(False)
        self.starts: list[int] = []  # document position where each token begins
        self.ends: list[int] = []
        self.tooltips: list[str] = []
        self.selected = -1
        self.viewport().installEventFilter(self)
        self.viewport().setMouseTracking(True)

    def clear_tokens(self, prefix: str = "") -> None:
        """Empty the view; ``prefix`` (e.g. the prompt) is shown plain, not as tokens."""
        self.clear()
        self.starts, self.ends, self.tooltips, self.selected = [], [], [], -1
        if prefix:
            self._insert(prefix, QTextCharFormat())

    def _insert(self, text: str, fmt: QTextCharFormat) -> tuple[int, int]:
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        start = cursor.position()
        cursor.insertText(text, fmt)
        return start, cursor.position()

    def append_token(self, text: str, strength: float, tooltip: str = "", unk: bool = False) -> int:
        """Add a token; returns its index. Empty text (an incomplete character) still gets an index.
        An unknown token (``unk``) shows as ``UNK_MARK`` in its own colour, whatever its text."""
        fmt = QTextCharFormat()
        fmt.setBackground(shade_color(strength) if not unk else QColor(*UNK_RGB))
        fmt.setForeground(QColor("black") if not unk else QColor("white"))
        if unk:
            text = UNK_MARK
            tooltip = UNK_TIP + ("\n" + tooltip if tooltip else "")
        start, end = self._insert(text, fmt)
        self.starts.append(start)
        self.ends.append(end)
        self.tooltips.append(tooltip)
        return len(self.starts) - 1

    def token_at_position(self, pos: int) -> int:
        """Index of the token covering document position ``pos``, or -1."""
        i = bisect.bisect_right(self.starts, pos) - 1
        while i >= 0 and self.starts[i] == self.ends[i]:  # skip empty tokens (incomplete characters)
            i -= 1
        return i if i >= 0 and pos < self.ends[i] else -1

    def token_rect_center(self, index: int):
        """Viewport point in the middle of a token (tests click there)."""
        cursor = QTextCursor(self.document())
        cursor.setPosition(self.starts[index])
        left = self.cursorRect(cursor)
        cursor.setPosition(self.ends[index])
        right = self.cursorRect(cursor)
        return (
            left.center() if right.center().y() != left.center().y() else (left.center() + right.center()) / 2
        )

    def token_at_point(self, point) -> int:
        """Index of the token under a viewport point, or -1."""
        cursor = self.cursorForPosition(point)
        pos = cursor.position()
        # the cursor lands on the nearest gap between characters: step back when the point is left of it
        if point.x() < self.cursorRect(cursor).x() and pos > 0:
            pos -= 1
        return self.token_at_position(pos)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind == QEvent.Type.MouseButtonRelease and event.button() == Qt.MouseButton.LeftButton:
            index = self.token_at_point(event.position().toPoint())
            if index >= 0:
                self.selected = index
                self.token_clicked.emit(index)
        elif kind == QEvent.Type.ToolTip:
            index = self.token_at_point(event.pos())
            if index >= 0 and self.tooltips[index]:
                QToolTip.showText(event.globalPos(), self.tooltips[index], self)
            else:
                QToolTip.hideText()
            return True
        return super().eventFilter(obj, event)


def legend(text: str = "token background: how unlikely the model found it") -> QWidget:
    """A small strip: white = expected (p near 1) ... red = surprising (p near 0), on the surprise scale."""
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(QLabel(text + ":"))
    for p in (1.0, 0.5, 0.1, 0.01, 0.001):
        swatch = QLabel(f" p={p:g} ")
        c = shade_color(strength_from_prob(p))
        swatch.setStyleSheet(f"background: rgb({c.red()},{c.green()},{c.blue()}); color: black;")
        row.addWidget(swatch)
    row.addStretch(1)
    return box
