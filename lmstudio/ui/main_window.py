"""The main window: Setup → Training → Runs → Generate → Inspect, as tabs a newcomer reads left to right.

It only wires: one ``TrainingRun`` (``ui/training_run.py``) is the run every view subscribes to — the
Training tab, the status bar and the Runs table and overlay — and one ``RunFollower``
(``ui/run_follower.py``) tells Generate and Inspect which run to show (the one being trained, or one
the user pinned). It owns the menus and the status bar (device, run state, live step), asks each pane
to keep its own settings between launches (QSettings) and closes cleanly while training: it asks, stops
the worker (the trainer saves a checkpoint), waits for the worker's ``finished`` signal, then closes.
"""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QLabel, QMainWindow, QTabWidget

from lmstudio import __version__, run_status
from lmstudio.ui import dialogs, workers
from lmstudio.ui.about import AboutDialog
from lmstudio.ui.controller import Controller
from lmstudio.ui.panes.generation import GenerationPane
from lmstudio.ui.panes.inspector import InspectorPane
from lmstudio.ui.panes.runs import RunsPane
from lmstudio.ui.panes.setup import SetupPane
from lmstudio.ui.panes.training import TrainingPane
from lmstudio.ui.run_follower import RunFollower
from lmstudio.ui.session_controller import SessionController
from lmstudio.ui.training_run import TrainingRun
from lmstudio.ui.workers import TaskWorker, describe_error, start_worker

ORGANIZATION = "lmstudio"
APPLICATION = "lmstudio"
TAB_SETUP, TAB_TRAINING, TAB_RUNS, TAB_GENERATE, TAB_INSPECT = range(5)
STATE_TEXT = {
    run_status.IDLE: "Idle",
    run_status.PREPARING: "Preparing…",
    run_status.TRAINING: "Training",
    run_status.PAUSED: "Paused",
    run_status.STOPPING: "Stopping (saving a checkpoint)…",
    run_status.FINISHED: "Finished",
    run_status.STOPPED: "Stopped",
    run_status.FAILED: "Failed",
    run_status.INTERRUPTED: "Interrupted",
}


def open_settings() -> QSettings:
    """The app's settings file (INI). Tests point ``QSettings.setPath`` at a temp folder."""
    org = QCoreApplication.organizationName() or ORGANIZATION
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, org, APPLICATION)


