"""PNG and CSV files of the logit lens and the embedding map, for the CLI.

The pictures are drawn with Pillow through ``lmstudio.matrix_images`` (its colour map and font: a CJK font
when one is installed, a character the font lacks written as U+XXXX); the CSVs carry every label in full
(UTF-8), and so do the PNGs' text chunks.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lmstudio import matrix_images as images
from lmstudio.engine.embeddings import KINDS, EmbeddingMap
from lmstudio.engine.lens import Lens
from lmstudio.matrix_export import KIND_RGB, colorize

PAD = images.PAD


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
    font = images.default_fonts()
    lh = images.line_height(font)
    order = list(range(R))[::-1]  # the model's output on top, as in the window
    names = [lens.rows[r] for r in order]
    cols = [
        images.readable(f"{tok[:6]}>{lens.label(n)[:6] if n >= 0 else '?'}", font, None)
        for tok, n in zip(lens.tokens, lens.target_ids.tolist(), strict=True)
    ]
    probs = lens.top_probs[order, :, 0]  # (R, T)
    inside = [
        [images.readable(lens.label(lens.top_ids[r, t, 0]), font, chars) for t in range(T)] for r in order
    ]
    caption = (
        f"{lens.kind}: colour = probability of the top prediction (written in the cell); frame = correct"
    )
    cw = max([images.text_width(x, font) for row in inside for x in row] + [lh]) + 6
    ch = lh + 6
    left = PAD + max(images.text_width(n, font) for n in names) + PAD
    top = PAD + lh + PAD
    bottom = PAD + max(images.text_width(c, font) for c in cols) + PAD
    bar_w = 12
    right = PAD + bar_w + 4 + images.text_width("0.0", font) + PAD
    width = max(left + T * cw + right, PAD + images.text_width(caption, font) + PAD)
    height = max(top + R * ch + bottom, top + 2 * lh + bottom)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    colours = colorize(probs, 0.0, 1.0)  # (R, T, 3)
    correct = lens.correct[order]
    for i in range(R):
        y = top + i * ch
        for t in range(T):
            x = left + t * cw
            draw.rectangle((x, y, x + cw - 2, y + ch - 2), fill=tuple(int(v) for v in colours[i, t]))
            if correct[i, t]:
                draw.rectangle((x, y, x + cw - 2, y + ch - 2), outline=(0, 0, 0), width=2)
            ink = (0, 0, 0) if float(probs[i, t]) > 0.6 else (255, 255, 255)
            images.draw_text(image, (x + 3, y + 3), inside[i][t], font, ink)
        images.draw_text(image, (left - PAD - images.text_width(names[i], font), y + 3), names[i], font)
    for t, label in enumerate(cols):
        images.draw_text(
            image, (left + t * cw + (cw - lh) // 2, top + R * ch + PAD), label, font, vertical=True
        )
    bar_left = left + T * cw + PAD
    images.colour_bar(image, (bar_left, top, bar_left + bar_w, top + max(R * ch, 2 * lh)), 0.0, 1.0, font)
    images.draw_text(image, (PAD, PAD), caption, font)
    image.info.update(
        Description=caption,
        rows=json.dumps(names, ensure_ascii=False),
        cols=json.dumps(lens.tokens, ensure_ascii=False),
    )
    return images.save_png(image, path)


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
    font = images.default_fonts()
    lh = images.line_height(font)
    caption = (
        f"{emb.which} embedding, PCA: PC1 {emb.explained[0]:.0%} and PC2 {emb.explained[1]:.0%} of the variance"
        + (" (tied: one matrix)" if emb.tied else "")
    )
    present = [k for k in KINDS if k in set(emb.kinds)]
    legend_w = 14 + max(images.text_width(k, font) for k in present)
    top = PAD + lh + PAD
    width = max(PAD + size + PAD + legend_w + PAD, PAD + images.text_width(caption, font) + PAD)
    height = max(top + size + PAD, top + len(present) * (lh + 4) + PAD)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((PAD, top, PAD + size - 1, top + size - 1), fill=(245, 245, 245))
    xy = emb.coords
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    px = (PAD + 6 + (xy[:, 0] - lo[0]) / span[0] * (size - 12)).astype(int)
    py = (top + 6 + (hi[1] - xy[:, 1]) / span[1] * (size - 12)).astype(int)  # up is positive
    for i in range(len(emb.labels)):
        draw.rectangle(
            (px[i] - 1, py[i] - 1, px[i] + 1, py[i] + 1), fill=KIND_RGB.get(emb.kinds[i], KIND_RGB["mixed"])
        )
    order = np.argsort(-emb.counts, kind="stable") if emb.counts is not None else np.arange(len(emb.labels))
    for i in order[:max_labels]:
        images.draw_text(
            image, (px[i] + 3, py[i] - lh // 2), images.readable(emb.labels[i], font, 6), font, (40, 40, 40)
        )
    x, y = PAD + size + PAD, top
    for kind in present:
        draw.rectangle((x, y + 3, x + 7, y + 10), fill=KIND_RGB[kind])
        images.draw_text(image, (x + 12, y), kind, font)
        y += lh + 4
    images.draw_text(image, (PAD, PAD), caption, font)
    image.info.update(Description=caption, labels=json.dumps(emb.labels, ensure_ascii=False))
    return images.save_png(image, path)
