"""Run folders without torch: where a run lives, what its files are called, and how to read them back.

A run folder holds ``config.json``, ``tokenizer.json``, ``model.safetensors`` (latest weights),
``best.safetensors`` (best validation loss), ``train_state.pt`` (optimizer, schedule step, RNG and batcher
states), ``metrics.jsonl`` and ``samples.jsonl``. Every file is written to a temporary name in the same
folder, flushed to disk and renamed over the old one, so a crash or a full disk never leaves a half-written
file behind.

This module is the shared layer's (no torch, no Qt): the UI lists runs and draws their history from it on
any thread, and ``engine.checkpoint`` adds the parts that need torch (weights and resume state).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmstudio import run_status, safe_read
from lmstudio.config import RunConfig
from lmstudio.errors import ConfigError, UserError
from lmstudio.runlock import LOCK_FILE, RunLock, locked_by

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


# ---- history -----------------------------------------------------------------------------------
def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    line = json.dumps(_finite(record), ensure_ascii=False) + "\n"
    # O_NOFOLLOW: a history file planted as a symlink must not make training append to a file elsewhere
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if Path(path).is_symlink():
            raise CheckpointError(
                f"{path} is a symbolic link; lmstudio writes only real files in a run folder"
            ) from e
        raise
    with os.fdopen(fd, "rb+") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # a line torn by a crash: end it so it does not swallow this record
                line = "\n" + line
        f.write(line.encode("utf-8"))


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN/inf; store them as null so every line stays parseable
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; damaged lines are skipped (``read_jsonl_counted`` says how many)."""
    return read_jsonl_counted(path)[0]


