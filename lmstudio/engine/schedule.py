"""Learning-rate schedule and optimizer construction for the trainer.

Kept apart from the loop so both can be tested against hand-computed values.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lmstudio.config import TrainConfig

# device types with fused AdamW kernels in the torch this app pins (torch.utils._foreach_utils lists them)
FUSED_ADAMW_DEVICES = ("cuda", "cpu", "mps")


def lr_at(step: int, cfg: TrainConfig, peak: float | None = None, elapsed: float = 0.0) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine decay or constant.

    ``peak`` replaces ``cfg.lr`` after a user changed the rate mid-run; the schedule keeps its shape,
    and the floor never sits above the new peak.

    With a time budget (``cfg.max_time > 0``) the decay follows the share of the budget spent (``elapsed``
    seconds of training), or of the steps if those run out first: a timed run reaches ``min_lr`` when its
    time is up on a fast machine and a slow one alike. Warmup still counts steps, because what it guards
    against (Adam's first updates, before its moment estimates settle) happens per step, not per second.
    """
    peak = cfg.lr if peak is None else peak
    floor = min(cfg.min_lr, peak)
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        # step + 1 so the very first step already moves (nanoGPT does the same)
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return peak
    decay_steps = cfg.max_steps - cfg.warmup_steps
    if decay_steps <= 0:
        return floor
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    if cfg.max_time > 0:
        progress = max(progress, min(1.0, elapsed / cfg.max_time))
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return floor + coeff * (peak - floor)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (embeddings, linear weights: dim >= 2) only; never biases or norm gains.

    Tied parameters appear once (``named_parameters`` de-duplicates them).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW or SGD with momentum ``beta1``; the lr is set each step by the trainer.

    AdamW uses torch's fused kernels wherever torch has them (CUDA, CPU, MPS): one pass over each parameter
    instead of a chain of foreach ops. Measured on the CPU only (part of the trainer's lead in
    bench/vs_nanogpt.py); CUDA is nanoGPT's choice; MPS is untested here.
    """
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.beta1)
    extra = {"fused": True} if device.type in FUSED_ADAMW_DEVICES else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **extra)
