"""Faults as the app shows them: a model too big for the memory is refused with a message and Start works again; closing the
window mid-run saves a loadable checkpoint; damaged runs in the runs list and the Generate pane are messages.

Dialogs are replaced by recorders (tests/ui/conftest.py); everything waits on signals, never sleeps.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import Qt

from lmstudio.engine.session import Session
from lmstudio.ui import dialogs, workers
from lmstudio.ui.controller import Controller
from lmstudio.ui.panes.generation import GenerationPane
from lmstudio.ui.panes.runs import RunsPane
from lmstudio.ui.session_controller import SessionController
from tests.reliability.conftest import capped_address_space, copy_run
from tests.ui.conftest import Recorder, errors, tiny_config, window  # noqa: F401 - fixtures used by name

TIMEOUT = 120_000


def test_a_real_out_of_memory_in_the_app_shows_advice_and_start_works_again(qtbot, window, errors):  # noqa: F811
    """Batch 4096 x context 32: ~3 GB of logits, which the estimate allows, while this process may grow by
    400 MB only (``RLIMIT_AS``): the allocator fails for real in the training thread."""
    win = window
    big = ["train.batch_size=4096", "model.block_size=32"]
    win.setup.set_config(tiny_config("transformer", name="oom", extra=big))
    qtbot.waitUntil(lambda: not win.setup.corpus.is_busy(), timeout=TIMEOUT)
    with capped_address_space(400 << 20):
        with qtbot.waitSignal(win.training.run_finished, timeout=TIMEOUT) as finished:
            win.start_training()
        qtbot.waitUntil(lambda: not win.training.is_running(), timeout=TIMEOUT)
    assert finished.args[1] == "failed"
    assert len(errors.calls) == 1, errors.texts
    message = errors.texts[0]
    assert "out of memory" in message and "smaller batch" in message and "Traceback" not in message
    assert "no checkpoint had been saved yet" in message
    assert win.state_label.text() == "Failed"
    # Start works again at once, with a batch that fits, through the button, and the run completes
    win.setup.set_config(tiny_config("transformer", name="oom"))
    qtbot.waitUntil(lambda: not win.setup.corpus.is_busy(), timeout=TIMEOUT)
    assert win.setup.start_btn.isEnabled()
    with qtbot.waitSignal(win.training.run_finished, timeout=TIMEOUT) as again:
        qtbot.mouseClick(win.setup.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not win.training.is_running(), timeout=TIMEOUT)
    assert again.args[1] == "completed", errors.texts
    assert Session.load(again.args[0]).step == 20
    assert workers.live_threads(engines=False) == []  # the window is still open: its engine workers run on


def test_a_model_too_big_for_the_memory_in_the_app_is_refused_with_numbers(
    qtbot,
    window,  # noqa: F811
    errors,  # noqa: F811
):
    """48 layers of width 8192: every field in bounds, hundreds of GB in all. The app says how much it needs
    and what to shrink instead of the kernel killing it (a real allocator failure: test_real_oom.py)."""
    win = window
    huge = ["model.n_layer=48", "model.n_embd=8192", "model.n_head=64"]
    win.setup.set_config(tiny_config("transformer", name="huge", extra=huge))
    qtbot.waitUntil(lambda: not win.setup.corpus.is_busy(), timeout=TIMEOUT)
    with qtbot.waitSignal(win.training.run_finished, timeout=TIMEOUT) as finished:
        win.start_training()
    qtbot.waitUntil(lambda: not win.training.is_running(), timeout=TIMEOUT)
    assert finished.args[1] == "failed"
    assert len(errors.calls) == 1, errors.texts
    message = errors.texts[0]
    assert "not enough memory" in message and "GB" in message and "model.n_layer" in message
    assert "Traceback" not in message and "bug" not in message
    assert win.state_label.text() == "Failed" and win.setup.start_btn.isEnabled()


def test_closing_the_window_mid_run_saves_a_loadable_checkpoint_within_seconds(qtbot, window, monkeypatch):  # noqa: F811
    win = window
    cfg = tiny_config(
        "lstm",
        name="closing",
        extra=[
            "train.max_steps=1000000",
            "train.log_interval=1",
            "train.eval_interval=1000000",
            "train.sample_interval=0",
        ],
    )
    win.setup.set_config(cfg)
    qtbot.waitUntil(lambda: not win.setup.corpus.is_busy(), timeout=TIMEOUT)
    win.start_training()
    qtbot.waitUntil(lambda: win.training.last_step >= 3, timeout=TIMEOUT)
    run_dir = win.training.run_dir
    monkeypatch.setattr(dialogs, "ask_yes_no", Recorder(answer=True))
    started = time.monotonic()
    with qtbot.waitSignal(win.closed, timeout=TIMEOUT):
        win.close()
    took = time.monotonic() - started
    assert took < 15, f"closing took {took:.1f} s"
    assert not win.training.is_running() and workers.live_threads() == []
    session = Session.load(run_dir)
    assert session.step >= 3
    assert all(bool(torch.isfinite(p).all()) for p in session.model.parameters())


@pytest.fixture
def damaged_runs(finished_runs, tmp_path):
    from tests.reliability.test_hostile_files import DAMAGE

    root = Path(tmp_path / "runs")  # $LMSTUDIO_RUNS for this test (tests/conftest.py)
    good = copy_run(finished_runs["transformer"], root / "good")
    for name in (
        "weights-truncated-in-data",
        "weights-garbage",
        "config-wrong-type",
        "config-future-version",
        "tokenizer-other-vocab-size",
        "config-section-not-a-table",
    ):
        DAMAGE[name][0](copy_run(finished_runs["transformer"], root / name))
    return root, good


_HOLD_LOCK = """
import sys
from lmstudio.runlock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


