"""Hostile run folders beside good ones: the runs list names and skips them, history files skip damaged
lines, and a training state from elsewhere is refused by name. Each case once gave a traceback or a
"this is a bug" dialog (list_runs raised RecursionError for one deep config.json, so no run was listed).
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmstudio.cli import main as cli_main
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine.session import Session
from lmstudio.engine.trainer import Trainer
from lmstudio.events import Failed, Finished, Notice
from tests.reliability.conftest import copy_run, run_all, tiny_config


def _set_name(run, raw_json: str):
    text = (run / "config.json").read_text(encoding="utf-8")
    cfg = json.loads(text)
    cfg["name"] = "@@NAME@@"
    (run / "config.json").write_text(json.dumps(cfg).replace('"@@NAME@@"', raw_json), encoding="utf-8")


def _set_step_metadata(run, raw: str):
    path = run / "model.safetensors"
    save_file(load_file(path), path, metadata={"step": raw, "best_val": raw})


# folder name -> what makes it hostile; True: still a readable run (listed), False: skipped and named
HOSTILE = {
    "nested-100000-deep": (
        lambda d: (d / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        False,
    ),
    "config-fifo": (lambda d: ((d / "config.json").unlink(), os.mkfifo(d / "config.json")), False),
    "config-dev-zero": (
        lambda d: ((d / "config.json").unlink(), (d / "config.json").symlink_to("/dev/zero")),
        False,
    ),
    "digits-5000": (
        lambda d: (d / "config.json").write_text('{"train": {"max_steps": ' + "9" * 5000 + "}}"),
        False,
    ),
    "name-true": (lambda d: _set_name(d, "true"), True),
    "name-123": (lambda d: _set_name(d, "123"), True),
    "step-abc": (lambda d: _set_step_metadata(d, '"abc"'), True),
    "step-1e400": (lambda d: _set_step_metadata(d, "1e400"), True),
    "step-list": (lambda d: _set_step_metadata(d, "[1, 2]"), True),
}


@pytest.fixture
def hostile_root(finished_runs, tmp_path):
    root = tmp_path / "runs"
    good = copy_run(finished_runs["transformer"], root / "good")
    for name, (damage, _) in HOSTILE.items():
        damage(copy_run(finished_runs["transformer"], root / name))
    (root / "not-a-run").mkdir()  # no config.json: not a run, neither listed nor "skipped"
    (root / "a-file.txt").write_text("hello")
    return root, good


def test_the_runs_list_keeps_every_good_run_and_names_the_damaged_ones(hostile_root):
    root, good = hostile_root
    runs, skipped = ckpt.scan_runs(root)
    listed = {os.path.basename(r.path): r for r in runs}
    assert set(listed) == {"good"} | {n for n, (_, ok) in HOSTILE.items() if ok}
    assert {os.path.basename(s.path) for s in skipped} == {n for n, (_, ok) in HOSTILE.items() if not ok}
    reasons = {os.path.basename(s.path): s.reason for s in skipped}
    assert "nested" in reasons["nested-100000-deep"] and "FIFO" in reasons["config-fifo"]
    assert "device" in reasons["config-dev-zero"] and "JSON" in reasons["digits-5000"]
    assert listed["good"].steps == 20 and listed["good"].training_pid is None
    # a name that is not text shows the folder's name; odd steps show as 0
    assert listed["name-true"].name == "name-true" and listed["name-123"].name == "name-123"
    assert [listed[n].steps for n in ("step-abc", "step-1e400", "step-list")] == [0, 0, 0]
    assert all(listed[n].best_val_loss is None for n in ("step-abc", "step-1e400", "step-list"))


def test_lmstudio_runs_lists_the_good_runs_and_names_the_skipped_on_stderr(hostile_root, capsys):
    root, good = hostile_root
    assert cli_main(["runs", "--root", str(root)]) == 0
    out, err = capsys.readouterr()
    assert str(good) in out and "Traceback" not in out + err
    for name, (_, ok) in HOSTILE.items():
        assert (name in out) == ok, name
        assert (f"skipped {root / name}" in err) == (not ok), err
    assert cli_main(["runs", "--root", str(root), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + sum(ok for _, ok in HOSTILE.values()) and all(json.loads(x) for x in lines)


@pytest.mark.parametrize("name", ["step-abc", "step-1e400", "step-list"])
def test_odd_metadata_steps_still_load_and_generate(hostile_root, name):
    root, _ = hostile_root
    assert Session.load(root / name).step == 0


# ---- history files ----------------------------------------------------------------------------------
DAMAGED_LINES = {
    "torn-utf8": (ckpt.SAMPLES_FILE, '{"step": 20, "text": "床前明月光"}\n'.encode()[:-6]),
    "a-list": (ckpt.METRICS_FILE, b"[1, 2, 3]\n"),
    "step-text": (ckpt.METRICS_FILE, b'{"event": "StepMetrics", "step": "abc", "loss": 1.0}\n'),
    "loss-text": (ckpt.METRICS_FILE, b'{"event": "StepMetrics", "step": 3, "loss": "low"}\n'),
    "deep": (ckpt.METRICS_FILE, b'{"step": 3, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"),
    "huge-int": (ckpt.METRICS_FILE, b'{"step": ' + b"1" * 5000 + b"}\n"),
}


def _damage_history(run, file: str, line: bytes, middle: bool):
    path = run / file
    good = path.read_bytes() if path.exists() else b""
    if middle:  # a damaged line between good ones
        cut = good.index(b"\n") + 1 if b"\n" in good else 0
        path.write_bytes(good[:cut] + line + good[cut:])
    else:  # the end of the file, as a crash or a full disk cuts it
        path.write_bytes(good + line)


@pytest.mark.parametrize("case", DAMAGED_LINES, ids=DAMAGED_LINES)
def test_damaged_history_lines_are_skipped_counted_and_resume_works(finished_runs, tmp_path, case):
    file, line = DAMAGED_LINES[case]
    run = copy_run(finished_runs["transformer"], tmp_path / "run")
    if file == ckpt.SAMPLES_FILE and not (run / file).exists():
        (run / file).write_text('{"step": 10, "text": "ok"}\n', encoding="utf-8")
    before = ckpt.read_jsonl(run / file)
    _damage_history(run, file, line, middle=case != "torn-utf8")
    records, skipped = ckpt.read_jsonl_counted(run / file)
    assert records == before and skipped == 1
    # the app's curves read them (controller.run_curves), and a resume keeps the good history
    from lmstudio.ui.controller import Controller

    curves = Controller().run_curves(str(run))
    assert len(curves["step"]) == sum(1 for r in ckpt.read_metrics(run) if r.get("event") == "StepMetrics")
    events = run_all(Trainer(tiny_config("transformer", "train.max_steps=22"), run, resume=True))
    assert isinstance(events[-1], Finished), events[-1]
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any("skipped 1 damaged line" in m and file in m for m in notices), notices
    steps = [r["step"] for r in ckpt.read_metrics(run)]
    assert steps == sorted(steps) and steps[-1] == 22


def test_a_history_file_that_is_a_fifo_is_refused_not_read(finished_runs, tmp_path):
    run = copy_run(finished_runs["transformer"], tmp_path / "run")
    (run / ckpt.METRICS_FILE).unlink()
    os.mkfifo(run / ckpt.METRICS_FILE)
    events = run_all(Trainer(tiny_config("transformer", "train.max_steps=22"), run, resume=True))
    assert isinstance(events[-1], Failed) and "FIFO" in events[-1].message, events[-1]
    assert "bug" not in events[-1].message


# ---- a training state from elsewhere --------------------------------------------------------------------
def _state_from_another_run(run, other):
    (run / ckpt.STATE_FILE).write_bytes((other / ckpt.STATE_FILE).read_bytes())
    meta_step = ckpt.weights_metadata(run / ckpt.LATEST_FILE)["step"]
    assert torch.load(run / ckpt.STATE_FILE, weights_only=True)["step"] == meta_step


def _state_without(run, key):
    state = torch.load(run / ckpt.STATE_FILE, weights_only=True)
    del state[key]
    torch.save(state, run / ckpt.STATE_FILE)


@pytest.mark.parametrize("case", ["another-run", "no-optimizer", "no-batcher"])
def test_a_training_state_that_is_not_this_runs_is_refused_by_name(finished_runs, tmp_path, case):
    run = copy_run(finished_runs["transformer"], tmp_path / "run")
    if case == "another-run":  # same step, another model (an LSTM's moments)
        _state_from_another_run(run, finished_runs["lstm"])
    else:
        _state_without(run, case.removeprefix("no-"))
    events = run_all(Trainer(tiny_config("transformer", "train.max_steps=22"), run, resume=True))
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "checkpoint", failed
    assert ckpt.STATE_FILE in failed.message and "bug" not in failed.message
    assert Session.load(run).step == 20  # the weights are still usable
