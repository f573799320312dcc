"""The runs folder listed without torch: one summary per run (name, model, progress, scores, state) and the
folders that look like runs but cannot be read, with why.

The app's Runs pane and ``lmstudio runs`` list from here, on any thread; one hostile folder never hides the
others.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmstudio import run_status, safe_read
from lmstudio.run_history import known_full_loss
from lmstudio.runfolder import CONFIG_FILE, LATEST_FILE, CheckpointError, default_runs_dir, weights_metadata
from lmstudio.runlock import locked_by


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
