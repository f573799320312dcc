"""How a training run's faults become its final ``Failed`` event: what happened, what is kept, what to do.

A non-finite loss (``nan``), running out of memory (``oom``, also refused up front when the estimate says a
model cannot fit), a failed write to the run folder (``disk``), a damaged checkpoint (``checkpoint``), bad
settings (``config``), unreadable data (``data``); anything else is a bug (``error``, traceback in ``detail``).
"""

from __future__ import annotations

import traceback
from pathlib import Path

import torch

from lmstudio.engine import device as dev
from lmstudio.engine import faults
from lmstudio.engine.finite_watch import NonFiniteLoss
from lmstudio.errors import ConfigError, UserError
from lmstudio.events import Failed
from lmstudio.runfolder import CheckpointError
from lmstudio.runlock import RunLocked


class DiskError(Exception):
    """Writing the run folder failed; ``description`` says why (errno, free space, space needed)."""

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


def disk_error(e: Exception, folder: Path, needed: int | None = None) -> Exception:
    """Any failure while writing the run folder is the disk's (safetensors and torch.save do not raise
    OSError for a full disk), except running out of memory while doing it."""
    if faults.is_oom(e):
        return e
    return DiskError(faults.describe_write_failure(e, folder, needed))


def paused_for_space(step: int, run_dir: Path, e: DiskError) -> str:
    """The notice of a run paused because the disk refused its checkpoint (``Trainer(on_save_refused=)``)."""
    return (
        f"Could not save the checkpoint at step {step} in {run_dir} ({e.description}). Training is paused and "
        "nothing is lost: free disk space (or fix the folder's permissions), then press Resume to save again. "
        "Stop tries once more, then ends the run with the last checkpoint saved."
    )


def checkpoint_bytes(model: torch.nn.Module, state: dict, best: bool) -> int:
    """About what one checkpoint writes: the weights (twice with best.safetensors) and the optimizer state."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    moments = sum(
        t.numel() * t.element_size()
        for per_param in state.get("optimizer", {}).get("state", {}).values()
        for t in per_param.values()
        if isinstance(t, torch.Tensor)
    )
    return weights * (2 if best else 1) + moments


def classify(e: Exception, *, step: int, run_dir: Path, device_label: str, saved: bool) -> Failed:
    """The ``Failed`` event for ``e``, raised at ``step``; ``saved``: a checkpoint exists (saved or resumed)."""

    def failed(kind: str, message: str, detail: str = "") -> Failed:
        return Failed(step=step, kind=kind, message=message, run_dir=str(run_dir), detail=detail)

    if isinstance(e, NonFiniteLoss):
        return failed(
            "nan",
            f"the loss became NaN or infinite near step {step + 1}: training diverged. Try a lower learning "
            "rate (or stronger gradient clipping); the last good checkpoint is kept.",
        )
    kept = "the previous checkpoint is intact" if saved else "no checkpoint had been saved yet"
    if isinstance(e, DiskError):
        return failed(
            "disk",
            f"could not write to the run folder {run_dir}: {e.description}. "
            f"Free disk space or choose another runs folder; {kept}.",
            detail="".join(traceback.format_exception(e.__cause__)) if e.__cause__ else "",
        )
    if isinstance(e, faults.NotEnoughMemory):
        return failed("oom", f"not enough memory on {device_label}: {e}")
    if isinstance(e, RunLocked):
        return failed("locked", str(e))
    if isinstance(e, CheckpointError):
        return failed("checkpoint", str(e))
    if isinstance(e, (ConfigError, dev.DeviceError)):
        return failed("config", str(e))
    if isinstance(e, UserError):
        return failed("data", str(e))
    if faults.is_oom(e):
        return failed(
            "oom",
            f"out of memory on {device_label}. Use a smaller batch size, a shorter context or a smaller "
            f"model; {kept.replace('is intact', 'is kept')}.",
        )
    return failed(
        "error",
        f"training failed unexpectedly ({type(e).__name__}: {e}); this is a bug, please report it with the details",
        detail="".join(traceback.format_exception(e)),
    )
