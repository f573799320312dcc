"""The training loop's clock: seconds of training (pauses left out) and the pace of the optimizer steps.

Two kinds of time are kept out: a pause (``paused``) counts neither as training time nor towards the pace;
work beside training (``aside``: evaluating, sampling, saving) is training time but not pace, so tokens/s
measures the steps alone. Torch-free and thread-agnostic: the loop owns one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Stopwatch:
    def __init__(
        self, elapsed: float = 0.0, *, step: int = 0, clock: Callable[[], float] = time.perf_counter
    ):
        """``elapsed``: training seconds already behind a resumed run; ``step``: the step the pace starts from."""
        self._clock = clock
        now = clock()
        self._start = now - elapsed  # elapsed() == now - _start
        self._lap_start, self._lap_step = now, step
        self._paused_total = 0.0

    def elapsed(self) -> float:
        """Seconds of training so far, pauses excluded."""
        return self._clock() - self._start

    def seconds_per_step(self, step: int) -> float:
        """The pace since the last ``start_lap``: seconds per optimizer step, aside work and pauses excluded."""
        return (self._clock() - self._lap_start) / max(step - self._lap_step, 1)

    def start_lap(self, step: int) -> None:
        self._lap_start, self._lap_step = self._clock(), step

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time inside is neither training time nor pace (waiting for Resume)."""
        began = self._clock()
        try:
            yield
        finally:
            waited = self._clock() - began
            self._start += waited
            self._lap_start += waited
            self._paused_total += waited

    @contextmanager
    def aside(self) -> Iterator[None]:
        """Time inside is training time but not pace (evaluating, sampling, saving); a pause inside is a pause."""
        began, paused_before = self._clock(), self._paused_total
        try:
            yield
        finally:
            self._lap_start += self._clock() - began - (self._paused_total - paused_before)