def test_the_runs_tab_lists_every_good_run_beside_hostile_ones_and_shows_a_run_training_elsewhere(
    qtbot, finished_runs, tmp_path
):
    import subprocess
    import sys

    from tests.reliability.test_hostile_runs import HOSTILE

    root = Path(tmp_path / "runs")
    for name, (damage, _) in HOSTILE.items():
        damage(copy_run(finished_runs["transformer"], root / name))
    good = copy_run(finished_runs["transformer"], root / "good")
    busy = copy_run(finished_runs["transformer"], root / "busy")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(busy)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        pane = RunsPane(Controller())
        qtbot.addWidget(pane)
        shown = []
        pane.error_shown.connect(shown.append)
        pane.refresh()
    finally:
        holder.communicate("", timeout=60)
    assert shown == []
    paths = set(pane.run_paths())
    assert {str(good), str(busy)} <= paths
    assert paths == {str(good), str(busy)} | {str(root / n) for n, (_, ok) in HOSTILE.items() if ok}
    row = pane.run_paths().index(str(busy))
    assert f"training in another process, pid {holder.pid}" in pane.table.item(row, 1).text()
    note = pane.folder_label.text()
    assert "Skipped 4 damaged folders" in note and "nested-100000-deep" in note and "FIFO" in note


def test_the_runs_list_survives_damaged_runs(qtbot, damaged_runs):
    root, good = damaged_runs
    pane = RunsPane(Controller())
    qtbot.addWidget(pane)
    shown = []
    pane.error_shown.connect(shown.append)
    pane.refresh()
    assert shown == []
    paths = set(pane.run_paths())
    assert str(good) in paths and str(root / "weights-garbage") in paths
    # selecting a run whose config cannot be read shows why in place of its settings
    pane.select_run(str(root / "config-wrong-type"))
    assert "config.json" in pane.config_text.toPlainText() or "n_embd" in pane.config_text.toPlainText()


@pytest.mark.parametrize(
    "name, file",
    [
        ("weights-truncated-in-data", "model.safetensors"),
        ("config-future-version", "config.json"),
        ("tokenizer-other-vocab-size", "tokenizer.json"),
    ],
)
def test_the_generate_pane_names_the_damaged_file_and_recovers(qtbot, damaged_runs, name, file):
    root, good = damaged_runs
    sessions = SessionController()
    try:
        pane = GenerationPane(sessions)
        qtbot.addWidget(pane)
        with qtbot.waitSignal(sessions.error, timeout=TIMEOUT) as err:
            sessions.set_run(str(root / name))
        assert file in err.args[0] and "Traceback" not in err.args[0]
        assert err.args[0] in pane.status.text() and not pane.generate_button.isEnabled()
        with qtbot.waitSignal(sessions.session_loaded, timeout=TIMEOUT):
            sessions.set_run(str(good))
        assert pane.generate_button.isEnabled()
    finally:
        sessions.shutdown()
