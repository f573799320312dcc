"""Pictures of matrices drawn with Pillow: a labelled heatmap, a grid of heads, and the PNG and GIF files
they go into.

Shared layer (numpy and Pillow; no torch, no Qt), so the CLI writes pictures headless and the time-lapse
export draws its frames the same way. Masked cells (NaN, or True in ``mask``, e.g. the causal future
above an attention map's diagonal) are drawn in flat grey (``NAN_RGB``), never in the colour of 0.

Text is drawn in DejaVu Sans (else Pillow's built-in font), and characters it lacks in a font with CJK
glyphs when one is installed (Noto Sans CJK, Source Han Sans, WenQuanYi, Droid Sans Fallback, PingFang,
Microsoft YaHei, SimSun, ... in the usual font folders). A character no font has a glyph for is written as
its code point (``U+4E2D``) rather than as an empty box, so no label silently turns into boxes.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from lmstudio.matrix_export import NAN_RGB, VIRIDIS, colorize  # noqa: F401 (the grey and colours drawn)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
PAD = 6  # white margin around everything; an unlabelled, uncaptioned matrix starts at (PAD, PAD)
MAX_LABEL = 12  # longest label drawn (characters); longer ones end in '~' (every label is kept in full
# in the PNG's text chunks)

_FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.local/share/fonts",
    "~/.fonts",
    "/System/Library/Fonts",
    "/Library/Fonts",
    "~/Library/Fonts",
    os.path.join(os.environ.get("WINDIR", "C:/Windows"), "Fonts"),
)
_CJK_FONTS = (
    "NotoSansCJK-Regular.ttc",
    "NotoSansCJKsc-Regular.otf",
    "NotoSansSC-Regular.otf",
    "SourceHanSans-Regular.ttc",
    "SourceHanSansSC-Regular.otf",
    "wqy-microhei.ttc",
    "wqy-zenhei.ttc",
    "DroidSansFallbackFull.ttf",
    "DroidSansFallback.ttf",
    "PingFang.ttc",
    "Hiragino Sans GB.ttc",
    "msyh.ttc",
    "simsun.ttc",
    "Arial Unicode.ttf",
)


# ---- fonts ---------------------------------------------------------------------------------------------
@functools.cache
def _installed_fonts() -> dict[str, str]:
    """File name -> path of every font file in the usual font folders (walked once per process)."""
    found: dict[str, str] = {}
    for folder in _FONT_DIRS:
        for root, _dirs, files in os.walk(os.path.expanduser(folder)):
            for name in files:
                found.setdefault(name, os.path.join(root, name))
    return found


def find_font(*names: str) -> str | None:
    """The path of the first installed font file among ``names`` (file names such as 'DejaVuSans.ttf')."""
    return next((_installed_fonts()[n] for n in names if n in _installed_fonts()), None)


@functools.cache
def cjk_font_path() -> str | None:
    """An installed font that draws Chinese characters, or None when there is none."""
    for name in _CJK_FONTS:
        path = find_font(name)
        if path and has_glyph(load_font(12, path), "\u4e2d"):
            return path
    return None


@functools.cache
def load_font(size: int = 12, path: str | None = None) -> Font:
    """The font at ``path``, by default DejaVu Sans, else Pillow's built-in font."""
    path = path or find_font("DejaVuSans.ttf")
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size)


@functools.cache
def default_fonts(size: int = 12) -> tuple[Font, ...]:
    """The fonts text is drawn in, first choice first: DejaVu Sans (or Pillow's built-in font) for Latin
    and symbols, then a CJK font when one is installed (some, like Droid Sans Fallback, have no Latin)."""
    cjk = cjk_font_path()
    return (load_font(size),) + ((load_font(size, cjk),) if cjk else ())


def _ink(font: Font, text: str) -> bytes:
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("L", (max(1, int(right - left)), max(1, int(bottom - top))))
    ImageDraw.Draw(image).text((-left, -top), text, font=font, fill=255)
    return image.tobytes() if image.getbbox() else b""


