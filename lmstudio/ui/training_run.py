"""The run the window is about: one plain-data model that every view subscribes to (napari's way).

``TrainingRun`` owns the live run: its folder and name, a state (``run_status``: idle, preparing,
training, paused, stopping, finished, stopped, failed), the step, the metric series (growing numpy
buffers, the whole history from ``metrics.jsonl`` first when a run is opened or continued) and the last
checkpoint. It starts the training worker and talks to the engine's thread-safe ``TrainControl``;
the Training pane, the status bar, the Runs overlay and (through ``RunFollower``) Generate and Inspect
only read it and listen to its signals. It holds no widgets and no torch objects.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from lmstudio import config, run_status
from lmstudio.events import (
    Checkpointed,
    EvalMetrics,
    Failed,
    Finished,
    FullEvalMetrics,
    Notice,
    Sample,
    Started,
    StateChanged,
    StepMetrics,
)
from lmstudio.ui.controller import Controller
from lmstudio.ui.widgets.series import Series
from lmstudio.ui.workers import TrainWorker, describe_error, start_worker

# series key -> (x column, y column) of Controller.run_curves
SERIES = {
    "loss": ("step", "loss"),
    "lr": ("step", "lr"),
    "tokens_per_s": ("step", "tokens_per_s"),
    "train_loss": ("eval_step", "train_loss"),
    "val_loss": ("eval_step", "val_loss"),
    "val_ppl": ("eval_step", "val_ppl"),
    "val_acc": ("eval_step", "val_acc"),
}


class TrainingRun(QObject):
    run_changed = Signal(str)  # another run (folder, "" for none) is now the one shown: views start afresh
    state_changed = Signal(str)  # one of run_status's states
    progress = Signal(int, int)  # step, max_steps: every StepMetrics
    metrics_changed = Signal()  # points were added (views redraw on their own timer)
    sample_changed = Signal(str)
    checkpoint_saved = Signal(str, int)  # run_dir, step
    ended = Signal(str, str)  # run_dir, final state (finished, stopped, failed)
    notice = Signal(str)  # worth telling, training goes on (or waits)
    error = Signal(str)  # a message for a dialog
    device_used = Signal(str)  # from the trainer's Started event

    def __init__(self, controller: Controller, parent: QObject | None = None):
        super().__init__(parent)
        self.controller = controller
        self.series = {key: Series() for key in SERIES}
        self.control = None
        self.worker: TrainWorker | None = None
        self._reset("")

    def _reset(self, run_dir: str) -> None:
        for s in self.series.values():
            s.clear()
        self.run_dir = run_dir
        self.state = run_status.IDLE
        self.step = 0
        self.max_steps = 0
        self.start_step = 0  # where this session's training began (0, or the checkpoint it resumed)
        self.checkpoint_step: int | None = None  # the last checkpoint on disk, when known
        self.elapsed = 0.0
        self.eta = math.nan
        self.loss = math.nan
        self.lr = math.nan
        self.tokens_per_s = math.nan
        self.sample = ""
        self.message = ""  # why it failed, or the last notice
        self.device = ""
        self.max_time = 0.0  # train.max_time: a timed run's progress follows the clock (0: none)
        self.full_val: tuple[float, float | None] | None = None  # whole-split loss, running estimate

    @property
    def name(self) -> str:
        return Path(self.run_dir).name if self.run_dir else ""

    def is_running(self) -> bool:
        return self.worker is not None

    # ---- showing a saved run ------------------------------------------------------------------
    def show(self, run_dir: str, summary: dict | None = None) -> None:
        """Make a saved run the one shown (its whole history); ignored while a run is training."""
        if self.is_running():
            return
        self._reset(run_dir)
        summary = summary or {}
        self.step = self.checkpoint_step = int(summary.get("steps") or 0)
        self.max_steps = int(summary.get("max_steps") or 0)
        self.elapsed = float(summary.get("elapsed") or 0.0)
        self._load_history(run_dir)
        if self.step == 0 and len(self.series["loss"]):
            self.step = int(self.series["loss"].x[-1])
        self.state = str(summary.get("state") or run_status.IDLE)
        self.run_changed.emit(run_dir)
        self.state_changed.emit(self.state)
        self.progress.emit(self.step, self.max_steps)
        self.metrics_changed.emit()

    def _load_history(self, run_dir: str, up_to: int | None = None) -> None:
        try:
            curves = self.controller.run_curves(run_dir)
        except Exception as exc:  # a damaged metrics.jsonl must not block training or viewing
            self.notice.emit(f"The run's earlier curves could not be read: {describe_error(exc)}")
            return
        for key, (x_key, y_key) in SERIES.items():
            xs, ys = curves.get(x_key, np.empty(0)), curves.get(y_key, np.empty(0))
            keep = np.isfinite(xs) & np.isfinite(ys)
            if up_to is not None:
                keep &= xs <= up_to
            self.series[key].clear()
            self.series[key].extend(xs[keep], ys[keep])
        samples = []
        try:
            samples = [
                s for s in self.controller.run_samples(run_dir) if up_to is None or s.get("step", 0) <= up_to
            ]
        except Exception:
            pass
        if samples:
            self.sample = f"step {samples[-1].get('step', '?')}:\n{samples[-1].get('text', '')}"
            self.sample_changed.emit(self.sample)

    def run_moved(self, old: str, new: str) -> None:
        """The shown run was renamed: same run, new folder."""
        if self.run_dir == old and not self.is_running():
            self.run_dir = new
            self.state_changed.emit(self.state)

    def run_deleted(self, run_dir: str) -> None:
        if self.run_dir == run_dir and not self.is_running():
            self._reset("")
            self.run_changed.emit("")
            self.state_changed.emit(self.state)

    # ---- training -----------------------------------------------------------------------------
    def start(self, cfg: config.RunConfig, resume_dir: str | None = None, nproc: int = 1) -> bool:
        """Train ``cfg`` (or continue ``resume_dir``) in a worker thread; False when one is running.

        ``nproc`` > 1: in a child process on that many GPUs, followed through its events."""
        if self.is_running():
            return False
        self._reset(resume_dir or "")
        self.max_steps = cfg.train.max_steps
        self.max_time = float(cfg.train.max_time or 0.0)
        if resume_dir:  # the curve so far, while the data and the model are prepared
            self._load_history(resume_dir)
            self.step = int(self.series["loss"].x[-1]) if len(self.series["loss"]) else 0
        self.control = self.controller.new_control()
        control, controller = self.control, self.controller
        self.worker = TrainWorker(lambda: controller.training_events(cfg, control, resume_dir, nproc=nproc))
        self.worker.event.connect(self.on_event)
        self.worker.crashed.connect(self._on_crashed)
        self.worker.finished.connect(self._on_worker_finished)
        self.state = run_status.PREPARING  # before run_changed: its listeners ask whether a run is live
        self.run_changed.emit(self.run_dir)
        self._set_state(run_status.PREPARING)
        start_worker(self.worker)
        return True

    def toggle_pause(self) -> None:
        if self.control is None:
            return
        if self.state == run_status.PAUSED:
            self.control.resume()
        else:
            self.control.pause()

    def stop(self) -> None:
        """Ask the trainer to stop; it saves a checkpoint and then reports Finished(reason='stopped')."""
        if self.control is not None and self.is_running():
            self.control.stop()
            self._set_state(run_status.STOPPING)

    def set_lr(self, lr: float) -> bool:
        if self.control is not None and self.is_running():
            self.control.set_lr(lr)
            return True
        return False

    # ---- events (GUI thread; queued from the worker) ------------------------------------------
    def on_event(self, ev) -> None:
        if isinstance(ev, StepMetrics):
            self.step, self.max_steps = ev.step, ev.max_steps
            self.loss, self.lr, self.tokens_per_s = ev.loss, ev.lr, ev.tokens_per_s
            self.elapsed, self.eta = ev.elapsed, ev.eta
            for key in ("loss", "lr", "tokens_per_s"):
                self.series[key].append(ev.step, getattr(ev, key))
            self.progress.emit(self.step, self.max_steps)
            self.metrics_changed.emit()
        elif isinstance(ev, EvalMetrics):
            for key in ("train_loss", "val_loss", "val_ppl", "val_acc"):
                self.series[key].append(ev.step, getattr(ev, key))
            self.metrics_changed.emit()
        elif isinstance(ev, FullEvalMetrics):
            self.full_val = (ev.val_loss, ev.estimate)
        elif isinstance(ev, Sample):
            self.sample = f"step {ev.step}:\n{ev.text}"
            self.sample_changed.emit(self.sample)
        elif isinstance(ev, Started):
            self._on_started(ev)
        elif isinstance(ev, Checkpointed):
            self.checkpoint_step = ev.step
            self.checkpoint_saved.emit(self.run_dir, ev.step)
        elif isinstance(ev, StateChanged):
            self._set_state({"running": run_status.TRAINING}.get(ev.state, ev.state))
        elif isinstance(ev, Notice):
            self.message = ev.message
            self.notice.emit(ev.message)
        elif isinstance(ev, Finished):
            self.run_dir = ev.run_dir or self.run_dir
            self.step, self.elapsed = ev.step, ev.elapsed or self.elapsed
            self.progress.emit(self.step, self.max_steps)
            self._end(run_status.FINISHED if ev.reason == "completed" else run_status.STOPPED)
        elif isinstance(ev, Failed):
            self.run_dir = ev.run_dir or self.run_dir
            self.message = ev.message
            self._end(run_status.FAILED)
            self.error.emit(ev.message)

    def _on_started(self, ev: Started) -> None:
        new_folder = ev.run_dir != self.run_dir
        self.run_dir = ev.run_dir
        self.step = self.start_step = ev.start_step
        self.max_steps = ev.max_steps
        self.device = ev.device
        if ev.start_step:
            # a continued run: its curve so far comes from disk (the trainer has just cut it back to the
            # checkpoint), the live points carry on from there
            self.checkpoint_step = ev.start_step
            self._load_history(ev.run_dir, up_to=ev.start_step)
        if new_folder:
            self.run_changed.emit(self.run_dir)
        self._set_state(run_status.TRAINING)
        self.device_used.emit(ev.device)
        self.progress.emit(self.step, self.max_steps)
        self.metrics_changed.emit()

    def _end(self, state: str) -> None:
        self._set_state(state)
        self.ended.emit(self.run_dir, state)

    def _on_crashed(self, message: str) -> None:
        self.message = "training stopped because of an error"
        self._end(run_status.FAILED)
        self.error.emit(message)

    def _on_worker_finished(self) -> None:
        self.worker, self.control = None, None
        if self.state in run_status.LIVE_STATES:  # the worker ended without a last word
            self._end(run_status.STOPPED)
        else:
            self.state_changed.emit(self.state)  # buttons depend on is_running() as well

    def _set_state(self, state: str) -> None:
        self.state = state
        self.state_changed.emit(state)
