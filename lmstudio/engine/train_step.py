"""One optimizer step: forward and backward over the micro-batches, the gradient norm, the optimizer's step,
and the step's report (``StepMetrics``, every ``log_interval`` steps).

The trainer calls these once per step, in this order; they hold no state of their own (the parts do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from lmstudio.config import RunConfig
from lmstudio.engine import device as dev
from lmstudio.engine.distributed import SingleProcess
from lmstudio.engine.stopwatch import Stopwatch
from lmstudio.engine.train_parts import TrainParts
from lmstudio.events import StepMetrics


def micro_batches(
    parts: TrainParts, dist: SingleProcess, grad_accum: int, forward: Callable[..., Any] | None = None
) -> torch.Tensor:
    """Forward and backward over ``grad_accum`` micro-batches; returns the step's mean loss (detached).

    ``forward``: what to call (the compiled or the plain model, ``CompileFallback.call`` passes it); by
    default the parts' current forward."""
    forward = parts.forward.forward if forward is None else forward
    total: torch.Tensor | None = None
    for i in range(grad_accum):
        x, y = parts.batcher.get("train", parts.device)
        with dist.no_sync(last=i == grad_accum - 1):  # several ranks: all-reduce once per step
            with dev.autocast_context(parts.device, parts.precision):
                _, loss = forward(x, y)
            if grad_accum > 1:
                loss = loss / grad_accum  # gradients add up over micro-batches; scale so they average
            if parts.scaler is not None:
                parts.scaler.scale(loss).backward()
            else:
                loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    assert total is not None  # grad_accum >= 1
    return dist.mean(total)  # several ranks: the mean, the same on each


def clip_gradients(
    parts: TrainParts, params: list[torch.nn.Parameter], clip: float, need_norm: bool
) -> torch.Tensor | float:
    """Clip the global gradient norm to ``clip`` (0: no clipping); returns the norm before clipping, computed
    when clipping or when ``need_norm`` (else 0.0)."""
    if parts.scaler is not None and (clip > 0 or need_norm):
        parts.scaler.unscale_(parts.optimizer)
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    if need_norm:
        return torch.nn.utils.get_total_norm([q.grad for q in params if q.grad is not None])
    return 0.0


def optimizer_step(
    parts: TrainParts, params: list[torch.nn.Parameter], clip: float, need_norm: bool
) -> torch.Tensor | float:
    """Clip, step and clear the gradients; returns the norm before clipping (when clipping or logging)."""
    grad_norm = clip_gradients(parts, params, clip, need_norm)
    if parts.scaler is not None:
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    else:
        parts.optimizer.step()
    parts.optimizer.zero_grad(set_to_none=True)
    return grad_norm


def metrics(
    step: int,
    cfg: RunConfig,
    clock: Stopwatch,
    loss: torch.Tensor,
    lr: float,
    grad_norm: torch.Tensor | float,
) -> StepMetrics:
    """The report after ``step``: its loss, the pace since the last report, the time left."""
    t = cfg.train
    loss_value = loss.item()  # the one sync with the device per log interval (before the clock is read)
    per_step, elapsed = clock.seconds_per_step(step), clock.elapsed()
    by_steps = per_step * (t.max_steps - step)
    return StepMetrics(
        step=step,
        max_steps=t.max_steps,
        loss=loss_value,
        lr=lr,
        grad_norm=float(grad_norm),
        tokens_per_s=t.batch_size * cfg.model.block_size * t.grad_accum / per_step,
        elapsed=elapsed,
        # at the current pace for the steps, or what is left of the time budget if sooner
        eta=min(by_steps, max(0.0, t.max_time - elapsed)) if t.max_time > 0 else by_steps,
    )
