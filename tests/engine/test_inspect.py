"""Inspection: attention maps against a hand recomputation, activations against torch's own RNNs,
per-token loss against F.cross_entropy; and the CSV export (the PNGs: tests/test_matrix_images.py)."""

from __future__ import annotations

import csv
import math

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
