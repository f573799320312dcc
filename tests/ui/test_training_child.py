"""A machine with several GPUs offers "Train on all N GPUs": the run trains in a child process (torchrun, one
rank per GPU) and the window follows it with the same views and controls. No GPU here: the offer is made as on a
2-GPU machine and the child trains on 2 CPU processes, which is the same code path but for the device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from lmstudio.ui.controller import Controller
from tests.ui.conftest import tiny_config

TIMEOUT = 180_000


def test_the_offer_needs_more_than_one_gpu(qtbot, window):
    pane = window.training
    qtbot.waitUntil(lambda: window.controller.ready, timeout=TIMEOUT)
    assert window.controller.gpu_count() == 0 and pane.all_gpus_box.isHidden()  # this machine has no GPU
    pane.set_gpu_count(1)
    assert pane.all_gpus_box.isHidden()
    pane.set_gpu_count(4)
    assert not pane.all_gpus_box.isHidden() and pane.all_gpus_box.text() == "Train on all 4 GPUs"


@pytest.mark.slow
def test_a_run_on_all_gpus_trains_in_a_child_process_with_pause_resume_and_stop(qtbot, monkeypatch, errors):
    from lmstudio.ui.main_window import MainWindow

    monkeypatch.setattr(Controller, "gpu_count", lambda self: 2)  # as on a machine with two GPUs
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    pane = win.training
    qtbot.waitUntil(lambda: not pane.all_gpus_box.isHidden(), timeout=TIMEOUT)  # offered once warmed up
    pane.all_gpus_box.setChecked(True)
    cfg = tiny_config(
        "transformer",
        extra=[
            "train.device=cpu",
            "train.max_steps=100000",
            "train.log_interval=1",
            "train.eval_interval=100000",
            "train.sample_interval=0",
        ],
    )
    win.setup.set_config(cfg)
    qtbot.waitUntil(lambda: not win.setup.corpus.is_busy(), timeout=TIMEOUT)
    devices = []
    win.run.device_used.connect(devices.append)
    win.start_training()
    qtbot.waitUntil(lambda: pane.last_step >= 2, timeout=TIMEOUT)
    assert devices and "2 ranks (gloo)" in devices[0]
    with qtbot.waitSignal(pane.state_changed, timeout=TIMEOUT, check_params_cb=lambda s: s == "paused"):
        qtbot.mouseClick(pane.pause_btn, Qt.MouseButton.LeftButton)
    paused_at = pane.last_step
    qtbot.wait(1500)  # the child's ranks wait together; nothing arrives
    assert pane.last_step == paused_at
    with qtbot.waitSignal(pane.state_changed, timeout=TIMEOUT, check_params_cb=lambda s: s == "training"):
        qtbot.mouseClick(pane.pause_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: pane.last_step >= paused_at + 2, timeout=TIMEOUT)
    with qtbot.waitSignal(pane.run_finished, timeout=TIMEOUT) as finished:
        qtbot.mouseClick(pane.stop_btn, Qt.MouseButton.LeftButton)
    run_dir, reason = finished.args
    assert reason == "stopped"
    qtbot.waitUntil(lambda: not pane.is_running(), timeout=TIMEOUT)
    state_step = json.loads((Path(run_dir) / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert (Path(run_dir) / "model.safetensors").is_file() and state_step >= paused_at + 2
    assert not list(Path(run_dir).parent.glob(".*.launch.json"))  # the hand-over file is gone
    pane.redraw()
    assert len(pane.loss_plot.series("loss").x) >= paused_at + 2  # the same plots as an in-process run
    # the run opens in Generate and Inspect like any other
    win.use_run(run_dir)  # already followed while it trained: the latest checkpoint is what it shows
    qtbot.waitUntil(lambda: (win.session_controller.info or {}).get("step") == state_step, timeout=TIMEOUT)
    assert errors.calls == []
    win.close()
