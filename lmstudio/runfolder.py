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

from lmstudio.config import RunConfig
from lmstudio.errors import ConfigError, UserError

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
    if not config_path.is_file():
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
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100_000_000:  # the format's own limit on a header
                return {}
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error):
        return {}
    raw = header.get("__metadata__") if isinstance(header, dict) else None
    out: dict[str, Any] = {}
    for k, v in (raw if isinstance(raw, dict) else {}).items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


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


def read_full_evals(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every recorded full-split score of a run by checkpoint name; {} when none (or the file is unreadable)."""
    try:
        data = json.loads((Path(run_dir) / FULL_EVAL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
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


def list_runs(root: str | Path | None = None) -> list[RunSummary]:
    """Every run folder under ``root`` (newest first); folders without a readable config are skipped."""
    root = Path(root) if root is not None else default_runs_dir()
    if not root.is_dir():
        return []
    runs = [summary for folder in root.iterdir() if (summary := run_summary(folder)) is not None]
    return sorted(runs, key=lambda r: r.updated, reverse=True)


def run_summary(folder: Path) -> RunSummary | None:
    """One run folder's summary, or None when it has no readable config.json."""
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        return None
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        model, train = cfg.get("model", {}), cfg.get("train", {})
        if not all(
            isinstance(s, dict) for s in (model, train, cfg.get("corpus", {}), cfg.get("tokenizer", {}))
        ):
            raise ValueError("a section is not a table")
    except (OSError, ValueError, AttributeError):
        return None
    latest = folder / LATEST_FILE
    meta = weights_metadata(latest) if latest.exists() else {}
    created = cfg_path.stat().st_mtime
    updated = latest.stat().st_mtime if latest.exists() else created
    return RunSummary(
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
        full_val_loss=known_full_loss(folder, "latest", _whole(meta.get("step"))),
    )


def _whole(value: Any) -> int:
    # a hand-edited or foreign file may hold anything here; the list shows 0 rather than failing
    return int(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
