"""Recurrent models against independent references: hand-written cells and torch's own nn modules."""

from __future__ import annotations

import pytest
import torch

from lmstudio.config import ModelConfig
from lmstudio.engine.models import RecurrentLM, build_model

V = 9


def rnn_model(arch: str, seed: int = 0, **kw) -> RecurrentLM:
    base = dict(arch=arch, n_layer=2, n_embd=10, hidden_size=14, block_size=16, vocab_size=V, dropout=0.0)
    base.update(kw)
    torch.manual_seed(seed)
    return build_model(ModelConfig(**base)).eval()


def elman_by_hand(model: RecurrentLM, idx: torch.Tensor) -> torch.Tensor:
    """h_t = tanh(W_xh x_t + b_xh + W_hh h_{t-1} + b_hh), layer by layer, then the output projection."""
    x = model.wte.weight[idx[0]]  # (T, E)
    for k in range(model.cfg.n_layer):
        W_xh, W_hh = getattr(model.rnn, f"weight_ih_l{k}"), getattr(model.rnn, f"weight_hh_l{k}")
        b = getattr(model.rnn, f"bias_ih_l{k}") + getattr(model.rnn, f"bias_hh_l{k}")
        h = torch.zeros(model.cfg.hidden_size)
        outs = []
        for t in range(x.size(0)):
            h = torch.tanh(W_xh @ x[t] + W_hh @ h + b)
            outs.append(h)
        x = torch.stack(outs)
    return x @ model.head.weight.T + model.head.bias  # (T, V)


def test_elman_rnn_is_the_tanh_recurrence():
    model = rnn_model("rnn")
    idx = torch.randint(0, V, (1, 12))
    with torch.no_grad():
        logits, _ = model(idx)
        expected = elman_by_hand(model, idx)
    torch.testing.assert_close(logits[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bias", [True, False])
def test_explicit_cells_equal_torch_modules(arch, bias):
    model = rnn_model(arch, bias=bias)
    idx = torch.randint(0, V, (1, 15))
    out = model.introspect(idx)
    with torch.no_grad():
        logits, _ = model(idx)
        top, carry = model.rnn(model.wte(idx))  # (1, T, H), final state of every layer
    h_n = carry[0] if arch == "lstm" else carry  # (L, 1, H)
    torch.testing.assert_close(out["logits"], logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["hidden"][-1], top[0], atol=1e-5, rtol=1e-5)  # every step, top layer
    torch.testing.assert_close(
        out["hidden"][:, -1], h_n[:, 0], atol=1e-5, rtol=1e-5
    )  # last step, every layer
    if arch == "lstm":
        torch.testing.assert_close(out["cell"][:, -1], carry[1][:, 0], atol=1e-5, rtol=1e-5)


def test_lower_layer_hidden_states_match_a_one_layer_torch_lstm():
    model = rnn_model("lstm", n_layer=2)
    idx = torch.randint(0, V, (1, 11))
    out = model.introspect(idx)
    first = torch.nn.LSTM(10, 14, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(first, f"{name}_l0").copy_(getattr(model.rnn, f"{name}_l0"))
        h1, _ = first(model.wte(idx))
    torch.testing.assert_close(out["hidden"][0], h1[0], atol=1e-5, rtol=1e-5)


def test_lstm_gates_obey_the_lstm_equations():
    model = rnn_model("lstm")
    out = model.introspect(torch.randint(0, V, (1, 10)))
    i, f, g, o, c, h = (
        out[k] for k in ("gate.input", "gate.forget", "gate.cell", "gate.output", "cell", "hidden")
    )
    for gate in (i, f, o):
        assert gate.shape == (2, 10, 14) and torch.all((gate > 0) & (gate < 1))
    assert torch.all(g.abs() < 1)
    c_prev = torch.cat([torch.zeros(2, 1, 14), c[:, :-1]], dim=1)
    torch.testing.assert_close(c, f * c_prev + i * g)
    torch.testing.assert_close(h, o * torch.tanh(c))


def test_gru_gates_follow_torch_gate_order():
    model = rnn_model("gru", n_layer=1)
    idx = torch.randint(0, V, (1, 6))
    out = model.introspect(idx)
    # two steps written from the documented GRU equations with torch's r, z, n slices
    W_ih, W_hh = model.rnn.weight_ih_l0, model.rnn.weight_hh_l0
    b_ih, b_hh = model.rnn.bias_ih_l0, model.rnn.bias_hh_l0
    H = 14
    r_, z_, n_ = slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H)
    h = torch.zeros(H)
    with torch.no_grad():
        for t in range(2):
            x = model.wte.weight[idx[0, t]]
            r = torch.sigmoid(W_ih[r_] @ x + b_ih[r_] + W_hh[r_] @ h + b_hh[r_])
            z = torch.sigmoid(W_ih[z_] @ x + b_ih[z_] + W_hh[z_] @ h + b_hh[z_])
            n = torch.tanh(W_ih[n_] @ x + b_ih[n_] + r * (W_hh[n_] @ h + b_hh[n_]))
            h = (1 - z) * n + z * h
            torch.testing.assert_close(out["gate.reset"][0, t], r)
            torch.testing.assert_close(out["gate.update"][0, t], z)
            torch.testing.assert_close(out["gate.new"][0, t], n)
            torch.testing.assert_close(out["hidden"][0, t], h)


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
def test_weight_tying_needs_equal_sizes(arch):
    tied = rnn_model(arch, n_embd=14, hidden_size=14, tie_weights=True)
    assert tied.tied and tied.head.weight is tied.wte.weight
    skipped = rnn_model(arch, n_embd=10, hidden_size=14, tie_weights=True)
    assert not skipped.tied and skipped.head.weight.shape == (V, 14)
    untied = rnn_model(arch, n_embd=14, hidden_size=14, tie_weights=False)
    assert not untied.tied and untied.head.weight.data_ptr() != untied.wte.weight.data_ptr()


def test_dropout_sits_between_layers_and_before_the_head():
    model = rnn_model("lstm", dropout=0.3, n_layer=3).train()
    assert model.rnn.dropout == 0.3
    idx = torch.randint(0, V, (2, 8))
    a, _ = model(idx)
    b, _ = model(idx)
    assert not torch.allclose(a, b)  # training: dropout is active
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], model(idx)[0])
    assert rnn_model("gru", dropout=0.3, n_layer=1).rnn.dropout == 0.0  # nothing between layers to drop


def test_state_carries_on_past_the_training_context():
    model = rnn_model("gru", block_size=4)
    idx = torch.randint(0, V, (1, 20))
    with torch.no_grad():
        full, _ = model(idx)
        state = model.init_state(1)
        pieces = []
        for t in range(0, 20, 4):
            logits, state = model.step(idx[:, t : t + 4], state)
            pieces.append(logits)
    assert state.length == 20
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)
