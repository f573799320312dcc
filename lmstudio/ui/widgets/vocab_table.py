"""The vocabulary browser: a table model over numpy arrays (token, id, frequency), sortable and searchable.

``VocabModel`` never copies rows into Qt: ``data()`` indexes the arrays. The view sorts through a
``QSortFilterProxyModel`` that reads the raw values (UserRole), so numbers sort as numbers, not as text.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QRegularExpression,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtWidgets import QHeaderView, QLineEdit, QTableView, QVBoxLayout, QWidget

COLUMNS = ("token", "id", "frequency")
_ROOT = QModelIndex()


def visible_token(text: str) -> str:
    """Show whitespace and control characters so a token made of them is not an empty-looking cell."""
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍") or "∅"


class VocabModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._tokens = np.empty(0, dtype=object)
        self._ids = np.empty(0, dtype=np.int64)
        self._freq = np.empty(0, dtype=np.int64)

    def set_vocab(self, tokens: np.ndarray, ids: np.ndarray, freq: np.ndarray) -> None:
        self.beginResetModel()
        self._tokens = np.asarray(tokens, dtype=object)
        self._ids = np.asarray(ids, dtype=np.int64)
        self._freq = np.asarray(freq, dtype=np.int64)
        self.endResetModel()

    def rowCount(self, parent=_ROOT) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self._ids)

    def columnCount(self, parent=_ROOT) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def raw(self, row: int, column: int):
        return (self._tokens, self._ids, self._freq)[column][row]

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row, col = index.row(), index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            value = self.raw(row, col)
            return (
                visible_token(str(value)) if col == 0 else f"{int(value):,}" if col == 2 else str(int(value))
            )
        if role == Qt.ItemDataRole.UserRole:  # the raw value, for sorting and searching
            value = self.raw(row, col)
            return str(value) if col == 0 else int(value)
        if role == Qt.ItemDataRole.TextAlignmentRole and col > 0:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None


class VocabProxy(QSortFilterProxyModel):
    """Sorts on raw values (numbers numerically) and filters on the token text (substring)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSortRole(Qt.ItemDataRole.UserRole)
        self.setFilterRole(Qt.ItemDataRole.UserRole)
        self.setFilterKeyColumn(0)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)

    def set_search(self, text: str) -> None:
        self.setFilterRegularExpression(
            QRegularExpression(
                QRegularExpression.escape(text), QRegularExpression.PatternOption.CaseInsensitiveOption
            )
        )


class VocabBrowser(QWidget):
    """A search box over a sortable table of the vocabulary."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = VocabModel(self)
        self.proxy = VocabProxy(self)
        self.proxy.setSourceModel(self.model)
        self.search = QLineEdit(placeholderText="Search tokens…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.proxy.set_search)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(2, Qt.SortOrder.DescendingOrder)
        self.view.verticalHeader().hide()
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.view.setAlternatingRowColors(True)
        self.view.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.search)
        layout.addWidget(self.view)

    def set_vocab(self, tokens, ids, freq) -> None:
        self.model.set_vocab(tokens, ids, freq)

    def visible_rows(self) -> list[tuple]:
        """The rows as the view shows them (sorted, filtered): (token, id, frequency) raw values."""
        out = []
        for r in range(self.proxy.rowCount()):
            src = self.proxy.mapToSource(self.proxy.index(r, 0)).row()
            out.append(tuple(self.model.raw(src, c) for c in range(3)))
        return out
