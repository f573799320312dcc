"""Candidate tokens as paired bars: the model's probability and the probability the sampler drew from.

Each candidate gets two bars side by side: the model's own probability (temperature 1, nothing
filtered) and its probability in the distribution actually sampled, after temperature, top-k and
top-p (``lmstudio.engine.next_token.sampling_distribution``, the tensor the sampler draws from). A token
the settings filtered out has no sampler bar and its tick reads ``✕``; the chosen token is outlined
in red and always present. Clicking a bar emits its index (step mode picks that token).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QLabel, QWidget

MODEL = QColor(150, 170, 205)
SAMPLER = QColor(235, 140, 40)
FILTERED = QColor(205, 205, 205)
CHOSEN = QColor(200, 30, 30)
FILTERED_MARK = "\u2715"  # ✕
_WIDTH = 0.38


def _show(label: str) -> str:
    return label or "\u2205"


def legend() -> QLabel:
    """The key under the chart, in the chart's own colours."""

    def square(c: QColor) -> str:
        return f"<span style='color:{c.name()}'>&#9632;</span>"

    label = QLabel(
        f"{square(MODEL)} the model's probability (temperature 1, nothing filtered) &nbsp; "
        f"{square(SAMPLER)} the distribution the sampler drew from (after temperature, top-k, top-p) &nbsp; "
        f"{FILTERED_MARK} filtered out: could not be drawn &nbsp; "
        f"<span style='color:{CHOSEN.name()}'>&#9633;</span> red outline: the token chosen"
    )
    label.setWordWrap(True)
    return label


class DistributionChart(pg.PlotWidget):
    bar_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent, background="w")
        self.setMenuEnabled(False)
        self.hideButtons()
        self.setMouseEnabled(x=False, y=False)
        self.setLabel("left", "probability")
        self.getAxis("left").enableAutoSIPrefix(False)
        self.labels: list[str] = []
        self.probs: list[float] = []  # the model's
        self.sampled: list[float] = []  # the sampler's (NaN: not known, e.g. an old run's steps)
        self.chosen = -1
        # created once, updated with setOpts (a redraw rebuilds no item)
        self.model_bars = pg.BarGraphItem(x=np.empty(0), height=np.empty(0), width=_WIDTH)
        self.sampler_bars = pg.BarGraphItem(x=np.empty(0), height=np.empty(0), width=_WIDTH)
        self.addItem(self.model_bars)
        self.addItem(self.sampler_bars)
        self.scene().sigMouseClicked.connect(self._on_click)

    @property
    def filtered(self) -> list[bool]:
        """Per candidate: the sampling settings gave it probability 0 (it could not be drawn)."""
        return [q == 0.0 for q in self.sampled]

    def clear_chart(self, title: str = "") -> None:
        self.labels, self.probs, self.sampled, self.chosen = [], [], [], -1
        for bars in (self.model_bars, self.sampler_bars):
            bars.setOpts(x=np.empty(0), height=np.empty(0))  # no bar left (their colours stay unused)
        self.getAxis("bottom").setTicks([[]])
        self.setTitle(title or None)

    def set_candidates(
        self,
        labels: list[str],
        probs: list[float],
        sampled: list[float],
        chosen: int = -1,
        title: str = "",
    ) -> None:
        """``labels``/``probs``/``sampled`` per candidate; ``chosen`` the index to outline (-1: none)."""
        self.labels = list(labels)
        self.probs = [float(p) for p in probs]
        self.sampled = [float(q) for q in sampled]
        self.chosen = chosen
        n = len(self.probs)
        x = np.arange(n, dtype=float)
        pens = [pg.mkPen(CHOSEN, width=3) if i == chosen else pg.mkPen(None) for i in range(n)]
        filtered = self.filtered
        shown = [q if np.isfinite(q) else 0.0 for q in self.sampled]
        if n:  # (an empty list of pens is more than pyqtgraph's BarGraphItem takes)
            self.model_bars.setOpts(
                x=x - _WIDTH / 2,
                height=np.asarray(self.probs, dtype=float),
                brushes=[FILTERED if f else MODEL for f in filtered],
                pens=pens,
            )
            self.sampler_bars.setOpts(
                x=x + _WIDTH / 2, height=np.asarray(shown, dtype=float), brushes=[SAMPLER] * n, pens=pens
            )
        else:
            for bars in (self.model_bars, self.sampler_bars):
                bars.setOpts(x=x, height=x)
        ticks = [
            (i, f"{FILTERED_MARK}{_show(t)}" if filtered[i] else _show(t)) for i, t in enumerate(self.labels)
        ]
        self.getAxis("bottom").setTicks([ticks])
        self.setXRange(-0.6, max(n, 1) - 0.4, padding=0)
        top = max(self.probs + shown + [0.05])
        self.setYRange(0, top * 1.1, padding=0)
        self.setTitle(title or None)

    def bar_center(self, index: int):
        """Widget point in the middle of a candidate's model bar (tests click there)."""
        y = max(self.probs[index], 0.02) / 2
        scene = self.getPlotItem().getViewBox().mapViewToScene(QPointF(index - _WIDTH / 2, y))
        return self.mapFromScene(scene)

    def _on_click(self, event) -> None:
        if not self.labels:
            return
        p = self.getPlotItem().getViewBox().mapSceneToView(event.scenePos())
        index = int(round(p.x()))
        if 0 <= index < len(self.labels) and abs(p.x() - index) <= 2 * _WIDTH * 0.6 and p.y() >= 0:
            self.bar_clicked.emit(index)
