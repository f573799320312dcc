"""What the heatmap and the logit-lens grid share: image plots of matrices in one GraphicsLayoutWidget.

A caption above says what the colour means, a read-out below says what the pointer is over. Plots are
row 0 at the top, one cell per entry, token labels as ticks; the view behind the images is grey, so NaN
cells (drawn transparent) show up as visibly empty, which is how a causal mask looks. Subclasses build
their plots with ``add_plot`` / ``add_image`` / ``add_colorbar`` and say what a cell is in ``cell_text``.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

pg.setConfigOptions(imageAxisOrder="row-major")

MASK_GREY = "#c8c8c8"


def token_ticks(labels: list[str], max_ticks: int = 48) -> list[list[tuple[float, str]]]:
    """Axis ticks in the middle of each cell; with more than ``max_ticks`` labels only every n-th one."""
    every = max(1, int(np.ceil(len(labels) / max_ticks)))
    return [[(i + 0.5, lab) for i, lab in enumerate(labels) if i % every == 0]]


class MatrixPlots(QWidget):
    hovered = Signal(str)  # the read-out of the cell under the pointer

    def __init__(self, parent: QWidget | None = None, *, readout_lines: int = 1):
        super().__init__(parent)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("w")
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.readout = QLabel(" ")
        if readout_lines > 1:
            self.readout.setWordWrap(True)
            # a fixed height: a read-out that grew with its text would move the plot under the pointer
            self.readout.setFixedHeight(readout_lines * self.readout.fontMetrics().lineSpacing() + 4)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.readout)
        self.plots: list[pg.PlotItem] = []
        self.view.scene().sigMouseMoved.connect(self._on_mouse_moved)

    # ---- building (subclasses) ---------------------------------------------------------------------
    def add_plot(self, row: int, col: int, title: str | None = None) -> pg.PlotItem:
        plot = self.view.addPlot(row=row, col=col, title=title or None)
        plot.getViewBox().setBackgroundColor(MASK_GREY)
        plot.invertY(True)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        self.plots.append(plot)
        return plot

    @staticmethod
    def add_image(
        plot: pg.PlotItem, data: np.ndarray, levels: tuple[float, float], cmap: str
    ) -> pg.ImageItem:
        image = pg.ImageItem(data, levels=levels)
        image.setColorMap(pg.colormap.get(cmap))
        plot.addItem(image)
        plot.setRange(xRange=(0, data.shape[1]), yRange=(0, data.shape[0]), padding=0)
        return image

    def add_colorbar(
        self,
        images: list[pg.ImageItem],
        levels: tuple[float, float],
        cmap: str,
        label: str,
        col: int,
        rowspan: int,
    ) -> pg.ColorBarItem:
        bar = pg.ColorBarItem(
            values=levels, colorMap=pg.colormap.get(cmap), interactive=False, label=label or None, width=15
        )
        bar.setImageItem(images)
        self.view.addItem(bar, row=0, col=col, rowspan=rowspan)
        return bar

    def clear_plots(self) -> None:
        self.view.clear()
        self.plots = []
        self.readout.setText(" ")

    # ---- hover -----------------------------------------------------------------------------------
    def cell_shape(self, k: int) -> tuple[int, int]:
        """(rows, columns) of plot ``k``."""
        raise NotImplementedError

    def cell_text(self, k: int, row: int, col: int) -> str:
        raise NotImplementedError

    def cell_center(self, row: int, col: int, k: int = 0):
        """Widget point in the middle of cell (row, col) of plot ``k`` (tests hover there)."""
        scene = self.plots[k].getViewBox().mapViewToScene(QPointF(col + 0.5, row + 0.5))
        return self.view.mapFromScene(scene)

    def show_hover(self, text: str, pos) -> None:
        self.readout.setText(text)
        self.hovered.emit(text)

    def _on_mouse_moved(self, pos) -> None:
        for k, plot in enumerate(self.plots):
            if not plot.sceneBoundingRect().contains(pos):
                continue
            p = plot.getViewBox().mapSceneToView(pos)
            row, col = int(np.floor(p.y())), int(np.floor(p.x()))
            rows, cols = self.cell_shape(k)
            if 0 <= row < rows and 0 <= col < cols:
                self.show_hover(self.cell_text(k, row, col), pos)
            return
