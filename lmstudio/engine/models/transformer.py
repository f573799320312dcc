"""A decoder-only GPT in the manner of nanoGPT's model.py.

Pre-LayerNorm blocks of causal multi-head self-attention and a 4x GELU MLP, learned or sinusoidal
positions added to the token embeddings, optional weight tying, nanoGPT's initialisation.

Attention has two paths over the same weights: training and generation use
``scaled_dot_product_attention`` (fused kernels, no weights kept); the inspector asks for
``record=True``, which spells the attention out (q k^T * scale, causal mask, softmax) so the weights
can be returned. A test proves both give the same logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmstudio.config import ModelConfig
from lmstudio.engine.models.base import LanguageModel, as_plain

# The sinusoids enter at the size of a freshly initialised learned table (root-mean-square 0.02; a sin/cos
# pair has 1/sqrt(2)). At full amplitude they drown token embeddings that start at std 0.02: on tiny Shakespeare
# (4L/128, 200 steps) val loss 3.36 against 2.35 for learned positions; scaled, 2.33.
SINUSOID_SCALE = 0.02 * math.sqrt(2)


@dataclass
class KVCache:
    """Keys and values of the tokens seen so far, written in place into buffers sized for a full context."""

    k: list[torch.Tensor]  # per layer (B, nh, block_size, hs)
    v: list[torch.Tensor]  # per layer (B, nh, block_size, hs)
    length: int = 0  # positions 0 .. length-1 are filled


def sinusoidal_encoding(n_pos: int, dim: int) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(p / 10000^(2i/dim)); shape (n_pos, dim)."""
    pos = torch.arange(n_pos, dtype=torch.float32).unsqueeze(1)  # (P, 1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float32)  # (ceil(dim/2),)
    angle = pos / torch.pow(10000.0, two_i / dim)  # (P, ceil(dim/2))
    pe = torch.zeros(n_pos, dim)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : dim // 2])  # an odd width has one sine more
    return pe


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.head_size = cfg.n_embd // cfg.n_head
        self.dropout = cfg.dropout
        # query, key and value projections for all heads in one matrix
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        return q, k, v

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        B, _, T, _ = y.size()
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.head_size)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def forward(self, x: torch.Tensor, record: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``record=False``: fused SDPA, returns (y, None). ``record=True``: explicit, returns (y, att)."""
        q, k, v = self._heads(x)
        if not record:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
            )  # (B, nh, T, hs)
            return self._merge(y), None
        T = x.size(1)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_size))  # (B, nh, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~causal, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = self.attn_dropout(att) @ v  # (B, nh, T, hs)
        return self._merge(y), att

    def step(self, x: torch.Tensor, k_buf: torch.Tensor, v_buf: torch.Tensor, start: int) -> torch.Tensor:
        """Attend from the new tokens ``x`` (B, T_new, C) at positions start.. to everything cached."""
        q, k, v = self._heads(x)
        end = start + x.size(1)
        k_buf[:, :, start:end] = k
        v_buf[:, :, start:end] = v
        keys, values = k_buf[:, :, :end], v_buf[:, :, :end]  # (B, nh, end, hs), views
        if keys.dtype != q.dtype:  # a cache made under autocast, stepped without it (or the reverse)
            keys, values = keys.to(q.dtype), values.to(q.dtype)
        if x.size(1) == 1:
            # a single query may see every cached key: no mask needed
            y = F.scaled_dot_product_attention(q, keys, values)
        elif start == 0:
            y = F.scaled_dot_product_attention(q, keys, values, is_causal=True)
        else:
            # query i sits at position start+i and sees keys 0..start+i
            mask = torch.ones(x.size(1), end, dtype=torch.bool, device=x.device).tril(diagonal=start)
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self._merge(y)  # y: (B, nh, T_new, hs)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, record: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, att = self.attn(self.ln_1(x), record=record)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, att

    def step(self, x: torch.Tensor, k_buf: torch.Tensor, v_buf: torch.Tensor, start: int) -> torch.Tensor:
        x = x + self.attn.step(self.ln_1(x), k_buf, v_buf, start)
        return x + self.mlp(self.ln_2(x))


class GPT(LanguageModel):
    pe: torch.Tensor  # the sinusoidal buffer, when pos_encoding is not learned

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.block_size = cfg.block_size
        self.state_capacity = cfg.block_size
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        if cfg.pos_encoding == "learned":
            self.wpe: nn.Embedding | None = nn.Embedding(cfg.block_size, cfg.n_embd)
        else:
            self.wpe = None
            # fixed, so kept out of the checkpoint and rebuilt from the formula
            pe = sinusoidal_encoding(cfg.block_size, cfg.n_embd) * SINUSOID_SCALE
            self.register_buffer("pe", pe, persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.wte.weight = self.lm_head.weight  # one tensor: the embedding is the output matrix
        if self.lm_head.weight.is_meta:
            return  # shapes only (param_count): initialising meta tensors is slow and pointless
        self.apply(self._init_weights)
        # residual projections scaled down so the residual stream's variance does not grow with depth (GPT-2)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def _embed(self, idx: torch.Tensor, start: int) -> torch.Tensor:
        T = idx.size(1)
        tok = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            pos = self.wpe.weight[start : start + T]  # (T, C)
        else:
            pos = self.pe[start : start + T]  # (T, C)
        return self.drop(tok + pos)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        self._check_idx(idx, self.block_size)
        x = self._embed(idx, 0)
        for block in self.blocks:
            x, _ = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return logits, self.loss_from_logits(logits, targets)

    def layer_states(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """The residual stream entering the first block and leaving each block, each (B, T, C), computed
        on the same fast path as ``forward``: ``readout`` of the last one is forward's logits, bit for bit."""
        self._check_idx(idx, self.block_size)
        x = self._embed(idx, 0)
        states = [x]
        for block in self.blocks:
            x, _ = block(x)
            states.append(x)
        return states

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        """What the output head makes of a residual-stream state (B, T, C): the final LayerNorm, then
        lm_head, giving logits (B, T, V) (the "logit lens" applied to any layer)."""
        return self.lm_head(self.ln_f(x))

    @torch.no_grad()
    def introspect(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """attention (L, H, T, T), hidden: the residual stream after each block (L, T, C), logits (T, V)."""
        self._check_idx(idx, self.block_size)
        if idx.size(0) != 1:
            raise ValueError(f"introspect takes one sequence (1, T), got {tuple(idx.shape)}")
        was_training = self.training
        self.eval()
        try:
            x = self._embed(idx, 0)
            atts, hidden = [], []
            for block in self.blocks:
                x, att = block(x, record=True)
                atts.append(att[0])
                hidden.append(x[0])
            logits = self.lm_head(self.ln_f(x))[0]
        finally:
            self.train(was_training)
        return {
            "attention": as_plain(torch.stack(atts)),
            "hidden": as_plain(torch.stack(hidden)),
            "logits": as_plain(logits),
        }

    def init_state(self, batch_size: int) -> KVCache:
        w = self.lm_head.weight
        dev = w.device.type
        # under autocast the keys come out in the autocast dtype: store them so, at half the memory
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else w.dtype
        shape = (batch_size, self.cfg.n_head, self.block_size, self.cfg.n_embd // self.cfg.n_head)
        return KVCache(
            k=[torch.zeros(shape, dtype=dtype, device=w.device) for _ in self.blocks],
            v=[torch.zeros(shape, dtype=dtype, device=w.device) for _ in self.blocks],
        )

    def step(self, idx: torch.Tensor, state: KVCache) -> tuple[torch.Tensor, KVCache]:
        """Feed new tokens; the cache is updated in place and returned. Positions continue from its length."""
        start, T = state.length, idx.size(1)
        if start + T > self.block_size:
            raise ValueError(
                f"the cache holds {start} of {self.block_size} positions and cannot take {T} more; "
                "start a fresh state with the last window"
            )
        x = self._embed(idx, start)
        for block, k_buf, v_buf in zip(self.blocks, state.k, state.v, strict=True):
            assert isinstance(block, Block)
            x = block.step(x, k_buf, v_buf, start)
        state.length = start + T
        return self.lm_head(self.ln_f(x)), state  # (B, T_new, V)
