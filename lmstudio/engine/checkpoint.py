"""Checkpoints: a model's weights (safetensors) and the resume state (``torch.save``) in a run folder.

The run folder itself is the shared layer's, which needs no torch: file names and atomic writes
(``lmstudio.runfolder``), the history (``run_history``) and the listing (``run_list``); this module adds the
parts that do. ``train_state.pt`` holds everything an exact resume needs (optimizer, schedule step, RNG and
batcher states) and is read with ``torch.load(weights_only=True)``. The names of those modules the engine
uses are importable from here too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_model
from torch import nn

from lmstudio.run_history import (
    append_jsonl,
    read_jsonl,
    read_jsonl_counted,
    read_metrics,
    read_samples,
    truncate_history,
)
from lmstudio.run_list import SkippedRun, list_runs, scan_runs, whole_step
from lmstudio.runfolder import (
    BEST_FILE,
    CONFIG_FILE,
    LATEST_FILE,
    METRICS_FILE,
    SAMPLES_FILE,
    STATE_FILE,
    TOKENIZER_FILE,
    WEIGHT_FILES,
    CheckpointError,
    atomic_write,
    atomic_write_all,
    atomic_write_text,
    default_cache_dir,
    default_runs_dir,
    new_run_dir,
    open_run_folder,
    remove_stale_temp_files,
    weights_metadata,
)

__all__ = [
    "BEST_FILE",
    "CONFIG_FILE",
    "LATEST_FILE",
    "METRICS_FILE",
    "SAMPLES_FILE",
    "STATE_FILE",
    "TOKENIZER_FILE",
    "WEIGHT_FILES",
    "CheckpointError",
    "append_jsonl",
    "atomic_write",
    "atomic_write_all",
    "atomic_write_text",
    "default_cache_dir",
    "default_runs_dir",
    "SkippedRun",
    "check_train_state",
    "list_runs",
    "open_run_folder",
    "read_jsonl_counted",
    "scan_runs",
    "whole_step",
    "load_train_state",
    "load_weights",
    "load_weights_into",
    "new_run_dir",
    "read_jsonl",
    "read_metrics",
    "read_samples",
    "remove_stale_temp_files",
    "save_checkpoint",
    "save_train_state",
    "save_weights",
    "truncate_history",
    "weights_metadata",
    "weights_path",
]


# ---- weights -----------------------------------------------------------------------------------
def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """Atomically write a model's weights as safetensors.

    ``save_model`` (not ``save_file``) because safetensors refuses tensors that share memory, and tied
    embeddings do: it stores one copy and ``load_model`` restores the tie.
    """
    atomic_write(path, _weights_writer(model, metadata or {}))


def _weights_writer(model: nn.Module, metadata: dict[str, Any]) -> Callable[[str], None]:
    meta = {k: json.dumps(v) for k, v in metadata.items()}  # safetensors metadata holds strings only
    return lambda tmp: save_model(model, tmp, metadata=meta)


def weights_path(run_dir: str | Path, which: str = "latest") -> Path:
    if which not in WEIGHT_FILES:
        raise CheckpointError(f"unknown checkpoint {which!r}; choose latest or best")
    return Path(run_dir) / WEIGHT_FILES[which]


def load_weights(run_dir: str | Path, which: str = "latest") -> dict[str, torch.Tensor]:
    """The stored tensors by name (a tied matrix appears under one of its names only)."""
    path = weights_path(run_dir, which)
    _require(path, "weights")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is damaged or not a safetensors file ({e}); retrain or pick another checkpoint"
        ) from None


def load_weights_into(
    model: nn.Module, run_dir: str | Path, which: str = "latest", device: torch.device | str = "cpu"
) -> None:
    """Load stored weights into ``model``; CheckpointError when the file is missing, damaged or mismatched."""
    path = weights_path(run_dir, which)
    _require(path, "weights")
    _check_dtypes(path, model)
    try:
        missing, unexpected = load_model(model, path, strict=False, device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is damaged or not a safetensors file ({e}); retrain or pick another checkpoint"
        ) from None
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(
            f"{path} does not fit the model described in config.json "
            f"({_first_line(e)}); was the file copied from another run?"
        ) from None
    if missing or unexpected:
        what = (
            f"missing {', '.join(sorted(missing)[:3])}"
            if missing
            else f"unexpected {', '.join(sorted(unexpected)[:3])}"
        )
        raise CheckpointError(
            f"{path} does not fit the model described in config.json ({what}); "
            "was the file copied from another run?"
        )
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise CheckpointError(
            f"{path} holds NaN or infinite weights (training diverged, or the file was altered); "
            "pick another checkpoint (best) or retrain"
        )


def _check_dtypes(path: Path, model: nn.Module) -> None:
    """lmstudio stores weights in the model's own precision: a file converted to another (fp16, int64)
    would be cast silently by ``load_model``, so it is refused by name instead."""
    names = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}
    allowed = {names.get(str(p.dtype).removeprefix("torch."), str(p.dtype)) for p in model.parameters()}
    try:
        with safe_open(str(path), framework="pt") as f:
            found = {f.get_slice(k).get_dtype() for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is damaged or not a safetensors file ({e}); retrain or pick another checkpoint"
        ) from None
    other = sorted(found - allowed)
    if other:
        raise CheckpointError(
            f"{path} stores {', '.join(other)} tensors, but the model is {', '.join(sorted(allowed))}: "
            "the file was converted or comes from elsewhere; retrain or pick another checkpoint"
        )


# ---- resume state ------------------------------------------------------------------------------
def save_train_state(run_dir: str | Path, state: dict[str, Any]) -> None:
    atomic_write(Path(run_dir) / STATE_FILE, _state_writer(state))


def _state_writer(state: dict[str, Any]) -> Callable[[str], None]:
    return lambda tmp: torch.save(state, tmp)


def load_train_state(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / STATE_FILE
    _require(path, "training state")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several kinds for truncated or foreign pickles
        raise CheckpointError(
            f"{path} is damaged or was not written by lmstudio ({_first_line(e)}); "
            "the run cannot be resumed, but its weights can still be used"
        ) from None


def check_train_state(run_dir: str | Path, state: dict[str, Any], params: list[torch.Tensor]) -> None:
    """Refuse a training state that is not this run's: missing parts, or optimizer moments shaped for
    other parameters (a train_state.pt copied from another run would otherwise fail mid-step). ``params``:
    the optimizer's parameters in its own order (group after group), as its state dict numbers them."""
    path = Path(run_dir) / STATE_FILE
    missing = [k for k in ("step", "optimizer", "batcher", "rng") if k not in state]
    if missing:
        raise CheckpointError(
            f"{path} has no {', '.join(missing)}: it is incomplete or not from lmstudio; "
            "start a new run or use the weights as they are"
        )
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path} holds a step of {str(step)[:40]}; start a new run")
    optimizer = state["optimizer"]
    per_param = optimizer.get("state") if isinstance(optimizer, dict) else None
    if not isinstance(per_param, dict):
        raise CheckpointError(f"{path} holds no optimizer state; start a new run")
    for index, moments in per_param.items():
        if not isinstance(index, int) or not 0 <= index < len(params) or not isinstance(moments, dict):
            raise CheckpointError(f"{path} is for a model with other parameters: it comes from another run")
        for name, value in moments.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[index].shape:
                raise CheckpointError(
                    f"{path} is for a model of other shapes (its {name} of parameter {index} is "
                    f"{tuple(value.shape)}, the model's {tuple(params[index].shape)}): it comes from another run"
                )


