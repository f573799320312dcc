"""How long would this run take here? A few real training steps of the configured model, timed.

``estimate_training_time`` builds the model the config describes on the device the run would use, times a
few optimizer steps on random token ids (the first one is a warm-up and is not counted), and scales the
median step to ``max_steps``, adding the evaluations (``eval_iters`` forward passes on two splits each,
counted as a third of a training step apiece). It is an estimate and says so: the data loading, sampling,
checkpoints and other load on the machine are not in it. Full precision only (the CPU's default).
"""

from __future__ import annotations

import statistics
import threading
import time

import torch

from lmstudio.config import ModelConfig, TrainConfig
from lmstudio.engine import device as dev
from lmstudio.engine.models import build_model
from lmstudio.engine.schedule import build_optimizer


def estimate_training_time(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    *,
    steps: int = 3,
    budget_s: float = 15.0,
    cancel: threading.Event | None = None,
) -> dict:
    """``{seconds, per_step, tokens_per_s, steps_timed, device}`` or ``{}`` when cancelled.

    Stops timing early once ``budget_s`` is spent (a model far too big for the device shows that at once).
    Timed on the CPU threads the run would use (``train.threads``).
    """
    with dev.cpu_threads(train_cfg.threads):
        return _estimate(model_cfg, train_cfg, steps, budget_s, cancel)


def _estimate(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    steps: int,
    budget_s: float,
    cancel: threading.Event | None,
) -> dict:
    device = dev.resolve_device(train_cfg.device)
    with torch.device(device):
        model = build_model(model_cfg)
    optimizer = build_optimizer(model, train_cfg, device)
    B, T = train_cfg.batch_size, model_cfg.block_size
    ids = torch.randint(0, model_cfg.vocab_size, (B, T + 1), device=device)
    x, y = ids[:, :-1], ids[:, 1:]  # (B, T) each
    times: list[float] = []
    spent = 0.0
    for _ in range(steps + 1):
        if cancel is not None and cancel.is_set():
            return {}
        start = time.perf_counter()
        for _ in range(train_cfg.grad_accum):
            _, loss = model(x, y)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
        if spent > budget_s:
            break
    timed = times[1:] or times  # the first step pays for allocation and kernel selection
    per_step = statistics.median(timed)
    evals = train_cfg.max_steps // max(train_cfg.eval_interval, 1) + 1
    eval_steps = evals * 2 * train_cfg.eval_iters / (3 * train_cfg.grad_accum)
    seconds = per_step * (train_cfg.max_steps + eval_steps)
    if train_cfg.max_time:
        seconds = min(seconds, float(train_cfg.max_time))
    return {
        "seconds": seconds,
        "per_step": per_step,
        "tokens_per_s": B * T * train_cfg.grad_accum / per_step,
        "steps_timed": len(timed),
        "device": dev.describe_device(device),
    }
