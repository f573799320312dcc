"""Behaviour every architecture shares: the forward contract, causality, incremental decoding, learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmstudio.config import ARCHS, ConfigError, ModelConfig
from lmstudio.engine.models import LanguageModel, build_model

V = 11


def tiny(arch: str, **kw) -> ModelConfig:
    base = dict(
        arch=arch, n_layer=2, n_embd=16, n_head=2, hidden_size=24, block_size=16, vocab_size=V, dropout=0.0
    )
    base.update(kw)
    return ModelConfig(**base)


def make(arch: str, seed: int = 0, **kw) -> LanguageModel:
    torch.manual_seed(seed)
    return build_model(tiny(arch, **kw)).eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shapes_and_loss_is_mean_cross_entropy(arch):
    model = make(arch)
    idx = torch.randint(0, V, (3, 12))
    targets = torch.randint(0, V, (3, 12))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 12, V)
    # recomputed independently: average of -log softmax at the target, over every position
    logp = torch.log_softmax(logits, dim=-1)
    expected = -logp.gather(-1, targets.unsqueeze(-1)).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(loss, F.cross_entropy(logits.view(-1, V), targets.view(-1)))
    assert model(idx)[1] is None


@pytest.mark.parametrize("arch", ARCHS)
def test_changing_a_future_token_leaves_earlier_logits_alone(arch):
    model = make(arch)
    idx = torch.randint(0, V, (2, 16))
    t = 9
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 1) % V
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t])
    assert not torch.allclose(a[:, t], b[:, t])  # the changed position itself does see its token


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tied", [True, False])
def test_step_by_step_decoding_equals_forward(arch, tied):
    kw = {"tie_weights": tied}
    if arch != "transformer" and tied:
        kw["hidden_size"] = 16  # tying needs hidden_size == n_embd
    model = make(arch, **kw)
    idx = torch.randint(0, V, (2, 16))
    with torch.no_grad():
        full, _ = model(idx)
        state = model.init_state(2)
        assert model.state_len(state) == 0
        chunk, state = model.step(idx[:, :5], state)  # a prompt chunk first
        pieces = [chunk]
        for t in range(5, 16):
            logits, state = model.step(idx[:, t : t + 1], state)
            pieces.append(logits)
        assert model.state_len(state) == 16
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_two_chunks_after_a_prompt_equal_forward(arch):
    model = make(arch)
    idx = torch.randint(0, V, (1, 14))
    with torch.no_grad():
        full, _ = model(idx)
        state = model.init_state(1)
        a, state = model.step(idx[:, :6], state)
        b, state = model.step(idx[:, 6:], state)  # several new tokens on top of a filled state
    torch.testing.assert_close(torch.cat([a, b], dim=1), full, atol=1e-5, rtol=1e-5)


def test_only_the_transformer_state_has_a_capacity():
    gpt = make("transformer")
    assert gpt.state_capacity == 16
    state = gpt.init_state(1)
    with torch.no_grad():
        _, state = gpt.step(torch.zeros(1, 16, dtype=torch.long), state)
        with pytest.raises(ValueError, match="fresh state"):
            gpt.step(torch.zeros(1, 1, dtype=torch.long), state)
        with pytest.raises(ValueError, match="context"):
            gpt(torch.zeros(1, 17, dtype=torch.long))
    lstm = make("lstm")
    assert lstm.state_capacity is None
    with torch.no_grad():
        logits, _ = lstm(torch.zeros(1, 40, dtype=torch.long))  # recurrent models run past block_size
    assert logits.shape == (1, 40, V)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_tiny_model_overfits_a_repeated_sequence(arch):
    torch.manual_seed(0)
    model = build_model(tiny(arch, n_embd=32, hidden_size=32, n_head=4, block_size=16)).train()
    pattern = torch.randint(0, V, (8,))
    data = pattern.repeat(4)  # 32 tokens: every window continues the same cycle
    x = torch.stack([data[i : i + 16] for i in range(8)])  # (8, 16)
    y = torch.stack([data[i + 1 : i + 17] for i in range(8)])  # (8, 16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(100):
        _, loss = model(x, y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, final = model(x, y)
    assert first > 2.0
    # the first tokens of a window are ambiguous (the pattern may repeat symbols), the rest is determined
    assert final.item() < 0.3 * first, (first, final.item())


@pytest.mark.parametrize("arch", ARCHS)
def test_introspect_restores_training_mode_and_ignores_dropout(arch):
    model = make(arch, dropout=0.5, n_layer=2).train()
    idx = torch.randint(0, V, (1, 10))
    out = model.introspect(idx)
    assert model.training
    with torch.no_grad():
        reference, _ = model.eval()(idx)
    torch.testing.assert_close(out["logits"], reference[0], atol=1e-5, rtol=1e-5)
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in out.values())


@pytest.mark.parametrize("arch", ARCHS)
def test_build_model_refuses_an_unknown_vocabulary(arch):
    with pytest.raises(ConfigError) as e:
        build_model(tiny(arch, vocab_size=0))
    assert "model.vocab_size" in e.value.errors
    assert "tokenizer" in str(e.value)


def test_build_model_names_every_bad_setting():
    with pytest.raises(ConfigError) as e:
        build_model(tiny("transformer", n_embd=30, n_head=4, dropout=1.5))
    assert set(e.value.errors) == {"model.n_head", "model.dropout"}


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_autocast_on_cpu_trains_and_decodes(arch):
    # the trainer may autocast on request; the CPU LSTM has no bf16 kernel and must fall back quietly
    model = make(arch, n_embd=32, hidden_size=32, n_head=4)
    idx = torch.randint(0, V, (2, 16))
    with torch.no_grad():
        reference, _ = model(idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss = model.train()(idx, idx)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full, _ = model(idx)
        state = model.init_state(2)
        pieces = []
        for t in range(16):
            logits, state = model.step(idx[:, t : t + 1], state)
            pieces.append(logits)
    torch.testing.assert_close(full.float(), reference, atol=0.05, rtol=0.05)
    torch.testing.assert_close(torch.cat(pieces, 1).float(), full.float(), atol=0.05, rtol=0.05)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_forward_step_and_introspect_agree(arch):
    model = make(arch).cuda()
    idx = torch.randint(0, V, (2, 16), device="cuda")
    with torch.no_grad():
        full, _ = model(idx)
        state = model.init_state(2)
        pieces = []
        for t in range(16):
            logits, state = model.step(idx[:, t : t + 1], state)
            pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-4, rtol=1e-4)
    out = model.introspect(idx[:1])
    torch.testing.assert_close(out["logits"], full[0].cpu(), atol=1e-4, rtol=1e-4)
