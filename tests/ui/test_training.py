"""End to end through the real widgets: set up, train an LSTM and a Transformer, compare them, control runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from lmstudio import events as E
from lmstudio.ui import dialogs, workers
from lmstudio.ui.main_window import TAB_RUNS, TAB_TRAINING
from tests.ui.conftest import Recorder, set_field, tiny_config

TIMEOUT = 90_000


def click_builtin(qtbot, win, name: str) -> None:
    lst = win.setup.corpus.builtins
    qtbot.waitUntil(lambda: lst.count() > 0, timeout=TIMEOUT)  # listed by a worker at start-up
    for i in range(lst.count()):
        item = lst.item(i)
        if item.data(Qt.ItemDataRole.UserRole) == name:
            rect = lst.visualItemRect(item)
            with qtbot.waitSignal(win.setup.corpus.corpus_changed, timeout=TIMEOUT):
                qtbot.mouseClick(lst.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
            return
    raise AssertionError(f"{name} not in the built-in list")


def fill_tiny(qtbot, win, arch: str) -> None:
    model, train = win.setup.model.form, win.setup.train.form
    set_field(qtbot, model, "arch", arch)
    for name, value in (
        ("n_layer", 1),
        ("n_embd", 32),
        ("hidden_size", 32),
        ("n_head", 2),
        ("block_size", 16),
    ):
        if model.is_field_visible(name):
            set_field(qtbot, model, name, value)
    for name, value in (
        ("max_steps", 20),
        ("batch_size", 4),
        ("eval_interval", 10),
        ("eval_iters", 2),
        ("log_interval", 5),
        ("warmup_steps", 0),
        ("sample_interval", 10),
        ("sample_tokens", 16),
    ):
        set_field(qtbot, train, name, value)
    win.setup.train.name.clear()
    qtbot.keyClicks(win.setup.train.name, f"tiny-{arch}")


def train_through_button(qtbot, win) -> tuple[str, str]:
    assert win.setup.start_btn.isEnabled(), win.setup.summary.text()
    # Start refuses (with a message) while the corpus or the tokenizer is still being prepared
    qtbot.waitUntil(
        lambda: not win.setup.corpus.is_busy() and not win.setup.tokenizer.is_busy(), timeout=TIMEOUT
    )
    with qtbot.waitSignal(win.training.run_finished, timeout=TIMEOUT) as blocker:
        qtbot.mouseClick(win.setup.start_btn, Qt.MouseButton.LeftButton)
        # if Start refused, the status bar (or an error dialog the test records) says why
        assert win.tabs.currentIndex() == TAB_TRAINING, (win.statusBar().currentMessage(), win.run.state)
    qtbot.waitUntil(lambda: not win.training.is_running(), timeout=TIMEOUT)
    return tuple(blocker.args)


def test_train_lstm_and_transformer_then_overlay_them(qtbot, window, errors):
    win = window
    click_builtin(qtbot, win, "tang300")
    assert win.setup.corpus.stats["chars"].text() == "31,164"
    # tokenizer: char, built in a worker, vocabulary browsable, preview split shown
    win.setup.steps.setCurrentRow(1)
    set_field(qtbot, win.setup.tokenizer.form, "kind", "char")
    with qtbot.waitSignal(win.setup.tokenizer.built, timeout=TIMEOUT) as built:
        qtbot.mouseClick(win.setup.tokenizer.build_btn, Qt.MouseButton.LeftButton)
    result = built.args[0]
    assert result["kind"] == "char" and result["freq"].sum() == result["n_tokens"]
    assert win.setup.tokenizer.vocab.proxy.rowCount() == result["vocab_size"]
    qtbot.waitUntil(lambda: len(win.setup.tokenizer.preview.pieces()) > 0, timeout=5000)
    text = win.setup.tokenizer.preview.input.toPlainText()
    assert "".join(p for p, _ in win.setup.tokenizer.preview.pieces()) == text

    runs = {}
    for arch in ("lstm", "transformer"):
        fill_tiny(qtbot, win, arch)
        cfg, problems = win.setup.config()
        assert problems == {} and cfg.model.arch == arch and cfg.train.max_steps == 20
        run_dir, reason = train_through_button(qtbot, win)
        assert reason == "completed", errors.texts
        runs[arch] = run_dir
        # the plots received the run's points, and a checkpoint is on disk
        assert win.training.loss_plot.point_count("loss") == 20 // 5
        assert win.training.loss_plot.point_count("val_loss") == 3  # steps 0, 10 and 20
        assert win.training.acc_plot.point_count("val_acc") == 3
        assert win.training.progress.value() == 20
        assert (Path(run_dir) / "model.safetensors").is_file()
        assert win.training.sample_text.toPlainText().startswith("step 20")
    assert errors.calls == []

    # the runs list shows both; ticking both overlays their validation curves on one plot
    win.tabs.setCurrentIndex(TAB_RUNS)
    pane = win.runs
    assert set(runs.values()) <= set(pane.run_paths())
    for run_dir in runs.values():
        pane.set_checked(run_dir, True)
    assert sorted(pane.plot.curve_keys()) == sorted(runs.values())
    for run_dir in runs.values():
        assert pane.plot.point_count(run_dir) == 3
        steps = pane.plot.series(run_dir).x
        np.testing.assert_array_equal(steps, [0, 10, 20])
    # wall-clock axis: x becomes the eval events' elapsed seconds from metrics.jsonl
    pane.x_axis.setCurrentIndex(1)
    for run_dir in runs.values():
        expected = pane.controller.run_curves(run_dir)["eval_time"]
        np.testing.assert_allclose(pane.plot.series(run_dir).x, expected)
        assert np.all(np.diff(expected) > 0)
    pane.metric.setCurrentText("training loss (batch)")
    assert all(pane.plot.point_count(r) == 4 for r in runs.values())


def start_long_run(qtbot, win):
    cfg = tiny_config(
        "transformer",
        extra=[
            "train.max_steps=100000",
            "train.log_interval=1",
            "train.eval_interval=100000",
            "train.schedule=constant",
            "train.sample_interval=0",
        ],
    )
    win.setup.set_config(cfg)
    qtbot.waitUntil(lambda: not win.setup.corpus.is_busy(), timeout=TIMEOUT)
    with qtbot.waitSignal(
        win.training.state_changed, timeout=TIMEOUT, check_params_cb=lambda s: s == "training"
    ):
        win.start_training()


def wait_step(qtbot, win, at_least: int):
    qtbot.waitUntil(lambda: win.training.last_step >= at_least, timeout=TIMEOUT)


def test_pause_resume_change_lr_and_stop(qtbot, window, errors):
    win = window
    start_long_run(qtbot, win)
    wait_step(qtbot, win, 2)
    pane = win.training
    # pause through the button: the trainer confirms and the steps stop advancing
    with qtbot.waitSignal(pane.state_changed, timeout=TIMEOUT, check_params_cb=lambda s: s == "paused"):
        qtbot.mouseClick(pane.pause_btn, Qt.MouseButton.LeftButton)
    assert pane.pause_btn.text() == "Resume" and win.state_label.text().startswith("Paused")
    paused_at = pane.last_step
    qtbot.wait(300)  # the event loop keeps running: nothing arrives while paused
    assert pane.last_step == paused_at
    # a new learning rate while paused applies from the next step
    pane.lr_edit.clear()
    qtbot.keyClicks(pane.lr_edit, "0.0005")
    qtbot.mouseClick(pane.lr_btn, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(pane.state_changed, timeout=TIMEOUT, check_params_cb=lambda s: s == "training"):
        qtbot.mouseClick(pane.pause_btn, Qt.MouseButton.LeftButton)
    wait_step(qtbot, win, paused_at + 2)
    pane.redraw()
    lrs = pane.lr_plot.series("lr")
    assert lrs.y[lrs.x > paused_at + 1][-1] == 0.0005
    assert lrs.y[lrs.x <= paused_at][-1] == tiny_config().train.lr
    # stop: the trainer saves a checkpoint and reports "stopped"
    with qtbot.waitSignal(pane.run_finished, timeout=TIMEOUT) as finished:
        qtbot.mouseClick(pane.stop_btn, Qt.MouseButton.LeftButton)
    run_dir, reason = finished.args
    assert reason == "stopped"
    qtbot.waitUntil(lambda: not pane.is_running(), timeout=TIMEOUT)
    assert (Path(run_dir) / "model.safetensors").is_file()
    assert pane.state == "stopped" and win.state_label.text() == "Stopped"
    assert errors.calls == []


def test_closing_mid_run_asks_stops_saves_and_closes(qtbot, window, monkeypatch):
    win = window
    start_long_run(qtbot, win)
    wait_step(qtbot, win, 1)
    run_dir = win.training.run_dir
    no = Recorder(answer=False)
    monkeypatch.setattr(dialogs, "ask_yes_no", no)
    win.close()
    assert len(no.calls) == 1 and win.isVisible() and win.training.is_running()  # "No" keeps training
    yes = Recorder(answer=True)
    monkeypatch.setattr(dialogs, "ask_yes_no", yes)
    with qtbot.waitSignal(win.closed, timeout=TIMEOUT):
        win.close()
    assert len(yes.calls) == 1
    assert not win.isVisible() and not win.training.is_running()
    assert workers.live_threads() == []
    assert (Path(run_dir) / "model.safetensors").is_file()


def test_training_events_reach_the_plots_through_the_worker_signal(qtbot, window):
    """Synthetic events (no engine): the pane appends them and redraws on its timer, not per event."""
    pane, run = window.training, window.run
    run.on_event(E.Started(run_dir="/x", device="CPU, 2 threads", n_params=10, start_step=0, max_steps=100))
    for step in range(1, 101):
        run.on_event(
            E.StepMetrics(
                step=step,
                max_steps=100,
                loss=5 - step / 50,
                lr=1e-3,
                grad_norm=1.0,
                tokens_per_s=1000.0,
                elapsed=step / 10,
                eta=(100 - step) / 10,
            )
        )
    run.on_event(
        E.EvalMetrics(
            step=100,
            train_loss=3.0,
            val_loss=3.1,
            val_ppl=float(np.exp(3.1)),
            val_acc=0.4,
            val_bpc=4.0,
            elapsed=10.0,
        )
    )
    assert pane.loss_plot.point_count("loss") == 0  # buffered until the redraw
    pane.redraw()
    assert pane.loss_plot.point_count("loss") == 100
    assert pane.ppl_plot.series("val_ppl").y[0] == np.float64(np.exp(3.1))
    assert pane.progress.value() == 100 and "ETA 0:00" in pane.timing.text()
    assert window.device_label.text() == "CPU, 2 threads"


def test_continue_a_stopped_run_from_its_checkpoint(qtbot, window, errors):
    win = window
    start_long_run(qtbot, win)
    wait_step(qtbot, win, 3)
    with qtbot.waitSignal(win.training.run_finished, timeout=TIMEOUT) as finished:
        win.training.stop()
    run_dir = finished.args[0]
    qtbot.waitUntil(lambda: not win.training.is_running(), timeout=TIMEOUT)
    stopped_at = win.training.last_step
    win.tabs.setCurrentIndex(TAB_RUNS)
    win.runs.select_run(run_dir)
    started = []
    win.training.run_started.connect(started.append)
    with qtbot.waitSignal(
        win.training.state_changed, timeout=TIMEOUT, check_params_cb=lambda s: s == "training"
    ):
        qtbot.mouseClick(win.runs.continue_btn, Qt.MouseButton.LeftButton)
    assert started == [run_dir]  # the same folder, not a new run
    wait_step(qtbot, win, stopped_at + 1)
    steps = win.run.series["loss"].x
    # the whole history from metrics.jsonl, then live points picking up after the checkpoint's step
    assert steps[0] <= 5 and np.all(np.diff(steps) > 0) and steps[-1] > stopped_at
    win.training.stop()
    qtbot.waitUntil(lambda: not win.training.is_running(), timeout=TIMEOUT)
    assert errors.calls == []


def test_a_restarted_window_offers_the_newest_run_to_generate_and_inspect(qtbot, window):
    from lmstudio.ui.main_window import MainWindow

    win = window
    win.setup.set_config(tiny_config("gru", extra=["train.max_steps=5", "train.eval_interval=5"]))
    qtbot.waitUntil(lambda: not win.setup.corpus.is_busy(), timeout=TIMEOUT)
    with qtbot.waitSignal(win.training.run_finished, timeout=TIMEOUT) as finished:
        win.start_training()
    run_dir = finished.args[0]
    qtbot.waitUntil(lambda: not win.training.is_running(), timeout=TIMEOUT)
    again = MainWindow()
    qtbot.addWidget(again)
    qtbot.waitUntil(lambda: (again.session_controller.info or {}).get("run_dir") == run_dir, timeout=TIMEOUT)
    assert again.follower.following and again.run.run_dir == run_dir  # and its curve in Training
    assert len(again.run.series["loss"]) > 0 and again.run.state == "finished"
    again.close()


@pytest.fixture
def runs_on_a_small_disk(tmp_path, monkeypatch):
    """The runs folder on a real 4 MB tmpfs (skipped where mounting is refused)."""
    from tests.reliability.conftest import mounted_tmpfs

    with mounted_tmpfs(tmp_path / "disk", "4m") as disk:
        monkeypatch.setenv("LMSTUDIO_RUNS", str(disk.root))
        yield disk


def test_a_full_disk_pauses_the_run_and_resume_saves_it(qtbot, window, errors, runs_on_a_small_disk):
    """A real full disk: filled before the start so the settings and the first log lines fit but the first
    checkpoint (115 KB of weights) does not. The app pauses and says so; space freed, Resume saves it."""
    from lmstudio.engine import checkpoint as ckpt
    from tests.reliability.conftest import leftovers

    disk = runs_on_a_small_disk
    win, pane = window, window.training
    win.setup.set_config(
        tiny_config(
            "gru",
            extra=[
                "corpus.source=tiny_shakespeare",  # 65 characters: a small tokenizer.json
                "model.n_embd=64",
                "model.hidden_size=64",
                "train.max_steps=10",
                "train.eval_interval=5",
                "train.log_interval=1",
                "train.sample_interval=0",
            ],
        )
    )
    qtbot.waitUntil(lambda: not win.setup.corpus.is_busy(), timeout=TIMEOUT)
    disk.fill(leave=48 << 10)  # a real ENOSPC for the weights
    with qtbot.waitSignal(pane.state_changed, timeout=TIMEOUT, check_params_cb=lambda s: s == "paused"):
        win.start_training()
    assert "Could not save the checkpoint at step 5" in pane.timing.text()
    assert "No space left on device" in win.statusBar().currentMessage()
    assert pane.pause_btn.text() == "Resume" and win.state_label.text().startswith("Paused")
    disk.free_up()  # the user frees some space
    with qtbot.waitSignal(pane.run_finished, timeout=TIMEOUT) as finished:
        qtbot.mouseClick(pane.pause_btn, Qt.MouseButton.LeftButton)
    run_dir, reason = finished.args
    qtbot.waitUntil(lambda: not pane.is_running(), timeout=TIMEOUT)
    assert reason == "completed" and ckpt.load_train_state(run_dir)["step"] == 10
    assert "No space" not in win.statusBar().currentMessage()
    assert leftovers(disk.mount) == []
    assert errors.calls == []
