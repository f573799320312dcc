"""Run folders shared or misused: two real processes on one folder, `--out` pointed at a folder that is not
a run (or at a file, or at /), symlinks planted in a run folder, and SIGTERM/SIGHUP sent to a real trainer.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from lmstudio.cli import main as cli_main
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine.session import Session
from lmstudio.engine.trainer import Trainer
from lmstudio.events import Failed, Finished
from lmstudio.runlock import RunLock, locked_by
from tests.reliability.conftest import TINY, copy_run, run_all, tiny_config
from tests.reliability.test_process_kill import REPO, WAIT, Lines, _env

_SETS = [a for s in TINY[1:] if not s.startswith("train.device") for a in ("--set", s)]


def _train_cli(run, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmstudio", "train", "--preset", "tiny_tang", "--out", str(run)] + [
        "--device",
        "cpu",
        "--arch",
        "gru",
        *_SETS,
        *extra,
    ]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=WAIT)


# ---- two processes, one folder --------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_second_process_is_refused_and_a_signal_stops_the_first_like_ctrl_c(tmp_path, sig):
    """A trains; B's resume of the same folder is refused with A's pid (the histories used to interleave);
    the runs list shows A training; SIGTERM/SIGHUP makes A save and exit 128+signal; then B may resume."""
    run = tmp_path / "run"
    a = subprocess.Popen(
        _train_cli(run, "--set", "train.max_steps=1000000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
        cwd=REPO,
    )
    try:
        lines = Lines(a)
        lines.wait_for(lambda line: line.startswith("step "))
        b = subprocess.run(
            _train_cli(run)[:4] + ["--resume", str(run), "--device", "cpu"],
            capture_output=True,
            text=True,
            env=_env(tmp_path),
            cwd=REPO,
            timeout=WAIT,
        )
        assert b.returncode == 1, b.stderr
        assert f"being trained by another process (pid {a.pid})" in b.stderr and "Traceback" not in b.stderr
        assert locked_by(run) == a.pid
        assert [r.training_pid for r in ckpt.list_runs(tmp_path)] == [a.pid]
        a.send_signal(sig)
        a.wait(timeout=WAIT)
        err = a.stderr.read()
    finally:
        _stop(a)
    assert a.returncode == 128 + sig, err
    assert f"{signal.Signals(sig).name}: stopping (saving a checkpoint)" in err and "Traceback" not in err
    steps = [r["step"] for r in ckpt.read_metrics(run) if r.get("event") == "StepMetrics"]
    assert steps == sorted(set(steps)), "two writers interleaved the history"
    saved = Session.load(run).step
    assert saved >= 1 and ckpt.load_train_state(run)["step"] == saved
    assert locked_by(run) is None  # the lock died with the process
    events = run_all(Trainer(tiny_config("gru", f"train.max_steps={saved + 2}"), run, resume=True))
    assert isinstance(events[-1], Finished) and events[-1].step == saved + 2, events[-1]


def test_a_folder_locked_by_another_process_refuses_a_new_run_too(tmp_path):
    """The lock is taken before the folder is checked: a second `train --out` into a folder another process
    holds (here: this test process, through the same OS lock) is refused with that process's pid."""
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        done = subprocess.run(
            _train_cli(run), capture_output=True, text=True, env=_env(tmp_path), cwd=REPO, timeout=WAIT
        )
    assert done.returncode == 1, done.stderr
    assert f"pid {os.getpid()}" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in run.iterdir()) == [".lmstudio.lock"]  # nothing of the refused run


# ---- --out ----------------------------------------------------------------------------------------------
def _cli(capsys, *args: str) -> tuple[int, str]:
    code = cli_main(list(args))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "user_file", ["model.safetensors", "train_state.pt", "tokenizer.json", "metrics.jsonl"]
)
def test_out_into_a_folder_that_is_not_a_run_never_touches_the_users_files(tmp_path, capsys, user_file):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / user_file).write_bytes(b"the user's own bytes")
    code, err = _cli(capsys, "train", "--out", str(folder), *_SETS, "--set", "train.max_steps=2")
    assert code == 1 and "is not empty" in err and user_file in err and "Traceback" not in err
    assert sorted(p.name for p in folder.iterdir()) == [user_file]
    assert (folder / user_file).read_bytes() == b"the user's own bytes"


