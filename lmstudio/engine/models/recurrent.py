"""Recurrent language models: Elman RNN, LSTM and GRU.

embedding (n_embd) -> stacked recurrent layers (hidden_size, n_layer, dropout between layers)
-> dropout -> linear projection to the vocabulary.

Training and generation run torch's nn.RNN / nn.LSTM / nn.GRU (cuDNN on a GPU). The inspector runs an
explicit per-step cell in Python over the very same weights (``weight_ih_l{k}``, ``weight_hh_l{k}``,
``bias_ih_l{k}``, ``bias_hh_l{k}``) so it can record every gate; a test proves the two agree.

Weight tying shares the embedding with the output matrix; it needs ``hidden_size == n_embd`` and is
silently skipped otherwise (``model.tied`` tells which happened; the parameter count follows it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmstudio.config import ModelConfig
from lmstudio.engine.models.base import LanguageModel, as_plain

_RNN_CLASSES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass
class RecurrentState:
    h: torch.Tensor  # (L, B, H) hidden state of every layer
    c: torch.Tensor | None = None  # (L, B, H) LSTM memory cell; None for RNN and GRU
    length: int = 0  # tokens consumed so far


class RecurrentLM(LanguageModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.arch = cfg.arch
        self.block_size = cfg.block_size
        self.state_capacity = None  # the hidden state carries on past the training context
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        kwargs: dict[str, object] = dict(
            input_size=cfg.n_embd,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.n_layer,
            bias=cfg.bias,
            batch_first=True,
            dropout=cfg.dropout if cfg.n_layer > 1 else 0.0,
        )
        if cfg.arch == "rnn":
            kwargs["nonlinearity"] = "tanh"
        self.rnn = _RNN_CLASSES[cfg.arch](**kwargs)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=cfg.bias)
        self.tied = bool(cfg.tie_weights and cfg.hidden_size == cfg.n_embd)
        # Torch's own init throughout: recurrent weights uniform(+-1/sqrt(H)), embedding N(0, 1). Measured
        # on tiny Shakespeare (2x256 LSTM, 200 steps): N(0, 1) reached val 2.00 (n_embd 64) and 1.88 (tied,
        # 256) where std 1/sqrt(n_embd) reached 2.31 and 2.06, and std 0.02 2.44 (tied, 256).
        if self.tied:
            self.head.weight = self.wte.weight
        if self.head.bias is not None and not self.head.bias.is_meta:
            nn.init.zeros_(self.head.bias)

    def _run(self, x: torch.Tensor, carry=None):
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # oneDNN's CPU LSTM has no bf16 kernel on many CPUs ("could not create a primitive
            # descriptor"); the recurrence runs in float32 there, the rest of the model stays autocast
            with torch.autocast("cpu", enabled=False):
                if carry is not None:
                    carry = tuple(c.float() for c in carry) if isinstance(carry, tuple) else carry.float()
                return self.rnn(x.float(), carry)
        return self.rnn(x, carry)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        self._check_idx(idx, None)
        out, _ = self._run(self.wte(idx))  # (B, T, H)
        logits = self.head(self.drop(out))  # (B, T, V)
        return logits, self.loss_from_logits(logits, targets)

    # ---- incremental decoding -------------------------------------------------------------------
    def init_state(self, batch_size: int) -> RecurrentState:
        w = self.head.weight
        shape = (self.cfg.n_layer, batch_size, self.cfg.hidden_size)
        zeros = lambda: torch.zeros(shape, dtype=w.dtype, device=w.device)  # noqa: E731
        return RecurrentState(h=zeros(), c=zeros() if self.arch == "lstm" else None)

    def step(self, idx: torch.Tensor, state: RecurrentState) -> tuple[torch.Tensor, RecurrentState]:
        self._check_idx(idx, None)
        carry = (state.h, state.c) if self.arch == "lstm" else state.h
        out, carry = self._run(self.wte(idx), carry)  # (B, T_new, H)
        h, c = carry if self.arch == "lstm" else (carry, None)
        logits = self.head(self.drop(out))  # (B, T_new, V)
        return logits, RecurrentState(h=h, c=c, length=state.length + idx.size(1))

    # ---- introspection --------------------------------------------------------------------------
    def _single_layer(self, k: int) -> nn.Module:
        """A one-layer torch module holding layer ``k``'s very parameter tensors (no copy)."""
        rnn = self.rnn
        kwargs = dict(
            input_size=rnn.input_size if k == 0 else rnn.hidden_size,
            hidden_size=rnn.hidden_size,
            num_layers=1,
            bias=rnn.bias,
            batch_first=True,
        )
        if self.arch == "rnn":
            kwargs["nonlinearity"] = rnn.nonlinearity
        with torch.device("meta"):
            layer = _RNN_CLASSES[self.arch](**kwargs)
        params = {
            name[: -len(f"_l{k}")] + "_l0": p for name, p in rnn.named_parameters() if name.endswith(f"_l{k}")
        }
        layer.load_state_dict(params, assign=True)
        return layer.train(self.training)

    def layer_states(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """The token embeddings (B, T, E) and each layer's hidden states over time (B, T, H), run through
        torch's own recurrent kernel one layer at a time over the model's parameters (dropout between
        layers is off in eval mode, as in ``forward``)."""
        self._check_idx(idx, None)
        x = self.wte(idx)  # (B, T, E)
        states = [x]
        for k in range(self.cfg.n_layer):
            x, _ = self._single_layer(k)(x)  # (B, T, H)
            states.append(x)
        return states

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """The output head applied to a hidden state (B, T, H): logits (B, T, V). Only states of width
        ``hidden_size`` fit; the embeddings do when ``n_embd == hidden_size``."""
        return self.head(self.drop(h))

    def _layer_weights(self, k: int):
        rnn = self.rnn
        b_ih = getattr(rnn, f"bias_ih_l{k}") if self.cfg.bias else None
        b_hh = getattr(rnn, f"bias_hh_l{k}") if self.cfg.bias else None
        return getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}"), b_ih, b_hh

    @torch.no_grad()
    def introspect(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """hidden (L, T, H) and the gates of every step, each (L, T, H), plus logits (T, V).

        LSTM: gate.input, gate.forget, gate.output (sigmoids), gate.cell (the tanh candidate g) and
        cell (the memory c_t). GRU: gate.reset, gate.update (sigmoids), gate.new (the tanh candidate n).
        """
        self._check_idx(idx, None)
        if idx.size(0) != 1:
            raise ValueError(f"introspect takes one sequence (1, T), got {tuple(idx.shape)}")
        H = self.cfg.hidden_size
        names = {
            "rnn": [],
            "lstm": ["gate.input", "gate.forget", "gate.cell", "gate.output", "cell"],
            "gru": ["gate.reset", "gate.update", "gate.new"],
        }[self.arch]
        record: dict[str, list[torch.Tensor]] = {name: [] for name in ["hidden", *names]}
        inp = self.wte(idx[0])  # (T, E)
        for k in range(self.cfg.n_layer):
            w_ih, w_hh, b_ih, b_hh = self._layer_weights(k)
            # the input's share of every step at once; only the recurrence needs the Python loop
            xw = inp @ w_ih.T + (b_ih if b_ih is not None else 0)  # (T, G*H)
            h = inp.new_zeros(H)
            c = inp.new_zeros(H)
            steps: dict[str, list[torch.Tensor]] = {name: [] for name in record}
            for t in range(xw.size(0)):
                hw = h @ w_hh.T + (b_hh if b_hh is not None else 0)  # (G*H,)
                if self.arch == "rnn":
                    h = torch.tanh(xw[t] + hw)
                elif self.arch == "lstm":
                    # PyTorch's gate order: input, forget, cell candidate g, output
                    i, f, g, o = (xw[t] + hw).split(H)
                    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
                    c = f * c + i * g
                    h = o * torch.tanh(c)
                    for name, v in zip(names, (i, f, g, o, c), strict=True):
                        steps[name].append(v)
                else:
                    # PyTorch's gate order: reset, update, new; r gates the hidden share only
                    x_r, x_z, x_n = xw[t].split(H)
                    h_r, h_z, h_n = hw.split(H)
                    r = torch.sigmoid(x_r + h_r)
                    z = torch.sigmoid(x_z + h_z)
                    n = torch.tanh(x_n + r * h_n)
                    h = (1 - z) * n + z * h
                    for name, v in zip(names, (r, z, n), strict=True):
                        steps[name].append(v)
                steps["hidden"].append(h)
            for name, values in steps.items():
                record[name].append(torch.stack(values))  # (T, H)
            inp = record["hidden"][-1]  # next layer's input (T, H)
        logits = self.head(inp)  # (T, V)
        out = {name: as_plain(torch.stack(layers)) for name, layers in record.items()}  # (L, T, H)
        out["logits"] = as_plain(logits)
        return out
