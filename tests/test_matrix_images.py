"""Matrix pictures drawn with Pillow: cell colours against the colour map, masked cells grey, token labels
in the all-heads grid, PNG text chunks, GIF frames, and labels in a font that lacks their glyphs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageFont

from lmstudio import matrix_images as images
from lmstudio.matrix_export import NAN_RGB, VIRIDIS

PAD = images.PAD


def _cell(image: Image.Image, tile: list[int], cell: int, i: int, j: int) -> tuple[int, ...]:
    """The colour at the centre of cell (i, j) of a tile whose top-left corner is ``tile``."""
    x, y = tile
    return image.getpixel((x + j * cell + cell // 2, y + i * cell + cell // 2))


def test_cells_take_the_colour_map_and_masked_cells_are_grey_not_the_colour_of_zero():
    m = np.array([[0.2, 0.0, 0.0], [0.5, 0.5, 0.0], [0.4, 0.3, 1.0]])  # softmax leaves 0 in the future
    mask = images.causal_mask(3)
    assert mask.tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    shown = images.render_matrix(m, mask=mask, cell=4)
    plain = images.render_matrix(m, cell=4)
    assert shown.mode == "RGB" and json.loads(shown.info["tiles"]) == [[PAD, PAD]]  # nothing above or left
    assert _cell(shown, [PAD, PAD], 4, 2, 2) == tuple(VIRIDIS[-1].astype(int))  # the maximum
    assert _cell(plain, [PAD, PAD], 4, 0, 1) == tuple(VIRIDIS[0].astype(int))  # 0 is the minimum...
    assert _cell(shown, [PAD, PAD], 4, 0, 1) == NAN_RGB  # ...but masked it is grey
    assert _cell(shown, [PAD, PAD], 4, 1, 2) == NAN_RGB and _cell(shown, [PAD, PAD], 4, 1, 1) != NAN_RGB
    # the range is that of the visible cells: masking the zeros makes 0.2 the bottom of the scale
    assert shown.info["vmin"] == "0.2" and plain.info["vmin"] == "0"
    assert _cell(shown, [PAD, PAD], 4, 0, 0) == tuple(VIRIDIS[0].astype(int))
    # NaN reads as masked too
    nan = np.where(mask, np.nan, m)
    assert np.array_equal(np.asarray(images.render_matrix(nan, cell=4)), np.asarray(shown))


def test_png_opens_in_pillow_with_labels_drawn_and_kept_in_text_chunks(tmp_path):
    m = np.eye(3)
    plain = images.save_png(images.render_matrix(m, cell=12), tmp_path / "plain.png")
    labelled = images.render_matrix(m, ["ab", "\u4e2d", "c"], ["x", "y", "z"], "weights", cell=12)
    path = images.save_png(labelled, tmp_path / "l.png")
    with Image.open(plain) as a, Image.open(path) as b:
        assert a.format == b.format == "PNG" and a.mode == b.mode == "RGB"
        assert b.width > a.width and b.height > a.height  # room for the labels and the caption
        assert json.loads(b.text["rows"]) == ["ab", "\u4e2d", "c"] and json.loads(b.text["cols"]) == list(
            "xyz"
        )
        assert b.text["vmax"] == "1" and b.text["Description"] == "weights"
        left, top = json.loads(b.text["tiles"])[0]
        pixels = np.asarray(b.convert("L"))
    assert (pixels[:top, :] < 128).any()  # the caption along the top
    assert (pixels[top : top + 36, :left] < 128).any()  # row labels on the left
    assert (pixels[top + 36 :, left : left + 36] < 128).any()  # column labels below


def test_png_opens_in_qt_with_the_same_pixels(tmp_path):
    QtGui = pytest.importorskip("PySide6.QtGui")
    path = images.save_png(
        images.render_matrix(np.array([[0.0, np.nan], [0.5, 1.0]]), cell=4), tmp_path / "m.png"
    )
    img = QtGui.QImage(str(path))
    with Image.open(path) as ref:
        assert not img.isNull() and (img.width(), img.height()) == ref.size
        for xy in [(PAD, PAD), (PAD + 5, PAD + 1), (PAD + 6, PAD + 6)]:
            c = QtGui.QColor(img.pixel(*xy))
            assert (c.red(), c.green(), c.blue()) == ref.convert("RGB").getpixel(xy)


def test_all_heads_grid_carries_token_labels_and_greys_each_heads_future(tmp_path):
    rng = np.random.default_rng(0)
    T = 6
    maps = rng.random((2, 3, T, T))  # (L, H, T, T)
    # digits share one width in DejaVu Sans and Pillow's font: both label sets get the same layout
    a = images.render_grid(maps, list("012345"), caption="attention", mask=images.causal_mask(T))
    b = images.render_grid(maps, list("987654"), caption="attention", mask=images.causal_mask(T))
    tiles, cell = json.loads(a.info["tiles"]), int(a.info["cell"])
    assert len(tiles) == 6 and tiles == json.loads(b.info["tiles"]) and a.size == b.size
    assert tiles[3][1] > tiles[0][1] and tiles[3][0] == tiles[0][0]  # a row of tiles per layer
    pa, pb = np.asarray(a), np.asarray(b)
    for x, y in tiles:  # the heads themselves do not depend on the labels...
        assert np.array_equal(pa[y : y + T * cell, x : x + T * cell], pb[y : y + T * cell, x : x + T * cell])
        assert _cell(a, [x, y], cell, 0, T - 1) == NAN_RGB and _cell(a, [x, y], cell, 0, 0) != NAN_RGB
    left = tiles[0][0]
    for _x, y in tiles[::3]:  # ...the row labels beside each layer's row of tiles do
        assert not np.array_equal(pa[y : y + T * cell, :left], pb[y : y + T * cell, :left])
    below = tiles[3][1] + T * cell
    assert not np.array_equal(pa[below:], pb[below:])  # and so do the column labels under the lowest heads
    assert json.loads(a.info["rows"]) == list("012345")
    with pytest.raises(ValueError):
        images.render_grid(maps, list("abc"))  # three labels for six tokens


def test_gif_has_one_frame_per_image_and_they_differ(tmp_path):
    frames = [images.render_matrix(np.eye(4) * k, caption=f"step {k}", vmin=0, vmax=4) for k in range(5)]
    frames.append(images.render_matrix(np.eye(6), caption="a larger last frame"))
    path = images.save_gif(frames, tmp_path / "t.gif", duration_ms=120)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 6 and gif.info["loop"] == 0
        assert gif.size == (max(f.width for f in frames), max(f.height for f in frames))
        shown = []
        for k in range(gif.n_frames):
            gif.seek(k)
            assert gif.info["duration"] == 120
            shown.append(np.asarray(gif.convert("RGB")))
    assert all(not np.array_equal(shown[k], shown[k + 1]) for k in range(5))
    with pytest.raises(ValueError):
        images.save_gif([], tmp_path / "none.gif")


def test_cjk_label_is_drawn_with_a_cjk_font():
    path = images.cjk_font_path()
    if path is None:
        pytest.skip("no font with CJK glyphs installed (e.g. Debian's fonts-noto-cjk or fonts-wqy-microhei)")
    cjk = images.load_font(12, path)
    fonts = images.default_fonts(12)
    assert images.has_glyph(cjk, "\u4e2d") and fonts[-1] is cjk
    assert images.readable("\u4e2d\u6587 a", fonts) == "\u4e2d\u6587 a"
    # Latin from the first font, the Han character from the CJK font, one after the other
    first = fonts[0]
    assert images.text_width("a\u4e2d", fonts) == int(np.ceil(first.getlength("a") + cjk.getlength("\u4e2d")))
    m = np.zeros((1, 1))
    drawn = np.asarray(images.render_matrix(m, ["\u4e2d"], font=fonts))
    spelled = np.asarray(images.render_matrix(m, ["U+4E2D"], font=fonts))
    assert drawn.shape != spelled.shape or not np.array_equal(drawn, spelled)


def test_a_font_without_cjk_glyphs_writes_the_code_point_instead_of_boxes():
    dejavu = images.find_font("DejaVuSans.ttf")
    if dejavu is None:
        pytest.skip("DejaVu Sans is not installed (Debian's fonts-dejavu-core)")
    font = images.load_font(12, dejavu)  # DejaVu Sans has Latin, Greek, Cyrillic and symbols, no Han
    assert (
        images.has_glyph(font, "a")
        and images.has_glyph(font, "\u2423")
        and not images.has_glyph(font, "\u4e2d")
    )
    assert images.readable("\u4e2da\u2423", font) == "U+4E2Da\u2423"
    m = np.zeros((2, 1))
    fallback = images.render_matrix(m, ["\u4e2d", "b"], font=font)
    spelled = images.render_matrix(m, ["U+4E2D", "b"], font=font)
    assert np.array_equal(np.asarray(fallback), np.asarray(spelled))
    assert json.loads(fallback.info["rows"]) == ["\u4e2d", "b"]  # the file keeps the real label
    builtin = ImageFont.load_default(12)  # Pillow's own font: Latin only
    assert images.readable("\u4e2d", builtin) == "U+4E2D" and images.readable("ab", builtin) == "ab"
