"""Run folders without torch: where a run lives, what its files are called, and how to read them back.

A run folder holds ``config.json``, ``tokenizer.json``, ``model.safetensors`` (latest weights),
``best.safetensors`` (best validation loss), ``train_state.pt`` (optimizer, schedule step, RNG and batcher
states), ``metrics.jsonl`` and ``samples.jsonl``. Every file is written to a temporary name in the same
folder, flushed to disk and renamed over the old one, so a crash or a full disk never leaves a half-written
file behind.

This module is the shared layer's (no torch, no Qt), as are ``run_history`` (the metrics and samples logged)
and ``run_list`` (the runs folder listed), which the UI reads on any thread; ``engine.checkpoint`` adds the
parts that need torch (weights and resume state).
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lmstudio import safe_read
from lmstudio.config import RunConfig
from lmstudio.errors import ConfigError, UserError
from lmstudio.runlock import LOCK_FILE, RunLock

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
LATEST_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
FULL_EVAL_FILE = "full_eval.json"  # whole-validation-split scores per checkpoint (engine/full_eval.py)
WEIGHT_FILES = {"latest": LATEST_FILE, "best": BEST_FILE}


class CheckpointError(UserError):
    """A run folder or one of its files is missing, unreadable or does not fit the model."""


def default_runs_dir() -> Path:
    """``$LMSTUDIO_RUNS`` (``~`` expanded) or ``~/.lmstudio/runs``."""
    return _env_dir("LMSTUDIO_RUNS", "runs")


def default_cache_dir() -> Path:
    """``$LMSTUDIO_CACHE`` (``~`` expanded) or ``~/.lmstudio/cache`` (encoded corpora)."""
    return _env_dir("LMSTUDIO_CACHE", "cache")


def _env_dir(variable: str, name: str) -> Path:
    value = os.environ.get(variable)
    return Path(value).expanduser() if value else Path.home() / ".lmstudio" / name


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create a fresh folder ``root/<name>`` (``<name>-2``, ``-3``... when taken) and return it."""
    root = Path(root)
    # at most 80 characters: a folder name has 255 bytes at most, and a 300-character name is no help
    slug = re.sub(r"[^\w.-]+", "-", name.strip())[:80].strip("-.") or "run"
    for i in range(1, 10_000):
        path = root / (slug if i == 1 else f"{slug}-{i}")
        try:
            root.mkdir(parents=True, exist_ok=True)
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise CheckpointError(
                f"cannot create a run folder in {root}: {e.strerror or e}; choose another runs folder "
                "(LMSTUDIO_RUNS) or free some space"
            ) from None
    raise CheckpointError(f"too many runs named {slug!r} in {root}; choose another name")


def open_run_folder(run_dir: str | Path, *, resume: bool) -> RunLock:
    """Lock ``run_dir`` for this process's trainer and return the held lock (release it when done).

    A new run goes only into a folder that does not exist (it is created) or is empty; a resume only into
    a folder nobody else is training. RunLocked names the other process; CheckpointError says why a folder
    cannot be used (a plain file, not empty, a name too long, read-only).
    """
    run_dir = Path(run_dir)
    if not resume:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise CheckpointError(f"{run_dir} is a file, not a folder; choose another run folder") from None
        except OSError as e:
            raise CheckpointError(
                f"cannot create the run folder {run_dir}: {e.strerror or e}; choose another folder"
            ) from None
        _require_empty(run_dir)  # before the lock file is made: nothing at all is written into `--out /`
    elif not run_dir.is_dir():
        raise CheckpointError(f"{run_dir / STATE_FILE} is missing: {run_dir} is no folder, nothing to resume")
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except OSError as e:
        raise CheckpointError(f"cannot write in the run folder {run_dir}: {e.strerror or e}") from None
    if not resume:
        try:
            _require_empty(run_dir)  # again, now that no other trainer can be filling it
        except CheckpointError:
            lock.release()
            raise
    return lock


def _require_empty(run_dir: Path) -> None:
    others = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)
    if not others:
        return
    if CONFIG_FILE in others:
        raise CheckpointError(f"{run_dir} already holds a run; resume it or choose a new folder")
    shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
    raise CheckpointError(
        f"{run_dir} is not empty (it holds {shown}): a new run goes only into a new or empty folder, "
        "so nothing of yours is overwritten; choose another folder"
    )


