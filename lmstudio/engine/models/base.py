"""The contract every architecture honours, so the trainer and sampler never branch on model type.

* ``forward(idx, targets=None) -> (logits, loss)``: ``idx`` (B, T) token ids; logits (B, T, V) for every
  position; ``loss`` is the mean cross-entropy over all positions, or None without targets.
* ``block_size``: the longest context the model takes.
* ``introspect(idx) -> dict[str, Tensor]``: plain tensors for the inspector (attention weights for the
  Transformer, hidden states and gates for recurrent models), computed on an explicit path.
* ``init_state(batch_size)`` / ``step(idx, state) -> (logits, state)``: incremental decoding; the state is
  a KV cache for the Transformer and the hidden state for recurrent models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LanguageModel(nn.Module):
    block_size: int

    def loss_from_logits(self, logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor | None:
        if targets is None:
            return None
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))  # (B*T, V)

    def num_params(self) -> int:
        # count a tied matrix once
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
