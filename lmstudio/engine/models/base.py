"""The contract every architecture honours, so the trainer and sampler never branch on model type.

* ``forward(idx, targets=None) -> (logits, loss)``: ``idx`` (B, T) token ids; logits (B, T, V) for every
  position; ``loss`` is the mean cross-entropy over all positions, or None without targets.
* ``block_size``: the context the model is trained on (the Transformer cannot take more; recurrent
  models can, since their state carries on).
* ``introspect(idx (1, T)) -> dict[str, Tensor]``: plain CPU float tensors for the inspector (attention
  weights for the Transformer, hidden states and gates for recurrent models), computed on an explicit
  path with the same weights, plus ``"logits"`` (T, V) so tests can check it against ``forward``.
* ``init_state(batch_size)`` / ``step(idx (B, T_new), state) -> (logits (B, T_new, V), state)``:
  incremental decoding. The state is a KV cache for the Transformer and the hidden state for recurrent
  models; ``state_len(state)`` tells how many tokens it holds and ``state_capacity`` how many it can
  hold (None: no limit). When ``state_len + T_new`` would pass the capacity the caller starts a fresh
  state and feeds the last window again.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class LanguageModel(nn.Module):
    block_size: int
    # how many tokens one decoding state can hold; None when it carries on without limit
    state_capacity: int | None = None

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        raise NotImplementedError

    def introspect(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def init_state(self, batch_size: int) -> Any:
        raise NotImplementedError

    def step(self, idx: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def state_len(self, state: Any) -> int:
        return state.length

    # ---- shared helpers -------------------------------------------------------------------------
    def loss_from_logits(self, logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor | None:
        if targets is None:
            return None
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))  # (B*T, V)

    def num_params(self) -> int:
        # count a tied matrix once
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())

    def _check_idx(self, idx: torch.Tensor, limit: int | None) -> None:
        if idx.dim() != 2:
            raise ValueError(f"expected token ids of shape (B, T), got {tuple(idx.shape)}")
        if limit is not None and idx.size(1) > limit:
            raise ValueError(f"{idx.size(1)} tokens exceed the context of {limit}; crop the input first")


def as_plain(t: torch.Tensor) -> torch.Tensor:
    """Introspection results leave the model as detached CPU float32 tensors."""
    return t.detach().float().cpu()
