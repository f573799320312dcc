"""A training run in a child process, followed as if it ran here: how the app trains on several GPUs.

``child_run_events`` starts ``lmstudio train --nproc N --json`` (torchrun and its N ranks, see launch.py) and
yields the events rank 0 prints, rebuilt as the same dataclasses an in-process ``Trainer.run()`` yields, so the
app's views need no second code path. The JSON event stream on the child's stdout is followed rather than
``metrics.jsonl``: it carries every event (Started, notices, pauses, the final Finished/Failed), not only the
metrics, and needs no polling. Everything is in the run folder as well, which is what reopening the run uses.

The caller's ``TrainControl`` keeps its meaning: pause, resume and stop become ``control.json`` requests in the
run folder (``distributed.ControlFile``), which rank 0 reads once per step, written once the child has started
the run (before that the folder must stay empty). A child that ends without a final
event (killed, say) still ends the stream with a ``Failed``, whose message is what the child printed on stderr.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from lmstudio import events as ev
from lmstudio.run_control import write_control

STOP_GRACE_S = 60  # after a stop request, how long the child may take to save before it is killed

_EVENTS = {
    cls.__name__: cls
    for cls in vars(ev).values()
    if isinstance(cls, type) and issubclass(cls, ev.Event) and cls is not ev.Event
}


def event_from_dict(data: dict) -> ev.Event | None:
    """The event a ``--json`` line describes (unknown kinds and fields are ignored: a newer child)."""
    cls = _EVENTS.get(str(data.get("event")))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def child_command(nproc: int, run_dir: Path, config_file: Path | None, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "lmstudio", "train", "--nproc", str(nproc), "--json"]
    if resume:
        return [*cmd, "--resume", str(run_dir)]
    assert config_file is not None
    return [*cmd, "--preset", str(config_file), "--out", str(run_dir)]


def child_run_events(
    config_json: str | None,
    run_dir: str | Path,
    nproc: int,
    control,
    *,
    resume: bool = False,
    env: dict | None = None,
) -> Iterator[ev.Event]:
    """Train ``config_json`` (a RunConfig as JSON; None when resuming ``run_dir``) on ``nproc`` processes in a
    child, yielding its events; ends with ``Finished`` or ``Failed`` like ``Trainer.run()``."""
    run_dir = Path(run_dir)
    config_file = None
    if not resume:
        config_file = run_dir.parent / f".{run_dir.name}.launch.json"
        config_file.write_text(config_json or "{}", encoding="utf-8")
    proc = subprocess.Popen(
        child_command(nproc, run_dir, config_file, resume),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
        start_new_session=True,  # its own process group: the app's signals stay the app's
    )
    lines: queue.Queue = queue.Queue()
    errors: list[str] = []
    threading.Thread(target=_pump, args=(proc.stdout, lines.put, True), daemon=True).start()
    err_thread = threading.Thread(target=_pump, args=(proc.stderr, errors.append, False), daemon=True)
    err_thread.start()
    final: ev.Event | None = None
    step = 0
    relay = _Relay(run_dir, control)
    try:
        while True:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                line = ""
            relay.send()
            if line is None:
                break
            if not line.startswith("{"):
                continue
            try:
                event = event_from_dict(json.loads(line))
            except (ValueError, TypeError):
                continue
            if event is None:
                continue
            step = getattr(event, "step", step) or step
            if isinstance(event, ev.Started):
                relay.child_started()
            if isinstance(event, (ev.Finished, ev.Failed)):
                final = event  # held until the child has exited: its stderr may say more
                continue
            yield event
        proc.wait()
    finally:
        if proc.poll() is None:  # the consumer went away (the window closed): stop and save, then end it
            if relay.started:
                relay.stop()
            else:  # still setting up: no control.json yet (see _Relay); its signal handlers stop it cleanly
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if config_file is not None:
            config_file.unlink(missing_ok=True)
    err_thread.join(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    said = [e.removeprefix("lmstudio: error: ").strip() for e in errors if e.startswith("lmstudio: error:")]
    if isinstance(final, ev.Finished) or (isinstance(final, ev.Failed) and final.kind != "peer"):
        yield final
        return
    message = "; ".join(said) or (
        f"the training process ended unexpectedly (exit code {proc.returncode})"
        + (f": {errors[-1].strip()}" if errors else "")
    )
    yield ev.Failed(
        step=step, kind="error", message=message, run_dir=str(run_dir), detail="".join(errors[-40:])
    )


def _pump(stream, put, end_with_none: bool) -> None:
    for line in stream:
        put(line)
    if end_with_none:
        put(None)


class _Relay:
    """Turns changes of the app's TrainControl into ``control.json`` requests (the whole wanted state each
    time, so a request the reader did not see in between is never lost, only superseded).

    Nothing is written before the child has started the run (its ``Started`` event): a new run goes only into
    an empty folder, and a ``control.json`` written while the child is still starting would make it refuse
    its own folder. Requests made before then wait (the child reads ``control.json`` from its first step on).
    """

    def __init__(self, run_dir: Path, control) -> None:
        self.run_dir, self.control = run_dir, control
        self.started = False
        self.paused = False
        self.stopped = False
        self.lr: float | None = None
        self.lr_seq = 0

    def child_started(self) -> None:
        self.started = True
        self.send()

    def send(self) -> None:
        if not self.started or self.stopped or not self.run_dir.is_dir():
            return
        if self.control.stopping:
            self.stop()
            return
        lr = self.control.take_lr()  # the child applies it; this TrainControl drives no trainer here
        if lr is not None:
            self.lr, self.lr_seq = lr, self.lr_seq + 1
        if self.control.paused != self.paused or lr is not None:
            self.paused = self.control.paused
            self._write()

    def stop(self) -> None:
        if self.started and not self.stopped and self.run_dir.is_dir():
            self.stopped = True
            self._write()

    def _write(self) -> None:
        write_control(self.run_dir, pause=self.paused, stop=self.stopped, lr=self.lr, lr_seq=self.lr_seq)
