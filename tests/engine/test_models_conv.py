"""The causal convolutional LM against independent references: a hand-written tap-by-tap convolution,
torch's conv1d with explicit left padding, autograd for the receptive field, a naive full recomputation
for incremental decoding."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lmstudio.config import ModelConfig, SampleConfig, TrainConfig
from lmstudio.engine.models import ConvLM, build_model, memory_estimate, param_count
from lmstudio.engine.models.conv import dilations, reach_map, receptive_field, receptive_fields

V = 13


def conv_cfg(**kw) -> ModelConfig:
    base = dict(
        arch="conv", n_layer=4, n_embd=16, kernel_size=3, dilation_cycle=3, block_size=32, vocab_size=V
    )
    base.update(kw)
    return ModelConfig(**base)


def make(seed: int = 0, **kw) -> ConvLM:
    torch.manual_seed(seed)
    model = build_model(conv_cfg(**kw)).eval()
    assert isinstance(model, ConvLM)
    return model


def naive_forward(model: ConvLM, idx: torch.Tensor) -> torch.Tensor:
    """The model written out position by position: each tap's weight times the input d*j tokens back."""
    cfg = model.cfg
    x = model.wte.weight[idx[0]]  # (T, C)
    T = x.size(0)
    for block, d in zip(model.blocks, dilations(cfg), strict=True):
        h = F.layer_norm(x, (cfg.n_embd,), block.ln.weight, block.ln.bias)  # (T, C)
        w = block.conv.weight  # (2C, C, k): tap j reads the input (k-1-j)*d tokens back
        out = torch.zeros(T, 2 * cfg.n_embd)
        for t in range(T):
            acc = block.conv.bias.clone() if block.conv.bias is not None else torch.zeros(2 * cfg.n_embd)
            for j in range(cfg.kernel_size):
                src = t - (cfg.kernel_size - 1 - j) * d
                if src >= 0:  # before the start: zero padding
                    acc = acc + w[:, :, j] @ h[src]
            out[t] = acc
        value, gate = out.chunk(2, dim=1)
        x = x + block.proj(value * torch.sigmoid(gate))
    return model.lm_head(F.layer_norm(x, (cfg.n_embd,), model.ln_f.weight, model.ln_f.bias))  # (T, V)


def test_forward_equals_a_tap_by_tap_convolution():
    model = make()
    idx = torch.randint(0, V, (1, 30))
    with torch.no_grad():
        logits, _ = model(idx)
        torch.testing.assert_close(logits[0], naive_forward(model, idx), atol=1e-5, rtol=1e-5)


def test_each_block_equals_torch_conv1d_with_explicit_left_padding():
    model = make(kernel_size=4)
    block = model.blocks[2]
    x = torch.randn(2, 20, 16)
    with torch.no_grad():
        got, _ = block(x)
        h = block.ln(x).transpose(1, 2)  # (B, C, T)
        k, d = 4, block.dilation
        # padding=(k-1)*d on both sides, then drop the right end: the classic way to make conv1d causal
        full = F.conv1d(h, block.conv.weight, block.conv.bias, padding=(k - 1) * d, dilation=d)[..., :20]
        want = x + block.proj(F.glu(full, dim=1).transpose(1, 2))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_incremental_decoding_equals_full_recomputation_past_the_context():
    model = make()
    idx = torch.randint(0, V, (2, 70))  # more than two contexts: the model has no position limit
    with torch.no_grad():
        state = model.init_state(2)
        pieces = []
        logits, state = model.step(idx[:, :7], state)
        pieces.append(logits)
        for t in range(7, 70):
            logits, state = model.step(idx[:, t : t + 1], state)
            pieces.append(logits)
            # the naive way: recompute everything seen so far, keep the last position
            full, _ = model(idx[:, : t + 1])
            torch.testing.assert_close(logits[:, 0], full[:, -1], atol=1e-5, rtol=1e-5)
    assert state.length == 70
    assert [b.shape[-1] for b in state.buffers] == [(3 - 1) * d for d in dilations(model.cfg)]