def save_checkpoint(
    run_dir: str | Path, model: nn.Module, state: dict[str, Any], *, best: bool = False
) -> Path:
    """Write latest weights (and best weights when ``best``) and the resume state; returns the weights path.

    All three files are written in full before any is renamed into place, so a full disk while writing
    (the state, holding the optimizer's moments, is the biggest) leaves the previous checkpoint whole. Only a
    crash between the renames can leave new weights beside the old state; the weights go first, their metadata
    holds their step, and a resume notices the mismatch instead of mixing them.
    """
    run_dir = Path(run_dir)
    meta = {"step": state["step"], "best_val": state.get("best_val"), "val_loss": state.get("val_loss")}
    weights = _weights_writer(model, meta)
    files = [(run_dir / LATEST_FILE, weights)]
    if best:
        files.append((run_dir / BEST_FILE, weights))
    files.append((run_dir / STATE_FILE, _state_writer(state)))
    atomic_write_all(files)
    return run_dir / LATEST_FILE


def _require(path: Path, what: str) -> None:
    if os.path.lexists(path) and not path.is_file():
        kind = (
            "a folder"
            if path.is_dir()
            else "a symbolic link to nothing"
            if not path.exists()
            else "a special file"
        )
        raise CheckpointError(f"{path} is {kind}, not a {what} file; retrain or pick another checkpoint")
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: the run folder has no {what} "
            f"(was training stopped before its first checkpoint?)"
        )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