def read_jsonl_counted(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """The good records of a history file and the number of damaged lines skipped.

    Damaged: torn by a crash or a full disk (half a line, half a UTF-8 character), not a JSON object, or a
    record whose ``step`` is not a whole number or whose values are not numbers (metrics) / text (samples).
    A file that is not a regular file (a FIFO, a device) is refused (``FileRefused``) rather than read.
    """
    out, skipped = [], 0
    for record in safe_read.jsonl_records(path):
        if record is None or not _plausible(record):
            skipped += 1
        else:
            out.append(record)
    return out, skipped


def _plausible(record: dict[str, Any]) -> bool:
    step = safe_read.whole_number(record.get("step", 0))
    if step is None:
        return False
    record["step"] = step
    for key in _NUMERIC & record.keys():
        value = record[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            record[key] = None  # 1e400 reads as inf: as unknown as the null the writer stores
    return isinstance(record.get("text", ""), str) and isinstance(record.get("event", ""), str)


# fields the curves plot: a record holding anything but a number (or null) there is damaged
_NUMERIC = frozenset(
    ("step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed", "eta", "train_loss", "val_loss", "val_ppl")
    + ("val_acc", "val_bpc", "max_steps")
)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every logged StepMetrics and EvalMetrics of a run, oldest first (``event`` names the kind)."""
    return read_jsonl(Path(run_dir) / METRICS_FILE)


def read_samples(run_dir: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(run_dir) / SAMPLES_FILE)


def truncate_history(run_dir: str | Path, step: int) -> dict[str, int]:
    """Drop records logged after ``step`` (a resume from that checkpoint logs those steps again) and the
    damaged lines; returns how many damaged lines each file had."""
    skipped = {}
    for name in (METRICS_FILE, SAMPLES_FILE):
        path = Path(run_dir) / name
        if not os.path.lexists(path):
            continue
        records, skipped[name] = read_jsonl_counted(path)
        kept = [r for r in records if r["step"] <= step]
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    return skipped


def read_full_evals(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every recorded full-split score of a run by checkpoint name; {} when none (or the file is unreadable)."""
    try:
        data = safe_read.read_json(
            Path(run_dir) / FULL_EVAL_FILE, safe_read.MAX_CONFIG_BYTES, safe_read.MAX_LINE_DEPTH
        )
    except (OSError, safe_read.FileRefused):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def known_full_loss(run_dir: str | Path, which: str, step: int) -> float | None:
    """The recorded full-split loss of checkpoint ``which`` if it was scored at ``step`` (its current
    weights), else None: a score of older weights is never shown as the current one."""
    entry = read_full_evals(run_dir).get(which, {})
    loss = entry.get("val_loss")
    if entry.get("step") != step or not isinstance(loss, (int, float)) or not math.isfinite(loss):
        return None
    return float(loss)


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
    state: str = ""  # run_status: finished, stopped, failed, interrupted, training, idle, ...
    state_text: str = ""  # for people: "finished", "stopped at 281 of 3,000", "failed: ..."
    elapsed: float | None = None  # seconds of training (pauses excluded), when recorded
    training_pid: int | None = None  # a process training this run right now (0: its pid is unknown)


@dataclass(frozen=True)
class SkippedRun:
    """A folder in the runs folder that looks like a run but cannot be listed, and why."""

    path: str
    reason: str


def list_runs(root: str | Path | None = None) -> list[RunSummary]:
    """Every run folder under ``root`` (newest first); damaged ones are left out (``scan_runs`` names them)."""
    return scan_runs(root)[0]


def scan_runs(root: str | Path | None = None) -> tuple[list[RunSummary], list[SkippedRun]]:
    """The runs under ``root`` (newest first) and the folders skipped because their config.json is damaged.

    Folders without a config.json are not runs and are ignored. One hostile folder (a config nested 100,000
    deep, a FIFO, a 5,000-digit number, a name that is not text) never hides the others.
    """
    root = Path(root) if root is not None else default_runs_dir()
    if not root.is_dir():
        return [], []
    try:
        folders = list(root.iterdir())
    except OSError as e:
        raise CheckpointError(f"cannot list the runs folder {root}: {e.strerror or e}") from None
    runs, skipped = [], []
    for folder in folders:
        try:
            summary = run_summary(folder)
        except Exception as e:  # noqa: BLE001 - whatever is wrong with one folder, list the others
            skipped.append(SkippedRun(str(folder), _first_line(e)))
            continue
        if summary is not None:
            runs.append(summary)
    return sorted(runs, key=lambda r: r.updated, reverse=True), sorted(skipped, key=lambda r: r.path)


def run_summary(folder: Path) -> RunSummary | None:
    """One run folder's summary; None when it is no run (no config.json); an error when it is damaged."""
    cfg_path = folder / CONFIG_FILE
    if not folder.is_dir() or not os.path.lexists(cfg_path):
        return None
    cfg = safe_read.read_json(cfg_path, safe_read.MAX_CONFIG_BYTES, safe_read.MAX_CONFIG_DEPTH)
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path} is not a JSON object")
    sections = {k: cfg.get(k, {}) for k in ("model", "train", "corpus", "tokenizer")}
    bad = [k for k, v in sections.items() if not isinstance(v, dict)]
    if bad:
        raise CheckpointError(f"{cfg_path}: the section {bad[0]!r} is not a table")
    model, train = sections["model"], sections["train"]
    latest = folder / LATEST_FILE
    meta = weights_metadata(latest) if latest.is_file() else {}
    created = cfg_path.stat().st_mtime
    updated = latest.stat().st_mtime if latest.is_file() else created
    status = run_status.read_status(folder)
    # a continued run may have been given more steps than its config.json says: the status knows
    steps = _whole(meta.get("step"))
    max_steps = _whole(status.get("max_steps")) or _whole(train.get("max_steps"))
    state = run_status.state_of(status, steps, max_steps)
    return RunSummary(
        path=str(folder),
        name=folder.name,  # unique, unlike the name in config.json (two runs may share that)
        arch=_text(model.get("arch")),
        corpus=_text(sections["corpus"].get("source")),
        tokenizer=_text(sections["tokenizer"].get("kind")),
        steps=steps,
        max_steps=max_steps,
        best_val_loss=_number(meta.get("best_val")),
        created=created,
        updated=updated,
        full_val_loss=known_full_loss(folder, "latest", steps),
        training_pid=locked_by(folder),
        state=state,
        state_text=run_status.describe(state, steps, max_steps, str(status.get("message", ""))),
        elapsed=_number(status.get("elapsed")),
    )


def _text(value: Any) -> str:
    return value[:200] if isinstance(value, str) else "?"


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0][:300] if lines else "") or type(e).__name__


def whole_step(value: Any) -> int:
    """A step read from a file: a whole number from 0 up, anything else (text, 1e400, [1, 2]) 0."""
    return _whole(value)


def _whole(value: Any) -> int:
    # a hand-edited or foreign file may hold anything here; the list shows 0 rather than failing
    number = safe_read.whole_number(value)
    return number if number is not None and 0 <= number < 10**15 else 0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int of hundreds of digits
        return None
    return number if math.isfinite(number) else None
