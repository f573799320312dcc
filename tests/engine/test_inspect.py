"""Inspection: attention maps against a hand recomputation, activations against torch's own RNNs,
per-token loss against F.cross_entropy; and the PNG/CSV export."""

from __future__ import annotations

import csv
import json
import math
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_sampling import TEXT, make_session

from lmstudio import matrix_export as export
from lmstudio.engine import inspect as lm_inspect
from lmstudio.errors import UserError


def test_attention_rows_sum_to_one_and_never_look_ahead():
    s = make_session("transformer", block_size=32)
    tokens, att = lm_inspect.attention(s, "the lazy dog jumps")
    L, H, T, _ = att.shape
    assert (L, H, T) == (2, 2, 18) and len(tokens) == T
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
    assert (att[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0).all()
    assert tokens[3] == lm_inspect.display(" ")


def test_attention_matches_a_hand_recomputation_from_the_fast_path_weights():
    s = make_session("transformer", block_size=32, seed=4)
    m = s.model
    text = "so it goes on"
    _, att = lm_inspect.attention(s, text)
    idx = torch.tensor([s.tokenizer.encode(text)])
    T = idx.size(1)
    with torch.no_grad():
        x = m.wte(idx) + m.wpe(torch.arange(T))  # (1, T, C)
        x = m.blocks[0](x)[0]  # the fast (SDPA) path of block 0
        blk = m.blocks[1]
        hs = blk.attn.head_size
        q, k, _ = blk.attn.c_attn(blk.ln_1(x)).split(m.cfg.n_embd, dim=2)  # (1, T, C) each
        h = 1
        qh, kh = q[0, :, h * hs : (h + 1) * hs], k[0, :, h * hs : (h + 1) * hs]  # (T, hs)
        scores = (qh @ kh.T) / math.sqrt(hs)
        scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
        expected = torch.softmax(scores, dim=-1).numpy()
    np.testing.assert_allclose(att[1, h], expected, atol=1e-5)


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
def test_activations_match_torchs_recurrent_layers(arch):
    s = make_session(arch, block_size=32)
    text = "the quick brown fox"
    tokens, acts = lm_inspect.activations(s, text)
    assert len(tokens) == len(text)
    with torch.no_grad():
        out, _ = s.model.rnn(s.model.wte(torch.tensor([s.tokenizer.encode(text)])))  # (1, T, H)
    np.testing.assert_allclose(acts["hidden"][-1], out[0].numpy(), atol=1e-5)
    gates = {
        "rnn": set(),
        "lstm": {"gate.input", "gate.forget", "gate.output"},
        "gru": {"gate.reset", "gate.update"},
    }
    assert gates[arch] <= set(acts)
    for name in gates[arch]:
        assert acts[name].shape == (2, len(text), 16)
        assert ((acts[name] >= 0) & (acts[name] <= 1)).all()


def test_attention_on_a_recurrent_run_is_a_user_error():
    with pytest.raises(UserError):
        lm_inspect.attention(make_session("lstm"), "the fox")


@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_token_losses_match_cross_entropy(arch):
    s = make_session(arch, block_size=32)
    text = "on and on, it goes"
    losses = lm_inspect.token_losses(s, text, n_top=3)
    ids = s.tokenizer.encode(text)
    with torch.no_grad():
        logits, _ = s.model(torch.tensor([ids[:-1]]))
        ref = F.cross_entropy(logits[0], torch.tensor(ids[1:]), reduction="none")
        probs = torch.softmax(logits[0], -1)
    assert [t.token for t in losses] == list(text[1:])
    np.testing.assert_allclose([t.loss for t in losses], ref.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        [t.prob for t in losses], probs[torch.arange(len(ids) - 1), ids[1:]].numpy(), rtol=1e-4
    )
    assert losses[0].top[0] == (
        s.tokenizer.id_to_token(int(probs[0].argmax())),
        pytest.approx(float(probs[0].max())),
    )


def test_long_inputs_are_cut_to_the_context_and_say_so():
    s = make_session("transformer", block_size=16)
    fitted = lm_inspect.fit_to_context(s, TEXT)
    assert len(fitted.ids) == 16 and fitted.dropped == len(TEXT) - 16
    assert "16" in fitted.note and str(len(TEXT)) in fitted.note
    tokens, att = lm_inspect.attention(s, TEXT)
    assert len(tokens) == 16 and att.shape[-1] == 16
    assert len(lm_inspect.token_losses(s, TEXT)) == 16  # 17 tokens: 16 inputs, 16 targets
    assert lm_inspect.fit_to_context(s, "short").note == ""
    with pytest.raises(UserError):
        lm_inspect.attention(s, "")


# ---- export --------------------------------------------------------------------------------------


def _read_png(path):
    """Decode our own (unfiltered, truecolour) PNGs; the CRCs are checked on the way."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        assert int.from_bytes(data[pos + 8 + n : pos + 12 + n], "big") == zlib.crc32(kind + body)
        chunks.setdefault(kind, []).append(body)
        pos += 12 + n
    w, h = int.from_bytes(chunks[b"IHDR"][0][:4], "big"), int.from_bytes(chunks[b"IHDR"][0][4:8], "big")
    raw = np.frombuffer(zlib.decompress(b"".join(chunks[b"IDAT"])), np.uint8).reshape(h, 1 + 3 * w)
    return raw[:, 1:].reshape(h, w, 3), chunks


def test_png_export_is_readable_by_qt_and_colours_match(tmp_path):
    QtGui = pytest.importorskip("PySide6.QtGui")
    m = np.array([[0.0, np.nan], [0.5, 1.0]])
    path = export.save_matrix_png(m, tmp_path / "m.png", cell=4)  # no labels: the matrix sits at (4, 4)
    img = QtGui.QImage(str(path))
    rgb, _ = _read_png(path)
    assert not img.isNull() and (img.height(), img.width()) == rgb.shape[:2]
    cells = rgb[4:12, 4:12]
    assert tuple(cells[0, 0]) == tuple(export.VIRIDIS[0].astype(int))
    assert tuple(cells[7, 7]) == tuple(export.VIRIDIS[-1].astype(int))
    assert tuple(cells[0, 7]) == export.NAN_RGB
    c = QtGui.QColor(img.pixel(4, 4))
    assert (c.red(), c.green(), c.blue()) == tuple(cells[0, 0])


def test_png_export_draws_labels_and_keeps_them_as_text_chunks(tmp_path):
    m = np.eye(3)
    plain, _ = _read_png(export.save_matrix_png(m, tmp_path / "plain.png", cell=12))
    labelled, chunks = _read_png(
        export.save_matrix_png(
            m, tmp_path / "l.png", ["ab", "\u4e2d", "c"], ["x", "y", "z"], cell=12, caption="weights"
        )
    )
    assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] > plain.shape[1]
    dark = labelled.sum(-1) == 0
    assert dark[:14].any()  # the caption along the top
    assert dark[:, :16].any()  # row labels on the left
    glyph_a = export.text_bitmap("A")
    assert (
        glyph_a.shape == (10, 6)
        and glyph_a.any()
        and export.text_bitmap("AB", vertical=True).shape == (12, 10)
    )
    assert (export.text_bitmap("\u4e2d") == export.text_bitmap("?")).all()
    texts = {b.split(b"\0", 1)[0]: b.split(b"\0", 1)[1][4:].decode() for b in chunks[b"iTXt"]}
    assert json.loads(texts[b"rows"]) == ["ab", "\u4e2d", "c"] and texts[b"vmax"] == "1"


def test_tile_lays_heads_out_in_a_grid_with_gaps():
    maps = np.arange(3 * 2 * 2, dtype=float).reshape(3, 2, 2)
    grid = export.tile(maps, n_cols=2)
    assert grid.shape == (5, 5)
    np.testing.assert_array_equal(grid[:2, 3:], maps[1])
    np.testing.assert_array_equal(grid[3:, :2], maps[2])
    assert np.isnan(grid[2]).all() and np.isnan(grid[3:, 3:]).all()


def test_csv_export_round_trips_with_labels(tmp_path):
    m = np.array([[0.25, np.nan], [1e-7, 3.0]])
    path = export.save_matrix_csv(m, tmp_path / "m.csv", ["q,1", "\u4e2d"], ["k1", "k2"])
    rows = list(csv.reader(path.open(encoding="utf-8")))
    assert rows[0] == ["", "k1", "k2"] and rows[1][0] == "q,1" and rows[2][0] == "\u4e2d"
    assert rows[1][2] == ""
    back = np.array([[float(v) if v else np.nan for v in r[1:]] for r in rows[1:]])
    np.testing.assert_allclose(back, m, rtol=1e-5)
    with pytest.raises(ValueError):
        export.save_matrix_csv(m, tmp_path / "bad.csv", ["only one"], ["k1", "k2"])
