"""One live run that the whole window follows: the real window, real training runs, real run folders.

Generate and Inspect switch to a new run at its first checkpoint (and stay on a pinned one); a continued
run shows its whole history; a tokenizer built for other settings is marked out of date; two runs
started with one name get two names everywhere; the Runs table says how each run ended.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from lmstudio import run_status
from lmstudio.cli import main
from lmstudio.ui import dialogs
from lmstudio.ui.main_window import TAB_RUNS, TAB_TRAINING
from tests.ui.conftest import Recorder, set_field, tiny_config, wait_finished

TIMEOUT = 90_000


def train(qtbot, win, cfg) -> str:
    win.setup.set_config(cfg)
    qtbot.waitUntil(lambda: not win.setup.corpus.is_busy(), timeout=TIMEOUT)
    win.start_training()
    run_dir, reason = wait_finished(qtbot, win, TIMEOUT)
    assert reason == "completed"
    return run_dir


def start_long(qtbot, win, name: str, arch: str = "gru") -> None:
    """A run that trains until stopped, saving a checkpoint every 5 steps."""
    cfg = tiny_config(
        arch,
        name=name,
        extra=[
            "train.max_steps=100000",
            "train.eval_interval=100000",
            "train.checkpoint_interval=5",
            "train.log_interval=1",
            "train.sample_interval=0",
        ],
    )
    win.setup.set_config(cfg)
    qtbot.waitUntil(lambda: not win.setup.corpus.is_busy(), timeout=TIMEOUT)
    with qtbot.waitSignal(win.run.state_changed, timeout=TIMEOUT, check_params_cb=lambda s: s == "preparing"):
        win.start_training()


def shown_run(win) -> str:
    return (win.session_controller.info or {}).get("run_dir", "")


def stop(qtbot, win) -> None:
    win.training.stop()
    qtbot.waitUntil(lambda: not win.run.is_running(), timeout=TIMEOUT)


def test_generate_and_inspect_follow_a_new_run_and_stay_on_a_pinned_one(qtbot, window, errors):
    win = window
    a = train(qtbot, win, tiny_config("lstm", name="demo_a"))
    qtbot.waitUntil(lambda: shown_run(win) == a, timeout=TIMEOUT)
    assert "demo_a" in win.generate_pane.header.label.text()
    assert win.generate_pane.generate_button.isEnabled()

    start_long(qtbot, win, "demo_b")
    # before B's first checkpoint neither tab may offer A's weights as if they were B's
    assert win.follower.waiting and shown_run(win) == ""
    for pane in (win.generate_pane, win.inspect_pane):
        assert "waiting for" in pane.header.label.text()
    assert not win.generate_pane.generate_button.isEnabled()
    assert not win.inspect_pane.inspect_button.isEnabled()

    qtbot.waitUntil(lambda: Path(shown_run(win)).name == "demo_b", timeout=TIMEOUT)
    b = shown_run(win)
    for pane in (win.generate_pane, win.inspect_pane):
        qtbot.waitUntil(lambda pane=pane: "Following the run being trained" in pane.header.label.text())
        assert "demo_b" in pane.header.label.text() and "demo_a" not in pane.header.label.text()
    assert "demo_b" in win.inspect_pane.status.text()
    # later checkpoints reload the followed run
    first = win.session_controller.info["step"]
    qtbot.waitUntil(
        lambda: win.session_controller.info and win.session_controller.info["step"] > first, timeout=TIMEOUT
    )

    # pin A from the Runs table: B's next checkpoints leave Generate and Inspect on A
    win.tabs.setCurrentIndex(TAB_RUNS)
    win.runs.select_run(a)
    qtbot.mouseClick(win.runs.use_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: shown_run(win) == a, timeout=TIMEOUT)
    assert "Pinned to" in win.generate_pane.header.label.text()
    assert "demo_b" in win.generate_pane.header.label.text()  # it says what trains meanwhile
    saved = win.run.checkpoint_step
    qtbot.waitUntil(lambda: win.run.checkpoint_step >= saved + 10, timeout=TIMEOUT)
    assert shown_run(win) == a

    # and Follow goes back to the run being trained
    qtbot.mouseClick(win.generate_pane.header.button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: shown_run(win) == b, timeout=TIMEOUT)
    stop(qtbot, win)
    assert errors.calls == []


def test_continuing_a_stopped_run_shows_its_whole_history(qtbot, window, errors):
    win = window
    start_long(qtbot, win, "history")
    qtbot.waitUntil(lambda: (win.run.checkpoint_step or 0) >= 10, timeout=TIMEOUT)
    with qtbot.waitSignal(win.training.run_finished, timeout=TIMEOUT) as finished:
        win.training.stop()
    run_dir = finished.args[0]
    qtbot.waitUntil(lambda: not win.run.is_running(), timeout=TIMEOUT)
    stopped_at = win.run.step
    history = win.run.series["loss"].x.copy()
    assert history[0] == 1 and len(history) == stopped_at

    # the Runs table says how it ended
    win.tabs.setCurrentIndex(TAB_RUNS)
    row = win.runs.run_paths().index(run_dir)
    assert win.runs.table.item(row, 2).text() == f"stopped at {stopped_at:,} of 100,000"

    win.runs.select_run(run_dir)
    with qtbot.waitSignal(win.run.state_changed, timeout=TIMEOUT, check_params_cb=lambda s: s == "training"):
        qtbot.mouseClick(win.runs.continue_btn, Qt.MouseButton.LeftButton)
    assert win.tabs.currentIndex() == TAB_TRAINING
    assert win.runs.table.item(row, 2).text() == "training"
    qtbot.waitUntil(lambda: win.run.step >= stopped_at + 3, timeout=TIMEOUT)
    steps = win.run.series["loss"].x
    # from step 1, no gap and no repeat: the earlier curve from metrics.jsonl, then the live points
    np.testing.assert_array_equal(steps, np.arange(1, len(steps) + 1))
    assert win.run.series["val_loss"].x[0] == 0  # the step-0 evaluation of the first session
    win.training.redraw()
    assert win.training.loss_plot.point_count("loss") == len(steps)
    # the status bar shows the live step, not the step of the last state change
    qtbot.waitUntil(lambda: f"step {win.run.step:,} of" in win.state_label.text(), timeout=TIMEOUT)
    stop(qtbot, win)
    assert errors.calls == []


def test_changing_the_corpus_marks_a_built_tokenizer_out_of_date(qtbot, window):
    win = window
    page = win.setup.tokenizer
    win.setup.set_config(tiny_config("lstm"))
    qtbot.waitUntil(lambda: not win.setup.corpus.is_busy(), timeout=TIMEOUT)
    win.setup.steps.setCurrentRow(1)
    with qtbot.waitSignal(page.built, timeout=TIMEOUT):
        qtbot.mouseClick(page.build_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=TIMEOUT)
    assert not page.is_stale() and "Out of date" not in page.status.text()
    assert "tang300" in page.status.text() and page.vocab.isEnabled()

    win.setup.corpus.load("tiny_shakespeare")  # step 1: another corpus
    qtbot.waitUntil(lambda: page.source == "tiny_shakespeare", timeout=TIMEOUT)
    assert page.is_stale() and page.status.text().startswith("Out of date")
    assert not page.vocab.isEnabled() and not page.preview.isEnabled()

    win.setup.corpus.load("tang300")  # back to what it was built for: current again
    qtbot.waitUntil(lambda: page.source == "tang300", timeout=TIMEOUT)
    assert not page.is_stale() and page.vocab.isEnabled()
    set_field(qtbot, page.form, "kind", "word")  # another kind: out of date too
    assert page.is_stale() and "Out of date" in page.status.text()


def test_two_runs_started_with_one_name_get_two_names_everywhere(qtbot, window, errors):
    win = window
    cfg = tiny_config("gru", name="demo", extra=["train.max_steps=5", "train.eval_interval=5"])
    first = train(qtbot, win, cfg)
    second = train(qtbot, win, cfg)
    assert (Path(first).name, Path(second).name) == ("demo", "demo-2")
    assert json.loads((Path(second) / "config.json").read_text())["name"] == "demo-2"
    assert "demo-2" in win.training.run_title.text() and win.run_label.text() == "Run: demo-2"

    win.tabs.setCurrentIndex(TAB_RUNS)
    names = {win.runs.table.item(r, 1).text() for r in range(win.runs.table.rowCount())}
    assert names == {"demo", "demo-2"}
    win.runs.set_checked(first, True)
    win.runs.set_checked(second, True)
    legend = win.runs.plot.getPlotItem().legend
    assert sorted(label.text for _, label in legend.items) == ["demo", "demo-2"]
    qtbot.waitUntil(lambda: shown_run(win) == second, timeout=TIMEOUT)
    assert "demo-2" in win.generate_pane.header.label.text()
    assert win.session_controller.info["name"] == "demo-2"
    assert errors.calls == []


def test_runs_table_says_how_runs_ended_and_renames_and_deletes(qtbot, window, errors, monkeypatch, capsys):
    win = window
    done = train(
        qtbot, win, tiny_config("gru", name="keep", extra=["train.max_steps=5", "train.eval_interval=5"])
    )
    win.tabs.setCurrentIndex(TAB_RUNS)
    pane = win.runs
    row = pane.run_paths().index(done)
    assert [pane.table.item(row, c).text() for c in (1, 2, 5)] == ["keep", "finished", "5 / 5"]
    assert pane.table.item(row, 8).text() not in ("", "–")  # a duration

    # a failed run says why, from status.json, after a restart too (a fresh listing)
    failed = Path(done).parent / "broken"
    failed.mkdir()
    (failed / "config.json").write_text((Path(done) / "config.json").read_text())
    (failed / run_status.STATUS_FILE).write_text(
        json.dumps({"state": "failed", "step": 3, "max_steps": 5, "message": "out of memory on CPU.\nmore"})
    )
    pane.refresh()
    assert pane.table.item(pane.run_paths().index(str(failed)), 2).text() == "failed: out of memory on CPU."

    # `lmstudio runs --json` says the same as the table: state, steps, best validation loss
    capsys.readouterr()
    assert main(["runs", "--json"]) == 0
    listed = {r["path"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(listed) == set(pane.run_paths())
    for r, path in enumerate(pane.run_paths()):
        row = listed[path]
        best = f"{row['best_val_loss']:.4f}" if row["best_val_loss"] is not None else "–"
        assert [pane.table.item(r, c).text() for c in (1, 2, 5, 6)] == [
            row["name"],
            row["state_text"],
            f"{row['steps']:,} / {row['max_steps']:,}",
            best,
        ]

    # rename: asks for the name, moves the folder, and Generate keeps showing it under its new name
    qtbot.waitUntil(lambda: shown_run(win) == done, timeout=TIMEOUT)
    monkeypatch.setattr(dialogs, "ask_text", Recorder(answer="kept"))
    pane.select_run(done)
    qtbot.mouseClick(pane.rename_btn, Qt.MouseButton.LeftButton)
    renamed = str(Path(done).parent / "kept")
    assert not Path(done).exists() and Path(renamed, "model.safetensors").is_file()
    assert pane.current_run() == renamed and pane.table.item(pane.table.currentRow(), 1).text() == "kept"
    qtbot.waitUntil(lambda: shown_run(win) == renamed, timeout=TIMEOUT)

    # delete asks first; "No" keeps everything
    no = Recorder(answer=False)
    monkeypatch.setattr(dialogs, "ask_yes_no", no)
    qtbot.mouseClick(pane.delete_btn, Qt.MouseButton.LeftButton)
    assert len(no.calls) == 1 and Path(renamed).is_dir()
    monkeypatch.setattr(dialogs, "ask_yes_no", Recorder(answer=True))
    qtbot.mouseClick(pane.delete_btn, Qt.MouseButton.LeftButton)
    assert not Path(renamed).exists() and Path(failed).is_dir()  # that run only
    assert renamed not in pane.run_paths()
    qtbot.waitUntil(lambda: shown_run(win) == "", timeout=TIMEOUT)
    assert errors.calls == []


def test_setup_says_what_a_preset_is_what_the_run_would_cost_and_whether_tying_applies(qtbot, window):
    win = window
    model = win.setup.model
    # first start: the default settings are tiny_tang's, and the preset box says so, with its description
    assert model.presets.currentText() == "tiny_tang"
    assert "few seconds" in model.preset_about.text()
    model.presets.setCurrentText("gpt_shakespeare")
    assert "Far too slow for a CPU" in model.preset_about.text()

    qtbot.waitUntil(lambda: win.controller.ready, timeout=TIMEOUT)
    win.setup.set_config(tiny_config("lstm", name="mine"))
    assert model.presets.currentIndex() == -1  # not a preset's settings: no preset shown
    label = win.setup.time_label
    qtbot.waitUntil(lambda: "Estimated training time here" in label.text(), timeout=TIMEOUT)
    est = win.setup.time_estimate
    assert est["tokens_per_s"] > 0 and est["steps_timed"] >= 1
    assert est["seconds"] == pytest.approx(est["per_step"] * (20 + 3 * 2 * 2 / 3))  # 20 steps, 3 evals

    set_field(qtbot, win.setup.train.form, "max_steps", 10_000_000)
    qtbot.waitUntil(lambda: "This run would take about" in label.text(), timeout=TIMEOUT)
    assert win.setup.time_estimate["seconds"] > 15 * 60

    # tying: a recurrent model whose hidden size differs from the embedding cannot tie, and says so
    form = model.form
    set_field(qtbot, form, "hidden_size", 64)
    qtbot.waitUntil(lambda: "not applied" in model.tie_label.text(), timeout=TIMEOUT)
    untied = win.controller.estimate(
        dataclasses.replace(win.setup.config()[0].model, vocab_size=100), win.setup.config()[0].train
    )[0]
    set_field(qtbot, form, "hidden_size", 32)
    qtbot.waitUntil(lambda: model.tie_label.text().startswith("applied"), timeout=TIMEOUT)
    tied = win.controller.estimate(
        dataclasses.replace(win.setup.config()[0].model, vocab_size=100), win.setup.config()[0].train
    )[0]
    assert tied < untied  # the count follows what is really built (independently: a real model's count)
