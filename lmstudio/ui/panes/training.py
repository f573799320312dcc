"""The Training tab: start, pause, resume and stop a run, change its learning rate, watch it learn.

Training runs in a ``TrainWorker`` on its own QThread. Pause, stop and a new learning rate go straight
to the engine's thread-safe ``TrainControl`` (the worker's event loop is busy inside the training loop,
so queued slots would never run). Events only append to numpy buffers; a 20 Hz timer redraws.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from lmstudio import config as C
from lmstudio import events as E
from lmstudio.ui.controller import Controller
from lmstudio.ui.widgets.plots import MetricPlot
from lmstudio.ui.workers import TrainWorker, start_worker

REDRAW_MS = 50


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TrainingPane(QWidget):
    state_changed = Signal(str)  # idle, starting, running, paused, stopping, finished, stopped, failed
    run_started = Signal(str)  # run_dir
    device_used = Signal(str)  # e.g. "CPU, 2 threads", from the trainer's Started event
    checkpoint_written = Signal(str)  # run_dir
    run_finished = Signal(str, str)  # run_dir, reason ("completed", "stopped", "failed")
    error_shown = Signal(str)
    notice_shown = Signal(str)  # the trainer's Notice: worth telling, training goes on (or waits)
    start_clicked = Signal()

    def __init__(self, controller: Controller, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        self.control = None
        self.worker: TrainWorker | None = None
        self.thread = None
        self.run_dir = ""
        self.state = "idle"
        self.events_seen = 0
        self.last_step = 0
        self._sample = ""
        self._sample_dirty = False
        self._started_at = 0.0

        self.start_btn = QPushButton("Start ▶")
        self.start_btn.setObjectName("trainStart")
        self.pause_btn = QPushButton("Pause")
        self.pause_btn.setObjectName("trainPause")
        self.stop_btn = QPushButton("Stop ■")
        self.stop_btn.setObjectName("trainStop")
        self.lr_edit = QLineEdit()
        self.lr_edit.setObjectName("lrEdit")
        self.lr_edit.setPlaceholderText("new learning rate")
        self.lr_edit.setMaximumWidth(130)
        self.lr_btn = QPushButton("Set LR")
        self.lr_btn.setObjectName("lrApply")
        self.log_box = QCheckBox("Log scale")
        # offered only on a machine with several GPUs (set_gpu_count): the run then trains in a child process
        self.all_gpus_box = QCheckBox("Train on all GPUs")
        self.all_gpus_box.setObjectName("trainAllGpus")
        self.all_gpus_box.setToolTip(
            "Train this run on every GPU of this machine at once (a separate process per GPU; "
            "the batch size is the batch of all of them together). See docs/scaling.md."
        )
        self.all_gpus_box.hide()
        self.gpus = 0
        self.autoscale_btn = QPushButton("Autoscale")
        self.start_btn.clicked.connect(self.start_clicked)
        self.pause_btn.clicked.connect(self.toggle_pause)
        self.stop_btn.clicked.connect(self.stop)
        self.lr_btn.clicked.connect(self.apply_lr)
        self.lr_edit.returnPressed.connect(self.apply_lr)
        self.log_box.toggled.connect(self.set_log_scale)
        self.autoscale_btn.clicked.connect(self.autoscale)
        bar = QHBoxLayout()
        for w in (self.start_btn, self.pause_btn, self.stop_btn):
            bar.addWidget(w)
        bar.addWidget(self.all_gpus_box)
        bar.addSpacing(20)
        bar.addWidget(QLabel("Learning rate:"))
        bar.addWidget(self.lr_edit)
        bar.addWidget(self.lr_btn)
        bar.addStretch(1)
        bar.addWidget(self.log_box)
        bar.addWidget(self.autoscale_btn)

        self.progress = QProgressBar()
        self.progress.setObjectName("trainProgress")
        self.progress.setFormat("step %v / %m")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.timing = QLabel("Not started. Set things up in the Setup tab, then press Start (Ctrl+T).")
        self.timing.setObjectName("trainTiming")

        self.loss_plot = MetricPlot("Loss", "cross-entropy (nats)")
        self.loss_plot.add_curve("loss", "train (batch)", "#9db7d5", width=1)
        self.loss_plot.add_curve("train_loss", "train (eval)", "#0072B2", symbol="o")
        self.loss_plot.add_curve("val_loss", "validation", "#D55E00", symbol="o")
        self.ppl_plot = MetricPlot("Perplexity", "exp(validation loss)")
        self.ppl_plot.add_curve("val_ppl", "validation", "#D55E00", symbol="o")
        self.acc_plot = MetricPlot("Next-token accuracy", "fraction right")
        self.acc_plot.add_curve("val_acc", "validation", "#009E73", symbol="o")
        self.acc_plot.getPlotItem().setLimits(yMin=-0.02, yMax=1.02)  # a fraction: keep the axis readable
        self.lr_plot = MetricPlot("Learning rate", "lr")
        self.lr_plot.add_curve("lr", "lr", "#CC79A7")
        self.speed_plot = MetricPlot("Speed", "tokens / s")
        self.speed_plot.add_curve("tokens_per_s", "tokens/s", "#E69F00")
        self.plots = (self.loss_plot, self.ppl_plot, self.acc_plot, self.lr_plot, self.speed_plot)
        grid_host = QWidget()
        grid = QGridLayout(grid_host)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.loss_plot, 0, 0, 1, 2)
        grid.addWidget(self.ppl_plot, 0, 2)
        grid.addWidget(self.acc_plot, 1, 0)
        grid.addWidget(self.lr_plot, 1, 1)
        grid.addWidget(self.speed_plot, 1, 2)
        self.sample_text = QPlainTextEdit(readOnly=True)
        self.sample_text.setObjectName("sampleText")
        self.sample_text.setPlaceholderText("Samples of generated text appear here as the model learns.")
        sample_box = QGroupBox("Latest sample")
        QVBoxLayout(sample_box).addWidget(self.sample_text)
        split = QSplitter()
        split.setOrientation(Qt.Orientation.Vertical)
        split.addWidget(grid_host)
        split.addWidget(sample_box)
        split.setSizes([500, 140])

        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.progress)
        layout.addWidget(self.timing)
        layout.addWidget(split, 1)

        self._redraw = QTimer(self, interval=REDRAW_MS)
        self._redraw.timeout.connect(self.redraw)
        self._budget = 0.0  # train.max_time of the current run (0: none)
        self._full = ""  # the whole-split score of the run that just completed, as a sentence
        self._set_state("idle")

    # ---- lifecycle --------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.worker is not None

    def set_gpu_count(self, gpus: int) -> None:
        """Offer "Train on all N GPUs" when this machine has more than one."""
        self.gpus = gpus
        self.all_gpus_box.setText(f"Train on all {gpus} GPUs")
        self.all_gpus_box.setVisible(gpus > 1)

    def start(self, cfg: C.RunConfig, resume_dir: str | None = None) -> bool:
        """Train ``cfg`` in a worker thread; False when a run is already going."""
        if self.is_running():
            return False
        self.clear()
        self.control = self.controller.new_control()
        control, controller = self.control, self.controller
        nproc = self.gpus if self.gpus > 1 and self.all_gpus_box.isChecked() else 1
        self.worker = TrainWorker(lambda: controller.training_events(cfg, control, resume_dir, nproc=nproc))
        self.worker.event.connect(self.on_event)
        self.worker.crashed.connect(self._on_crashed)
        self.worker.finished.connect(self._on_worker_finished)
        self.progress.setRange(0, cfg.train.max_steps)
        self._budget = cfg.train.max_time  # a timed run's progress bar follows the clock, not the steps
        self._full = ""
        self.lr_edit.setText(repr(cfg.train.lr))
        self._started_at = time.monotonic()
        self._set_state("starting")
        self.timing.setText("Preparing data and building the model…")
        self.thread = start_worker(self.worker)
        self._redraw.start()
        return True

    def toggle_pause(self) -> None:
        if self.control is None:
            return
        if self.state == "paused":
            self.control.resume()
        else:
            self.control.pause()

    def stop(self) -> None:
        """Ask the trainer to stop; it saves a checkpoint and then emits Finished(reason='stopped')."""
        if self.control is not None and self.is_running():
            self.control.stop()
            self._set_state("stopping")

    def apply_lr(self) -> None:
        try:
            lr = float(self.lr_edit.text())
        except ValueError:
            self.error_shown.emit(f"{self.lr_edit.text()!r} is not a number. Type a learning rate like 3e-4.")
            return
        if not (0 < lr <= 10):
            self.error_shown.emit(
                f"A learning rate of {lr:g} is out of range. Use a value above 0 and at most 10."
            )
            return
        if self.control is not None and self.is_running():
            self.control.set_lr(lr)
            self.timing.setText(f"Learning rate set to {lr:g}; it applies from the next step.")

    def clear(self) -> None:
        for plot in self.plots:
            plot.clear_data()
        self.sample_text.clear()
        self._sample, self._sample_dirty = "", False
        self.events_seen, self.last_step, self.run_dir = 0, 0, ""
        self.progress.setValue(0)

    # ---- events (GUI thread; queued from the worker) ----------------------------------------
    def on_event(self, ev) -> None:
        self.events_seen += 1
        if isinstance(ev, E.StepMetrics):
            x = ev.step
            self.last_step = ev.step
            self.loss_plot.append("loss", x, ev.loss)
            self.lr_plot.append("lr", x, ev.lr)
            self.speed_plot.append("tokens_per_s", x, ev.tokens_per_s)
            budget = self._budget
            if budget > 0:
                self.progress.setMaximum(1000)
                self.progress.setValue(min(1000, int(1000 * ev.elapsed / budget)))
            else:
                self.progress.setMaximum(ev.max_steps)
                self.progress.setValue(ev.step)
            of = f" of {format_duration(budget)}" if budget > 0 else ""
            self.timing.setText(
                f"step {ev.step:,} of {ev.max_steps:,} · elapsed {format_duration(ev.elapsed)}{of} · "
                f"ETA {format_duration(ev.eta)} · loss {ev.loss:.3f} · lr {ev.lr:.3g} · "
                f"{ev.tokens_per_s:,.0f} tokens/s"
            )
        elif isinstance(ev, E.EvalMetrics):
            x = ev.step
            self.loss_plot.append("train_loss", x, ev.train_loss)
            self.loss_plot.append("val_loss", x, ev.val_loss)
            self.ppl_plot.append("val_ppl", x, ev.val_ppl)
            self.acc_plot.append("val_acc", x, ev.val_acc)
        elif isinstance(ev, E.FullEvalMetrics):
            estimate = f" (running estimate {ev.estimate:.4f})" if ev.estimate is not None else ""
            self._full = f" Validation loss over the whole split: {ev.val_loss:.4f}{estimate}."
        elif isinstance(ev, E.Sample):
            self._sample = f"step {ev.step}:\n{ev.text}"
            self._sample_dirty = True
        elif isinstance(ev, E.Started):
            self.run_dir = ev.run_dir
            self.progress.setRange(0, ev.max_steps)
            self.progress.setValue(ev.start_step)
            self._set_state("running")
            self.run_started.emit(ev.run_dir)
            self.device_used.emit(ev.device)
        elif isinstance(ev, E.Checkpointed):
            self.checkpoint_written.emit(self.run_dir or ev.path)
        elif isinstance(ev, E.StateChanged):
            self._set_state(ev.state)
        elif isinstance(ev, E.Notice):
            self.timing.setText(ev.message)
            self.notice_shown.emit(ev.message)
        elif isinstance(ev, E.Finished):
            self.run_dir = ev.run_dir or self.run_dir
            if self.progress.maximum() == 1000 and self._budget > 0:
                self.progress.setValue(1000 if ev.reason == "completed" else self.progress.value())
            else:
                self.progress.setValue(ev.step)
            self.timing.setText(
                f"{'Finished' if ev.reason == 'completed' else 'Stopped'} at step {ev.step:,} "
                f"after {format_duration(ev.elapsed)}.{self._full} The run is saved in {self.run_dir}."
            )
            self._set_state("finished" if ev.reason == "completed" else "stopped")
            self.run_finished.emit(self.run_dir, ev.reason)
        elif isinstance(ev, E.Failed):
            self.run_dir = ev.run_dir or self.run_dir
            self.timing.setText(f"Training stopped: {ev.message}")
            self._set_state("failed")
            self.error_shown.emit(ev.message)
            self.run_finished.emit(self.run_dir, "failed")

    def _on_crashed(self, message: str) -> None:
        self._set_state("failed")
        self.timing.setText("Training stopped because of an error.")
        self.error_shown.emit(message)

    def _on_worker_finished(self) -> None:
        self.worker, self.thread, self.control = None, None, None
        self._redraw.stop()
        self.redraw()
        if self.state in ("starting", "running", "paused", "stopping"):
            self._set_state("stopped")
        self._update_buttons()

    # ---- drawing ----------------------------------------------------------------------------
    def redraw(self) -> None:
        for plot in self.plots:
            plot.refresh()
        if self._sample_dirty:
            self.sample_text.setPlainText(self._sample)
            self._sample_dirty = False

    def set_log_scale(self, on: bool) -> None:
        for plot in (self.loss_plot, self.ppl_plot, self.lr_plot):
            plot.set_log_y(on)

    def autoscale(self) -> None:
        for plot in self.plots:
            plot.autoscale()

    def _set_state(self, state: str) -> None:
        self.state = state
        self.pause_btn.setText("Resume" if state == "paused" else "Pause")
        self._update_buttons()
        self.state_changed.emit(state)

    def _update_buttons(self) -> None:
        running = self.is_running()
        self.start_btn.setEnabled(not running)
        self.pause_btn.setEnabled(running and self.state in ("running", "paused"))
        self.stop_btn.setEnabled(running and self.state != "stopping")
        self.lr_btn.setEnabled(running)
