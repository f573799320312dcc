"""What the training loop needs besides the model: requests from other threads, fault detection.

``TrainControl`` is the UI's handle on a running Trainer (pause, resume, stop, new learning rate), safe
to call from any thread. ``FiniteWatch`` notices a NaN/inf loss; ``is_oom`` recognises out-of-memory
errors from every backend.
"""

from __future__ import annotations

import math
import threading

import torch

from lmstudio.config import ConfigError
from lmstudio.engine.faults import is_oom

__all__ = ["FiniteWatch", "NonFiniteLoss", "TrainControl", "is_oom"]


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite (the trainer turns this into ``Failed(kind="nan")``)."""


class TrainControl:
    """Requests from another thread (the UI), each honoured within one optimizer step.

    ``stop`` also wakes a paused loop; ``pause`` after ``stop`` is ignored so a stop is never lost.

    ``pause_on_disk_error``: when a checkpoint cannot be written (disk full, read-only, no permission) the
    trainer pauses itself and tries again on ``resume`` instead of failing, so a person who frees some space
    loses no steps; ``stop`` then ends the run as a disk failure, the last saved checkpoint intact. For someone
    at the controls (the app); headless runs keep the default and fail at once.
    """

    def __init__(self, *, pause_on_disk_error: bool = False) -> None:
        self.pause_on_disk_error = pause_on_disk_error
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self._lr: float | None = None

    def pause(self) -> None:
        with self._lock:
            if not self._stop.is_set():
                self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            self._running.set()

    def set_lr(self, lr: float) -> None:
        """A new peak learning rate; the schedule keeps its shape from the current step on."""
        lr = float(lr)
        if not math.isfinite(lr) or lr <= 0:
            raise ConfigError({"train.lr": f"must be a positive number, got {lr:g}"})
        with self._lock:
            self._lr = lr

    def take_lr(self) -> float | None:
        with self._lock:
            lr, self._lr = self._lr, None
        return lr

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def stop_event(self) -> threading.Event:
        return self._stop

    def wait_while_paused(self, timeout: float | None = None) -> bool:
        """Block (no busy loop) until resumed or stopped; True when running again."""
        return self._running.wait(timeout)


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
