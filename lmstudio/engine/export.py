"""Save a matrix (an attention map, activations over time) as a colour PNG or a labelled CSV.

Pure numpy + zlib: no Qt, no torch, no imaging library, so the CLI can write pictures headless.
NaN cells (e.g. the masked future above an attention map's diagonal) are drawn in a flat grey.
A colour bar is drawn on the right; the labels and the value range go into the PNG's text chunks
(a PNG viewer shows them as metadata) and into the CSV.
"""

from __future__ import annotations

import csv
import json
import struct
import zlib
from pathlib import Path

import numpy as np

# matplotlib's viridis at 11 evenly spaced points: perceptually uniform, readable in grey and by the colour-blind
VIRIDIS = np.array([
    (0x44, 0x01, 0x54), (0x48, 0x24, 0x75), (0x41, 0x44, 0x87), (0x35, 0x5f, 0x8d), (0x2a, 0x78, 0x8e),
    (0x21, 0x91, 0x8c), (0x22, 0xa8, 0x84), (0x44, 0xbf, 0x70), (0x7a, 0xd1, 0x51), (0xbd, 0xdf, 0x26),
    (0xfd, 0xe7, 0x25)], dtype=np.float64)
NAN_RGB = (200, 200, 200)


def colorize(matrix: np.ndarray, vmin: float | None = None, vmax: float | None = None,
             stops: np.ndarray = VIRIDIS) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 colours; NaN -> grey. Range defaults to the finite min/max."""
    m = np.asarray(matrix, dtype=np.float64)
    finite = np.isfinite(m)
    lo = float(np.min(m[finite])) if vmin is None and finite.any() else (vmin if vmin is not None else 0.0)
    hi = float(np.max(m[finite])) if vmax is None and finite.any() else (vmax if vmax is not None else 1.0)
    scale = (hi - lo) or 1.0
    t = np.clip((np.where(finite, m, lo) - lo) / scale, 0.0, 1.0) * (len(stops) - 1)
    i = np.minimum(t.astype(np.int64), len(stops) - 2)
    frac = (t - i)[..., None]
    rgb = stops[i] * (1 - frac) + stops[i + 1] * frac                  # (H, W, 3)
    rgb = np.rint(rgb).astype(np.uint8)
    rgb[~finite] = NAN_RGB
    return rgb


def encode_png(rgb: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (8-bit truecolour, no filtering), with optional tEXt/iTXt chunks."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, c = rgb.shape
    if c != 3:
        raise ValueError(f"expected (H, W, 3) colours, got shape {rgb.shape}")
    rows = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1)  # (H, 1 + 3W): filter byte 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    out = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))]
    for key, value in (text or {}).items():
        # iTXt carries UTF-8 (token labels may be Chinese); uncompressed, no language tag
        out.append(chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8")))
    out.append(chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)))
    out.append(chunk(b"IEND", b""))
    return b"".join(out)


def tile(maps: np.ndarray, n_cols: int | None = None, gap: int = 1) -> np.ndarray:
    """(N, H, W) -> one (rows*(H+gap)-gap, cols*(W+gap)-gap) matrix, NaN between tiles (a grid of heads)."""
    n, h, w = maps.shape
    n_cols = n_cols or int(np.ceil(np.sqrt(n)))
    n_rows = int(np.ceil(n / n_cols))
    out = np.full((n_rows * (h + gap) - gap, n_cols * (w + gap) - gap), np.nan)
    for k in range(n):
        r, c = divmod(k, n_cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = maps[k]
    return out


def save_matrix_png(matrix: np.ndarray, path: str | Path, row_labels: list[str] | None = None,
                    col_labels: list[str] | None = None, *, vmin: float | None = None,
                    vmax: float | None = None, cell: int | None = None, caption: str = "") -> Path:
    """Write a 2-D matrix as a heatmap PNG, each cell ``cell`` pixels square, with a colour bar on the right.

    ``cell`` defaults to a size that makes the picture about 512 pixels across.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or not m.size:
        raise ValueError(f"expected a non-empty 2-D matrix, got shape {m.shape}")
    finite = m[np.isfinite(m)]
    lo = float(finite.min()) if vmin is None and finite.size else (vmin if vmin is not None else 0.0)
    hi = float(finite.max()) if vmax is None and finite.size else (vmax if vmax is not None else 1.0)
    cell = cell or max(1, 512 // max(m.shape))
    image = np.repeat(np.repeat(colorize(m, lo, hi), cell, axis=0), cell, axis=1)  # (H*cell, W*cell, 3)
    bar_h = image.shape[0]
    ramp = np.linspace(hi, lo, bar_h)[:, None].repeat(max(8, cell), axis=1)        # top = high values
    bar = colorize(ramp, lo, hi)
    white = np.full((bar_h, max(4, cell // 2), 3), 255, np.uint8)
    picture = np.concatenate([image, white, bar], axis=1)
    text = {"Description": caption or "heatmap", "vmin": f"{lo:g}", "vmax": f"{hi:g}"}
    if row_labels is not None:
        text["rows"] = json.dumps(list(row_labels), ensure_ascii=False)
    if col_labels is not None:
        text["cols"] = json.dumps(list(col_labels), ensure_ascii=False)
    path = Path(path)
    path.write_bytes(encode_png(picture, text))
    return path


def save_matrix_csv(matrix: np.ndarray, path: str | Path, row_labels: list[str] | None = None,
                    col_labels: list[str] | None = None) -> Path:
    """Write a 2-D matrix as CSV: a header of column labels, each row led by its label; NaN as an empty cell."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {m.shape}")
    rows = list(row_labels) if row_labels is not None else [str(i) for i in range(m.shape[0])]
    cols = list(col_labels) if col_labels is not None else [str(j) for j in range(m.shape[1])]
    if len(rows) != m.shape[0] or len(cols) != m.shape[1]:
        raise ValueError(f"{len(rows)} row and {len(cols)} column labels for a {m.shape[0]}x{m.shape[1]} matrix")
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([""] + cols)
        for label, values in zip(rows, m, strict=True):
            writer.writerow([label] + ["" if not np.isfinite(v) else f"{v:.6g}" for v in values])
    return path
