"""Save a matrix (an attention map, activations over time) as a colour PNG or a labelled CSV.

Pure numpy + zlib: no Qt, no torch, no imaging library (the shared layer), so the CLI can write pictures
headless and the UI can write them without reaching into the engine.
NaN cells (e.g. the masked future above an attention map's diagonal) are drawn in a flat grey.
The PNG has the labels (a built-in ASCII bitmap font), a colour bar with its range and a caption; the
full labels and the value range also go into its text chunks, and into the CSV.
"""

from __future__ import annotations

import csv
import json
import struct
import zlib
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
NAN_RGB = (200, 200, 200)
# longest label drawn (characters); longer ones are cut with a trailing '~'
_MAX_LABEL = 12

# 6x10 bitmaps of ASCII 32..126, one byte per row (bit 5 = leftmost pixel), rendered once from
# DejaVu Sans Mono at 10 px without antialiasing; other characters are drawn as '?'
_FONT = bytes.fromhex(
    "0000000000000000000000040404040400040000000a0a0a000000000000000a0a1f143e1414000000040f141c07051e0400"
    "0038283a0c1705070000000e080c1513120d0000000404040000000000000408080808080808040008080404040404080800"
    "00150e0e150000000000000004041f04040000000000000000000008080800000000000e0000000000000000000000080000"
    "00010202040408081000000e11111511110e0000001c04040404041f0000000e11010306081f0000000e11010e01110e0000"
    "0002060a1a1f02020000001e101e0101011e0000000f18101e11110e0000001f0302020404080000000e11110e11110e0000"
    "000e11110f01031e000000000008000000080000000000080000000808080000010e100e010000000000003e003e00000000"
    "0000100e010e10000000001e0204080800080000000e09171515151708060004040a0a0e11110000001e11111e11111e0000"
    "000f19101010190f0000001e13111111131e0000001f10101f10101f0000001f10101f1010100000000e19101311190f0000"
    "001111111f1111110000001f04040404041f0000000e02020202120c000000111214181412110000001010101010101f0000"
    "00111b1b15111111000000111919151313110000000e11111111110e0000001e11111e1010100000000e11111111110e0300"
    "001e11111e1311100000000e11100e01110e0000001f0404040404040000001111111111110e00000011110a0a0a04040000"
    "00212d2d1e121212000000110a0a040a0a11000000110a0a040404040000001f02020408081f00000c080808080808080c00"
    "001008080404020201000c040404040404040c00000814220000000000000000000000000000003f10080000000000000000"
    "0000001e010f111f00001010101e1111111e00000000000e1010100e00000101010f1111110f00000000000e111f100f0000"
    "0608081e0808080800000000000f1111110f010e101010161911111100000400000c0404041f00000400001c040404040418"
    "10101012141c12110000380808080808080600000000001f151515150000000000161911111100000000000e1111110e0000"
    "0000001e1111111e10100000000f1111110f01010000000f0908080800000000000f100f011e00000008081e0808080e0000"
    "000000111111110f0000000000110a0a0a04000000000011150a0a0a00000000001b0a040a1b0000000000110a0a04040418"
    "0000001f0204081f000006040404180404040600040404040404040404040c040404030404040c00000000001c0300000000"
)
_GLYPH_W, _GLYPH_H = 6, 10


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


