"""A run's history without torch: the metrics and samples logged as JSON lines, and the full-split scores.

``metrics.jsonl`` holds every StepMetrics and EvalMetrics, ``samples.jsonl`` every Sample, one JSON object a
line, appended as the trainer reports them (``engine/recorder.py``); ``full_eval.json`` the whole-validation-
split score of each checkpoint (``engine/full_eval.py``). Reading skips damaged lines (torn by a crash, edited
by hand) and says how many; a resumed run cuts the history back to its checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from lmstudio import safe_read
from lmstudio.runfolder import FULL_EVAL_FILE, METRICS_FILE, SAMPLES_FILE, CheckpointError, atomic_write_text


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