def test_the_receptive_field_is_exactly_what_autograd_says_each_position_depends_on():
    cfg = conv_cfg(n_layer=5, kernel_size=2, dilation_cycle=4)  # dilations 1, 2, 4, 8, 1
    assert dilations(cfg) == [1, 2, 4, 8, 1]
    assert receptive_fields(cfg) == [2, 4, 8, 16, 17]
    assert receptive_field(cfg) == 17 == 1 + sum((2 - 1) * d for d in [1, 2, 4, 8, 1])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    T = 24
    reach = reach_map(cfg, T)  # (L, T, T)
    emb = model.wte.weight[torch.randint(0, V, (T,))].detach().requires_grad_(True)
    x = emb[None]
    outs = []
    for block in model.blocks:
        x, _ = block(x)
        outs.append(x[0])
    for layer, out in enumerate(outs):
        for t in (0, 5, 16, 23):
            (grad,) = torch.autograd.grad(out[t].sum(), emb, retain_graph=True)
            depends = grad.abs().sum(dim=1) > 0  # (T,): which inputs moved this output
            assert torch.equal(depends, reach[layer, t].bool()), (layer, t)
    # per position: how far back it sees grows with t up to the receptive field, then stays there
    seen = reach[-1].sum(dim=1)
    assert seen.tolist() == [min(t + 1, 17) for t in range(T)]


def test_introspect_returns_activations_gates_and_reach():
    model = make()
    idx = torch.randint(0, V, (1, 12))
    out = model.introspect(idx)
    assert out["hidden"].shape == (4, 12, 16) and out["gate.glu"].shape == (4, 12, 16)
    assert out["reach"].shape == (4, 12, 12)
    assert 0 <= float(out["gate.glu"].min()) and float(out["gate.glu"].max()) <= 1
    with torch.no_grad():
        torch.testing.assert_close(out["logits"], model(idx)[0][0], atol=1e-5, rtol=1e-5)


def test_parameter_count_and_memory_estimate():
    cfg = conv_cfg(tie_weights=False)
    C, k, L = 16, 3, 4
    per_block = (2 * C) + (2 * C * C * k + 2 * C) + (C * C + C)  # LayerNorm, conv, projection
    want = V * C + L * per_block + 2 * C + V * C  # embedding, blocks, ln_f, head
    assert param_count(cfg) == want == make(tie_weights=False).num_params()
    assert param_count(conv_cfg()) == want - V * C  # tied: the head is the embedding
    mem = memory_estimate(cfg, TrainConfig(batch_size=4))
    assert mem["params"] == 4 * want and mem["optimizer"] == 8 * want
    assert mem["activations"] > 4 * 32 * (V + C * L) * 4  # at least logits and one stream per layer


def test_it_generates_through_the_sampler_with_its_buffers():
    from lmstudio.engine.sampling import generate

    class Tok:
        vocab_size = V

        def encode(self, text):
            return [ord(c) % V for c in text]

        def decode(self, ids):
            return "".join(chr(97 + i) for i in ids)

        def id_to_token(self, i):
            return chr(97 + i)

    # a receptive field (1 + 2*1 + 2*2 = 7) inside the context (8): the sampler's slow path, which recomputes
    # the last 8 tokens with zeros before them, sees every token the buffers hold, so both must agree
    model = make(block_size=8, n_layer=2, dilation_cycle=2)
    assert model.receptive_field == 7
    session = SimpleNamespace(model=model, tokenizer=Tok(), config=None)
    cfg = SampleConfig(max_tokens=40, seed=3, temperature=1.0)
    cached = [s.token_id for s in generate(session, "abc", cfg, n_top=0)]
    slow = [s.token_id for s in generate(session, "abc", cfg, n_top=0, use_cache=False)]
    assert len(cached) == 40 and cached == slow


def test_bad_settings_are_named():
    from lmstudio.config import ConfigError

    with pytest.raises(ConfigError) as e:
        build_model(conv_cfg(kernel_size=1))
    assert "model.kernel_size" in e.value.errors