def encode_png(rgb: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (8-bit truecolour, no filtering), with optional tEXt/iTXt chunks."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, c = rgb.shape
    if c != 3:
        raise ValueError(f"expected (H, W, 3) colours, got shape {rgb.shape}")
    rows = np.concatenate(
        [np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1
    )  # (H, 1 + 3W): filter byte 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

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
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = maps[k]
    return out


def _glyph(ch: str) -> np.ndarray:
    """(10, 6) bool bitmap of one character ('?' outside printable ASCII)."""
    code = ord(ch) if 32 <= ord(ch) < 127 else ord("?")
    rows = np.frombuffer(_FONT, np.uint8, _GLYPH_H, (code - 32) * _GLYPH_H)
    return (rows[:, None] >> np.arange(_GLYPH_W - 1, -1, -1)) & 1 == 1


def _short(label: str) -> str:
    label = str(label).replace("\n", "\\n")
    return label if len(label) <= _MAX_LABEL else label[: _MAX_LABEL - 1] + "~"


def text_bitmap(text: str, vertical: bool = False) -> np.ndarray:
    """A bool bitmap of ``text``: (10, 6n) left to right, or (6n, 10) top to bottom when ``vertical``."""
    if not text:
        return np.zeros((_GLYPH_H, 0) if not vertical else (0, _GLYPH_H), bool)
    line = np.concatenate([_glyph(c) for c in text], axis=1)  # (10, 6n)
    return np.rot90(line, k=-1) if vertical else line


def _stamp(canvas: np.ndarray, bitmap: np.ndarray, top: int, left: int, rgb=(0, 0, 0)) -> None:
    """Paint the set pixels of ``bitmap`` onto ``canvas`` (H, W, 3) at (top, left), clipped to the canvas."""
    h, w = bitmap.shape
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + h, canvas.shape[0]), min(left + w, canvas.shape[1])
    if t1 <= t0 or l1 <= l0:
        return
    region = canvas[t0:t1, l0:l1]
    region[bitmap[t0 - top : t1 - top, l0 - left : l1 - left]] = rgb


def save_matrix_png(
    matrix: np.ndarray,
    path: str | Path,
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    cell: int | None = None,
    caption: str = "",
) -> Path:
    """Write a 2-D matrix as a heatmap PNG: cells ``cell`` pixels square, row labels on the left, column
    labels below (top to bottom), a colour bar with its range on the right, ``caption`` on top.

    Labels are drawn in a built-in 6x10 ASCII font (other characters as '?'; every n-th label when cells
    are smaller than the font); the full labels also go into the PNG's text chunks. ``cell`` defaults to a
    size that makes the matrix about 512 pixels across.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or not m.size:
        raise ValueError(f"expected a non-empty 2-D matrix, got shape {m.shape}")
    finite = m[np.isfinite(m)]
    lo = float(finite.min()) if vmin is None and finite.size else (vmin if vmin is not None else 0.0)
    hi = float(finite.max()) if vmax is None and finite.size else (vmax if vmax is not None else 1.0)
    R, C = m.shape
    cell = cell or max(1, 512 // max(R, C))
    rows = [_short(x) for x in row_labels] if row_labels is not None else []
    cols = [_short(x) for x in col_labels] if col_labels is not None else []
    pad = 4
    left = pad + (max(map(len, rows), default=0) * _GLYPH_W + pad if rows else 0)
    top = pad + (_GLYPH_H + pad if caption else 0)
    bottom = pad + (max(map(len, cols), default=0) * _GLYPH_W + pad if cols else 0)
    lo_txt, hi_txt = f"{lo:.3g}", f"{hi:.3g}"
    bar_w = 12
    right = pad + bar_w + pad + max(len(lo_txt), len(hi_txt)) * _GLYPH_W + pad
    height = max(top + R * cell + bottom, top + 2 * _GLYPH_H + bottom)
    width = max(left + C * cell + right, pad + len(caption) * _GLYPH_W + pad)
    canvas = np.full((height, width, 3), 255, np.uint8)
    canvas[top : top + R * cell, left : left + C * cell] = np.repeat(
        np.repeat(colorize(m, lo, hi), cell, 0), cell, 1
    )
    bar_left = left + C * cell + pad
    ramp = np.linspace(hi, lo, R * cell)[:, None].repeat(bar_w, axis=1)  # top = high values
    canvas[top : top + R * cell, bar_left : bar_left + bar_w] = colorize(ramp, lo, hi)
    _stamp(canvas, text_bitmap(hi_txt), top, bar_left + bar_w + pad)
    _stamp(canvas, text_bitmap(lo_txt), top + R * cell - _GLYPH_H, bar_left + bar_w + pad)
    if caption:
        _stamp(canvas, text_bitmap(caption), pad, pad)
    every_row = max(1, -(-_GLYPH_H // cell))  # a label needs 10 px of height
    for i in range(0, len(rows), every_row):
        bitmap = text_bitmap(rows[i])
        y = top + i * cell + (cell - _GLYPH_H) // 2
        _stamp(canvas, bitmap, y, left - pad - bitmap.shape[1])
    every_col = max(1, -(-_GLYPH_H // cell))  # vertical text is 10 px wide
    for j in range(0, len(cols), every_col):
        _stamp(
            canvas,
            text_bitmap(cols[j], vertical=True),
            top + R * cell + pad,
            left + j * cell + (cell - _GLYPH_H) // 2,
        )
    text = {"Description": caption or "heatmap", "vmin": f"{lo:g}", "vmax": f"{hi:g}"}
    if row_labels is not None:
        text["rows"] = json.dumps(list(row_labels), ensure_ascii=False)
    if col_labels is not None:
        text["cols"] = json.dumps(list(col_labels), ensure_ascii=False)
    path = Path(path)
    path.write_bytes(encode_png(canvas, text))
    return path


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
