"""A training checkpoint: the weights and everything a resumed run needs to carry on as if never stopped.

``train_state.pt`` holds the step, the best validation loss, the peak learning rate, the training seconds,
the optimizer, loss scaler and batcher states and the RNG; ``train_parts.restore`` reads it back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmstudio import runfolder
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine import device as dev
from lmstudio.engine.finite_watch import NonFiniteLoss
from lmstudio.engine.train_failures import checkpoint_bytes, disk_error
from lmstudio.engine.train_parts import STATE_VERSION, TrainParts


@dataclass(frozen=True)
class Progress:
    """Where a run stands, as a checkpoint records it."""

    step: int
    best_val: float  # math.inf before the first evaluation
    val_loss: float | None  # the latest evaluation's, None when this step was not evaluated
    peak_lr: float
    elapsed: float  # training seconds, pauses excluded


def train_state(parts: TrainParts, progress: Progress, world_size: int) -> dict[str, Any]:
    """The contents of ``train_state.pt`` (layout ``STATE_VERSION``)."""
    return {
        "version": STATE_VERSION,
        "step": progress.step,
        "best_val": None if math.isinf(progress.best_val) else progress.best_val,
        "val_loss": progress.val_loss,
        "peak_lr": progress.peak_lr,
        "elapsed": progress.elapsed,
        "optimizer": parts.optimizer.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else {},
        "batcher": parts.batcher.state_dict(),
        "rng": dev.rng_state(),  # rank 0's; other ranks re-derive theirs (distributed.py)
        "world_size": world_size,
    }


def save(
    parts: TrainParts, run_dir: Path, progress: Progress, *, best: bool, world_size: int, write: bool
) -> Path:
    """Write the checkpoint (``best``: also as best.safetensors); returns the weights' path.

    ``write=False`` on ranks other than 0: the weights are the same on every rank and rank 0 alone writes.
    Non-finite weights raise ``NonFiniteLoss`` (gradients that overflow behind a finite loss leave NaN
    weights after the step: never save those); a failed write raises ``DiskError``."""
    state = train_state(parts, progress, world_size)
    if not torch.stack([torch.isfinite(q).all() for q in parts.model.parameters()]).all():
        raise NonFiniteLoss
    if not write:
        return run_dir / runfolder.LATEST_FILE
    try:
        return ckpt.save_checkpoint(run_dir, parts.model, state, best=best)
    except Exception as e:
        raise disk_error(e, run_dir, checkpoint_bytes(parts.model, state, best)) from e
