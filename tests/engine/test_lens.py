"""The logit lens and layer readout: the last row is the model's own logits exactly, and every row equals
an independent float64 recomputation from the saved safetensors file (plain tensor arithmetic, no modules)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_sampling import TEXT, make_session

from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine import export_views, lens
from lmstudio.engine.inspect import InspectError
from lmstudio.matrix_export import colorize

PHRASE = "the lazy dog jumps over"


def _saved(tmp_path, session):
    ckpt.save_weights(session.model, tmp_path / "model.safetensors")
    w = {k: v.double() for k, v in load_file(tmp_path / "model.safetensors").items()}
    if "lm_head.weight" not in w and "wte.weight" in w:  # a tied matrix is stored under one name
        w["lm_head.weight"] = w["wte.weight"]
    if "wte.weight" not in w:
        w["wte.weight"] = w.get("lm_head.weight", w.get("head.weight"))
    return w


def _layer_norm(x, g, b):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * g + (b if b is not None else 0)


def _gpt_reference(w, ids, n_layer, n_head):
    """Residual stream states of nanoGPT's architecture, written out by hand in float64."""
    T = len(ids)
    x = w["wte.weight"][ids] + w["wpe.weight"][:T]  # (T, C)
    C = x.shape[1]
    hs = C // n_head
    states = [x]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(n_layer):
        p = f"blocks.{i}."
        h = _layer_norm(x, w[p + "ln_1.weight"], w.get(p + "ln_1.bias"))
        qkv = h @ w[p + "attn.c_attn.weight"].T + w.get(p + "attn.c_attn.bias", 0)
        q, k, v = qkv.split(C, dim=1)
        heads = []
        for j in range(n_head):
            sl = slice(j * hs, (j + 1) * hs)
            att = (q[:, sl] @ k[:, sl].T) / math.sqrt(hs)
            att = torch.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
            heads.append(att @ v[:, sl])
        y = torch.cat(heads, dim=1) @ w[p + "attn.c_proj.weight"].T + w.get(p + "attn.c_proj.bias", 0)
        x = x + y
        h = _layer_norm(x, w[p + "ln_2.weight"], w.get(p + "ln_2.bias"))
        h = h @ w[p + "mlp.c_fc.weight"].T + w.get(p + "mlp.c_fc.bias", 0)
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU
        x = x + h @ w[p + "mlp.c_proj.weight"].T + w.get(p + "mlp.c_proj.bias", 0)
        states.append(x)
    return [_layer_norm(s, w["ln_f.weight"], w.get("ln_f.bias")) @ w["lm_head.weight"].T for s in states]


def _recurrent_reference(w, ids, arch, n_layer, H):
    """Each layer's hidden states by the textbook equations (PyTorch's gate order), float64."""
    x = w["wte.weight"][ids]
    states = [x]
    for k in range(n_layer):
        wi, wh = w[f"rnn.weight_ih_l{k}"], w[f"rnn.weight_hh_l{k}"]
        bi, bh = w.get(f"rnn.bias_ih_l{k}", 0), w.get(f"rnn.bias_hh_l{k}", 0)
        h, c, out = torch.zeros(H, dtype=torch.float64), torch.zeros(H, dtype=torch.float64), []
        for t in range(x.shape[0]):
            gi, gh = wi @ x[t] + bi, wh @ h + bh
            if arch == "rnn":
                h = torch.tanh(gi + gh)
            elif arch == "lstm":
                i, f, g, o = (gi + gh).split(H)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:
                r = torch.sigmoid(gi[:H] + gh[:H])
                z = torch.sigmoid(gi[H : 2 * H] + gh[H : 2 * H])
                n = torch.tanh(gi[2 * H :] + r * gh[2 * H :])
                h = (1 - z) * n + z * h
            out.append(h)
        x = torch.stack(out)
        states.append(x)
    head_b = w.get("head.bias", 0)
    return [s @ w["head.weight"].T + head_b for s in states if s.shape[1] == H]


@pytest.mark.parametrize("arch", ["transformer", "rnn", "lstm", "gru"])
def test_last_row_is_the_models_logits_and_every_row_matches_a_recomputation(tmp_path, arch):
    s = make_session(arch, block_size=32, seed=3)
    ids = s.tokenizer.encode(PHRASE)
    names, rows = lens.readouts(s, ids)
    with torch.no_grad():
        logits, _ = s.model(torch.tensor([ids]))
    assert torch.equal(rows[-1], logits[0].float())  # exactly, not approximately
    w = _saved(tmp_path, s)
    cfg = s.config.model
    if arch == "transformer":
        ref = _gpt_reference(w, ids, cfg.n_layer, cfg.n_head)
        assert names == ["embedding", "block 1", "block 2"]
    else:
        ref = _recurrent_reference(w, ids, arch, cfg.n_layer, cfg.hidden_size)
        assert names == ["embedding", "layer 1", "layer 2"]  # n_embd == hidden_size: the embedding fits
    assert len(ref) == len(rows)
    for name, got, want in zip(names, rows, ref, strict=True):
        np.testing.assert_allclose(got.double().numpy(), want.numpy(), atol=2e-5, err_msg=name)