def test_out_naming_a_file_or_the_root_is_refused(tmp_path, capsys):
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me")
    code, err = _cli(capsys, "train", "--out", str(plain), *_SETS)
    assert code == 1 and "is a file, not a folder" in err and "Traceback" not in err
    assert plain.read_text() == "keep me"
    code, err = _cli(capsys, "train", "--out", "/", *_SETS)
    assert code == 1 and "is not empty" in err
    assert not os.path.exists("/.lmstudio.lock") or locked_by("/") is None


def test_out_and_preset_are_refused_with_resume(finished_runs, tmp_path, capsys):
    run = copy_run(finished_runs["gru"], tmp_path / "run")
    for flag in (["--out", str(tmp_path / "x")], ["--preset", "tiny_tang"]):
        code, err = _cli(capsys, "train", "--resume", str(run), *flag)
        assert code == 1 and f"{flag[0]} cannot be combined with --resume" in err


def test_a_symlinked_history_file_never_makes_training_write_outside_the_folder(finished_runs, tmp_path):
    run = copy_run(finished_runs["gru"], tmp_path / "run")
    outside = tmp_path / "outside.jsonl"
    outside.write_text("precious\n")
    for name in (ckpt.METRICS_FILE, ckpt.SAMPLES_FILE):
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(outside)
    events = run_all(
        Trainer(tiny_config("gru", "train.max_steps=24", "train.sample_interval=2"), run, resume=True)
    )
    assert isinstance(events[-1], Finished), events[-1]
    assert outside.read_text() == "precious\n"
    assert not (run / ckpt.METRICS_FILE).is_symlink() and ckpt.read_metrics(run)[-1]["step"] == 24


def test_appending_to_a_planted_symlink_is_refused(tmp_path):
    outside = tmp_path / "outside.jsonl"
    outside.write_text("")
    (tmp_path / "run").mkdir()
    link = tmp_path / "run" / ckpt.METRICS_FILE
    link.symlink_to(outside)
    with pytest.raises(ckpt.CheckpointError, match="symbolic link"):
        ckpt.append_jsonl(link, {"step": 1})
    assert outside.read_text() == ""


# ---- creating the run folder --------------------------------------------------------------------------
def test_a_300_character_name_makes_a_shorter_folder_not_a_traceback(tmp_path):
    run = ckpt.new_run_dir(tmp_path, "x" * 300)
    assert run.is_dir() and len(run.name) == 80


def test_a_read_only_runs_folder_is_a_message(small_disk):
    small_disk.read_only()
    try:
        with pytest.raises(ckpt.CheckpointError, match="Read-only file system"):
            ckpt.new_run_dir(small_disk.root, "run")
        events = run_all(Trainer(tiny_config("gru"), small_disk.root / "run"))
    finally:
        small_disk.read_only(False)
    assert isinstance(events[-1], Failed) and "Read-only file system" in events[-1].message, events[-1]


def test_a_failed_start_leaves_no_empty_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    code, err = _cli(capsys, "train", "--out", str(run), "--corpus", str(tmp_path / "missing.txt"), *_SETS)
    assert code == 1 and "Traceback" not in err
    assert not run.exists()


# ---- temporary files ------------------------------------------------------------------------------------
_BIG_WRITER = """
import sys, torch
from lmstudio.engine import checkpoint as ckpt
model = torch.nn.Linear(4096, 4096)  # 64 MB of weights: the write takes long enough to be caught
while True:
    ckpt.save_weights(model, sys.argv[1] + "/model.safetensors", {"step": 1})
"""
_SAFETENSORS_TMP = re.compile(r"\.tmp[A-Za-z0-9_]{6}")


def test_safetensors_own_temporary_file_left_by_a_sigkill_is_removed_on_resume(tmp_path):
    """safetensors writes beside its target (``.tmpXXXXXX``) and renames; a kill mid-write leaves that file,
    weights-sized, hidden. The next process that writes the run (a resume) deletes it."""
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _BIG_WRITER, str(run)], env=_env(tmp_path), cwd=REPO)
    deadline = time.monotonic() + WAIT
    try:
        while not any(_SAFETENSORS_TMP.fullmatch(p.name) for p in run.iterdir()):
            assert time.monotonic() < deadline, "the writer never got going"
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.005)  # wakes at once if the writer dies
            assert proc.poll() is None, "the writer died before it was caught mid-write"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT)
    finally:
        _stop(proc)
    left = [p.name for p in run.iterdir() if _SAFETENSORS_TMP.fullmatch(p.name)]
    assert left, "the kill did not catch safetensors mid-write"
    removed = ckpt.remove_stale_temp_files(run)
    assert set(left) <= set(removed)
    assert not [p.name for p in run.iterdir() if p.name.startswith(".") and p.name != ".lmstudio.lock"]
