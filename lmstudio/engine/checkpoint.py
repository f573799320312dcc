"""Run folders: where a training run keeps its settings, weights, resume state and history.

A run folder holds ``config.json``, ``tokenizer.json``, ``model.safetensors`` (latest weights),
``best.safetensors`` (best validation loss), ``train_state.pt`` (optimizer, schedule step, RNG and batcher
states: everything an exact resume needs; read with ``torch.load(weights_only=True)``), ``metrics.jsonl``
and ``samples.jsonl``. Every file is written to a temporary name in the same folder, flushed to disk and
renamed over the old one, so a crash or a full disk never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_model
from torch import nn

from lmstudio.engine.errors import UserError

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
LATEST_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
WEIGHT_FILES = {"latest": LATEST_FILE, "best": BEST_FILE}


class CheckpointError(UserError):
    """A run folder or one of its files is missing, unreadable or does not fit the model."""


def default_runs_dir() -> Path:
    """``$LMSTUDIO_RUNS`` or ``~/.lmstudio/runs``."""
    return Path(os.environ.get("LMSTUDIO_RUNS") or Path.home() / ".lmstudio" / "runs")


def default_cache_dir() -> Path:
    """``$LMSTUDIO_CACHE`` or ``~/.lmstudio/cache`` (encoded corpora)."""
    return Path(os.environ.get("LMSTUDIO_CACHE") or Path.home() / ".lmstudio" / "cache")


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create a fresh folder ``root/<name>`` (``<name>-2``, ``-3``... when taken) and return it."""
    root = Path(root)
    slug = re.sub(r"[^\w.-]+", "-", name.strip()).strip("-.") or "run"
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = root / (slug if i == 1 else f"{slug}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise CheckpointError(f"too many runs named {slug!r} in {root}; choose another name")


# ---- atomic writes ------------------------------------------------------------------------------
def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename over ``path``; on any failure the old file stays."""
    atomic_write_all([(path, write)])


def atomic_write_all(files: list[tuple[str | Path, Callable[[str], None]]]) -> None:
    """Write every file to a temporary file first, and rename them into place (in order) only when all are
    written: a full disk while writing any of them leaves every old file as it was."""
    written: list[tuple[str, Path]] = []
    try:
        for path, write in files:
            path = Path(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            written.append((tmp, path))
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        while written:
            tmp, path = written[0]
            os.replace(tmp, path)
            written.pop(0)
    except BaseException:
        for tmp, _ in written:
            with _suppress_oserror():
                os.unlink(tmp)
        raise
    for folder in {Path(path).parent for path, _ in files}:
        _fsync_dir(folder)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def remove_stale_temp_files(folder: str | Path) -> list[str]:
    """Delete the half-written temporary files (``.<name>.*.tmp``) a killed process left in a run folder.

    Only for a folder this process is about to write to (a resumed run): nothing else writes there then, and a
    weights-sized leftover would otherwise sit there hidden for good. Returns the names removed.
    """
    removed = []
    for leftover in Path(folder).glob(".*.tmp"):
        with _suppress_oserror():
            leftover.unlink()
            removed.append(leftover.name)
    return removed


def _fsync_dir(folder: Path) -> None:
    # makes the rename itself durable; not possible on Windows, where it is not needed either
    if os.name != "posix":
        return
    with _suppress_oserror():
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _suppress_oserror:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, OSError)


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


def weights_metadata(path: str | Path) -> dict[str, Any]:
    """The small JSON metadata stored in a safetensors header (step, val loss...), read without the tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return {}
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


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


# ---- history -----------------------------------------------------------------------------------
def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    line = json.dumps(_finite(record), ensure_ascii=False) + "\n"
    with open(path, "ab+") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # a line torn by a crash: end it so it does not swallow this record
                line = "\n" + line
        f.write(line.encode("utf-8"))


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN/inf; store them as null so every line stays parseable
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (crash mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every logged StepMetrics and EvalMetrics of a run, oldest first (``event`` names the kind)."""
    return read_jsonl(Path(run_dir) / METRICS_FILE)


def read_samples(run_dir: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(run_dir) / SAMPLES_FILE)


def truncate_history(run_dir: str | Path, step: int) -> None:
    """Drop records logged after ``step``: a resume from that checkpoint will log those steps again."""
    for name in (METRICS_FILE, SAMPLES_FILE):
        path = Path(run_dir) / name
        if not path.exists():
            continue
        kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))


# ---- listing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSummary:
    path: str
    name: str
    arch: str
    corpus: str
    tokenizer: str
    steps: int  # optimizer steps in the latest checkpoint (0: none yet)
    max_steps: int
    best_val_loss: float | None
    created: float  # seconds since the epoch
    updated: float
    # the latest weights' loss over the whole validation split (full_eval.json), None when not scored
    full_val_loss: float | None = None


def list_runs(root: str | Path | None = None) -> list[RunSummary]:
    """Every run folder under ``root`` (newest first); folders without a readable config are skipped."""
    from lmstudio.engine.full_eval import known_loss

    root = Path(root) if root is not None else default_runs_dir()
    if not root.is_dir():
        return []
    runs = []
    for folder in root.iterdir():
        cfg_path = folder / CONFIG_FILE
        if not cfg_path.is_file():
            continue
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            model, train = cfg.get("model", {}), cfg.get("train", {})
            if not all(
                isinstance(s, dict) for s in (model, train, cfg.get("corpus", {}), cfg.get("tokenizer", {}))
            ):
                raise ValueError("a section is not a table")
        except (OSError, ValueError, AttributeError):
            continue
        latest = folder / LATEST_FILE
        meta = weights_metadata(latest) if latest.exists() else {}
        created = cfg_path.stat().st_mtime
        updated = latest.stat().st_mtime if latest.exists() else created
        runs.append(
            RunSummary(
                path=str(folder),
                name=cfg.get("name") or folder.name,
                arch=str(model.get("arch", "?")),
                corpus=str(cfg.get("corpus", {}).get("source", "?")),
                tokenizer=str(cfg.get("tokenizer", {}).get("kind", "?")),
                steps=_whole(meta.get("step")),
                max_steps=_whole(train.get("max_steps")),
                best_val_loss=_number(meta.get("best_val")),
                created=created,
                updated=updated,
                full_val_loss=known_loss(folder, "latest", _whole(meta.get("step"))),
            )
        )
    return sorted(runs, key=lambda r: r.updated, reverse=True)


def _whole(value: Any) -> int:
    # a hand-edited or foreign file may hold anything here; the list shows 0 rather than failing
    return int(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _require(path: Path, what: str) -> None:
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: the run folder has no {what} "
            f"(was training stopped before its first checkpoint?)"
        )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
