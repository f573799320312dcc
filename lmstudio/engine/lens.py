"""What the model would predict after each layer: the logit lens (Transformer, convolutional) and layer
readout (recurrent).

For a Transformer (and the causal convolutional model, whose blocks add to a residual stream too) the
output head (final LayerNorm, then ``lm_head``) is applied to the residual stream entering the first
block and leaving every block (nostalgebraist's "logit lens", 2020): the last row is
the model's own prediction, the rows above show how it forms layer by layer. For a recurrent model the
output head reads each layer's hidden state; the embeddings get a row too when they are as wide as the
hidden state (``n_embd == hidden_size``). Lower recurrent layers were never trained to be read by the
head, so their rows show what the head makes of them, not what the layer "means".

The states come from ``model.layer_states`` (the same fast path as ``forward``), so the last row equals
the model's logits exactly. Everything returned is numpy or plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmstudio.engine.inspect import InspectError, _idx, fit_to_context
from lmstudio.engine.inspect import labels as token_labels


@dataclass(frozen=True)
class Lens:
    kind: str  # "logit lens" (Transformer) or "layer readout" (recurrent)
    tokens: list[str]  # display labels of the input tokens (T)
    rows: list[str]  # one name per readout row, bottom of the model first: "embedding", "block 1", ...
    top_ids: np.ndarray  # (R, T, k) int64: the k likeliest next tokens after each row at each position
    top_probs: np.ndarray  # (R, T, k) float32, best first
    target_ids: np.ndarray  # (T,) int64: the actual next token of the text, -1 after its last token
    target_probs: np.ndarray  # (R, T) float32: each row's probability of the actual next token (NaN: none)
    labels: dict[int, str]  # display label of every id in top_ids and target_ids
    note: str  # why the text was cut, or ""

    def label(self, token_id: int) -> str:
        return self.labels.get(int(token_id), "")

    @property
    def correct(self) -> np.ndarray:
        """(R, T) bool: the row's top prediction is the actual next token."""
        return self.top_ids[:, :, 0] == self.target_ids[None, :]


# models whose layers add to one residual stream, read by the final LayerNorm and the head
RESIDUAL = ("transformer", "conv")


def _row_names(session, n_states: int) -> list[str]:
    if session.config.model.arch in RESIDUAL:
        return ["embedding"] + [f"block {i}" for i in range(1, n_states)]
    return ["embedding"] + [f"layer {i}" for i in range(1, n_states)]


@torch.inference_mode()
def readouts(session, ids: list[int]) -> tuple[list[str], list[torch.Tensor]]:
    """Row names and float32 logits (T, V) of every readout row for ``ids`` (at most ``block_size``)."""
    model = session.model
    states = model.layer_states(_idx(session, ids))
    width = _head_width(model)
    names, logits = [], []
    for name, x in zip(_row_names(session, len(states)), states, strict=True):
        if x.size(-1) != width:
            continue  # recurrent embeddings narrower or wider than the hidden state: the head cannot read them
        names.append(name)
        logits.append(model.readout(x)[0].float())  # (T, V)
    return names, logits


def _head_width(model) -> int:
    head = getattr(model, "lm_head", None) or model.head
    return int(head.weight.shape[1])


@torch.inference_mode()
def logit_lens(session, text: str, n_top: int = 5) -> Lens:
    """The top ``n_top`` predictions of every layer at every position of ``text`` (cut to the context)."""
    if n_top < 1:
        raise InspectError("The lens needs at least one prediction per cell (n_top >= 1).")
    fitted = fit_to_context(session, text, extra=1)  # one token past the context: the last target
    block = session.model.block_size
    ids = fitted.ids[:block]
    targets = np.full(len(ids), -1, dtype=np.int64)
    following = fitted.ids[1 : block + 1]
    targets[: len(following)] = following
    names, logits = readouts(session, ids)
    k = min(n_top, logits[0].size(-1))
    known = targets >= 0
    gather = torch.tensor(np.where(known, targets, 0), device=logits[0].device).unsqueeze(-1)  # (T, 1)
    top_probs: list[np.ndarray] = []
    ranked: list[np.ndarray] = []
    target_probs: list[np.ndarray] = []
    for row in logits:  # one row at a time: (T, V) probabilities, never (R, T, V) at once
        probs = torch.softmax(row, dim=-1)
        p, i = torch.topk(probs, k, dim=-1)  # (T, k)
        top_probs.append(p.cpu().numpy())
        ranked.append(i.cpu().numpy())
        target_probs.append(np.where(known, probs.gather(-1, gather)[:, 0].cpu().numpy(), np.nan))
    top_ids = np.stack(ranked).astype(np.int64)  # (R, T, k)
    tok = session.tokenizer
    wanted = set(top_ids.ravel().tolist()) | {int(t) for t in targets if t >= 0}
    n_shown = len(ids)
    note = fitted.note if fitted.total > block else ""
    if fitted.total > block + 1:
        note = (
            f"Showing the first {n_shown} of {fitted.total} tokens: the model reads at most {block} "
            f"tokens at once (its context length)."
        )
    return Lens(
        kind="logit lens" if session.config.model.arch in RESIDUAL else "layer readout",
        tokens=token_labels(session.tokenizer, fitted)[:n_shown],
        rows=names,
        top_ids=top_ids,
        top_probs=np.stack(top_probs).astype(np.float32),
        target_ids=targets,
        target_probs=np.stack(target_probs).astype(np.float32),
        labels={i: tok.id_to_token(i) for i in sorted(wanted)},
        note=note,
    )


def lens_table(lens: Lens) -> tuple[np.ndarray, list[str], list[str]]:
    """The lens as a matrix for CSV: one row per (readout row, position) with the top predictions and
    the actual next token's probability; returns (values, row labels, column labels)."""
    R, T, k = lens.top_probs.shape
    values = np.concatenate(
        [lens.top_probs.reshape(R * T, k), lens.target_probs.reshape(R * T, 1)], axis=1
    ).astype(np.float64)
    row_labels = [
        f"{name} | pos {t} {lens.tokens[t]} -> "
        + " ".join(lens.label(i) for i in lens.top_ids[r, t])
        + f" | next {lens.label(lens.target_ids[t]) if lens.target_ids[t] >= 0 else '?'}"
        for r, name in enumerate(lens.rows)
        for t in range(T)
    ]
    cols = [f"p_top{j + 1}" for j in range(k)] + ["p_actual_next"]
    return values, row_labels, cols
