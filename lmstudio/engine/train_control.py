"""Steering a running Trainer from another thread: pause, resume, stop, a new learning rate.

``TrainControl`` is the caller's handle (the app's buttons, the CLI's Ctrl-C, a distributed run's control
file), safe to call from any thread; the loop looks at it once per optimizer step.
"""

from __future__ import annotations

import math
import threading

from lmstudio.errors import ConfigError

__all__ = ["TrainControl"]


class TrainControl:
    """Requests from another thread (the UI), each honoured within one optimizer step.

    ``stop`` also wakes a paused loop; ``pause`` after ``stop`` is ignored so a stop is never lost.
    """

    def __init__(self) -> None:
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
