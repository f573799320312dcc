"""A labelled heatmap (one matrix, or a grid of them) with token ticks, a colour bar and hover read-out.

NaN cells are drawn transparent over a grey view background, which is how the causal mask above an
attention map's diagonal shows up: visibly empty, not a colour of the scale.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

pg.setConfigOptions(imageAxisOrder="row-major")

MASK_GREY = "#c8c8c8"
# most tick labels per axis before only every n-th token is labelled
_MAX_TICKS = 48


def _ticks(labels: list[str]) -> list[list[tuple[float, str]]]:
    every = max(1, int(np.ceil(len(labels) / _MAX_TICKS)))
    return [[(i + 0.5, lab) for i, lab in enumerate(labels) if i % every == 0]]


class Heatmap(QWidget):
    """``set_matrix`` shows one matrix; ``set_grid`` shows several side by side with one colour scale.

    Rows run top to bottom (row 0 at the top), columns left to right, one cell per entry.
    """

    hovered = Signal(str)  # what the pointer is over, e.g. "query 'a' (3) -> key 'b' (1): 0.125"

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("w")
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.readout = QLabel(" ")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.readout)
        self.matrices: list[np.ndarray] = []
        self.titles: list[str] = []
        self.row_labels: list[str] = []
        self.col_labels: list[str] = []
        self.row_name, self.col_name = "row", "column"
        self.plots: list[pg.PlotItem] = []
        self.images: list[pg.ImageItem] = []
        self.colorbar: pg.ColorBarItem | None = None
        self.view.scene().sigMouseMoved.connect(self._on_mouse_moved)

    # ---- content -----------------------------------------------------------------------------------
    def set_matrix(
        self,
        matrix: np.ndarray,
        row_labels: list[str],
        col_labels: list[str],
        *,
        levels: tuple[float, float] | None = None,
        caption: str = "",
        cmap: str = "viridis",
        row_name: str = "row",
        col_name: str = "column",
        title: str = "",
        bar_label: str = "",
    ) -> None:
        self.set_grid(
            [matrix],
            row_labels,
            col_labels,
            titles=[title],
            levels=levels,
            caption=caption,
            cmap=cmap,
            row_name=row_name,
            col_name=col_name,
            n_cols=1,
            bar_label=bar_label,
        )

    def set_grid(
        self,
        matrices: list[np.ndarray],
        row_labels: list[str],
        col_labels: list[str],
        *,
        titles: list[str] | None = None,
        levels: tuple[float, float] | None = None,
        caption: str = "",
        cmap: str = "viridis",
        row_name: str = "row",
        col_name: str = "column",
        n_cols: int | None = None,
        bar_label: str = "",
    ) -> None:
        """``caption`` (above the plot) says what the colour means; ``bar_label`` names the colour bar."""
        self.view.clear()
        self.matrices = [np.asarray(m, dtype=np.float32) for m in matrices]
        self.titles = list(titles or [""] * len(matrices))
        self.row_labels, self.col_labels = list(row_labels), list(col_labels)
        self.row_name, self.col_name = row_name, col_name
        if levels is None:
            finite = (
                np.concatenate([m[np.isfinite(m)] for m in self.matrices]) if self.matrices else np.zeros(1)
            )
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            levels = (lo, hi if hi > lo else lo + 1.0)
        n_cols = n_cols or int(np.ceil(np.sqrt(len(self.matrices))))
        single = len(self.matrices) == 1
        self.plots, self.images = [], []
        for k, m in enumerate(self.matrices):
            plot = self.view.addPlot(row=k // n_cols, col=k % n_cols, title=self.titles[k] or None)
            plot.getViewBox().setBackgroundColor(MASK_GREY)
            plot.invertY(True)
            plot.setMenuEnabled(False)
            plot.hideButtons()
            image = pg.ImageItem(m, levels=levels)
            image.setColorMap(pg.colormap.get(cmap))
            plot.addItem(image)
            plot.setAspectLocked(False)
            plot.setRange(xRange=(0, m.shape[1]), yRange=(0, m.shape[0]), padding=0)
            bottom, left = plot.getAxis("bottom"), plot.getAxis("left")
            if single or k // n_cols == (len(self.matrices) - 1) // n_cols:
                bottom.setTicks(_ticks(self.col_labels))
            else:
                bottom.setTicks([[]])
            left.setTicks(_ticks(self.row_labels) if single or k % n_cols == 0 else [[]])
            self.plots.append(plot)
            self.images.append(image)
        self.colorbar = pg.ColorBarItem(
            values=levels,
            colorMap=pg.colormap.get(cmap),
            interactive=False,
            label=bar_label or None,
            width=15,
        )
        self.colorbar.setImageItem(self.images)
        self.view.addItem(
            self.colorbar, row=0, col=n_cols, rowspan=max(1, int(np.ceil(len(self.matrices) / n_cols)))
        )
        self.caption.setText(caption)
        self.readout.setText(" ")

    def clear(self) -> None:
        self.view.clear()
        self.matrices, self.plots, self.images, self.colorbar = [], [], [], None
        self.caption.setText("")
        self.readout.setText(" ")

    # ---- hover ------------------------------------------------------------------------------------
    def value_text(self, k: int, row: int, col: int) -> str:
        m = self.matrices[k]
        value = m[row, col]
        where = f"{self.titles[k]}: " if self.titles[k] else ""
        r = self.row_labels[row] if row < len(self.row_labels) else str(row)
        c = self.col_labels[col] if col < len(self.col_labels) else str(col)
        shown = "masked (future token)" if not np.isfinite(value) else f"{value:.4g}"
        return f"{where}{self.row_name} {r!r} ({row}) \u2192 {self.col_name} {c!r} ({col}): {shown}"

    def _on_mouse_moved(self, pos) -> None:
        for k, plot in enumerate(self.plots):
            if not plot.sceneBoundingRect().contains(pos):
                continue
            p = plot.getViewBox().mapSceneToView(pos)
            row, col = int(np.floor(p.y())), int(np.floor(p.x()))
            m = self.matrices[k]
            if 0 <= row < m.shape[0] and 0 <= col < m.shape[1]:
                text = self.value_text(k, row, col)
                self.readout.setText(text)
                self.hovered.emit(text)
            return