def test_the_convolutional_model_has_a_logit_lens_too():
    s = make_session("conv", block_size=32, seed=2)
    ids = s.tokenizer.encode(PHRASE)
    names, rows = lens.readouts(s, ids)
    with torch.no_grad():
        logits, _ = s.model(torch.tensor([ids]))
        hidden = s.model.introspect(torch.tensor([ids]))["hidden"]  # (L, T, C), the explicit path
    assert names == ["embedding"] + [f"block {i + 1}" for i in range(len(hidden))]
    assert torch.equal(rows[-1], logits[0].float())
    for row, h in zip(rows[1:], hidden, strict=True):
        torch.testing.assert_close(row, s.model.readout(h[None])[0], atol=1e-5, rtol=1e-5)
    assert lens.logit_lens(s, PHRASE).kind == "logit lens"


def test_lens_grid_last_row_is_the_models_argmax_and_targets_are_the_next_tokens():
    s = make_session("transformer", block_size=32, seed=1)
    result = lens.logit_lens(s, PHRASE, n_top=5)
    ids = s.tokenizer.encode(PHRASE)
    with torch.no_grad():
        logits, _ = s.model(torch.tensor([ids]))
    probs = torch.softmax(logits[0], -1)
    assert result.top_ids.shape == (3, len(ids), 5) and result.kind == "logit lens"
    assert (result.top_ids[-1, :, 0] == logits[0].argmax(-1).numpy()).all()
    np.testing.assert_allclose(result.top_probs[-1], torch.topk(probs, 5).values.numpy(), atol=1e-6)
    assert result.target_ids.tolist() == ids[1:] + [-1]
    np.testing.assert_allclose(
        result.target_probs[-1, :-1], probs[torch.arange(len(ids) - 1), ids[1:]].numpy(), atol=1e-6
    )
    assert math.isnan(result.target_probs[-1, -1])
    assert (result.top_probs[:, :, :-1] >= result.top_probs[:, :, 1:]).all()
    assert result.correct.shape == (3, len(ids))
    assert all(result.label(i) == s.tokenizer.id_to_token(int(i)) for i in result.top_ids.ravel()[:20])


def test_recurrent_embedding_row_is_left_out_when_sizes_do_not_fit():
    s = make_session("lstm", block_size=32)
    from lmstudio.config import ModelConfig
    from lmstudio.engine.models import build_model

    cfg = ModelConfig(
        arch="gru", n_layer=2, n_embd=12, hidden_size=20, block_size=32, vocab_size=s.tokenizer.vocab_size
    )
    s.model = build_model(cfg).eval()
    s.config.model = cfg
    result = lens.logit_lens(s, PHRASE)
    assert result.rows == ["layer 1", "layer 2"] and result.kind == "layer readout"


def test_a_long_text_is_cut_to_the_context_with_a_note_and_the_last_target_kept():
    s = make_session("transformer", block_size=8)
    result = lens.logit_lens(s, TEXT)
    ids = s.tokenizer.encode(TEXT)
    assert len(result.tokens) == 8 and result.target_ids.tolist() == ids[1:9]
    assert "first 8" in result.note
    with pytest.raises(InspectError):
        lens.logit_lens(s, "")


def test_lens_csv_and_png(tmp_path):
    s = make_session("transformer", block_size=32)
    result = lens.logit_lens(s, "the dog", n_top=3)
    csv_path = export_views.save_lens_csv(result, tmp_path / "lens.csv")
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("row,position,token,actual_next,p_actual_next,top1,p_top1")
    assert len(lines) == 1 + 3 * 7
    png = export_views.save_lens_png(result, tmp_path / "lens.png")
    with Image.open(png) as picture:
        assert picture.format == "PNG" and picture.mode == "RGB" and picture.width > 7 * 10
        assert json.loads(picture.text["cols"]) == result.tokens
        assert json.loads(picture.text["rows"]) == result.rows[::-1]  # the output on top
        pixels = np.asarray(picture)
    # each cell is coloured by its top probability: the colours of the cells are all there
    colours = {tuple(c) for c in pixels.reshape(-1, 3).tolist()}
    top = colorize(result.top_probs[:, :, 0], 0.0, 1.0).reshape(-1, 3).tolist()
    assert all(tuple(c) in colours for c in top)
