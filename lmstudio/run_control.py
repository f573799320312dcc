"""Requests to a training run in another process: ``control.json`` in its run folder.

The app writes it (``write_control``) to pause, resume or stop a run it launched as a child process
(engine/child_run.py); rank 0 of that run reads it once per step (``ControlFile.apply``, engine/distributed.py).
Plain JSON and no torch, so the UI side can use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CONTROL_FILE = "control.json"  # {"pause": bool} or {"stop": true}


class ControlFile:
    """Requests from another process (the app following a run it launched): ``control.json`` in the run
    folder, ``{"pause": true}`` / ``{"pause": false}`` / ``{"stop": true}``, written atomically by the
    requester and read by rank 0 whenever its modification time changes (one ``stat`` per step)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / CONTROL_FILE
        self._seen: int | None = None

    def apply(self, control) -> None:
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            return
        if mtime == self._seen:
            return
        self._seen = mtime
        try:
            request = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(request, dict):
            return
        if request.get("stop"):
            control.stop()
        elif request.get("pause") is True:
            control.pause()
        elif request.get("pause") is False:
            control.resume()


def write_control(run_dir: str | Path, **request: bool) -> None:
    """Ask the run training in ``run_dir`` (in another process) to pause, resume or stop."""
    path = Path(run_dir) / CONTROL_FILE
    tmp = path.with_name(f".{CONTROL_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(request), encoding="utf-8")
    os.replace(tmp, path)
