"""A labelled heatmap (one matrix, or a grid of them) with token ticks, a colour bar and hover read-out.

NaN cells are drawn transparent over a grey view background, which is how the causal mask above an
attention map's diagonal shows up: visibly empty, not a colour of the scale.

The plot items are made once per layout (number and shapes of the matrices, columns of the grid) and
updated in place after that (``ImageItem.setImage``, pyqtgraph's way for moving pictures), so stepping
through a time-lapse or changing a head redraws pixels instead of rebuilding the scene.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QWidget

from lmstudio.ui.widgets.matrix_plots import MatrixPlots, token_ticks


class Heatmap(MatrixPlots):
    """``set_matrix`` shows one matrix; ``set_grid`` shows several side by side with one colour scale.

    Rows run top to bottom (row 0 at the top), columns left to right, one cell per entry.
    ``hovered`` says what the pointer is over, e.g. "query 'a' (3) -> key 'b' (1): 0.125".
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.matrices: list[np.ndarray] = []
        self.titles: list[str] = []
        self.row_labels: list[str] = []
        self.col_labels: list[str] = []
        self.row_name, self.col_name = "row", "column"
        self.images: list[pg.ImageItem] = []
        self.colorbar: pg.ColorBarItem | None = None
        self.builds = 0  # how often the plot items were made anew (the rest were in-place updates)
        self._layout: tuple | None = None  # (shapes, n_cols) the items were made for
        self._shown: dict = {}  # ticks, titles, colour map and bar label as last set

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
        self.matrices = [np.asarray(m, dtype=np.float32) for m in matrices]
        self.titles = list(titles or [""] * len(matrices))
        self.row_labels, self.col_labels = list(row_labels), list(col_labels)
        self.row_name, self.col_name = row_name, col_name
        if not self.matrices:
            self.clear()
            return
        if levels is None:
            finite = np.concatenate([m[np.isfinite(m)] for m in self.matrices])
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            levels = (lo, hi if hi > lo else lo + 1.0)
        n_cols = n_cols or int(np.ceil(np.sqrt(len(self.matrices))))
        layout = (tuple(m.shape for m in self.matrices), n_cols)
        if layout != self._layout:
            self._build(n_cols, levels, cmap, bar_label)
            self._layout = layout
        for image, m in zip(self.images, self.matrices, strict=True):
            image.setImage(m, autoLevels=False)
        assert self.colorbar is not None
        self.colorbar.setLevels(levels)  # and every image's, through the bar
        self._update_decoration(n_cols, cmap, bar_label)
        self.caption.setText(caption)
        self.readout.setText(" ")  # it described the cell as it was

    def _build(self, n_cols: int, levels: tuple[float, float], cmap: str, bar_label: str) -> None:
        self.clear_plots()
        self.builds += 1
        self.images = []
        for k, m in enumerate(self.matrices):
            plot = self.add_plot(k // n_cols, k % n_cols, self.titles[k])
            self.images.append(self.add_image(plot, m, levels, cmap))
            plot.setAspectLocked(False)
        n_rows = max(1, int(np.ceil(len(self.matrices) / n_cols)))
        self.colorbar = self.add_colorbar(self.images, levels, cmap, bar_label, n_cols, n_rows)
        self._shown = {"titles": list(self.titles), "cmap": cmap, "bar_label": bar_label}

    def _update_decoration(self, n_cols: int, cmap: str, bar_label: str) -> None:
        """Ticks, titles, colour map and bar label: set again only when they changed."""
        shown, bar = self._shown, self.colorbar
        assert bar is not None
        labels = (self.row_labels, self.col_labels)
        if shown.get("labels") != labels:
            single, last_row = len(self.matrices) == 1, (len(self.matrices) - 1) // n_cols
            for k, plot in enumerate(self.plots):
                bottom = single or k // n_cols == last_row
                plot.getAxis("bottom").setTicks(token_ticks(self.col_labels) if bottom else [[]])
                left = single or k % n_cols == 0
                plot.getAxis("left").setTicks(token_ticks(self.row_labels) if left else [[]])
            shown["labels"] = (list(self.row_labels), list(self.col_labels))
        if shown.get("titles") != self.titles:
            for plot, title in zip(self.plots, self.titles, strict=True):
                plot.setTitle(title or None)
            shown["titles"] = list(self.titles)
        if shown.get("cmap") != cmap:
            bar.setColorMap(pg.colormap.get(cmap))  # and every image's
            shown["cmap"] = cmap
        if shown.get("bar_label") != bar_label:
            bar.getAxis("left").setLabel(bar_label)
            shown["bar_label"] = bar_label

    def clear(self) -> None:
        self.clear_plots()
        self.matrices, self.images, self.colorbar = [], [], None
        self._layout, self._shown = None, {}
        self.caption.setText("")

    # ---- hover ------------------------------------------------------------------------------------
    def cell_shape(self, k: int) -> tuple[int, int]:
        rows, cols = self.matrices[k].shape
        return rows, cols

    def cell_text(self, k: int, row: int, col: int) -> str:
        value = self.matrices[k][row, col]
        where = f"{self.titles[k]}: " if self.titles[k] else ""
        r = self.row_labels[row] if row < len(self.row_labels) else str(row)
        c = self.col_labels[col] if col < len(self.col_labels) else str(col)
        shown = "masked (future token)" if not np.isfinite(value) else f"{value:.4g}"
        return f"{where}{self.row_name} {r!r} ({row}) \u2192 {self.col_name} {c!r} ({col}): {shown}"