# ---- atomic writes ------------------------------------------------------------------------------
def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename over ``path``; on any failure the old file stays."""
    atomic_write_all([(path, write)])


def atomic_write_all(files: Sequence[tuple[str | Path, Callable[[str], object]]]) -> None:
    """Write every file to a temporary file first, and rename them into place (in order) only when all are
    written: a full disk while writing any of them leaves every old file as it was."""
    written: list[tuple[str, Path]] = []
    try:
        for target, write in files:
            path = Path(target)
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
    """Delete the half-written temporary files a killed process left in a run folder (ours and safetensors').

    Only for a folder this process is about to write to (a resumed run): nothing else writes there then, and a
    weights-sized leftover would otherwise sit there hidden for good. Returns the names removed.
    """
    removed = []
    for leftover in Path(folder).iterdir():
        if _STALE.fullmatch(leftover.name) and leftover.is_file() and not leftover.is_symlink():
            with _suppress_oserror():
                leftover.unlink()
                removed.append(leftover.name)
    return removed


# ours (``.<name>.XXXXXXXX.tmp``, ``.tokenizer.json.<pid>.tmp``) and safetensors' own (``.tmpXXXXXX``,
# written beside the target and renamed, so a kill mid-write leaves a weights-sized one)
_STALE = re.compile(r"\..+\.tmp|\.tmp[A-Za-z0-9_]{6}")


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
    def __enter__(self) -> _suppress_oserror:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: object, tb: object) -> bool:
        return kind is not None and issubclass(kind, OSError)


# ---- the run's settings ---------------------------------------------------------------------------
def load_run_config(run_dir: str | Path) -> RunConfig:
    """The validated ``RunConfig`` of a run folder; CheckpointError when the folder or its config is bad."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a run folder (it does not exist)")
    config_path = run_dir / CONFIG_FILE
    if not os.path.lexists(config_path):  # a FIFO or a link to a device is refused by the reader
        raise CheckpointError(f"{config_path} is missing: {run_dir} is not a run folder")
    try:
        return RunConfig.load(config_path).validate()
    except ConfigError as e:
        raise CheckpointError(f"{config_path} is damaged: {e}") from None


def check_vocab(run_dir: str | Path, tokenizer_vocab: int, config_vocab: int) -> None:
    """A run's tokenizer.json and config.json must agree on the vocabulary size."""
    if tokenizer_vocab != config_vocab:
        raise CheckpointError(
            f"{Path(run_dir) / TOKENIZER_FILE} has {tokenizer_vocab} tokens but config.json expects "
            f"{config_vocab}: the files come from different runs"
        )


def check_same_run(run_dir: str | Path, cfg: RunConfig, tokenizer_vocab: int) -> None:
    """Refuse to resume ``run_dir`` with settings ``cfg`` that describe a different run.

    The vocabulary size is the tokenizer's to decide, so it is left out of the model comparison.
    """
    saved = RunConfig.load(Path(run_dir) / CONFIG_FILE)
    if saved.model.vocab_size:  # 0: a config written before the tokenizer was known
        check_vocab(run_dir, tokenizer_vocab, saved.model.vocab_size)
    wanted_model = dataclasses.replace(cfg.model, vocab_size=saved.model.vocab_size)
    for section, a, b in (
        ("model", saved.model, wanted_model),
        ("tokenizer", saved.tokenizer, cfg.tokenizer),
    ):
        if a != b:
            raise ConfigError(
                {section: f"differs from the run being resumed in {run_dir}; start a new run to change it"}
            )
    if saved.corpus.source != cfg.corpus.source:
        raise ConfigError({"corpus.source": "differs from the run being resumed; start a new run"})


# ---- weights' metadata -----------------------------------------------------------------------------
def weights_metadata(path: str | Path) -> dict[str, Any]:
    """The small JSON metadata stored in a safetensors header (step, val loss...), read without the tensors.

    The header is an 8-byte little-endian length and that many bytes of JSON (the safetensors format), so
    reading it needs neither torch nor safetensors. Anything unreadable gives ``{}``.
    """
    try:
        fd, _ = safe_read.open_regular(path, 1 << 50)  # never blocks on a FIFO
        with os.fdopen(fd, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100_000_000:  # the format's own limit on a header
                return {}
            header = safe_read.loads_json(f.read(size).decode("utf-8"), safe_read.MAX_LINE_DEPTH, str(path))
    except (OSError, ValueError, struct.error, safe_read.FileRefused):
        return {}
    raw = header.get("__metadata__") if isinstance(header, dict) else None
    out: dict[str, Any] = {}
    for k, v in (raw if isinstance(raw, dict) else {}).items():
        try:
            out[k] = safe_read.loads_json(v, safe_read.MAX_LINE_DEPTH, str(path))
        except (TypeError, safe_read.FileRefused):
            out[k] = v
    return out
