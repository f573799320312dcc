"""How the Inspect tab draws a view, shared by its live mode (``inspector.py``: computed from a checkpoint)
and its time-lapse (``timelapse.py``: read from the frames recorded while training).

Plain functions from arrays to widgets (attention maps (L, H, T, T), recurrent signals {name: (L, T, width)},
per-token loss rows) and to CSV files.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from lmstudio import matrix_export
from lmstudio.ui.widgets.heatmap import Heatmap
from lmstudio.ui.widgets.token_text import TokenText, legend, strength_from_prob

ATTENTION, ACTIVATIONS, LOSS = "Attention", "Hidden states and gates", "Per-token loss"
ALL_HEADS = "All heads (grid)"

ATTENTION_CAPTION = (
    "Colour = attention weight: how much each query token (row) attends to each key token "
    "(column); every row sums to 1. Grey above the diagonal is the causal mask: a token "
    "never sees the tokens after it."
)
SIGNAL_CAPTIONS = {
    "hidden": "Colour = hidden-state value of each unit (row) after reading each token (column).",
    "cell": "Colour = LSTM memory cell c of each unit (row) after each token (column): what it carries forward.",
    "gate.input": "Colour = input gate (0 closed ... 1 open): how much of the new candidate is written to memory.",
    "gate.forget": "Colour = forget gate (0 forget ... 1 keep): how much of the old memory survives each step.",
    "gate.output": "Colour = output gate (0 closed ... 1 open): how much of the memory is shown as the hidden state.",
    "gate.cell": "Colour = candidate value g (-1 ... 1) the LSTM may write into its memory.",
    "gate.reset": "Colour = reset gate (0 ... 1): how much of the previous state feeds the new candidate.",
    "gate.update": "Colour = update gate (0 take the new candidate ... 1 keep the old state).",
    "gate.new": "Colour = candidate state n (-1 ... 1) the GRU blends in.",
    "gate.glu": "Colour = the gated linear unit's gate (0 closed ... 1 open): how much of each convolution "
    "channel (row) passes at each token (column).",
    "reach": "Lit = the tokens (columns) this layer's output at each position (row) can see: its receptive "
    "field. It grows layer by layer; the first positions of a text see only as far back as its start.",
}


def attention_matrices(weights: np.ndarray, layer: int, head: str) -> list[np.ndarray]:
    """The heads shown of ``weights`` (L, H, T, T) at ``layer``: all (``ALL_HEADS``) or head "1", "2", ...;
    float32 with the causal mask (above the diagonal) as NaN."""
    w = weights[min(max(0, layer), len(weights) - 1)]  # (H, T, T)
    T = w.shape[-1]
    masked = w.astype(np.float32)  # a copy: the caller's array stays as it is
    rows, cols = np.triu_indices(T, 1)
    masked[:, rows, cols] = np.nan
    return list(masked) if head == ALL_HEADS or not head else [masked[int(head) - 1]]


def signal_matrix(maps: dict, name: str, layer: int, tokens: list[str]):
    """(matrix, row labels, column labels) of signal ``name`` at ``layer``; ``maps[name]`` is (L, T, width).
    None when the run has no such signal."""
    per_layer = maps.get(name)
    if per_layer is None or len(per_layer) == 0:
        return None
    m = np.asarray(per_layer[min(max(0, layer), len(per_layer) - 1)], dtype=np.float32)
    if name == "reach":  # (T, T) position x input token, shown like an attention map
        return m, tokens, tokens
    m = m.T  # (T, width) -> (width, T): one row per unit
    return m, [f"unit {i}" for i in range(m.shape[0])], tokens


def show_attention(
    heatmap: Heatmap, matrices: list[np.ndarray], tokens: list[str], head: str, layer: int
) -> None:
    titles = [f"head {h + 1}" for h in range(len(matrices))] if head == ALL_HEADS else [f"head {head}"]
    top = max(float(np.nanmax(m)) for m in matrices)
    heatmap.set_grid(
        matrices,
        tokens,
        tokens,
        titles=titles,
        levels=(0.0, max(top, 1e-6)),
        caption=ATTENTION_CAPTION + f" Layer {layer + 1}.",
        row_name="query",
        col_name="key",
        bar_label="attention weight",
    )


def show_signal(heatmap: Heatmap, shown, name: str, layer: int, arch: str) -> None:
    """``shown``: what ``signal_matrix`` returned."""
    m, rows, cols = shown
    reach = name == "reach"
    gate = reach or (name.startswith("gate.") and name not in ("gate.cell", "gate.new"))
    bound = float(np.nanmax(np.abs(m))) or 1.0
    caption = SIGNAL_CAPTIONS.get(name, f"Colour = {name}.")
    if name == "hidden" and arch in ("transformer", "conv"):
        caption = "Colour = the residual stream (the block's output) of each dimension (row) at each token (column)."
    heatmap.set_matrix(
        m,
        rows,
        cols,
        levels=(0.0, 1.0) if gate else (-bound, bound),
        cmap="viridis" if gate else "CET-D1",
        caption=caption,
        row_name="position" if reach else "unit",
        col_name="input token" if reach else "token",
        bar_label=name,
        title=f"layer {layer + 1}: {name}",
    )


def show_token_losses(text: TokenText, first: str, rows: list[dict]) -> str:
    """Fill ``text`` with the per-token loss rows ({token, loss, prob, top: [(label, p)], unk}) after the
    plain ``first`` token; returns the summary line (mean loss and perplexity)."""
    text.clear_tokens(first)
    for r in rows:
        alts = "\n".join(f"  {t}  {p:.3f}" for t, p in r["top"])
        text.append_token(
            r["token"],
            strength_from_prob(r["prob"]),
            f"p = {r['prob']:.3f}, loss = {r['loss']:.2f} nats\nlikeliest here:\n{alts}",
            unk=r.get("unk", False),
        )
    if not rows:
        return ""
    mean = float(np.mean([r["loss"] for r in rows]))
    return (
        f"{len(rows)} predictions: mean loss {mean:.3f} nats, perplexity {np.exp(mean):.2f}. "
        "Hover a token for details."
    )


def set_items(combo: QComboBox, items: list[str], *, keep: bool = True) -> None:
    """Offer ``items`` (without signals: the caller redraws once); ``keep``: the choice stays if offered.
    Nothing changes when the items are the ones offered already."""
    if [combo.itemText(i) for i in range(combo.count())] == items:
        return
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(items)
    if keep and current in items:
        combo.setCurrentText(current)
    combo.blockSignals(False)


def save_matrices_csv(matrices: list[np.ndarray], rows: list[str], cols: list[str], path: str) -> None:
    """The heatmap's numbers; all heads stacked, each row labelled with its head."""
    if len(matrices) > 1:
        labels = [f"head {h + 1}: {r}" for h in range(len(matrices)) for r in rows]
        matrix_export.save_matrix_csv(np.concatenate(matrices, axis=0), path, labels, cols)
    else:
        matrix_export.save_matrix_csv(matrices[0], path, rows, cols)


