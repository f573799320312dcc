"""Live metric plots: curves created once and fed from growing numpy buffers, redrawn on demand.

The training pane appends points as events arrive and calls ``refresh()`` from a ~20 Hz timer, so a
burst of events costs one redraw. Peak downsampling and clip-to-view keep 100k-point curves smooth.
Moving the mouse over a plot shows a vertical line and the exact values of every curve at that x.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QWidget

from lmstudio.ui.widgets.series import Series

# colour-blind friendly (Okabe-Ito), used in order for curves and runs
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]


def format_number(v: float) -> str:
    if not math.isfinite(v):
        return "–"
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"


class MetricPlot(pg.PlotWidget):
    """A plot of named curves; ``append`` adds points, ``refresh`` redraws the curves that changed."""

    def __init__(
        self,
        title: str,
        y_label: str = "",
        x_label: str = "step",
        parent: QWidget | None = None,
        *,
        legend: bool = True,
    ):
        """``legend=False`` for a plot whose title already names its one curve (a legend covers data)."""
        super().__init__(parent=parent)
        self.setObjectName(f"plot:{title}")
        self.setMinimumSize(220, 150)
        self.setBackground("w")
        item = self.getPlotItem()
        item.setTitle(title, size="10pt", color="#222")
        item.setLabel("left", y_label)
        item.setLabel("bottom", x_label)
        item.showGrid(x=True, y=True, alpha=0.25)
        for side in ("left", "bottom"):
            item.getAxis(side).setPen("#555")
            item.getAxis(side).setTextPen("#333")
        item.getAxis("left").enableAutoSIPrefix(False)  # "lr (x0.001)" confuses more than it helps
        item.setDownsampling(auto=True, mode="peak")
        item.setClipToView(True)
        if legend:
            item.addLegend(offset=(-5, 5), labelTextSize="8pt")
        self._curves: dict[str, pg.PlotDataItem] = {}
        self._series: dict[str, Series] = {}
        self._names: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._drawn: dict[str, int] = {}  # points each curve showed at its last refresh
        self._log_y = False
        self._vline = pg.InfiniteLine(
            angle=90, movable=False, pen=pg.mkPen("#888", style=Qt.PenStyle.DashLine)
        )
        self._readout = pg.TextItem(color="#222", anchor=(0, 0), fill=pg.mkBrush(255, 255, 255, 220))
        self._vline.setZValue(10)
        self._readout.setZValue(11)
        item.addItem(self._vline, ignoreBounds=True)
        item.addItem(self._readout, ignoreBounds=True)
        self._vline.hide()
        self._readout.hide()
        self.scene().sigMouseMoved.connect(self._on_mouse_moved)

    # ---- curves -----------------------------------------------------------------------------
    def add_curve(
        self,
        key: str,
        name: str,
        color: str | None = None,
        *,
        symbol: str | None = None,
        width: float = 1.5,
        dashed: bool = False,
    ) -> pg.PlotDataItem:
        color = color or PALETTE[len(self._curves) % len(PALETTE)]
        pen = pg.mkPen(color, width=width, style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
        curve = self.getPlotItem().plot(
            [], [], name=name, pen=pen, symbol=symbol, symbolSize=5, symbolBrush=color, symbolPen=None
        )
        self._curves[key], self._series[key], self._names[key] = curve, Series(), name
        return curve

    def remove_curve(self, key: str) -> None:
        curve = self._curves.pop(key, None)
        if curve is not None:
            self.getPlotItem().removeItem(curve)
            legend = self.getPlotItem().legend
            if legend is not None:
                legend.removeItem(curve)
        self._series.pop(key, None)
        self._drawn.pop(key, None)
        self._names.pop(key, None)
        self._dirty.discard(key)

    def has_curve(self, key: str) -> bool:
        return key in self._curves

    def curve_keys(self) -> list[str]:
        return list(self._curves)

    def series(self, key: str) -> Series:
        return self._series[key]

    def bind_series(self, key: str, series: Series) -> None:
        """Draw ``series`` (owned by a model, e.g. the TrainingRun) for this curve; ``refresh`` picks
        up whatever the model appended or cleared since the last redraw."""
        self._series[key] = series
        self._dirty.add(key)

    def append(self, key: str, x: float, y: float) -> None:
        self._series[key].append(x, y)
        self._dirty.add(key)

    def set_series(self, key: str, xs: np.ndarray, ys: np.ndarray) -> None:
        s = self._series[key]
        s.clear()
        s.extend(xs, ys)
        self._dirty.add(key)

    def clear_data(self) -> None:
        for key, s in self._series.items():
            s.clear()
            self._dirty.add(key)
        self.refresh()

    def refresh(self, force: bool = False) -> bool:
        """Push changed buffers to their curves (every one with ``force``); True when something was redrawn."""
        if force:
            self._dirty.update(self._series)
        self._dirty.update(k for k, s in self._series.items() if len(s) != self._drawn.get(k))
        if not self._dirty:
            return False
        for key in self._dirty:
            s = self._series[key]
            self._curves[key].setData(s.x, s.y)
            self._drawn[key] = len(s)
        self._dirty.clear()
        return True

    def point_count(self, key: str) -> int:
        """Points currently drawn by a curve (after refresh), for tests and the status readout."""
        x, _ = self._curves[key].getOriginalDataset()
        return 0 if x is None else len(x)

    # ---- view -------------------------------------------------------------------------------
    def set_log_y(self, on: bool) -> None:
        self._log_y = on
        self.getPlotItem().setLogMode(x=False, y=on)

    def set_x_label(self, text: str) -> None:
        self.getPlotItem().setLabel("bottom", text)

    def autoscale(self) -> None:
        self.getPlotItem().enableAutoRange()

    # ---- hover readout ----------------------------------------------------------------------
    def readout_at(self, x: float) -> str:
        """The values of every curve at the point nearest to ``x`` (what the hover label shows)."""
        lines = []
        for key, s in self._series.items():
            if not len(s):
                continue
            xs = s.x
            i = int(np.clip(np.searchsorted(xs, x), 0, len(xs) - 1))
            if i > 0 and abs(xs[i - 1] - x) < abs(xs[i] - x):
                i -= 1
            lines.append(f"{self._names[key]}: {format_number(s.y[i])} @ {format_number(xs[i])}")
        return "\n".join(lines)

    def _on_mouse_moved(self, pos: QPointF) -> None:
        vb = self.getPlotItem().getViewBox()
        if not self.sceneBoundingRect().contains(pos) or not vb.sceneBoundingRect().contains(pos):
            self._vline.hide()
            self._readout.hide()
            return
        point = vb.mapSceneToView(pos)
        text = self.readout_at(point.x())
        if not text:
            return
        self._vline.setPos(point.x())
        self._readout.setText(text)
        self._readout.setPos(point.x(), point.y())
        self._vline.show()
        self._readout.show()
