"""The logit-lens grid: what the model would predict after each layer (rows) at each position (columns).

Each cell shows the top prediction written in it, coloured by its probability (viridis, 0 to 1); a
white frame marks a cell whose top prediction is the text's actual next token. The model's own output
is the top row, the embedding the bottom one, so reading upwards follows the computation. Hovering a
cell shows its five likeliest tokens and the actual next token's probability (``readout`` and a tooltip).
Takes the plain dict of ``SessionController.lens_ready``.
"""

from __future__ import annotations

import csv

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QToolTip, QWidget

from lmstudio.ui.widgets.matrix_plots import MatrixPlots, token_ticks

# cells with more text than this are left unwritten (hover still tells): labels would overlap
_MAX_WRITTEN = 1600
_MAX_TICKS = 64


class LensGrid(MatrixPlots):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent, readout_lines=2)
        self.result: dict | None = None
        self.order: list[int] = []  # displayed row i shows result row order[i] (output on top)
        self.plot: pg.PlotItem | None = None
        self.image: pg.ImageItem | None = None
        self.texts: list[pg.TextItem] = []

    # ---- content ---------------------------------------------------------------------------------
    def set_lens(self, result: dict) -> None:
        self.clear_plots()
        self.result = result
        R, T, _ = result["top_probs"].shape
        self.order = list(range(R))[::-1]
        probs = result["top_probs"][self.order, :, 0].astype(np.float32)  # (R, T)
        plot = self.add_plot(0, 0)
        plot.setMouseEnabled(x=False, y=False)
        image = self.add_image(plot, probs, (0.0, 1.0), "viridis")
        plot.getAxis("left").setTicks(token_ticks([result["rows"][r] for r in self.order], _MAX_TICKS))
        plot.getAxis("bottom").setTicks(token_ticks(result["tokens"], _MAX_TICKS))
        nexts = [result["labels"].get(int(n), "") if n >= 0 else "?" for n in result["target_ids"]]
        plot.showAxis("top")
        plot.getAxis("top").setTicks(token_ticks([f"\u2192{n}" for n in nexts], _MAX_TICKS))
        plot.getAxis("top").setLabel("actual next token")
        plot.getAxis("bottom").setLabel("input token")
        correct = result["correct"][self.order]  # (R, T)
        ys, xs = np.nonzero(correct)
        if len(xs):
            frames = pg.ScatterPlotItem(
                x=xs + 0.5,
                y=ys + 0.5,
                symbol="s",
                size=1.0,
                pxMode=False,
                brush=None,
                pen=pg.mkPen("w", width=2),
            )
            frames.setZValue(5)
            plot.addItem(frames)
        self.texts = []
        if R * T <= _MAX_WRITTEN:
            for i, r in enumerate(self.order):
                for t in range(T):
                    p = float(result["top_probs"][r, t, 0])
                    label = result["labels"].get(int(result["top_ids"][r, t, 0]), "")
                    item = pg.TextItem(
                        label, color=(0, 0, 0) if p > 0.6 else (255, 255, 255), anchor=(0.5, 0.5)
                    )
                    item.setPos(t + 0.5, i + 0.5)
                    item.setZValue(10)
                    plot.addItem(item)
                    self.texts.append(item)
        self.add_colorbar([image], (0.0, 1.0), "viridis", "probability of the top prediction", 1, 1)
        self.plot, self.image = plot, image
        what = (
            "the output head on each layer's hidden state"
            if result["kind"] == "layer readout"
            else ("the final LayerNorm and output head on the residual stream after each block")
        )
        self.caption.setText(
            f"{result['kind'].capitalize()}: what the model would predict next if it stopped at each layer "
            f"({what}). Each cell shows the top prediction, coloured by its probability; a white frame "
            "means it is the text's actual next token. The top row is the model's real output. Hover a "
            "cell for the five likeliest tokens."
        )
        self.readout.setText(" ")

    def save_csv(self, path: str) -> None:
        """The lens as CSV, the columns of ``lmstudio inspect --what lens``: row, position, token,
        actual_next, p_actual_next, then top1, p_top1, ... for every row and position."""
        res = self.result
        if res is None:
            return
        k = res["top_ids"].shape[-1]
        labels = res["labels"]
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            head = ["row", "position", "token", "actual_next", "p_actual_next"]
            w.writerow(head + [c for j in range(k) for c in (f"top{j + 1}", f"p_top{j + 1}")])
            for r, name in enumerate(res["rows"]):
                for t, token in enumerate(res["tokens"]):
                    nxt = int(res["target_ids"][t])
                    p_next = f"{float(res['target_probs'][r, t]):.6g}" if nxt >= 0 else ""
                    line = [name, t, token, labels.get(nxt, "") if nxt >= 0 else "", p_next]
                    for j in range(k):
                        line += [
                            labels.get(int(res["top_ids"][r, t, j]), ""),
                            f"{float(res['top_probs'][r, t, j]):.6g}",
                        ]
                    w.writerow(line)

    def clear(self) -> None:
        self.clear_plots()
        self.result, self.plot, self.image, self.texts, self.order = None, None, None, [], []
        self.caption.setText("")
        self.readout.setText(" ")

    # ---- hover ----------------------------------------------------------------------------------
    def cell_shape(self, k: int) -> tuple[int, int]:
        return (len(self.order), len(self.result["tokens"])) if self.result is not None else (0, 0)

    def cell_text(self, k: int, row: int, col: int) -> str:
        """The hover text of displayed cell (row, col); row 0 is the model's output."""
        res = self.result
        assert res is not None
        r = self.order[row]
        labels = res["labels"]
        top = ", ".join(
            f"{labels.get(int(i), '')!r} {float(p):.3f}"
            for i, p in zip(res["top_ids"][r, col], res["top_probs"][r, col], strict=True)
        )
        nxt = int(res["target_ids"][col])
        actual = (
            f"actual next {labels.get(nxt, '')!r}: p = {float(res['target_probs'][r, col]):.3f}"
            if nxt >= 0
            else "the text ends here"
        )
        return f"{res['rows'][r]}, after {res['tokens'][col]!r} ({col}): {top}. {actual}"

    def show_hover(self, text: str, pos) -> None:
        self.view.setToolTip(text.replace(": ", ":\n", 1).replace(". actual", ".\nactual"))
        if self.view.underMouse():
            QToolTip.showText(self.view.mapToGlobal(self.view.mapFromScene(pos)), self.view.toolTip())
        super().show_hover(text, pos)
