"""PNG and CSV files of the logit lens and the embedding map, for the CLI (pure numpy, like export.py).

The pictures use export.py's colour map and built-in 6x10 ASCII font (other characters drawn as '?');
the CSVs carry every label in full (UTF-8).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from lmstudio import matrix_export as export
from lmstudio.engine.embeddings import KINDS, EmbeddingMap
from lmstudio.engine.lens import Lens

_GW, _GH = 6, 10  # glyph size of export's font
KIND_RGB = export.KIND_RGB


def _ascii(label: str, n: int) -> str:
    label = label.replace("\u2423", "_")  # the visible space reads as '_' in the ASCII font
    return label if len(label) <= n else label[: n - 1] + "~"


# ---- logit lens ----------------------------------------------------------------------------------------
def save_lens_csv(lens: Lens, path: str | Path) -> Path:
    """One line per (row, position): the input token, the actual next token and its probability, and the
    top predictions with their probabilities."""
    k = lens.top_ids.shape[-1]
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        head = ["row", "position", "token", "actual_next", "p_actual_next"]
        w.writerow(head + [c for j in range(k) for c in (f"top{j + 1}", f"p_top{j + 1}")])
        for r, name in enumerate(lens.rows):
            for t, token in enumerate(lens.tokens):
                nxt = int(lens.target_ids[t])
                p_next = float(lens.target_probs[r, t])
                line = [
                    name,
                    t,
                    token,
                    lens.label(nxt) if nxt >= 0 else "",
                    f"{p_next:.6g}" if nxt >= 0 else "",
                ]
                for j in range(k):
                    line += [lens.label(lens.top_ids[r, t, j]), f"{float(lens.top_probs[r, t, j]):.6g}"]
                w.writerow(line)
    return path


def save_lens_png(lens: Lens, path: str | Path, chars: int = 3) -> Path:
    """The lens grid: rows from the output (top) down to the embedding, one column per position, each
    cell coloured by its top prediction's probability with that prediction written in it; a black frame
    marks a cell whose top prediction is the actual next token. Column labels: "token>next"."""
    R, T, _ = lens.top_probs.shape
    cw, ch = chars * _GW + 4, _GH + 6
    pad = 4
    order = list(range(R))[::-1]  # the model's output on top, as in the window
    names = [lens.rows[r] for r in order]
    cols = [
        f"{_ascii(tok, 6)}>{_ascii(lens.label(n), 6) if n >= 0 else '?'}"
        for tok, n in zip(lens.tokens, lens.target_ids.tolist(), strict=True)
    ]
    caption = (
        f"{lens.kind}: colour = probability of the top prediction (written in the cell); frame = correct"
    )
    left = pad + max(map(len, names)) * _GW + pad
    top = pad + _GH + pad
    bottom = pad + max(map(len, cols)) * _GW + pad
    bar_w, right = 12, pad + 12 + pad + 4 * _GW + pad
    width = max(left + T * cw + right, pad + len(caption) * _GW + pad)
    height = max(top + R * ch + bottom, top + 2 * _GH + bottom)
    canvas = np.full((height, width, 3), 255, np.uint8)
    colours = export.colorize(lens.top_probs[order, :, 0], 0.0, 1.0)  # (R, T, 3)
    correct = lens.correct[order]
    for i in range(R):
        for t in range(T):
            y, x = top + i * ch, left + t * cw
            canvas[y : y + ch - 1, x : x + cw - 1] = colours[i, t]
            if correct[i, t]:
                canvas[y : y + ch - 1, x : x + 2] = 0
                canvas[y : y + ch - 1, x + cw - 3 : x + cw - 1] = 0
                canvas[y : y + 2, x : x + cw - 1] = 0
                canvas[y + ch - 3 : y + ch - 1, x : x + cw - 1] = 0
            ink = (0, 0, 0) if float(lens.top_probs[order[i], t, 0]) > 0.6 else (255, 255, 255)
            label = _ascii(lens.label(lens.top_ids[order[i], t, 0]), chars)
            export._stamp(canvas, export.text_bitmap(label), y + 3, x + 2, ink)
        bitmap = export.text_bitmap(names[i])
        export._stamp(canvas, bitmap, top + i * ch + 3, left - pad - bitmap.shape[1])
    for t, label in enumerate(cols):
        export._stamp(canvas, export.text_bitmap(label, vertical=True), top + R * ch + pad, left + t * cw + 8)
    bar_left = left + T * cw + pad
    ramp = np.linspace(1.0, 0.0, R * ch)[:, None].repeat(bar_w, axis=1)
    canvas[top : top + R * ch, bar_left : bar_left + bar_w] = export.colorize(ramp, 0.0, 1.0)
    export._stamp(canvas, export.text_bitmap("1"), top, bar_left + bar_w + pad)
    export._stamp(canvas, export.text_bitmap("0"), top + R * ch - _GH, bar_left + bar_w + pad)
    export._stamp(canvas, export.text_bitmap(caption), pad, pad)
    text = {
        "Description": caption,
        "rows": json.dumps(names, ensure_ascii=False),
        "cols": json.dumps(lens.tokens, ensure_ascii=False),
    }
    path = Path(path)
    path.write_bytes(export.encode_png(canvas, text))
    return path


# ---- embedding map -----------------------------------------------------------------------------------
def save_embeddings_csv(emb: EmbeddingMap, path: str | Path) -> Path:
    """One line per token: id, label, kind, count, the two PCA coordinates and the nearest neighbours."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "token", "kind", "count", "pc1", "pc2", "neighbours"])
        for i, label in enumerate(emb.labels):
            near = " ".join(
                f"{emb.labels[j]}:{s:.3f}" for j, s in zip(emb.neighbours[i], emb.similarity[i], strict=True)
            )
            count = "" if emb.counts is None else int(emb.counts[i])
            w.writerow(
                [i, label, emb.kinds[i], count, f"{emb.coords[i, 0]:.6g}", f"{emb.coords[i, 1]:.6g}", near]
            )
    return path


