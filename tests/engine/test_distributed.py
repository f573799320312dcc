"""One run trained by two real processes (torchrun, gloo on the CPU): the same numbers as one process with the
double batch, files from rank 0 only, control reaching every rank, one message for a failure, resume across
world sizes. Every child is a real ``python`` process on loopback; nothing needs a GPU or a network.
"""

from __future__ import annotations

import json
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

from lmstudio import run_status
from lmstudio.cli import main
from lmstudio.config import RunConfig
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine import distributed
from lmstudio.engine.data import Batcher, TokenData
from lmstudio.engine.trainer import Trainer
from lmstudio.events import Finished, StepMetrics

REPO = Path(__file__).resolve().parents[2]
WAIT = 180  # seconds: generous on a shared machine; a healthy pair of ranks answers in a few

TINY = [
    "corpus.source=tang300",
    "tokenizer.kind=char",
    "model.arch=transformer",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=16",
    "model.dropout=0.0",
    "train.batch_size=8",
    "train.log_interval=1",
    "train.eval_iters=2",
    "train.sample_interval=0",
    "train.warmup_steps=2",
    "train.lr=3e-3",
    "train.min_lr=3e-4",
    "train.device=cpu",
    "train.seed=7",
]


def tiny_config(*overrides: str) -> RunConfig:
    return RunConfig(name="dist").override(TINY + list(overrides)).validate()


def sets(*overrides: str) -> list[str]:
    return [a for s in TINY + list(overrides) for a in ("--set", s)]


