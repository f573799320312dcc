"""A matrix (an attention map, activations over time) as a labelled CSV, and the colours the pictures
of it use: the viridis map, the grey of masked cells, the token kinds' palette.

Pure numpy (the shared layer: no Qt, no torch), so the CLI writes tables headless and the UI writes them
without reaching into the engine. The pictures themselves are drawn with Pillow in ``matrix_images``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

# one colour per token kind (Okabe-Ito, readable by the colour-blind), grey for "mixed": the embedding
# map's palette, shared by the app's view and the CLI's PNG
KIND_RGB = {
    "letter": (0, 114, 178),
    "digit": (230, 159, 0),
    "space": (86, 180, 233),
    "punctuation": (213, 94, 0),
    "CJK": (0, 158, 115),
    "byte": (204, 121, 167),
    "unknown": (0, 0, 0),
    "mixed": (150, 150, 150),
}

# matplotlib's viridis at 11 evenly spaced points: perceptually uniform, readable in grey and by the colour-blind
VIRIDIS = np.array(
    [
        (0x44, 0x01, 0x54),
        (0x48, 0x24, 0x75),
        (0x41, 0x44, 0x87),
        (0x35, 0x5F, 0x8D),
        (0x2A, 0x78, 0x8E),
        (0x21, 0x91, 0x8C),
        (0x22, 0xA8, 0x84),
        (0x44, 0xBF, 0x70),
        (0x7A, 0xD1, 0x51),
        (0xBD, 0xDF, 0x26),
        (0xFD, 0xE7, 0x25),
    ],
    dtype=np.float64,
)
NAN_RGB = (200, 200, 200)  # masked cells (NaN, the causal future of attention)


def colorize(
    matrix: np.ndarray, vmin: float | None = None, vmax: float | None = None, stops: np.ndarray = VIRIDIS
) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 colours; NaN -> grey. Range defaults to the finite min/max."""
    m = np.asarray(matrix, dtype=np.float64)
    finite = np.isfinite(m)
    lo = float(np.min(m[finite])) if vmin is None and finite.any() else (vmin if vmin is not None else 0.0)
    hi = float(np.max(m[finite])) if vmax is None and finite.any() else (vmax if vmax is not None else 1.0)
    scale = (hi - lo) or 1.0
    t = np.clip((np.where(finite, m, lo) - lo) / scale, 0.0, 1.0) * (len(stops) - 1)
    i = np.minimum(t.astype(np.int64), len(stops) - 2)
    frac = (t - i)[..., None]
    rgb = stops[i] * (1 - frac) + stops[i + 1] * frac  # (H, W, 3)
    rgb = np.rint(rgb).astype(np.uint8)
    rgb[~finite] = NAN_RGB
    return rgb


def save_matrix_csv(
    matrix: np.ndarray,
    path: str | Path,
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
) -> Path:
    """Write a 2-D matrix as CSV: a header of column labels, each row led by its label; NaN as an empty cell."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {m.shape}")
    rows = list(row_labels) if row_labels is not None else [str(i) for i in range(m.shape[0])]
    cols = list(col_labels) if col_labels is not None else [str(j) for j in range(m.shape[1])]
    if len(rows) != m.shape[0] or len(cols) != m.shape[1]:
        raise ValueError(
            f"{len(rows)} row and {len(cols)} column labels for a {m.shape[0]}x{m.shape[1]} matrix"
        )
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([""] + cols)
        for label, values in zip(rows, m, strict=True):
            writer.writerow([label] + ["" if not np.isfinite(v) else f"{v:.6g}" for v in values])
    return path