def save_losses_csv(rows: list[dict], path: str) -> None:
    losses = np.array([[r["loss"], r["prob"]] for r in rows])
    matrix_export.save_matrix_csv(losses, path, [r["token"] for r in rows], ["loss_nats", "prob"])


# ---- widgets both modes lay out alike ----------------------------------------------------------------
class ViewChoice:
    """The Show / Layer / Head / Signal choosers and their row (``row``; more widgets may be added to it)."""

    def __init__(self) -> None:
        self.view, self.layer, self.head, self.signal = QComboBox(), QComboBox(), QComboBox(), QComboBox()
        self.signal.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.signal.setMinimumContentsLength(11)
        self.row = QHBoxLayout()
        for label, combo in (
            ("Show", self.view),
            ("Layer", self.layer),
            ("Head", self.head),
            ("Signal", self.signal),
        ):
            self.row.addWidget(QLabel(label))
            self.row.addWidget(combo)
        self.row.addStretch(1)

    def combos(self) -> tuple[QComboBox, QComboBox, QComboBox, QComboBox]:
        return self.view, self.layer, self.head, self.signal

    def enable_for(self, view: str) -> None:
        """Only the choosers that apply to ``view``."""
        self.head.setEnabled(view == ATTENTION)
        self.layer.setEnabled(view in (ATTENTION, ACTIVATIONS))
        self.signal.setEnabled(view == ACTIVATIONS)


def loss_page(text: TokenText, summary: QLabel) -> QWidget:
    """The per-token loss view: a summary line, the coloured text, the colours' legend."""
    page = QWidget()
    layout = QVBoxLayout(page)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(summary)
    layout.addWidget(text, 1)
    layout.addWidget(
        legend(
            "background: how unlikely the model found the actual next token "
            "(hover for its probability and the alternatives)"
        )
    )
    return page