@functools.cache
def has_glyph(font: Font, char: str) -> bool:
    """Whether ``font`` draws ``char`` itself: a missing glyph draws the font's placeholder (the same as
    for U+10FFFF, which no font maps) or nothing at all."""
    if char.isspace():
        return True
    if not isinstance(font, ImageFont.FreeTypeFont):  # a bitmap font: ASCII only
        return ord(char) < 128
    ink = _ink(font, char)
    return bool(ink) and ink != _ink(font, "\U0010ffff")


def _fonts(font: Font | Sequence[Font] | None) -> tuple[Font, ...]:
    if font is None:
        return default_fonts()
    return tuple(font) if isinstance(font, Sequence) else (font,)


def readable(text: str, font: Font | Sequence[Font] | None = None, limit: int | None = MAX_LABEL) -> str:
    """``text`` as it can be drawn in ``font`` (one font or several, first choice first): newlines as
    '\\n', cut to ``limit`` characters with a trailing '~', and each character no font has a glyph for
    written as U+XXXX."""
    fonts = _fonts(font)
    text = str(text).replace("\n", "\\n")
    if limit and len(text) > limit:
        text = text[: limit - 1] + "~"
    return "".join(c if any(has_glyph(f, c) for f in fonts) else f"U+{ord(c):04X}" for c in text)


def _runs(text: str, fonts: tuple[Font, ...]) -> list[tuple[str, Font]]:
    """``text`` cut into runs, each drawn by the first font that has its characters' glyphs."""
    runs: list[tuple[str, Font]] = []
    for c in text:
        font = next((f for f in fonts if has_glyph(f, c)), fonts[0])
        if runs and runs[-1][1] is font:
            runs[-1] = (runs[-1][0] + c, font)
        else:
            runs.append((c, font))
    return runs


# ---- text ----------------------------------------------------------------------------------------------
def _ascent(font: Font) -> int:
    return font.getmetrics()[0] if isinstance(font, ImageFont.FreeTypeFont) else 0


def line_height(font: Font | Sequence[Font] | None = None) -> int:
    fonts = _fonts(font)
    descent = max(f.getmetrics()[1] if isinstance(f, ImageFont.FreeTypeFont) else 0 for f in fonts)
    return max(max(_ascent(f) for f in fonts) + descent, int(fonts[0].getbbox("Ag")[3])) + 2


def text_width(text: str, font: Font | Sequence[Font] | None = None) -> int:
    return int(np.ceil(sum(f.getlength(run) for run, f in _runs(text, _fonts(font)))))


def draw_text(
    image: Image.Image,
    xy: tuple[int, int],
    text: str,
    font: Font | Sequence[Font] | None = None,
    fill=(0, 0, 0),
    vertical: bool = False,
) -> None:
    """Draw ``text`` (already ``readable``) with its top-left corner at ``xy``, each character in the
    first of the fonts that has it, on one baseline; ``vertical`` reads top to bottom (turned clockwise),
    for column labels under a matrix."""
    fonts = _fonts(font)
    if vertical:
        strip = Image.new("L", (max(1, text_width(text, fonts)), line_height(fonts)))
        draw_text(strip, (0, 0), text, fonts, 255)
        strip = strip.rotate(-90, expand=True)
        image.paste(Image.new(image.mode, strip.size, fill), xy, strip)
        return
    draw = ImageDraw.Draw(image)
    x, y = float(xy[0]), xy[1] + max(_ascent(f) for f in fonts)
    for run, f in _runs(text, fonts):
        if isinstance(f, ImageFont.FreeTypeFont):
            draw.text((x, y), run, font=f, fill=fill, anchor="ls")  # left, on the baseline
        else:
            draw.text((x, xy[1]), run, font=f, fill=fill)
        x += f.getlength(run)


def colour_bar(
    image: Image.Image,
    box: tuple[int, int, int, int],
    lo: float,
    hi: float,
    font: Font | Sequence[Font] | None,
) -> None:
    """A vertical viridis ramp in ``box`` (left, top, right, bottom), ``hi`` at the top, its two ends
    written to the right of it."""
    left, top, right, bottom = box
    ramp = np.linspace(hi, lo, bottom - top)[:, None].repeat(right - left, axis=1)  # (h, w): top = high
    image.paste(Image.fromarray(colorize(ramp, lo, hi)), (left, top))
    draw_text(image, (right + 4, top), f"{hi:.3g}", font)
    draw_text(image, (right + 4, bottom - line_height(font)), f"{lo:.3g}", font)


