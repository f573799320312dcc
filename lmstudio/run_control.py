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
    folder, e.g. ``{"pause": true}``, ``{"pause": false}``, ``{"stop": true}``, ``{"lr": 3e-4, "lr_seq": 2}``
    (a new learning rate, applied once per new ``lr_seq``). Written atomically by the requester (a new file
    each time) and read by rank 0 whenever it changes (one ``stat`` per step)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / CONTROL_FILE
        self._seen: tuple[int, int] | None = None
        self._lr_seq = 0

    def apply(self, control) -> None:
        try:
            st = self.path.stat()
        except OSError:
            return
        version = (st.st_ino, st.st_mtime_ns)  # every write is a new file: a new inode even within a tick
        if version == self._seen:
            return
        self._seen = version
        try:
            request = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(request, dict):
            return
        lr, seq = request.get("lr"), request.get("lr_seq")
        if isinstance(lr, (int, float)) and isinstance(seq, int) and seq > self._lr_seq:
            self._lr_seq = seq
            try:
                control.set_lr(lr)
            except ValueError:  # a bad value is refused by the app before it gets here; ignore it
                pass
        if request.get("stop"):
            control.stop()
        elif request.get("pause") is True:
            control.pause()
        elif request.get("pause") is False:
            control.resume()


def write_control(run_dir: str | Path, **request: bool | float | int | None) -> None:
    """Ask the run training in ``run_dir`` (in another process) to pause, resume, stop or change its
    learning rate (the keys ``ControlFile`` reads)."""
    path = Path(run_dir) / CONTROL_FILE
    tmp = path.with_name(f".{CONTROL_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(request), encoding="utf-8")
    os.replace(tmp, path)
