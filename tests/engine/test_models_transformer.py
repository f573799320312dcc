"""The GPT against independent references: torch's own attention, the sinusoid formula, nanoGPT's init."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmstudio.config import ModelConfig
from lmstudio.engine.models import GPT, build_model
from lmstudio.engine.models.transformer import SINUSOID_SCALE, CausalSelfAttention, sinusoidal_encoding


def cfg(**kw) -> ModelConfig:
    base = dict(arch="transformer", n_layer=2, n_embd=24, n_head=3, block_size=12, vocab_size=13, dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


def gpt(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return build_model(cfg(**kw)).eval()


@pytest.mark.parametrize("bias", [True, False])
def test_attention_matches_torch_multihead_attention(bias):
    torch.manual_seed(1)
    c = cfg(bias=bias)
    ours = CausalSelfAttention(c).eval()
    ref = nn.MultiheadAttention(c.n_embd, c.n_head, bias=bias, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.c_attn.weight)  # rows: q, k, v, each split into heads in order
        ref.out_proj.weight.copy_(ours.c_proj.weight)
        if bias:
            ref.in_proj_bias.copy_(ours.c_attn.bias)
            ref.out_proj.bias.copy_(ours.c_proj.bias)
    x = torch.randn(2, 10, c.n_embd)
    future = torch.ones(10, 10, dtype=torch.bool).triu(1)  # True = may not attend
    with torch.no_grad():
        want, want_att = ref(x, x, x, attn_mask=future, need_weights=True, average_attn_weights=False)
        fast, none = ours(x)
        explicit, att = ours(x, record=True)
    assert none is None
    torch.testing.assert_close(fast, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(explicit, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(att, want_att, atol=1e-6, rtol=1e-4)  # (B, nh, T, T)


def test_attention_scale_is_one_over_sqrt_head_size():
    torch.manual_seed(2)
    c = cfg()
    attn = CausalSelfAttention(c).eval()
    x = torch.randn(1, 6, c.n_embd)
    with torch.no_grad():
        q, k, _ = attn.c_attn(x).split(c.n_embd, dim=2)
        hs = c.n_embd // c.n_head
        q0, k0 = q[0, :, :hs], k[0, :, :hs]  # head 0, (T, hs)
        scores = (q0 @ k0.T) / math.sqrt(hs)
        scores[torch.ones(6, 6, dtype=torch.bool).triu(1)] = -math.inf
        _, att = attn(x, record=True)
    torch.testing.assert_close(att[0, 0], torch.softmax(scores, dim=-1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pos", ["learned", "sinusoidal"])
def test_explicit_introspection_path_gives_the_fast_path_logits(pos):
    model = gpt(pos_encoding=pos)
    idx = torch.randint(0, 13, (1, 12))
    out = model.introspect(idx)
    with torch.no_grad():
        logits, _ = model(idx)
    torch.testing.assert_close(out["logits"], logits[0], atol=1e-5, rtol=1e-5)
    att = out["attention"]
    assert att.shape == (2, 3, 12, 12)
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 3, 12))  # each row a distribution
    assert torch.all(att.triu(1) == 0)  # nothing from the future
    assert out["hidden"].shape == (2, 12, 24)


def test_sinusoidal_encoding_matches_the_formula():
    pe = sinusoidal_encoding(20, 10)
    for p in range(20):
        for i in range(5):
            angle = p / 10000 ** (2 * i / 10)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    odd = sinusoidal_encoding(4, 5)
    assert odd[3, 4].item() == pytest.approx(math.sin(3 / 10000 ** (4 / 5)), abs=1e-6)


def test_sinusoidal_positions_are_added_to_the_token_embeddings():
    model = gpt(pos_encoding="sinusoidal")
    assert not any("wpe" in name for name, _ in model.named_parameters())  # fixed, not learned
    assert "pe" not in model.state_dict()  # rebuilt, not saved
    idx = torch.randint(0, 13, (2, 7))
    seen = {}
    model.blocks[0].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        model(idx)
        expected = model.wte(idx) + SINUSOID_SCALE * sinusoidal_encoding(12, 24)[:7]
    torch.testing.assert_close(seen["x"], expected)
    # scaled to the spread of a fresh learned table, so tokens are not drowned at the start
    rms = (SINUSOID_SCALE * sinusoidal_encoding(12, 24)).square().mean().sqrt().item()
    assert rms == pytest.approx(0.02, rel=1e-5)  # each sin/cos pair has sin^2 + cos^2 = 1


def test_weight_tying_shares_one_tensor():
    tied = gpt(tie_weights=True)
    assert tied.wte.weight is tied.lm_head.weight
    untied = gpt(tie_weights=False)
    assert untied.wte.weight.data_ptr() != untied.lm_head.weight.data_ptr()
    # a gradient step through the output layer moves the embedding too
    before = tied.wte.weight.detach().clone()
    idx = torch.randint(0, 13, (2, 8))
    opt = torch.optim.SGD(tied.lm_head.parameters(), lr=1.0)
    _, loss = tied.train()(idx, idx)
    loss.backward()
    opt.step()
    assert not torch.equal(tied.wte.weight.detach(), before)


def test_nanogpt_initialisation():
    torch.manual_seed(0)
    c = cfg(n_layer=6, n_embd=192, n_head=4, vocab_size=500, tie_weights=False)
    model = build_model(c)
    proj_std = 0.02 / math.sqrt(2 * 6)
    for block in model.blocks:
        assert block.attn.c_proj.weight.std().item() == pytest.approx(proj_std, rel=0.1)
        assert block.mlp.c_proj.weight.std().item() == pytest.approx(proj_std, rel=0.1)
        assert block.mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.1)
        assert torch.all(block.attn.c_attn.bias == 0)
    for w in (model.wte.weight, model.wpe.weight, model.lm_head.weight):
        assert w.std().item() == pytest.approx(0.02, rel=0.1)
    # near-uniform predictions at the start: loss close to ln(V)
    _, loss = model(torch.randint(0, 500, (4, 12)), torch.randint(0, 500, (4, 12)))
    assert loss.item() == pytest.approx(math.log(500), rel=0.02)


def test_kv_cache_is_preallocated_and_written_in_place():
    model = gpt()
    state = model.init_state(2)
    assert len(state.k) == 2 and state.k[0].shape == (2, 3, 12, 8)  # (B, nh, block_size, hs)
    ptrs = [t.data_ptr() for t in state.k + state.v]
    idx = torch.randint(0, 13, (2, 5))
    with torch.no_grad():
        _, state = model.step(idx[:, :3], state)
        _, state = model.step(idx[:, 3:4], state)
        _, state = model.step(idx[:, 4:5], state)
        # the cached keys are those a full pass computes
        x = model.wte(idx) + model.wpe.weight[:5]
        _, k, _ = model.blocks[0].attn._heads(model.blocks[0].ln_1(x))
    assert [t.data_ptr() for t in state.k + state.v] == ptrs
    assert model.state_len(state) == 5
    torch.testing.assert_close(state.k[0][:, :, :5], k, atol=1e-6, rtol=1e-5)


def test_sdpa_training_path_has_gradients_like_the_explicit_path():
    torch.manual_seed(3)
    c = cfg()
    attn = CausalSelfAttention(c)
    x = torch.randn(2, 9, c.n_embd, requires_grad=True)
    y_fast, _ = attn(x)
    (g_fast,) = torch.autograd.grad(y_fast.square().sum(), x)
    y_slow, _ = attn(x, record=True)
    (g_slow,) = torch.autograd.grad(y_slow.square().sum(), x)
    torch.testing.assert_close(g_fast, g_slow, atol=1e-5, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_fast_and_cached_paths_agree():
    model = gpt(n_layer=2, n_embd=64, n_head=4, block_size=32).cuda()
    idx = torch.randint(0, 13, (2, 32), device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        full, _ = model(idx)
        state = model.init_state(2)
        a, state = model.step(idx[:, :16], state)
        rest = [model.step(idx[:, t : t + 1], state)[0] for t in range(16, 32)]
    torch.testing.assert_close(torch.cat([a, *rest], 1).float(), full.float(), atol=5e-2, rtol=5e-2)
    assert F.softmax(full.float(), -1).sum(-1).allclose(torch.ones(2, 32, device="cuda"))
