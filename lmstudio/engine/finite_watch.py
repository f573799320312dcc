"""Noticing that training diverged: a NaN or infinite loss, without stalling the GPU for it every step."""

from __future__ import annotations

import math

import torch

__all__ = ["FiniteWatch", "NonFiniteLoss"]


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite (the trainer turns this into ``Failed(kind="nan")``)."""


class FiniteWatch:
    """Notices a non-finite loss without stalling the GPU every step.

    On the CPU (and MPS) reading a scalar costs nothing, so each step is checked before the optimizer
    uses its gradients. On CUDA the flag is copied to pinned memory without blocking and read one step
    later, when the GPU has long finished it: detection is at most one step late.
    """

    def __init__(self, device: torch.device):
        self.lazy = device.type == "cuda"
        if self.lazy:
            self.flags = torch.ones(2, dtype=torch.bool).pin_memory()
            self.events = [torch.cuda.Event(), torch.cuda.Event()]
            self.pending = [False, False]

    def check(self, step: int, loss: torch.Tensor) -> None:
        if not self.lazy:
            if not math.isfinite(loss.item()):
                raise NonFiniteLoss
            return
        slot, other = step % 2, (step + 1) % 2
        self.flags[slot].copy_(torch.isfinite(loss), non_blocking=True)
        self.events[slot].record()
        self.pending[slot] = True
        self._read(other)

    def flush(self) -> None:
        if self.lazy:
            self._read(0)
            self._read(1)

    def _read(self, slot: int) -> None:
        if self.pending[slot]:
            self.events[slot].synchronize()
            self.pending[slot] = False
            if not bool(self.flags[slot]):
                raise NonFiniteLoss