# ---- heatmaps ------------------------------------------------------------------------------------------
def causal_mask(T: int) -> np.ndarray:
    """(T, T) bool, True above the diagonal: the keys a query cannot see (its future)."""
    return np.triu(np.ones((T, T), bool), k=1)


def render_matrix(
    matrix: np.ndarray,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    caption: str = "",
    mask: np.ndarray | None = None,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    cell: int | None = None,
    font: Font | Sequence[Font] | None = None,
) -> Image.Image:
    """A 2-D matrix (R, C) as a heatmap: row labels on the left, column labels below (top to bottom), a
    colour bar with its range on the right, ``caption`` on top; masked cells grey. ``cell`` (pixels)
    defaults to a size that makes the matrix about 512 pixels across."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or not m.size:
        raise ValueError(f"expected a non-empty 2-D matrix, got shape {m.shape}")
    cell = cell or max(1, min(48, 512 // max(m.shape)))
    return render_grid(
        m[None],
        row_labels,
        None,
        caption,
        None if mask is None else np.asarray(mask)[None],
        col_labels=col_labels if col_labels is not None else [],  # [] : none (not the row labels)
        vmin=vmin,
        vmax=vmax,
        cell=cell,
        font=font,
    )


def render_grid(
    maps: np.ndarray,
    labels: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
    caption: str = "",
    mask: np.ndarray | None = None,
    *,
    col_labels: Sequence[str] | None = None,
    n_cols: int | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cell: int | None = None,
    font: Font | Sequence[Font] | None = None,
) -> Image.Image:
    """Several maps of one shape, (N, R, C) or (L, H, R, C) (every head of every layer, a row of tiles
    per layer), side by side with one colour scale: ``labels`` (the tokens) left of each row of tiles
    and, unless ``col_labels`` differ, below the lowest tile of each column; a title over each tile
    (default 'head h' or 'layer l head h'); masked cells grey (``mask`` broadcasts to ``maps``, e.g.
    ``causal_mask(T)``).

    The image's ``info`` keeps the caption, the range, the labels and where each tile sits ("tiles":
    JSON [[left, top], ...], "cell": pixels per cell); ``save_png`` writes them into the file.
    """
    m = np.asarray(maps, dtype=np.float64)
    if mask is not None:
        m = np.where(np.broadcast_to(np.asarray(mask, bool), m.shape), np.nan, m)
    if m.ndim == 4:
        L, H = m.shape[:2]
        default_titles = [f"layer {layer} head {head}" for layer in range(L) for head in range(H)]
        m = m.reshape(L * H, *m.shape[2:])  # (L*H, R, C)
        n_cols = n_cols or H  # a row of tiles per layer
    elif m.ndim == 3:
        default_titles = [f"head {h}" for h in range(m.shape[0])] if m.shape[0] > 1 else []
    else:
        raise ValueError(f"expected maps of shape (N, R, C) or (L, H, R, C), got {m.shape}")
    N, R, C = m.shape
    titles = list(titles) if titles is not None else default_titles
    font = _fonts(font)
    finite = m[np.isfinite(m)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    n_cols = n_cols or int(np.ceil(np.sqrt(N)))
    n_rows = -(-N // n_cols)
    cell = cell or max(1, min(32, 640 // max(n_rows * R, n_cols * C)))
    lh = line_height(font)
    rows = [readable(x, font) for x in labels] if labels is not None else []
    cols_raw = col_labels if col_labels is not None else labels
    cols = [readable(x, font) for x in cols_raw] if cols_raw is not None else []
    if len(rows) not in (0, R) or len(cols) not in (0, C) or len(titles) not in (0, N):
        raise ValueError(
            f"{len(rows)} row, {len(cols)} column labels, {len(titles)} titles for {N} maps of {R}x{C}"
        )

    # layout: caption | (row labels, tiles with titles, colour bar) | column labels
    gap = PAD * 2 if N > 1 else 0
    title_h = lh if titles else 0
    left = PAD + (max(map(lambda s: text_width(s, font), rows), default=0) + PAD if rows else 0)
    top = PAD + (lh + PAD if caption else 0)
    tile_w, tile_h = C * cell, title_h + R * cell
    grid_w, grid_h = n_cols * tile_w + (n_cols - 1) * gap, n_rows * tile_h + (n_rows - 1) * gap
    bottom = PAD + (max(map(lambda s: text_width(s, font), cols), default=0) + PAD if cols else 0)
    bar_w, bar_h = 12, max(R * cell, 2 * lh)
    masked = bool(np.isnan(m).any())  # a grey swatch under the colour bar says what grey means
    bar_text = [f"{lo:.3g}", f"{hi:.3g}"] + (["masked"] if masked else [])
    right = PAD + bar_w + 4 + max(text_width(t, font) for t in bar_text) + PAD
    width = max(left + grid_w + right, PAD + text_width(caption, font) + PAD)
    height = max(top + grid_h + bottom, top + title_h + bar_h + (PAD + lh if masked else 0) + PAD)
    image = Image.new("RGB", (width, height), "white")

    every = max(1, -(-lh // cell))  # a label needs a line of height (or width, turned) per row
    colours = colorize(m, lo, hi)  # (N, R, C, 3), NaN grey
    tiles = []
    for k in range(N):
        r, c = divmod(k, n_cols)
        x, y = left + c * (tile_w + gap), top + r * (tile_h + gap)
        if titles:
            draw_text(image, (x, y), readable(titles[k], font, None), font)
        cells = Image.fromarray(colours[k]).resize((tile_w, R * cell), Image.Resampling.NEAREST)
        image.paste(cells, (x, y + title_h))
        tiles.append([x, y + title_h])
        if c == 0:
            for i in range(0, len(rows), every):
                ty = y + title_h + i * cell + (cell - lh) // 2
                draw_text(image, (left - PAD - text_width(rows[i], font), ty), rows[i], font)
        if k + n_cols >= N:  # the lowest tile of its column: its column labels below it
            for j in range(0, len(cols), every):
                xy = (x + j * cell + (cell - lh) // 2, y + tile_h + PAD)
                draw_text(image, xy, cols[j], font, vertical=True)
    bar_left = left + grid_w + PAD
    bar_top = top + title_h
    colour_bar(image, (bar_left, bar_top, bar_left + bar_w, bar_top + bar_h), lo, hi, font)
    if masked:
        swatch_top = bar_top + bar_h + PAD
        image.paste(NAN_RGB, (bar_left, swatch_top, bar_left + bar_w, swatch_top + lh))
        draw_text(image, (bar_left + bar_w + 4, swatch_top), "masked", font)
    if caption:
        draw_text(image, (PAD, PAD), readable(caption, font, None), font)

    image.info.update(
        Description=caption or "heatmap",
        vmin=f"{lo:g}",
        vmax=f"{hi:g}",
        tiles=json.dumps(tiles),
        cell=str(cell),
    )
    if labels is not None:
        image.info["rows"] = json.dumps(list(labels), ensure_ascii=False)
    if cols_raw:
        image.info["cols"] = json.dumps(list(cols_raw), ensure_ascii=False)
    return image


# ---- files ---------------------------------------------------------------------------------------------
def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write ``image`` as PNG; its string ``info`` entries (caption, range, full labels) go into UTF-8
    text chunks (iTXt), readable with ``Image.open(path).text``."""
    meta = PngImagePlugin.PngInfo()
    for key, value in image.info.items():
        if isinstance(value, str):
            meta.add_itxt(str(key), value)
    path = Path(path)
    image.save(path, "PNG", pnginfo=meta)
    return path


def save_gif(images: Sequence[Image.Image], path: str | Path, duration_ms: int = 500, loop: int = 0) -> Path:
    """Write ``images`` as an animated GIF, ``duration_ms`` per frame, repeating ``loop`` times (0:
    forever). Frames of different sizes are placed top-left on a white canvas of the largest size.
    GIF has 256 colours a frame (Pillow picks each frame's palette); Pillow merges identical consecutive
    frames into one longer frame."""
    if not images:
        raise ValueError("a GIF needs at least one frame")
    size = (max(im.width for im in images), max(im.height for im in images))
    frames = []
    for im in images:
        frame = Image.new("RGB", size, "white")
        frame.paste(im.convert("RGB"), (0, 0))
        frames.append(frame)
    path = Path(path)
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=loop)
    return path