# Under torchrun: ranks other than 0 may not write a single byte to any file (RLIMIT_FSIZE 0, SIGXFSZ ignored so
# a write fails with EFBIG instead of killing silently), then the ordinary CLI runs. (The temporary folder is
# looked up first: Python finds it by writing a probe file, which torch's import of its compiler does.)
READ_ONLY_OTHER_RANKS = textwrap.dedent("""
    import os, resource, signal, sys, tempfile
    if os.environ["RANK"] != "0":
        tempfile.tempdir = tempfile.gettempdir()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    from lmstudio.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _env(tmp_path) -> dict:
    env = dict(
        os.environ,
        LMSTUDIO_RUNS=str(tmp_path / "runs"),
        LMSTUDIO_CACHE=str(tmp_path / "cache"),
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    env.pop("QT_QPA_PLATFORM", None)
    return env


class Child:
    """A child process whose stdout lines are read by a thread; every wait gives up after a timeout."""

    def __init__(self, args: list[str], tmp_path):
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(tmp_path),
            cwd=REPO,
            start_new_session=True,  # like a terminal's foreground job: signals go where we send them
        )
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        self.err: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True).start()
        self._err_thread = threading.Thread(target=self._drain, daemon=True)
        self._err_thread.start()

    @staticmethod
    def _pump(stream, q) -> None:
        for line in stream:
            q.put(line)
        q.put(None)

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.err.append(line)

    def wait_for(self, predicate, timeout: float = WAIT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(
                    "the run ended before the awaited event:\n" + "".join(self.seen + self.err)
                )
            self.seen.append(line)
            event = json.loads(line) if line.startswith("{") else {}
            if predicate(event):
                return event

    def finish(self, timeout: float = WAIT) -> tuple[int, list[dict], str]:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        while (line := self.lines.get(timeout=30)) is not None:
            self.seen.append(line)
        self._err_thread.join(timeout=30)
        events = [json.loads(line) for line in self.seen if line.startswith("{")]
        return self.proc.returncode, events, "".join(self.err)


def torchrun(tmp_path, script: str, *train_args: str) -> Child:
    path = tmp_path / "child.py"
    path.write_text(script, encoding="utf-8")
    return Child(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            str(path),
            "train",
            *train_args,
        ],
        tmp_path,
    )


def lmstudio_train(tmp_path, *train_args: str) -> Child:
    return Child([sys.executable, "-m", "lmstudio", "train", *train_args], tmp_path)


def metrics(run: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / ckpt.METRICS_FILE).read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if r["event"] == kind]


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metrics(run, "StepMetrics")}


def reference_run(tmp_path, *overrides: str) -> Path:
    run = tmp_path / "reference"
    trainer = Trainer(tiny_config(*overrides), run, cache_dir=tmp_path / "cache")
    events = list(run_status.record(trainer.run(), run))  # status.json too, as `lmstudio train` writes it
    assert isinstance(events[-1], Finished), events[-1]
    return run


def ranks_of(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of the workers torchrun started below ``launcher_pid`` (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == launcher_pid:
            for item in env:
                if item.startswith(b"RANK="):
                    found[int(item[5:])] = int(entry.name)
    return found


# ---- in one process: the batch split itself ----------------------------------------------------------------
def test_the_ranks_slices_make_up_the_one_process_batch_and_keep_one_generator_state():
    import numpy as np

    data = TokenData(np.arange(5000, dtype=np.uint16), 0.1)
    whole = Batcher(data, 6, 8, seed=3)
    parts = [Batcher(data, 6, 8, seed=3, rank=r, world_size=3) for r in range(3)]
    for _ in range(4):
        x, y = whole.get("train")
        pieces = [p.get("train") for p in parts]
        assert (x == np.concatenate([p[0] for p in pieces])).all()
        assert (y == np.concatenate([p[1] for p in pieces])).all()
    for p in parts:  # the data position is one state, whatever the number of ranks
        assert (p.state_dict()["train"] == whole.state_dict()["train"]).all()


def test_a_batch_that_does_not_split_over_the_ranks_is_refused_with_the_fix():
    with pytest.raises(distributed.ConfigError, match="multiple of 3"):
        distributed.check_batch_split(8, 3)


def test_a_control_file_pauses_resumes_and_stops(tmp_path):
    from lmstudio.engine.train_control import TrainControl

    control, requests = TrainControl(), distributed.ControlFile(tmp_path)
    requests.apply(control)  # no file yet: nothing happens
    assert not control.paused and not control.stopping
    for request, paused, stopping in (
        ({"pause": True}, True, False),
        ({"pause": False}, False, False),
        ({"stop": True}, False, True),
    ):
        distributed.write_control(tmp_path, **request)
        os.utime(tmp_path / distributed.CONTROL_FILE, ns=(time.time_ns(), time.time_ns()))
        requests.apply(control)
        assert (control.paused, control.stopping) == (paused, stopping), request


# ---- two real processes ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_ranks_give_the_per_step_losses_of_one_process_with_the_double_batch_and_only_rank_0_writes(
    tmp_path,
):
    over = (
        "train.max_steps=12",
        "train.eval_interval=6",
        "train.grad_accum=2",
        "train.sample_interval=6",
        "train.sample_tokens=8",
    )
    run = tmp_path / "two"
    child = torchrun(
        tmp_path, READ_ONLY_OTHER_RANKS, "--preset", "tiny_tang", "--out", str(run), "--json", *sets(*over)
    )
    code, events, err = child.finish()
    assert code == 0, err
    assert "Traceback" not in err and "error" not in err.lower(), err
    started = [e for e in events if e["event"] == "Started"]
    assert len(started) == 1 and started[0]["world_size"] == 2 and "2 ranks (gloo)" in started[0]["device"]
    assert [e["event"] for e in events].count("Finished") == 1  # rank 1 prints nothing

    ref = reference_run(tmp_path, *over)  # one process, batch 8: rank 0 and rank 1 took 4 rows each
    two, one = losses(run), losses(ref)
    assert sorted(two) == list(range(1, 13)) and sorted(one) == sorted(two)
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=2e-5), step
    evals = [(r["step"], r["val_loss"], r["train_loss"], r["val_acc"]) for r in metrics(run, "EvalMetrics")]
    ref_evals = [
        (r["step"], r["val_loss"], r["train_loss"], r["val_acc"]) for r in metrics(ref, "EvalMetrics")
    ]
    assert [e[0] for e in evals] == [e[0] for e in ref_evals] == [0, 6, 12]  # step 0: the untrained model
    for a, b in zip(
        evals, ref_evals, strict=True
    ):  # evaluation averaged over the ranks' halves = the whole batches
        assert a[1:] == pytest.approx(b[1:], abs=2e-5)
    # rank 0's files are the one-process run's files; rank 1 could not have written a byte
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in ref.iterdir())
    assert json.loads((run / "config.json").read_text())["train"]["batch_size"] == 8  # the global batch

    # the run opens like any other: eval and generate
    assert main(["eval", str(run), "--json"]) == 0
    assert main(["generate", str(run), "--max-tokens", "5", "--seed", "1"]) == 0


@pytest.mark.slow
def test_pause_from_the_control_file_and_sigterm_to_rank_0_reach_rank_1(tmp_path):
    run = tmp_path / "two"
    child = lmstudio_train(
        tmp_path,
        "--nproc",
        "2",
        "--preset",
        "tiny_tang",
        "--out",
        str(run),
        "--json",
        *sets("train.max_steps=100000", "train.eval_interval=100000"),
    )
    child.wait_for(lambda e: e.get("event") == "StepMetrics" and e["step"] >= 2)
    distributed.write_control(run, pause=True)
    paused = child.wait_for(lambda e: e.get("event") == "StateChanged")
    assert paused["state"] == "paused"
    with pytest.raises(subprocess.TimeoutExpired):  # paused for several check-in rounds: rank 1 waits
        child.proc.wait(timeout=1.5)  # with rank 0 instead of timing out, so the run does not end
    distributed.write_control(run, pause=False)
    child.wait_for(lambda e: e.get("event") == "StateChanged" and e["state"] == "running")
    child.wait_for(lambda e: e.get("event") == "StepMetrics" and e["step"] > paused["step"])
    ranks = ranks_of(child.proc.pid)
    assert sorted(ranks) == [0, 1]
    os.kill(ranks[0], signal.SIGTERM)  # a stop told to rank 0 alone: both ranks stop at the same step
    code, events, err = child.finish()
    assert code == 0 and "error" not in err.lower(), err
    done = [e for e in events if e["event"] == "Finished"]
    assert len(done) == 1 and done[0]["reason"] == "stopped" and done[0]["step"] > paused["step"]
    state = ckpt.load_train_state(run)
    assert state["step"] == done[0]["step"] and state["world_size"] == 2


@pytest.mark.slow
def test_a_run_trained_on_two_ranks_continues_on_one_process_exactly(tmp_path):
    # a constant schedule, so that finishing at step 12 and continuing to 24 is the 24-step run
    const = ("train.schedule=constant", "train.eval_interval=6")
    run = tmp_path / "two"
    child = lmstudio_train(
        tmp_path,
        "--nproc",
        "2",
        "--preset",
        "tiny_tang",
        "--out",
        str(run),
        "--json",
        *sets(*const, "train.max_steps=12"),
    )
    code, _, err = child.finish()
    assert code == 0, err
    assert ckpt.load_train_state(run)["step"] == 12
    events = list(
        Trainer(
            tiny_config(*const, "train.max_steps=24"), run, resume=True, cache_dir=tmp_path / "cache"
        ).run()
    )
    assert isinstance(events[-1], Finished) and events[-1].step == 24, events[-1]
    assert [e for e in events if isinstance(e, StepMetrics)][0].step == 13
    ref, got = losses(reference_run(tmp_path, *const, "train.max_steps=24")), losses(run)
    assert sorted(got) == sorted(ref) == list(range(1, 25))
    assert max(abs(got[s] - ref[s]) for s in ref) < 2e-5


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_with_a_checkpoint_and_a_one_process_run_resumes_on_two_exactly(tmp_path):
    # first the other direction: one process stopped at step 9, then two ranks finish the run
    over = ("train.max_steps=24", "train.eval_interval=8")
    run = tmp_path / "one"
    trainer = Trainer(tiny_config(*over), run, cache_dir=tmp_path / "cache")
    for event in trainer.run():
        if isinstance(event, StepMetrics) and event.step == 9:
            trainer.control.stop()
    assert ckpt.load_train_state(run)["step"] == 9
    child = lmstudio_train(tmp_path, "--nproc", "2", "--resume", str(run), "--json")
    code, events, err = child.finish()
    assert code == 0, err
    assert events[-1]["event"] == "Finished" and events[-1]["step"] == 24
    ref, got = losses(reference_run(tmp_path, *over)), losses(run)
    assert sorted(got) == sorted(ref)
    assert max(abs(got[s] - ref[s]) for s in ref) < 2e-5

    # Ctrl-C reaches torchrun (the launcher), which passes it to both ranks; rank 0 saves
    run2 = tmp_path / "interrupted"
    child = lmstudio_train(
        tmp_path,
        "--nproc",
        "2",
        "--preset",
        "tiny_tang",
        "--out",
        str(run2),
        "--json",
        *sets("train.max_steps=100000", "train.eval_interval=100000"),
    )
    child.wait_for(lambda e: e.get("event") == "StepMetrics")
    os.kill(child.proc.pid, signal.SIGINT)
    code, events, err = child.finish()
    assert code == 130, err
    assert "Traceback" not in err
    finished = [e for e in events if e["event"] == "Finished"]
    assert len(finished) == 1 and finished[0]["reason"] == "stopped"
    assert ckpt.load_train_state(run2)["step"] == finished[0]["step"] >= 1


@pytest.mark.slow
def test_a_rank_killed_mid_run_ends_the_run_with_one_message(tmp_path):
    run = tmp_path / "run"
    child = lmstudio_train(
        tmp_path,
        "--nproc",
        "2",
        "--preset",
        "tiny_tang",
        "--out",
        str(run),
        "--json",
        *sets("train.max_steps=100000", "train.eval_interval=5"),
    )
    child.wait_for(lambda e: e.get("event") == "Checkpointed")
    os.kill(ranks_of(child.proc.pid)[1], signal.SIGKILL)
    code, events, err = child.finish()
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "rank 1 was killed by SIGKILL" in lines[0]
    assert ckpt.load_train_state(run)["step"] >= 5  # the last checkpoint is kept


@pytest.mark.slow
def test_a_setting_that_fails_on_every_rank_is_reported_once(tmp_path):
    child = lmstudio_train(
        tmp_path,
        "--nproc",
        "2",
        "--preset",
        "tiny_tang",
        "--out",
        str(tmp_path / "r"),
        *sets("train.batch_size=7"),
    )
    code, _, err = child.finish()
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "multiple of 2" in lines[0], err


@pytest.mark.slow
def test_a_set_up_failure_on_one_rank_only_is_reported_once_by_that_rank(tmp_path):
    # rank 1 alone gets a data cache it cannot create (a real unwritable place): it fails, rank 0 says nothing
    script = textwrap.dedent("""
        import os, sys
        if os.environ["RANK"] == "1":
            os.environ["LMSTUDIO_CACHE"] = "/proc/lmstudio-cache"
        from lmstudio.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    child = torchrun(
        tmp_path, script, "--preset", "tiny_tang", "--out", str(tmp_path / "r"), *sets("train.max_steps=3")
    )
    code, events, err = child.finish()
    assert code != 0
    ours = [line for line in err.splitlines() if line.startswith("lmstudio:")]
    assert len(ours) == 1, err
    assert ours[0].startswith(
        "lmstudio: error: rank 1: Cannot create the data cache folder /proc/lmstudio-cache"
    )
