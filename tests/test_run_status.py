"""status.json: how a run ended, written around the trainer's events and read back by the Runs table and CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from lmstudio import run_status as S
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine.events import Failed, Finished, Started, StepMetrics


def started(run_dir, start_step=0, max_steps=50):
    return Started(run_dir=str(run_dir), device="CPU", n_params=1, start_step=start_step, max_steps=max_steps)


def step(n, max_steps=50):
    return StepMetrics(
        step=n,
        max_steps=max_steps,
        loss=1.0,
        lr=1e-3,
        grad_norm=1.0,
        tokens_per_s=1.0,
        elapsed=n / 10,
        eta=1.0,
    )


def test_the_file_names_match_the_engines():
    assert S.WEIGHTS_FILE == ckpt.LATEST_FILE


def test_a_finished_a_stopped_and_a_failed_run(tmp_path):
    events = [
        started(tmp_path),
        step(10),
        Finished(step=50, reason="completed", run_dir=str(tmp_path), elapsed=5.0),
    ]
    assert list(S.record(events)) == events  # the events pass through unchanged
    status = S.read_status(tmp_path)
    assert status["state"] == "finished" and status["elapsed"] == 5.0 and "pid" not in status
    assert S.describe(S.state_of(status, 50, 50), 50, 50) == "finished"

    list(
        S.record(
            [started(tmp_path), step(281), Finished(step=281, reason="stopped", run_dir="", elapsed=1.0)]
        )
    )
    status = S.read_status(tmp_path)
    assert S.describe(S.state_of(status, 281, 3000), 281, 3000) == "stopped at 281 of 3,000"

    fail = Failed(step=3, kind="oom", message="out of memory on CPU. Use a smaller batch.\nDetails")
    list(S.record([started(tmp_path), fail]))
    status = S.read_status(tmp_path)
    assert (status["state"], status["kind"]) == ("failed", "oom")
    assert (
        S.describe("failed", 3, 50, status["message"]) == "failed: out of memory on CPU. Use a smaller batch."
    )


def test_while_training_the_file_says_training_and_names_this_process(tmp_path):
    gen = S.record([started(tmp_path), step(1)])
    next(gen)
    status = S.read_status(tmp_path)
    assert status["state"] == "training" and status["pid"] == os.getpid()
    gen.close()  # the consumer gave up (e.g. the app was killed mid-loop): not training any more
    assert S.read_status(tmp_path)["state"] == "interrupted"


def test_a_run_whose_process_died_reads_interrupted(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    status = {"state": "training", "pid": pid, "host": os.uname().nodename, "step": 7, "max_steps": 9}
    (tmp_path / S.STATUS_FILE).write_text(json.dumps(status))
    assert S.read_status(tmp_path)["state"] == "interrupted"
    assert S.describe("interrupted", 7, 9) == "interrupted at 7 of 9"


def test_without_a_status_file_the_checkpoint_decides(tmp_path):
    assert S.read_status(tmp_path) == {}
    assert S.state_of({}, 0, 10) == "idle" and S.state_of({}, 10, 10) == "finished"
    assert S.state_of({}, 4, 10) == "stopped"
    (tmp_path / S.STATUS_FILE).write_text("{torn")
    assert S.read_status(tmp_path) == {}
