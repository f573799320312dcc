"""Parameter counts and memory estimates against really built models and closed-form counts."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from lmstudio.config import ARCHS, ConfigError, ModelConfig, TrainConfig
from lmstudio.engine.models import build_model, memory_estimate, param_count


def unique_numel(model: torch.nn.Module) -> int:
    # by storage address, independent of how the model counts itself
    seen = {}
    for p in model.parameters():
        seen[p.data_ptr()] = p.numel()
    return sum(seen.values())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_param_count_equals_the_built_model(arch, tied, bias):
    for extra in ({}, {"hidden_size": 16}, {"pos_encoding": "sinusoidal"}):
        kw = (
            dict(
                arch=arch,
                n_layer=2,
                n_embd=16,
                n_head=2,
                hidden_size=20,
                block_size=8,
                vocab_size=37,
                tie_weights=tied,
                bias=bias,
            )
            | extra
        )
        cfg = ModelConfig(**kw)
        assert param_count(cfg) == unique_numel(build_model(cfg)), (cfg, extra)


def test_param_count_matches_closed_forms():
    # GPT-2 small as nanoGPT configures it (vocab padded to 50304): 124.48M with position embeddings
    gpt2 = ModelConfig(
        arch="transformer",
        n_layer=12,
        n_head=12,
        n_embd=768,
        block_size=1024,
        vocab_size=50304,
        tie_weights=True,
        bias=True,
    )
    C, L = 768, 12
    per_block = 2 * 2 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C)
    assert param_count(gpt2) == 50304 * C + 1024 * C + L * per_block + 2 * C == 124_475_904
    # LSTM: 4 gates, each with input and hidden weights and two biases (torch keeps b_ih and b_hh)
    lstm = ModelConfig(arch="lstm", n_layer=2, n_embd=64, hidden_size=256, vocab_size=65, tie_weights=True)
    E, H, V = 64, 256, 65
    layers = 4 * H * (E + H + 2) + 4 * H * (H + H + 2)
    assert param_count(lstm) == V * E + layers + (V * H + V)  # sizes differ: not tied


def test_param_count_is_fast_and_cached():
    cfg = ModelConfig(
        arch="transformer", n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257
    )
    param_count(dataclasses.replace(cfg, n_layer=11))  # warm torch's meta machinery
    start = time.perf_counter()
    param_count(cfg)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(100):
        param_count(cfg)
    again = (time.perf_counter() - start) / 100
    assert first < 0.5  # generous for a loaded 2-core machine; typically ~20 ms
    assert again < first / 10  # served from the cache


def test_param_count_allocates_nothing():
    # 48 layers of width 8192: ~39 billion parameters, 155 GB in float32, far beyond this machine
    huge = ModelConfig(
        arch="transformer", n_layer=48, n_head=64, n_embd=8192, block_size=8192, vocab_size=65536
    )
    C = 8192
    expected = 65536 * C + 8192 * C + 48 * (12 * C * C + 13 * C) + 2 * C
    assert param_count(huge) == expected
    assert memory_estimate(huge, TrainConfig())["total"] > 16 * expected


def test_param_count_refuses_an_unbuildable_config():
    with pytest.raises(ConfigError):
        param_count(ModelConfig(vocab_size=0))


def test_memory_estimate_accounts_for_each_part():
    m = ModelConfig(arch="transformer", n_layer=2, n_embd=32, n_head=2, block_size=16, vocab_size=50)
    t = TrainConfig(batch_size=4, optimizer="adamw", precision="fp32")
    est = memory_estimate(m, t)
    n = param_count(m)
    assert est["n_params"] == n
    assert est["params"] == est["grads"] == 4 * n
    assert est["optimizer"] == 8 * n
    assert est["total"] == est["params"] + est["grads"] + est["optimizer"] + est["activations"]
    double = memory_estimate(m, dataclasses.replace(t, batch_size=8))
    assert double["activations"] == 2 * est["activations"]  # one micro-batch, linear in its size
    assert memory_estimate(m, dataclasses.replace(t, grad_accum=4))["activations"] == est["activations"]
    half = memory_estimate(m, dataclasses.replace(t, precision="bf16"))
    assert half["activations"] < est["activations"]
    assert memory_estimate(m, dataclasses.replace(t, optimizer="sgd", beta1=0.9))["optimizer"] == 4 * n
    assert memory_estimate(m, dataclasses.replace(t, optimizer="sgd", beta1=0.0))["optimizer"] == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_activation_estimate_is_the_right_order_of_magnitude(arch):
    """Compare with what autograd really keeps: the bytes of tensors saved for backward (weights aside).

    On CPU the oneDNN LSTM keeps a workspace about twice the estimate; within a factor of 3 all pass."""
    m = ModelConfig(arch=arch, n_layer=2, n_embd=64, n_head=4, hidden_size=64, block_size=32, vocab_size=100)
    t = TrainConfig(batch_size=8, precision="fp32")
    model = build_model(m).train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(x: torch.Tensor):
        if x.untyped_storage().data_ptr() not in weights:
            saved[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
        return x

    idx = torch.randint(0, 100, (8, 32))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        _, loss = model(idx, idx)
    real = sum(saved.values())
    est = memory_estimate(m, t)["activations"]
    assert real / 3 < est < real * 3, (real, est)
