"""The Training tab: start, pause, resume and stop a run, change its learning rate, watch it learn.

A view of the window's ``TrainingRun`` (``ui/training_run.py``), which owns the worker, the state and
the metric buffers: this pane draws what the run holds (a continued or reopened run's whole history
first, then the live points) and sends the buttons' requests to it. A 20 Hz timer redraws; events never
redraw directly.
"""

from __future__ import annotations

import math

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

from lmstudio import config, measures, run_status
from lmstudio.ui.training_run import TrainingRun
from lmstudio.ui.widgets.plots import MetricPlot

REDRAW_MS = 50


# the engine's word for how a run ended, which the window's signal has always carried
_REASON = {run_status.FINISHED: "completed", run_status.STOPPED: "stopped", run_status.FAILED: "failed"}


class TrainingPane(QWidget):
    state_changed = Signal(str)  # the run's state (run_status: preparing, training, paused, ...)
    run_started = Signal(str)  # run_dir, once the trainer has made (or reopened) it
    run_finished = Signal(str, str)  # run_dir, reason ("completed", "stopped", "failed")
    error_shown = Signal(str)
    start_clicked = Signal()

    def __init__(self, run: TrainingRun, parent: QWidget | None = None):
        super().__init__(parent)
        self.run = run

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

        self.run_title = QLabel("")
        self.run_title.setObjectName("trainRunTitle")
        self.progress = QProgressBar()
        self.progress.setObjectName("trainProgress")
        self.progress.setFormat("step %v / %m")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.timing = QLabel("Not started. Set things up in the Setup tab, then press Start (Ctrl+T).")
        self.timing.setObjectName("trainTiming")

        # falling curves leave the top right free; a rising one (accuracy) the bottom right
        self.loss_plot = MetricPlot("Loss", "cross-entropy (nats)")
        self.loss_plot.add_curve("loss", "train (batch)", "#9db7d5", width=1)
        self.loss_plot.add_curve("train_loss", "train (eval)", "#0072B2", symbol="o")
        self.loss_plot.add_curve("val_loss", "validation", "#D55E00", symbol="o")
        self.ppl_plot = MetricPlot("Validation perplexity", "exp(validation loss)", legend=False)
        self.ppl_plot.add_curve("val_ppl", "validation", "#D55E00", symbol="o")
        self.acc_plot = MetricPlot("Next-token accuracy (validation)", "fraction right", legend=False)
        self.acc_plot.add_curve("val_acc", "validation", "#009E73", symbol="o")
        self.acc_plot.getPlotItem().setLimits(yMin=-0.02, yMax=1.02)  # a fraction: keep the axis readable
        self.lr_plot = MetricPlot("Learning rate", "lr", legend=False)
        self.lr_plot.add_curve("lr", "lr", "#CC79A7")
        self.speed_plot = MetricPlot("Speed", "tokens / s", legend=False)
        self.speed_plot.add_curve("tokens_per_s", "tokens/s", "#E69F00")
        self.plots = (self.loss_plot, self.ppl_plot, self.acc_plot, self.lr_plot, self.speed_plot)
        for plot in self.plots:  # the plots draw the run's own buffers: nothing is copied
            for key in plot.curve_keys():
                plot.bind_series(key, run.series[key])
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
        layout.addWidget(self.run_title)
        layout.addWidget(self.progress)
        layout.addWidget(self.timing)
        layout.addWidget(split, 1)

        self._redraw = QTimer(self, interval=REDRAW_MS)
        self._redraw.timeout.connect(self.redraw)
        run.run_changed.connect(self._on_run_changed)
        run.state_changed.connect(self._on_state)
        run.progress.connect(self._on_progress)
        run.sample_changed.connect(self.sample_text.setPlainText)
        run.notice.connect(self.timing.setText)
        run.ended.connect(self._on_ended)
        self._shown_state = run.state
        self._fitted_to = 0  # the max_steps the x axes were last fitted to
        self._on_state(run.state)

    # ---- conveniences for the window's menus (and tests): the run does the work --------------
    def is_running(self) -> bool:
        return self.run.is_running()

    @property
    def state(self) -> str:
        return self.run.state

    @property
    def last_step(self) -> int:
        return self.run.step

    @property
    def run_dir(self) -> str:
        return self.run.run_dir

    def set_gpu_count(self, gpus: int) -> None:
        """Offer "Train on all N GPUs" when this machine has more than one."""
        self.gpus = gpus
        self.all_gpus_box.setText(f"Train on all {gpus} GPUs")
        self.all_gpus_box.setVisible(gpus > 1)

    def start(self, cfg: config.RunConfig, resume_dir: str | None = None) -> bool:
        """Train ``cfg`` (or continue ``resume_dir``); False when a run is already going."""
        nproc = self.gpus if self.gpus > 1 and self.all_gpus_box.isChecked() else 1
        if not self.run.start(cfg, resume_dir, nproc=nproc):
            return False
        self.lr_edit.setText(repr(cfg.train.lr))
        self.timing.setText("Preparing data and building the model…")
        return True

    def toggle_pause(self) -> None:
        self.run.toggle_pause()

    def stop(self) -> None:
        self.run.stop()

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
        if self.run.set_lr(lr):
            self.timing.setText(f"Learning rate set to {lr:g}; it applies from the next step.")

    # ---- reactions to the run -----------------------------------------------------------------
    def _on_run_changed(self, run_dir: str) -> None:
        """Another run: its history (if any) is already in the buffers; axes start afresh."""
        self.sample_text.setPlainText(self.run.sample)
        for plot in self.plots:
            plot.refresh(force=True)
        self._fit_x()
        for plot in self.plots:
            plot.getPlotItem().getViewBox().enableAutoRange(axis="y")

    def _fit_x(self) -> None:
        """x from step 0 to the last step: the curve grows across a fixed axis, and one point is not a
        degenerate 99.6–100.4 range."""
        end = max(self.run.max_steps, self.run.step, 1)
        self._fitted_to = self.run.max_steps
        for plot in self.plots:
            plot.getPlotItem().setXRange(0, end, padding=0.02)

    def _on_progress(self, step: int, max_steps: int) -> None:
        r = self.run
        budget = r.max_time if r.is_running() else 0.0
        if budget > 0:  # a timed run: the bar follows the clock, not the steps
            self.progress.setFormat("%p% of the time budget")
            self.progress.setRange(0, 1000)
            done = 1.0 if r.state == run_status.FINISHED else r.elapsed / budget
            self.progress.setValue(min(1000, int(1000 * done)))
        else:
            self.progress.setFormat("step %v / %m")
            if max_steps and self.progress.maximum() != max_steps:
                self.progress.setRange(0, max_steps)
            self.progress.setValue(step)
        if max_steps and max_steps != self._fitted_to:
            self._fit_x()
        if (
            r.state in (run_status.TRAINING, run_status.PAUSED)
            and step > r.start_step
            and math.isfinite(r.loss)
        ):
            of = f" of {measures.clock(budget)}" if budget > 0 else ""
            self.timing.setText(
                f"step {step:,} of {max_steps:,} · elapsed {measures.clock(r.elapsed)}{of} · "
                f"ETA {measures.clock(r.eta)} · loss {r.loss:.3f} · lr {r.lr:.3g} · "
                f"{r.tokens_per_s:,.0f} tokens/s"
            )

    def _on_state(self, state: str) -> None:
        r = self.run
        if state == run_status.TRAINING and self._shown_state == run_status.PREPARING:
            self.run_started.emit(r.run_dir)
        self._shown_state = state
        self.pause_btn.setText("Resume" if state == run_status.PAUSED else "Pause")
        running = r.is_running()
        if running and not self._redraw.isActive():
            self._redraw.start()
        elif not running:
            self._redraw.stop()
            self.redraw()
        self.start_btn.setEnabled(not running)
        self.pause_btn.setEnabled(running and state in (run_status.TRAINING, run_status.PAUSED))
        self.stop_btn.setEnabled(running and state != run_status.STOPPING)
        self.lr_btn.setEnabled(running)
        if r.run_dir:
            self.run_title.setText(
                f"<b>{r.name}</b> · {run_status.describe(state, r.step, r.max_steps, r.message)}"
            )
        else:
            self.run_title.setText("")
        if state == run_status.TRAINING and r.step == r.start_step and r.start_step:
            self.timing.setText(f"Continuing from the checkpoint at step {r.step:,}…")
        elif state == run_status.IDLE and not r.run_dir:
            self.timing.setText("Not started. Set things up in the Setup tab, then press Start (Ctrl+T).")
        elif (
            not running
            and state in (run_status.FINISHED, run_status.STOPPED, run_status.INTERRUPTED)
            and r.run_dir
        ):
            full = ""
            if r.full_val is not None:
                loss, estimate = r.full_val
                est = f" (running estimate {estimate:.4f})" if estimate is not None else ""
                full = f" Validation loss over the whole split: {loss:.4f}{est}."
            self.timing.setText(
                f"{run_status.describe(state, r.step, r.max_steps).capitalize()} after "
                f"{measures.clock(r.elapsed)}.{full} The run is saved in {r.run_dir}."
            )
        self.state_changed.emit(state)

    def _on_ended(self, run_dir: str, state: str) -> None:
        self.redraw()
        if state == run_status.FAILED:
            self.timing.setText(f"Training stopped: {self.run.message}")
        self.run_finished.emit(run_dir, _REASON.get(state, state))

    # ---- settings kept between launches (a QSettings) -----------------------------------------
    def restore_settings(self, s) -> None:
        self.log_box.setChecked(s.value("training/log_scale", "false") in (True, "true"))

    def save_settings(self, s) -> None:
        s.setValue("training/log_scale", "true" if self.log_box.isChecked() else "false")

    # ---- drawing ------------------------------------------------------------------------------
    def redraw(self) -> None:
        for plot in self.plots:
            plot.refresh()

    def set_log_scale(self, on: bool) -> None:
        for plot in (self.loss_plot, self.ppl_plot, self.lr_plot):
            plot.set_log_y(on)

    def autoscale(self) -> None:
        for plot in self.plots:
            plot.autoscale()
