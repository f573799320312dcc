"""The embedding map: every token as a point at its first two principal components, labelled.

Points are coloured by the token's kind (letter, digit, space, punctuation, CJK, byte, unknown) or by
how often it occurs in the corpus (log scale); hovering a point shows the token and its nearest
neighbours by cosine similarity in the full embedding space (the 2-D map is only a projection); the
search box finds a token and rings it. Labels are drawn for the most frequent tokens only (all of
them for a small vocabulary). Takes the plain dict of ``SessionController.embeddings_ready``.
"""

from __future__ import annotations

import csv

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

from lmstudio.matrix_export import KIND_RGB

KIND_COLOURS = KIND_RGB  # the same palette as the CLI's PNG
BY_KIND, BY_FREQUENCY = "kind", "frequency"
MAX_LABELS = 150
# a point counts as under the pointer within this many pixels
_HOVER_PX = 8


class EmbeddingMap(QWidget):
    hovered = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Find a token")
        self.search.setClearButtonEnabled(True)
        self.colour_by = QComboBox()
        self.colour_by.addItems([BY_KIND, BY_FREQUENCY])
        self.which = QComboBox()  # the input embedding or the output head's rows (one matrix when tied)
        self.which.addItems(["input", "output"])
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setFixedHeight(2 * self.legend.fontMetrics().lineSpacing() + 4)
        self.readout = QLabel(" ")
        self.readout.setWordWrap(True)
        # two lines, always: a read-out that grew with its text would move the plot under the pointer
        self.readout.setFixedHeight(2 * self.readout.fontMetrics().lineSpacing() + 4)
        self.plot = pg.PlotWidget(background="w")
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setLabel("bottom", "principal component 1")
        self.plot.setLabel("left", "principal component 2")
        for axis in ("left", "bottom"):
            self.plot.getAxis(axis).enableAutoSIPrefix(False)  # "(x0.001)" would only confuse
        row = QHBoxLayout()
        row.addWidget(QLabel("Find"))
        row.addWidget(self.search, 1)
        row.addWidget(QLabel("Colour by"))
        row.addWidget(self.colour_by)
        row.addWidget(QLabel("Matrix"))
        row.addWidget(self.which)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addLayout(row)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.legend)
        layout.addWidget(self.readout)
        self.result: dict | None = None
        self.found = -1
        self.scatter = pg.ScatterPlotItem(size=7, pen=pg.mkPen(None))
        self.ring = pg.ScatterPlotItem(size=18, brush=None, pen=pg.mkPen((220, 0, 0), width=2.5))
        self.ring.setZValue(20)
        self.labels: list[pg.TextItem] = []
        self.plot.addItem(self.scatter)
        self.plot.addItem(self.ring)
        self.search.textChanged.connect(self.find)
        self.colour_by.currentTextChanged.connect(self._recolour)
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)

    # ---- content ---------------------------------------------------------------------------------
    def set_map(self, result: dict) -> None:
        self.result = result
        for item in self.labels:
            self.plot.removeItem(item)
        self.labels = []
        xy = result["coords"]
        self.scatter.setData(x=xy[:, 0], y=xy[:, 1], data=np.arange(len(xy)))
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        span = np.where(hi - lo > 0, hi - lo, 1.0)
        self.plot.setRange(  # set now, not at the next auto-range: hover and search map points at once
            xRange=(lo[0] - 0.05 * span[0], hi[0] + 0.15 * span[0]),
            yRange=(lo[1] - 0.05 * span[1], hi[1] + 0.05 * span[1]),
            padding=0,
        )
        has_counts = result.get("counts") is not None
        self.colour_by.model().item(1).setEnabled(has_counts)
        if not has_counts and self.colour_by.currentText() == BY_FREQUENCY:
            self.colour_by.setCurrentText(BY_KIND)
        self._recolour()
        order = np.argsort(-np.asarray(result["counts"]), kind="stable") if has_counts else np.arange(len(xy))
        for i in order[:MAX_LABELS]:
            item = pg.TextItem(result["labels"][i], color=(40, 40, 40), anchor=(0, 0.5))
            item.setPos(float(xy[i, 0]), float(xy[i, 1]))
            self.plot.addItem(item)
            self.labels.append(item)
        ex = result["explained"]
        which = "the embedding matrix" if result["tied"] else f"the {result['which']} embedding"
        self.caption.setText(
            f"Each point is a token of the vocabulary: {which}, projected onto its two main directions "
            f"(PCA: {ex[0]:.0%} and {ex[1]:.0%} of the variance). Tokens the model uses alike end up close. "
            f"Hover a point for its nearest tokens in the full {len(xy)}-token space. {result['note']}"
        )
        self.which.blockSignals(True)
        self.which.setCurrentText(result["which"])
        self.which.blockSignals(False)
        self.which.setEnabled(not result["tied"])
        self.which.setToolTip(
            "Tied model: the input embedding and the output head are one matrix."
            if result["tied"]
            else "input: the embedding each token is turned into; output: its row of the output head"
        )
        self.find(self.search.text())

    def save_csv(self, path: str) -> None:
        """The map as CSV, the columns of ``lmstudio inspect --what embeddings``: id, token, kind, count,
        pc1, pc2, neighbours (``token:similarity``)."""
        res = self.result
        if res is None:
            return
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "token", "kind", "count", "pc1", "pc2", "neighbours"])
            for i, label in enumerate(res["labels"]):
                near = " ".join(
                    f"{res['labels'][j]}:{s:.3f}"
                    for j, s in zip(res["neighbours"][i], res["similarity"][i], strict=True)
                )
                count = "" if res.get("counts") is None else int(res["counts"][i])
                x, y = res["coords"][i]
                w.writerow([i, label, res["kinds"][i], count, f"{x:.6g}", f"{y:.6g}", near])

    def _recolour(self) -> None:
        res = self.result
        if res is None:
            return
        if self.colour_by.currentText() == BY_FREQUENCY and res.get("counts") is not None:
            counts = np.log10(np.asarray(res["counts"], dtype=np.float64) + 1)
            t = counts / (counts.max() or 1.0)
            cmap = pg.colormap.get("viridis")
            brushes = [pg.mkBrush(c) for c in cmap.map(t, mode="qcolor")]
            self.legend.setText(
                "Colour: how often the token occurs in the corpus (log scale, dark = rare, yellow = frequent)."
            )
        else:
            brushes = [pg.mkBrush(QColor(*KIND_COLOURS.get(k, (150, 150, 150)))) for k in res["kinds"]]
            present = [k for k in KIND_COLOURS if k in set(res["kinds"])]
            self.legend.setText(
                "Colour: "
                + " &nbsp; ".join(
                    f"<span style='color:rgb{KIND_COLOURS[k]}'>&#9679;</span> {k}" for k in present
                )
            )
        self.scatter.setBrush(brushes)

    def clear(self) -> None:
        self.result = None
        self.scatter.clear()
        self.ring.clear()
        for item in self.labels:
            self.plot.removeItem(item)
        self.labels = []
        self.caption.setText("")
        self.readout.setText(" ")

    # ---- search and hover ---------------------------------------------------------------------------
    def point_text(self, i: int) -> str:
        res = self.result
        assert res is not None
        near = ", ".join(
            f"{res['labels'][j]!r} {float(s):.2f}"
            for j, s in zip(res["neighbours"][i], res["similarity"][i], strict=True)
        )
        count = "" if res.get("counts") is None else f", {int(res['counts'][i]):,} times in the corpus"
        return f"{res['labels'][i]!r} (id {i}, {res['kinds'][i]}{count}); nearest by cosine: {near}"

    def find(self, text: str) -> int:
        """Ring the token whose label is ``text`` (else the first containing it); returns its id or -1."""
        self.found = -1
        self.ring.clear()
        res = self.result
        if res is None or not text:
            return -1
        labels = res["labels"]
        hit = next((i for i, lab in enumerate(labels) if lab == text), -1)
        if hit < 0:
            hit = next((i for i, lab in enumerate(labels) if text in lab), -1)
        if hit < 0:
            self.readout.setText(f"No token matches {text!r}.")
            return -1
        x, y = res["coords"][hit]
        self.ring.setData(x=[x], y=[y])
        self.found = hit
        self.readout.setText(self.point_text(hit))
        return hit

    def point_position(self, i: int):
        """Widget point of token ``i`` (tests hover there)."""
        x, y = self.result["coords"][i] if self.result is not None else (0.0, 0.0)
        scene = self.plot.getPlotItem().getViewBox().mapViewToScene(QPointF(float(x), float(y)))
        return self.plot.mapFromScene(scene)

    def _on_mouse_moved(self, pos) -> None:
        res = self.result
        if res is None:
            return
        vb = self.plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(pos):
            return
        xy = res["coords"]
        at = vb.mapSceneToView(pos)
        sx, sy = vb.viewPixelSize()  # view units per pixel: distances in pixels, vectorised
        d = np.hypot((xy[:, 0] - at.x()) / (sx or 1.0), (xy[:, 1] - at.y()) / (sy or 1.0))
        i = int(np.argmin(d))
        if d[i] <= _HOVER_PX:
            text = self.point_text(i)
            self.readout.setText(text)
            self.plot.setToolTip(text)
            self.hovered.emit(text)