def save_embeddings_png(emb: EmbeddingMap, path: str | Path, size: int = 640, max_labels: int = 200) -> Path:
    """The map as a scatter plot: a dot per token coloured by kind, the labels of the ``max_labels`` most
    frequent tokens (the first ids without counts), a legend of the kinds and the variance explained."""
    pad, legend_w = 8, 16 * _GW
    caption = (
        f"{emb.which} embedding, PCA: PC1 {emb.explained[0]:.0%} and PC2 {emb.explained[1]:.0%} of the variance"
        + (" (tied: one matrix)" if emb.tied else "")
    )
    top = pad + _GH + pad
    width = max(pad + size + pad + legend_w + pad, pad + len(caption) * _GW + pad)
    height = top + size + pad
    canvas = np.full((height, width, 3), 255, np.uint8)
    canvas[top : top + size, pad : pad + size] = 245
    xy = emb.coords
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    px = (pad + 6 + (xy[:, 0] - lo[0]) / span[0] * (size - 12)).astype(int)
    py = (top + 6 + (hi[1] - xy[:, 1]) / span[1] * (size - 12)).astype(int)  # up is positive
    for i in range(len(emb.labels)):
        canvas[py[i] - 1 : py[i] + 2, px[i] - 1 : px[i] + 2] = KIND_RGB.get(emb.kinds[i], (150, 150, 150))
    order = np.argsort(-emb.counts, kind="stable") if emb.counts is not None else np.arange(len(emb.labels))
    for i in order[:max_labels]:
        export._stamp(
            canvas, export.text_bitmap(_ascii(emb.labels[i], 6)), py[i] - _GH // 2, px[i] + 3, (40, 40, 40)
        )
    y = top
    present = [k for k in KINDS if k in set(emb.kinds)]
    for kind in present:
        x = pad + size + pad
        canvas[y + 2 : y + 8, x : x + 6] = KIND_RGB[kind]
        export._stamp(canvas, export.text_bitmap(kind), y, x + 10)
        y += _GH + 4
    export._stamp(canvas, export.text_bitmap(caption), pad, pad)
    text = {"Description": caption, "labels": json.dumps(emb.labels, ensure_ascii=False)}
    path = Path(path)
    path.write_bytes(export.encode_png(canvas, text))
    return path
