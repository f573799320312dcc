"""The bake-off button on the Runs tab, and the convolutional model's receptive field in Setup."""

from __future__ import annotations

import math

from lmstudio.engine import bakeoff
from lmstudio.engine import checkpoint as ckpt
from lmstudio.ui.main_window import TAB_RUNS
from tests.engine.test_bakeoff import TINY
from tests.ui.conftest import set_field, tiny_config


def test_the_bakeoff_button_trains_all_five_and_overlays_them_by_time(qtbot, window, tmp_path):
    window.tabs.setCurrentIndex(TAB_RUNS)
    box = window.runs.bakeoff
    box.overrides = list(TINY)
    box.corpus.setCurrentText("tang300")
    box.budget.setValue(0.5)
    with qtbot.waitSignal(box.runs_done, timeout=240_000) as done:
        qtbot.mouseClick(box.start_btn, qtbot_left())
        assert not box.start_btn.isEnabled() and box.stop_btn.isEnabled()
    run_dirs = done.args[0]
    qtbot.waitUntil(lambda: not box.is_running(), timeout=30_000)
    assert len(run_dirs) == 5 and box.start_btn.isEnabled()
    assert [r.arch for r in box.rows] == list(bakeoff.ARCH_ORDER)
    # the five are ticked and drawn against wall-clock seconds
    assert sorted(window.runs.checked_runs()) == sorted(run_dirs)
    assert window.runs.x_axis.currentIndex() == 1
    assert sorted(window.runs.plot.curve_keys()) == sorted(run_dirs)
    # the table shows each contestant's whole-split score, the one the runs list knows
    text = box.table.toPlainText()
    assert box.table.isVisible() and "val loss (full split)" in text
    by_path = {r.path: r for r in ckpt.list_runs(window.controller.runs_dir())}
    for row in box.rows:
        assert f"| {row.arch} |" in text and f"{row.full_val_loss:.4f}" in text
        assert math.isclose(by_path[row.run_dir].full_val_loss, row.full_val_loss)
    # and the Runs table's full-split column shows it too
    col = [window.runs.table.horizontalHeaderItem(c).text() for c in range(window.runs.table.columnCount())]
    full_col = col.index("full-split val")
    shown = {window.runs.table.item(r, full_col).text() for r in range(window.runs.table.rowCount())}
    assert f"{box.rows[0].full_val_loss:.4f}" in shown


def test_stop_ends_the_bakeoff_early(qtbot, window):
    box = window.runs.bakeoff
    box.overrides = list(TINY)
    box.corpus.setCurrentText("tang300")
    box.budget.setValue(30.0)
    with qtbot.waitSignal(box.run_started, timeout=120_000):
        box.start()
    box.stop()
    with qtbot.waitSignal(box.runs_done, timeout=120_000) as done:
        pass
    qtbot.waitUntil(lambda: not box.is_running(), timeout=30_000)
    assert len(done.args[0]) == 1  # the first run stopped, the others never started


def test_the_model_page_shows_the_receptive_field_of_the_convolutional_model(qtbot, window):
    qtbot.waitUntil(lambda: window.controller.ready, timeout=60_000)
    window.setup.set_config(
        tiny_config(
            "conv",
            extra=["model.n_layer=4", "model.kernel_size=3", "model.dilation_cycle=3", "model.block_size=16"],
        )
    )
    page = window.setup.model
    # dilations 1, 2, 4, 1: 1 + 2 * 8 = 17 tokens, one more than the context
    qtbot.waitUntil(lambda: "last 17 tokens" in page.reach_label.text(), timeout=10_000)
    assert "longer than the context (16)" in page.reach_label.text()
    assert page.form.is_field_visible("kernel_size") and not page.form.is_field_visible("n_head")
    set_field(qtbot, page.form, "kernel_size", "2")  # 1 + 8 = 9
    qtbot.waitUntil(lambda: "last 9 tokens" in page.reach_label.text(), timeout=10_000)
    assert "shorter than the context (16)" in page.reach_label.text()
    window.setup.set_config(tiny_config("lstm"))
    qtbot.waitUntil(lambda: not page.reach_label.isVisibleTo(window), timeout=10_000)
    assert not page.form.is_field_visible("kernel_size")


def qtbot_left():
    from PySide6.QtCore import Qt

    return Qt.MouseButton.LeftButton


def test_a_timed_run_shows_progress_by_the_clock_and_its_whole_split_score(qtbot, window):
    from tests.ui.conftest import wait_finished

    cfg = tiny_config("conv", extra=["train.max_steps=10000000", "train.max_time=1.0"])
    assert window.training.start(cfg)
    run_dir, reason = wait_finished(qtbot, window)
    assert reason == "completed"
    pane = window.training
    assert pane.progress.maximum() == 1000 and pane.progress.value() == 1000
    full = ckpt.list_runs(window.controller.runs_dir())[0].full_val_loss
    assert full is not None and f"whole split: {full:.4f}" in pane.timing.text()


def test_continuing_a_finished_timed_run_gives_it_as_long_again(qtbot, window):
    from tests.ui.conftest import wait_finished

    cfg = tiny_config("lstm", extra=["train.max_steps=10000000", "train.max_time=0.5"])
    assert window.training.start(cfg)
    run_dir, _ = wait_finished(qtbot, window)
    first_steps = window.training.last_step
    window.runs.refresh()
    window.continue_run(run_dir)
    _, reason = wait_finished(qtbot, window)
    assert reason == "completed"
    resumed = window.controller.run_config(run_dir)
    assert resumed.train.max_time == 0.5  # the run's own file is unchanged; the budget grew for this session
    state = ckpt.load_train_state(run_dir)
    assert state["elapsed"] >= 1.0 and state["step"] > first_steps + 1  # it trained another half second