class MainWindow(QMainWindow):
    closed = Signal()

    def __init__(self, controller: Controller | None = None, *, warm_up: bool = True):
        super().__init__()
        self.setWindowTitle("lmstudio — train a small language model")
        self.controller = controller or Controller()
        self._closing = False
        self._close_requested = False
        self.run = TrainingRun(self.controller, self)
        self.session_controller = SessionController(self)
        self.follower = RunFollower(self.session_controller, self.run, self)
        self.setup = SetupPane(self.controller)
        self.training = TrainingPane(self.run)
        self.runs = RunsPane(self.controller, self.run)
        self.runs.bakeoff.busy = self.training.is_running
        self.setup.probe_blocked = lambda: self.run.is_running() or self.runs.bakeoff.is_running()
        self.generate_pane = GenerationPane(self.session_controller, follower=self.follower)
        self.inspect_pane = InspectorPane(self.session_controller, follower=self.follower)
        self.tabs = QTabWidget()
        self.tabs.setObjectName("mainTabs")
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.setup, "Setup")
        self.tabs.addTab(self.training, "Training")
        self.tabs.addTab(self.runs, "Runs")
        self.tabs.addTab(self.generate_pane, "Generate")
        self.tabs.addTab(self.inspect_pane, "Inspect")
        self.setCentralWidget(self.tabs)
        self._make_menus()
        self._notice = ""  # the trainer's last Notice, while the status bar shows it
        self._make_status_bar()
        self._connect()
        self.setup.model.set_presets(self.controller.presets())
        self.setup.corpus.populate_builtins()
        self._restore()
        self._warm_up_wanted = warm_up
        if warm_up:  # after the first paint: importing torch meanwhile would slow the window's start
            QTimer.singleShot(0, self._warm_up_after_first_paint)

    def use_run(self, run_dir: str) -> None:
        """Show ``run_dir`` in Generate and Inspect (pinned unless it is the run being trained)."""
        if run_dir:
            self.follower.show_run(run_dir)

    # ---- building -----------------------------------------------------------------------------
    def _action(self, menu, text: str, slot, shortcut=None, name: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setObjectName(name or text)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _make_menus(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        self.act_open_corpus = self._action(
            file, "Open corpus &file…", self._open_corpus_file, QKeySequence.StandardKey.Open, "openCorpus"
        )
        self.act_open_folder = self._action(
            file, "Open corpus f&older…", self._open_corpus_folder, "Ctrl+Shift+O", "openCorpusFolder"
        )
        self.act_open_run = self._action(file, "Open &run…", self._open_run, "Ctrl+R", "openRun")
        self.act_export = self._action(file, "&Export model…", self.show_export, "Ctrl+E", "exportModel")
        file.addSeparator()
        self.act_quit = self._action(file, "&Quit", self.close, QKeySequence("Ctrl+Q"), "quit")
        train = bar.addMenu("&Training")
        self.act_start = self._action(
            train, "&Start training", self.start_training, "Ctrl+T", "startTraining"
        )
        self.act_pause = self._action(train, "&Pause / resume", self.training.toggle_pause, "Ctrl+P", "pause")
        self.act_stop = self._action(train, "S&top training", self.training.stop, "Ctrl+.", "stopTraining")
        view = bar.addMenu("&View")
        for i, name in enumerate(("Setup", "Training", "Runs", "Generate", "Inspect")):
            self._action(view, name, lambda _=False, i=i: self.tabs.setCurrentIndex(i), f"Ctrl+{i + 1}")
        help_menu = bar.addMenu("&Help")
        self.act_about = self._action(help_menu, "&About lmstudio", self.show_about, None, "about")

    def _make_status_bar(self) -> None:
        self.device_label = QLabel("Device: detecting…")
        self.device_label.setObjectName("deviceLabel")
        self.state_label = QLabel("Idle")
        self.state_label.setObjectName("stateLabel")
        self.run_label = QLabel("")
        status = self.statusBar()
        status.addWidget(self.state_label)
        status.addWidget(self.run_label, 1)
        status.addPermanentWidget(self.device_label)

    def _connect(self) -> None:
        self.setup.start_requested.connect(self.start_training)
        self.setup.error_shown.connect(self.show_error)
        self.training.start_clicked.connect(self.start_training)
        self.training.error_shown.connect(self.show_error)
        self.run.state_changed.connect(self._on_state)
        self.run.progress.connect(self._on_progress)
        self.run.run_changed.connect(self._on_run_changed)
        self.run.error.connect(self.show_error)
        self.run.notice.connect(self._on_notice)
        self.run.device_used.connect(self.device_label.setText)
        self.runs.run_selected.connect(self._on_run_chosen)
        self.runs.run_renamed.connect(self.follower.run_moved)
        self.runs.run_renamed.connect(self.run.run_moved)
        self.runs.run_deleted.connect(self.follower.run_deleted)
        self.runs.run_deleted.connect(self.run.run_deleted)
        self.runs.open_config.connect(self._load_run_settings)
        self.runs.continue_requested.connect(self.continue_run)
        self.runs.error_shown.connect(self.show_error)
        self.tabs.currentChanged.connect(self._on_tab)

    def _warm_up_after_first_paint(self) -> None:
        if not self.isVisible():
            self._start_warm_up()  # a window never shown is never painted
        else:  # paintEvent starts it; this is for a platform that does not paint
            QTimer.singleShot(1000, self._start_warm_up)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().paintEvent(event)
        if self._warm_up_wanted:
            QTimer.singleShot(0, self._start_warm_up)  # once this paint is on screen

    def _start_warm_up(self) -> None:
        if not self._warm_up_wanted:
            return  # started already, or the window closed first
        self._warm_up_wanted = False
        worker = TaskWorker(lambda progress, cancel: self.controller.warm_up())
        worker.done.connect(self._on_device)
        worker.failed.connect(self._on_warm_up_failed)
        self._warm_up = worker
        start_worker(worker)

    def _on_device(self, text: str) -> None:
        self.device_label.setText(text)
        self.training.set_gpu_count(self.controller.gpu_count())
        self.setup.revalidate()
        self._open_latest_run()

    def _open_latest_run(self) -> None:
        """Show the newest saved run (its whole curve in Training; Generate and Inspect follow it), so
        the window works straight away after a restart."""
        if self.run.is_running() or self.run.run_dir or self.follower.target:
            return
        try:
            runs = self.controller.list_runs()
        except Exception:  # an unreadable runs folder is reported when the Runs tab opens
            return
        saved = [r for r in runs if int(r.get("steps") or 0) > 0]
        if saved:
            self.run.show(str(saved[0]["path"]), saved[0])
            self.follower.show_latest(str(saved[0]["path"]))

    def _on_warm_up_failed(self, message: str) -> None:
        self.controller.ready = True  # let the size estimate try (and say what is wrong) on its own
        self.device_label.setText("Device: unknown")
        self.device_label.setToolTip(message)

    # ---- actions ------------------------------------------------------------------------------
    def start_training(self) -> None:
        if self.training.is_running():
            self.statusBar().showMessage("A run is already training; stop it first (Ctrl+.).", 5000)
            return
        if self.runs.bakeoff.is_running():
            self.statusBar().showMessage(
                "The bake-off is training; wait for it or stop it on the Runs tab.", 5000
            )
            return
        if self.setup.corpus.is_busy() or self.setup.tokenizer.is_busy():
            self.show_error("The corpus or tokenizer is still being prepared; try again in a moment.")
            return
        cfg, errors = self.setup.config()
        if not self.setup.corpus.source:
            errors.setdefault("corpus.source", "choose a corpus in Setup, step 1")
        if errors:
            self.setup.revalidate()
            self.tabs.setCurrentIndex(TAB_SETUP)
            self.show_error(
                "Training cannot start until these settings are fixed:\n"
                + "\n".join(f"• {k}: {v}" for k, v in errors.items())
            )
            return
        self._save_settings()
        self.setup.cancel_probe()
        self.tabs.setCurrentIndex(TAB_TRAINING)
        self.training.start(cfg)

    def continue_run(self, run_dir: str) -> None:
        """Resume ``run_dir`` from its last checkpoint; a finished run gets as many steps again."""
        if self.training.is_running():
            self.statusBar().showMessage("A run is already training; stop it first (Ctrl+.).", 5000)
            return
        try:
            cfg = self.controller.run_config(run_dir)
        except Exception as exc:
            self.show_error(describe_error(exc))
            return
        done = int(self.runs.run_summary(run_dir).get("steps") or 0)
        if cfg.train.max_time > 0 and self._used_budget(run_dir, cfg.train.max_time):
            cfg.train.max_time += cfg.train.max_time  # a timed run that finished gets as long again
            self.statusBar().showMessage(
                f"The run had used its time; continuing to {cfg.train.max_time:g} s of training.", 8000
            )
        elif done >= cfg.train.max_steps:
            cfg.train.max_steps = done + cfg.train.max_steps
            self.statusBar().showMessage(
                f"The run had finished; continuing to step {cfg.train.max_steps:,}.", 8000
            )
        self.tabs.setCurrentIndex(TAB_TRAINING)
        self.setup.cancel_probe()
        self.training.start(cfg, resume_dir=run_dir)  # its whole history first, then the live points

    def _used_budget(self, run_dir: str, budget: float) -> bool:
        try:
            times = self.runs.curves(run_dir)["time"]
        except Exception:  # no readable history: resume as it is
            return False
        return len(times) > 0 and float(times[-1]) >= budget

    def _open_corpus_file(self) -> None:
        self.tabs.setCurrentIndex(TAB_SETUP)
        self.setup.steps.setCurrentRow(0)
        self.setup.corpus.open_file()

    def _open_corpus_folder(self) -> None:
        self.tabs.setCurrentIndex(TAB_SETUP)
        self.setup.steps.setCurrentRow(0)
        self.setup.corpus.open_folder()

    def _open_run(self) -> None:
        start = ""
        try:
            start = str(self.controller.runs_dir())
        except Exception:
            pass
        path = dialogs.open_folder(self, "Open a run folder", start)
        if not path:
            return
        try:
            self.controller.run_config(path)
        except Exception as exc:
            self.show_error(f"{path} is not a run folder lmstudio can open.\n\n{describe_error(exc)}")
            return
        self.runs.refresh()
        self.runs.select_run(path)
        self.tabs.setCurrentIndex(TAB_RUNS)
        if not self.run.is_running():  # its whole curve in the Training tab
            self.run.show(path, self.runs.run_summary(path))
        self.use_run(path)

    def _load_run_settings(self, run_dir: str) -> None:
        try:
            cfg = self.controller.run_config(run_dir)
        except Exception as exc:
            self.show_error(describe_error(exc))
            return
        cfg.name = ""
        self.setup.set_config(cfg)
        self.tabs.setCurrentIndex(TAB_SETUP)

    def show_error(self, message: str) -> None:
        dialogs.show_error(self, "lmstudio", message)

    def show_export(self) -> None:
        """File → Export: the run shown in Generate/Inspect (or chosen in Runs) to Hugging Face or ONNX."""
        from lmstudio.ui.export_dialog import ExportDialog

        current = getattr(self, "export_dialog", None)
        if current is not None and current.is_busy():  # one export at a time: show the one under way
            current.show()
            current.raise_()
            return
        run = self.runs.current_run() or self.follower.target or self.run.run_dir
        self.export_dialog = ExportDialog(self.controller, run, self)
        self.export_dialog.open()

    def show_about(self) -> None:
        AboutDialog(__version__, self.controller.corpus_sources_text(), self).exec()

    # ---- reactions ----------------------------------------------------------------------------
    def _on_state(self, state: str) -> None:
        if state != run_status.PAUSED and self._notice and self._notice == self.statusBar().currentMessage():
            self.statusBar().clearMessage()  # e.g. resumed after a failed save: the notice is done with
        self._show_state()
        self.act_pause.setText("&Resume training" if state == run_status.PAUSED else "&Pause training")

    def _on_progress(self, step: int, max_steps: int) -> None:
        if self.run.state in (run_status.TRAINING, run_status.PAUSED):
            self._show_state()

    def _show_state(self) -> None:
        """The status bar always shows the live step, whatever the last state change was."""
        r = self.run
        text = STATE_TEXT.get(r.state, r.state)
        if r.state in (run_status.TRAINING, run_status.PAUSED, run_status.STOPPING) and r.step:
            text += f" · step {r.step:,} of {r.max_steps:,}"
        self.state_label.setText(text)

    def _on_notice(self, message: str) -> None:
        # seen from any tab, for a minute or until the run changes state (a paused run waits for the user)
        self._notice = message
        self.statusBar().showMessage(message, 60_000)

    def _on_run_changed(self, run_dir: str) -> None:
        self.run_label.setText(f"Run: {self.run.name}" if run_dir else "")
        self.run_label.setToolTip(run_dir)

    def _on_run_chosen(self, run_dir: str) -> None:
        self.use_run(run_dir)
        self.tabs.setCurrentIndex(TAB_GENERATE)

    def _on_tab(self, index: int) -> None:
        if index == TAB_RUNS:
            self.runs.refresh()

    # ---- persistence --------------------------------------------------------------------------
    def _restore(self) -> None:
        s = open_settings()
        geometry = s.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 820)
        state = s.value("window/state")
        if state is not None:
            self.restoreState(state)
        for pane in (self.setup, self.training, self.runs):
            pane.restore_settings(s)
        self.tabs.setCurrentIndex(int(s.value("window/tab", 0)))

    def _save_settings(self) -> None:
        s = open_settings()
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("window/tab", self.tabs.currentIndex())
        for pane in (self.setup, self.training, self.runs):
            pane.save_settings(s)
        s.sync()

    # ---- closing ------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        if self.training.is_running():
            event.ignore()
            if self._close_requested:
                return  # already stopping; the worker's finished signal closes the window
            if not dialogs.ask_yes_no(
                self, "Training is running", "Stop training, save a checkpoint and quit?"
            ):
                return
            self._close_requested = True
            self.run.worker.finished.connect(self._close_after_stop, Qt.ConnectionType.QueuedConnection)
            self.training.stop()
            self.statusBar().showMessage("Stopping training and saving a checkpoint before closing…")
            return
        self._save_settings()
        self._shutdown_workers()
        self.closed.emit()
        event.accept()

    def _close_after_stop(self) -> None:
        QTimer.singleShot(0, self.close)  # after TrainingPane has cleared its worker

    def _shutdown_workers(self) -> None:
        """Ask every background task to end and wait for it, so no thread outlives the window."""
        self._warm_up_wanted = False
        self.setup.shutdown()
        shutdown = getattr(self.session_controller, "shutdown", None)
        if callable(shutdown):
            shutdown()
        workers.cancel_all()
        workers.wait_all()
