"""A causal convolutional language model: stacked dilated convolutions with gated linear units.

The third family beside recurrent networks and self-attention, after Dauphin et al. 2017 ("Language
Modeling with Gated Convolutional Networks") and WaveNet / ByteNet (dilations that double layer by layer):

    embedding (n_embd)
    -> n_layer residual blocks:  x + Dropout(Linear(GLU(CausalConv1d_d(LayerNorm(x)))))
    -> LayerNorm -> linear projection to the vocabulary (tied to the embedding by default)

Each block's convolution has ``kernel_size`` taps spaced ``d`` tokens apart, with ``d`` doubling from 1
over ``dilation_cycle`` layers and then starting again (1, 2, 4, ..., 1, 2, 4, ...). It is causal because the
input is padded with ``(kernel_size - 1) * d`` zeros on the left only: output ``t`` reads inputs ``t``,
``t - d``, ... ``t - (k-1)d``. The gated linear unit splits the convolution's 2C channels into a value and a
gate, ``a * sigmoid(b)``. There are no position embeddings: where a token sits matters only through
what the convolutions see, so the model runs past ``block_size`` like a recurrent one does.

How far back it sees, its **receptive field**, is fixed by the architecture: ``1 + sum((k-1) * d_l)``
tokens (see :func:`receptive_field`); after the first layers' few tokens it is the same for every position,
and within a window the first positions see only the window's start (zero padding before it).

Incremental decoding keeps, per layer, a buffer of the last ``(k-1) * d`` inputs of its convolution
(already normalised): a new token costs one convolution output per layer, never a recomputation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from lmstudio.config import ModelConfig
from lmstudio.engine.models.base import LanguageModel, as_plain


def dilations(cfg: ModelConfig) -> list[int]:
    """The dilation of each layer: 1, 2, 4, ... up to 2**(dilation_cycle - 1), then again from 1."""
    return [2 ** (layer % cfg.dilation_cycle) for layer in range(cfg.n_layer)]


def receptive_fields(cfg: ModelConfig) -> list[int]:
    """Tokens the output of each layer can see (itself included), layer by layer."""
    out, field = [], 1
    for d in dilations(cfg):
        field += (cfg.kernel_size - 1) * d
        out.append(field)
    return out


def receptive_field(cfg: ModelConfig) -> int:
    """How many tokens back (the current one included) the model's prediction can depend on."""
    return receptive_fields(cfg)[-1] if cfg.n_layer else 1


@dataclass
class ConvState:
    """Per layer, the last ``(k-1) * d`` inputs of its convolution, oldest first (zeros before the start)."""

    buffers: list[torch.Tensor]  # per layer (B, C, (k-1)*d)
    length: int = 0  # tokens consumed so far


class GatedConvBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.history = (cfg.kernel_size - 1) * dilation  # left context the convolution needs
        self.ln = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        # 2C outputs: the GLU's values and gates
        self.conv = nn.Conv1d(cfg.n_embd, 2 * cfg.n_embd, cfg.kernel_size, dilation=dilation, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def _gated(self, padded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Convolve an input already padded by ``history`` on the left; returns (GLU output (B, T, C), gate)."""
        value, gate = self.conv(padded).chunk(2, dim=1)  # each (B, C, T)
        gate = torch.sigmoid(gate)
        return (value * gate).transpose(1, 2), gate.transpose(1, 2)  # (B, T, C), (B, T, C)

    def forward(self, x: torch.Tensor, record: bool = False):
        h = self.ln(x).transpose(1, 2)  # (B, C, T)
        glu, gate = self._gated(F.pad(h, (self.history, 0)))  # causal: zeros on the left only
        out = x + self.drop(self.proj(glu))  # (B, T, C)
        return (out, gate) if record else (out, None)

    def step(self, x: torch.Tensor, buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """New tokens ``x`` (B, T_new, C) after the inputs in ``buffer``; returns (output, the new buffer)."""
        h = torch.cat([buffer.to(x.dtype), self.ln(x).transpose(1, 2)], dim=2)  # (B, C, history + T_new)
        glu, _ = self._gated(h)
        return x + self.drop(self.proj(glu)), h[:, :, h.size(2) - self.history :]


class ConvLM(LanguageModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.block_size = cfg.block_size
        self.state_capacity = None  # a fixed receptive field: decoding carries on without limit
        self.receptive_field = receptive_field(cfg)
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(GatedConvBlock(cfg, d) for d in dilations(cfg))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.wte.weight = self.lm_head.weight
        if self.lm_head.weight.is_meta:
            return  # shapes only (param_count)
        # GPT-2's scheme for what the residual stream adds up: small embeddings, and each block's output
        # projection scaled down with depth so the stream's variance does not grow; convolutions keep
        # torch's own (fan-in) initialisation
        nn.init.normal_(self.lm_head.weight, std=0.02)
        if not cfg.tie_weights:
            nn.init.normal_(self.wte.weight, std=0.02)
        for block in self.conv_blocks:
            nn.init.normal_(block.proj.weight, std=0.02 / (2 * cfg.n_layer) ** 0.5)
            if block.proj.bias is not None:
                nn.init.zeros_(block.proj.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        self._check_idx(idx, None)
        x = self.drop(self.wte(idx))  # (B, T, C)
        for block in self.blocks:
            x, _ = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return logits, self.loss_from_logits(logits, targets)

    def layer_states(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """The residual stream entering the first block and leaving each block, each (B, T, C), on the
        same path as ``forward`` (``readout`` of the last one is forward's logits, bit for bit)."""
        self._check_idx(idx, None)
        x = self.drop(self.wte(idx))
        states = [x]
        for block in self.blocks:
            x, _ = block(x)
            states.append(x)
        return states

    @property
    def conv_blocks(self) -> list[GatedConvBlock]:
        return cast("list[GatedConvBlock]", list(self.blocks))

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        """The final LayerNorm and lm_head on a residual-stream state (B, T, C): logits (B, T, V)."""
        return self.lm_head(self.ln_f(x))

    # ---- incremental decoding -------------------------------------------------------------------
    def init_state(self, batch_size: int) -> ConvState:
        w = self.lm_head.weight
        return ConvState(
            buffers=[
                torch.zeros(batch_size, self.cfg.n_embd, b.history, dtype=w.dtype, device=w.device)
                for b in self.conv_blocks
            ]
        )

    def step(self, idx: torch.Tensor, state: ConvState) -> tuple[torch.Tensor, ConvState]:
        self._check_idx(idx, None)
        x = self.drop(self.wte(idx))  # (B, T_new, C)
        buffers = []
        for block, buffer in zip(self.conv_blocks, state.buffers, strict=True):
            x, buffer = block.step(x, buffer)
            buffers.append(buffer)
        logits = self.lm_head(self.ln_f(x))  # (B, T_new, V)
        return logits, ConvState(buffers=buffers, length=state.length + idx.size(1))

    # ---- introspection --------------------------------------------------------------------------
    @torch.no_grad()
    def introspect(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """hidden: the residual stream after each block (L, T, C); gate.glu: each block's GLU gate (L, T, C);
        reach (L, T, T): 1 where token s (column) lies inside what layer l's output at position t (row) can
        see, 0 elsewhere; its row sums are how many tokens each position sees; plus logits (T, V)."""
        self._check_idx(idx, None)
        if idx.size(0) != 1:
            raise ValueError(f"introspect takes one sequence (1, T), got {tuple(idx.shape)}")
        was_training = self.training
        self.eval()
        try:
            x = self.wte(idx)
            hidden, gates = [], []
            for block in self.blocks:
                x, gate = block(x, record=True)
                hidden.append(x[0])
                gates.append(gate[0])
            logits = self.lm_head(self.ln_f(x))[0]
        finally:
            self.train(was_training)
        return {
            "hidden": as_plain(torch.stack(hidden)),
            "gate.glu": as_plain(torch.stack(gates)),
            "reach": reach_map(self.cfg, idx.size(1)),
            "logits": as_plain(logits),
        }


def reach_map(cfg: ModelConfig, T: int) -> torch.Tensor:
    """(L, T, T): 1 where position t's output at layer l can depend on input s, else 0.

    Computed by propagating the set of visible inputs through the layers (each output sees what its taps
    ``t, t-d, ..., t-(k-1)d`` saw below it, and itself through the residual), so the map shows exactly which
    tokens are in reach, holes included should a configuration leave some; tests check it against autograd.
    """
    seen = torch.eye(T, dtype=torch.bool)  # row t: the inputs position t depends on
    maps = []
    for d in dilations(cfg):
        new = seen.clone()
        for tap in range(1, cfg.kernel_size):
            shift = tap * d
            if shift < T:
                new[shift:] |= seen[: T - shift]
        seen = new
        maps.append(seen.float())
    return torch.stack(maps)  # (L, T, T)
