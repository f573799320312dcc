"""How a run ended (or that it is training now), kept in the run folder's ``status.json``.

The trainer's events say it while they happen; this module remembers it afterwards, so the Runs table
and ``lmstudio runs`` can tell a finished run from one stopped at step 281 of 3,000, one that failed (and
why) and one that is training right now. ``record`` wraps any event stream (the window's worker and the
CLI both use it) and writes the file at the start and at the end of a run. A run whose process died
without saying goodbye (killed, power cut) still reads "training" in the file; ``read_status`` sees that
its process is gone and calls it interrupted.

Torch-free: plain JSON, read by the UI thread and the CLI alike.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
WEIGHTS_FILE = "model.safetensors"  # runfolder.LATEST_FILE (runfolder imports this module)

# the states a run can be in; the first five only while a process trains it
IDLE, PREPARING, TRAINING, PAUSED, STOPPING = "idle", "preparing", "training", "paused", "stopping"
FINISHED, STOPPED, FAILED, INTERRUPTED = "finished", "stopped", "failed", "interrupted"
LIVE_STATES = (PREPARING, TRAINING, PAUSED, STOPPING)
ENDED_STATES = (FINISHED, STOPPED, FAILED, INTERRUPTED)


def _write(run_dir: Path, status: dict[str, Any]) -> None:
    """Atomic and best effort: the status is a courtesy; a full disk must not turn it into a crash."""
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".status-", suffix=".tmp", dir=run_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(status, f, ensure_ascii=False)
        os.replace(tmp, run_dir / STATUS_FILE)
    except OSError:
        if tmp:
            Path(tmp).unlink(missing_ok=True)


def record(events: Iterable[Any], run_dir: str | Path | None = None) -> Iterator[Any]:
    """Yield ``events`` unchanged, writing ``status.json`` when the run starts and when it ends."""
    status: dict[str, Any] = {}
    folder = Path(run_dir) if run_dir else None
    ended = False
    try:
        for ev in events:
            kind = type(ev).__name__
            if kind == "Started":
                folder = Path(ev.run_dir)
                status = {
                    "state": TRAINING,
                    "step": ev.start_step,
                    "max_steps": ev.max_steps,
                    "elapsed": 0.0,
                    "pid": os.getpid(),
                    "host": platform.node(),
                    "started": time.time(),
                }
                _write(folder, status)
            elif kind == "StepMetrics":
                status.update(step=ev.step, max_steps=ev.max_steps, elapsed=ev.elapsed)
            elif kind in ("Finished", "Failed") and status and folder is not None and folder.is_dir():
                # only a run that started has a status: a refused start (a folder that is not ours) gets none
                status.update(step=ev.step, ended=time.time())
                if kind == "Finished":
                    status.update(state=FINISHED if ev.reason == "completed" else STOPPED)
                    status["elapsed"] = ev.elapsed or status.get("elapsed", 0.0)
                else:
                    status.update(state=FAILED, kind=ev.kind, message=ev.message)
                status.pop("pid", None)
                _write(folder, status)
                ended = True
            yield ev
    finally:
        # an exception escaped the trainer, or the consumer stopped iterating: say so, if it had started
        if status and not ended and folder is not None and folder.is_dir():
            status.update(state=INTERRUPTED, ended=time.time())
            status.pop("pid", None)
            _write(folder, status)


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether the run has saved weights that Generate and Inspect can load."""
    return bool(run_dir) and (Path(run_dir) / WEIGHTS_FILE).is_file()


def _alive(status: dict[str, Any]) -> bool:
    pid = status.get("pid")
    if not isinstance(pid, int):
        return False
    if status.get("host") != platform.node():
        return True  # trained on another machine (a shared folder): the file is all we know
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The run's recorded status (``{}`` when it has none: made before statuses, or never started)."""
    try:
        status = json.loads((Path(run_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(status, dict):
        return {}
    if status.get("state") in LIVE_STATES and not _alive(status):
        status["state"] = INTERRUPTED
    return status


def state_of(status: dict[str, Any], steps: int, max_steps: int) -> str:
    """One of the states above for a run on disk: its status file, else what its checkpoint implies."""
    state = status.get("state")
    if state in LIVE_STATES or state in ENDED_STATES:
        return str(state)  # a timed run (train.max_time) finishes before max_steps
    if steps <= 0:
        return IDLE
    return FINISHED if steps >= max_steps else STOPPED


def describe(state: str, steps: int, max_steps: int, message: str = "") -> str:
    """What the Runs table and ``lmstudio runs`` print: "finished", "stopped at 281 of 3,000", ..."""
    if state == FINISHED:
        return "finished"
    if state in (STOPPED, INTERRUPTED):
        verb = "stopped" if state == STOPPED else "interrupted"
        return f"{verb} at {steps:,} of {max_steps:,}"
    if state == FAILED:
        first = message.strip().splitlines()[0] if message.strip() else "unknown error"
        return f"failed: {first}"
    if state == IDLE:
        return "no checkpoint yet"
    return {PREPARING: "preparing", TRAINING: "training", PAUSED: "paused", STOPPING: "stopping"}.get(
        state, state
    )
