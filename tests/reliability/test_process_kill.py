"""The process dies mid-save (SIGKILL) or is interrupted (Ctrl-C): the run folder stays usable.

Both start a real ``python`` subprocess; its stdout is read through a thread with a bounded wait, so a hung
child fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine.session import Session
from lmstudio.engine.trainer import Trainer
from lmstudio.events import Failed, Finished
from tests.reliability.conftest import TINY, run_all, tiny_config

REPO = Path(__file__).resolve().parents[2]
WAIT = 120  # seconds: generous, the machine is shared; a healthy child answers in a few


def _env(tmp_path) -> dict:
    env = dict(
        os.environ,
        LMSTUDIO_RUNS=str(tmp_path / "runs"),
        LMSTUDIO_CACHE=str(tmp_path / "cache"),
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("QT_QPA_PLATFORM", None)
    return env


class Lines:
    """The child's stdout lines, read by a thread; ``wait_for`` gives up after a timeout."""

    def __init__(self, proc: subprocess.Popen):
        self.queue: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.queue.put(line)
        self.queue.put(None)

    def wait_for(self, predicate, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(
                    "the process ended before printing the line awaited:\n" + "".join(self.seen)
                )
            self.seen.append(line)
            if predicate(line):
                return line


# Trains a tiny run whose second checkpoint blocks halfway through writing a file: the parent kills it there.
CHILD = textwrap.dedent("""
    import sys, threading
    import torch
    torch.set_num_threads(1)
    from lmstudio.config import RunConfig
    from lmstudio import runfolder
    from lmstudio.engine import checkpoint as ckpt
    from lmstudio.engine.trainer import Trainer

    where, run, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    calls = {"n": 0}
    real_save_model, real_replace = ckpt.save_model, runfolder.os.replace

    def block(message):
        print(message, flush=True)
        threading.Event().wait()  # until SIGKILL

    def save_model(model, filename, metadata=None):
        calls["n"] += 1
        if where == "weights" and calls["n"] == 3:  # step 10 wrote latest + best; step 20's latest
            real_save_model(model, filename, metadata=metadata)
            with open(filename, "r+b") as f:
                f.truncate(f.seek(0, 2) // 2)   # half of the bytes are on disk
            block("BLOCKED in the weights write")
        real_save_model(model, filename, metadata=metadata)

    def replace(src, dst):
        if where == "state" and str(dst).endswith("train_state.pt") and calls["n"] >= 3:
            block("BLOCKED before the state rename")  # new weights in place, the old state still there
        real_replace(src, dst)

    ckpt.save_model, runfolder.os.replace = save_model, replace
    cfg = RunConfig(name="killed").override(overrides).validate()
    for event in Trainer(cfg, run).run():
        print(type(event).__name__, getattr(event, "step", ""), flush=True)
""")


@pytest.mark.parametrize("where", ["weights", "state"])
def test_sigkill_while_a_checkpoint_is_written_leaves_the_previous_one_loadable(tmp_path, where):
    run = tmp_path / "run"
    args = [
        sys.executable,
        "-c",
        CHILD,
        where,
        str(run),
        *TINY,
        "model.arch=transformer",
        "train.eval_interval=10",
        "train.max_steps=30",
    ]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path), cwd=REPO
    )
    try:
        Lines(proc).wait_for(lambda line: line.startswith("BLOCKED"))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT)
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p.name for p in run.glob(".*.tmp")]
    assert leftovers  # the killed write's temporary file: hidden, never read...
    session = Session.load(run)  # the app and `lmstudio generate` open runs this way
    expected = 10 if where == "weights" else 20  # the state rename never happened, the weights one did
    assert session.step == expected
    assert all(bool(torch.isfinite(p).all()) for p in session.model.parameters())
    assert ckpt.load_train_state(run)["step"] == 10
    assert [r.steps for r in ckpt.list_runs(tmp_path)] == [expected]
    # resuming works from the intact pair, or says plainly that the pair does not match
    events = run_all(
        Trainer(tiny_config("transformer", "train.eval_interval=10", "train.max_steps=30"), run, resume=True)
    )
    assert not list(run.glob(".*.tmp"))  # ...and removed by the next process that writes to the run
    if where == "weights":
        assert isinstance(events[-1], Finished) and events[-1].step == 30, events[-1]
    else:
        assert isinstance(events[-1], Failed) and events[-1].kind == "checkpoint"
        assert "do not match" in events[-1].message and str(run) in events[-1].message


def test_ctrl_c_on_the_cli_saves_a_loadable_checkpoint_and_exits_within_seconds(tmp_path):
    run = tmp_path / "run"
    sets = [a for pair in (("--set", s) for s in TINY[1:] if not s.startswith("train.device")) for a in pair]
    args = [
        sys.executable,
        "-m",
        "lmstudio",
        "train",
        "--preset",
        "tiny_tang",
        "--out",
        str(run),
        "--device",
        "cpu",
        "--arch",
        "gru",
        *sets,
        "--set",
        "train.max_steps=1000000",
    ]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path), cwd=REPO
    )
    try:
        lines = Lines(proc)
        lines.wait_for(lambda line: line.startswith("step "))
        interrupted_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=WAIT)
        took = time.monotonic() - interrupted_at
        _, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines.seen) + "".join(iter(lambda: lines.queue.get(timeout=WAIT) or "", ""))
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "stopping" in err
    assert took < 15, f"took {took:.1f} s to stop after Ctrl-C"
    assert "stopped at step" in out.lower() or "stopped" in out.lower(), out[-500:]
    session = Session.load(run)
    assert session.step >= 1 and ckpt.load_train_state(run)["step"] == session.step
    # and it resumes from there
    events = run_all(Trainer(tiny_config("gru", f"train.max_steps={session.step + 2}"), run, resume=True))
    assert isinstance(events[-1], Finished) and events[-1].step == session.step + 2, events[-1]
