"""The main window: Setup → Training → Runs → Generate → Inspect, as tabs a newcomer reads left to right.

It wires the panes together (a finished checkpoint refreshes the runs list and reloads the Generate and
Inspect tabs), owns the menus and the status bar (device, run state), remembers the layout and the
last settings between launches (QSettings) and closes cleanly while training: it asks, stops the worker
(the trainer saves a checkpoint), waits for the worker's ``finished`` signal, then closes.
"""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QLabel, QMainWindow, QTabWidget, QVBoxLayout, QWidget

from lmstudio import __version__
from lmstudio import config as C
from lmstudio.ui import dialogs, workers
from lmstudio.ui.about import AboutDialog
from lmstudio.ui.controller import Controller
from lmstudio.ui.panes.runs import RunsPane
from lmstudio.ui.panes.setup import SetupPane
from lmstudio.ui.panes.training import TrainingPane
from lmstudio.ui.workers import TaskWorker, describe_error, start_worker

ORGANIZATION = "lmstudio"
APPLICATION = "lmstudio"
TAB_SETUP, TAB_TRAINING, TAB_RUNS, TAB_GENERATE, TAB_INSPECT = range(5)
STATE_TEXT = {
    "idle": "Idle",
    "starting": "Starting…",
    "running": "Training",
    "paused": "Paused",
    "stopping": "Stopping (saving a checkpoint)…",
    "finished": "Finished",
    "stopped": "Stopped",
    "failed": "Failed",
}


def open_settings() -> QSettings:
    """The app's settings file (INI). Tests point ``QSettings.setPath`` at a temp folder."""
    org = QCoreApplication.organizationName() or ORGANIZATION
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, org, APPLICATION)


def placeholder(text: str) -> QWidget:
    page = QWidget()
    label = QLabel(text)
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setObjectName("placeholder")
    QVBoxLayout(page).addWidget(label)
    return page


class MainWindow(QMainWindow):
    run_selected = Signal(str)  # the run Generate/Inspect should show
    checkpoint_written = Signal(str)  # a run folder has a new checkpoint
    closed = Signal()

    def __init__(self, controller: Controller | None = None, *, warm_up: bool = True):
        super().__init__()
        self.setWindowTitle("lmstudio — train a small language model")
        self.controller = controller or Controller()
        self._closing = False
        self._close_requested = False
        self.setup = SetupPane(self.controller)
        self.training = TrainingPane(self.controller)
        self.runs = RunsPane(self.controller)
        self.runs.bakeoff.busy = self.training.is_running
        self.session_controller = None
        self.tabs = QTabWidget()
        self.tabs.setObjectName("mainTabs")
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.setup, "Setup")
        self.tabs.addTab(self.training, "Training")
        self.tabs.addTab(self.runs, "Runs")
        self.generate_pane, self.inspect_pane = self._make_session_panes()
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
        if warm_up:
            self._start_warm_up()

    # ---- E's panes (Generate, Inspect) --------------------------------------------------------
    def _make_session_panes(self) -> tuple[QWidget, QWidget]:
        """The Generate and Inspect tabs, or a placeholder when those panes are not available."""
        try:
            from lmstudio.ui.panes.generation import GenerationPane
            from lmstudio.ui.panes.inspector import InspectorPane
            from lmstudio.ui.session_controller import SessionController
        except ImportError:
            return (
                placeholder("Generate: train or open a run first."),
                placeholder("Inspect: train or open a run first."),
            )
        self.session_controller = SessionController(self)
        return GenerationPane(self.session_controller, self), InspectorPane(self.session_controller, self)

    def use_run(self, run_dir: str) -> None:
        """Show ``run_dir`` in Generate and Inspect (loads its latest checkpoint off the GUI thread)."""
        if self.session_controller is not None and run_dir:
            self.session_controller.set_run(run_dir)
        self.run_label.setText(f"Run: {run_dir}")
        self.run_selected.emit(run_dir)

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
        self.training.state_changed.connect(self._on_state)
        self.training.error_shown.connect(self.show_error)
        self.training.notice_shown.connect(self._on_notice)
        self.training.run_started.connect(self._on_run_started)
        self.training.device_used.connect(self.device_label.setText)
        self.training.checkpoint_written.connect(self._on_checkpoint)
        self.training.run_finished.connect(self._on_run_finished)
        self.runs.run_selected.connect(self._on_run_chosen)
        self.runs.open_config.connect(self._load_run_settings)
        self.runs.continue_requested.connect(self.continue_run)
        self.runs.error_shown.connect(self.show_error)
        self.tabs.currentChanged.connect(self._on_tab)

    def _start_warm_up(self) -> None:
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
        """Give Generate and Inspect the newest saved run, so they work straight away after a restart."""
        if self.training.is_running() or self.run_label.text():
            return
        try:
            runs = self.controller.list_runs()
        except Exception:  # an unreadable runs folder is reported when the Runs tab opens
            return
        finished = [r for r in runs if int(r.get("steps") or 0) > 0]
        if finished:
            self.use_run(str(finished[0]["path"]))

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
        self.training.start(cfg, resume_dir=run_dir)

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
        run = self.runs.current_run() or self.run_label.text().removeprefix("Run: ")
        self.export_dialog = ExportDialog(self.controller, run, self)
        self.export_dialog.open()

    def show_about(self) -> None:
        AboutDialog(__version__, self.controller.corpus_sources_text(), self).exec()

    # ---- reactions ----------------------------------------------------------------------------
    def _on_state(self, state: str) -> None:
        if state != "paused" and self._notice and self._notice == self.statusBar().currentMessage():
            self.statusBar().clearMessage()  # e.g. resumed after a failed save: the notice is done with
        text = STATE_TEXT.get(state, state)
        if state in ("running", "paused") and self.training.last_step:
            text += f" · step {self.training.last_step:,}"
        self.state_label.setText(text)
        self.act_pause.setText("&Resume training" if state == "paused" else "&Pause training")

    def _on_notice(self, message: str) -> None:
        # seen from any tab, for a minute or until the run changes state (a paused run waits for the user)
        self._notice = message
        self.statusBar().showMessage(message, 60_000)

    def _on_run_started(self, run_dir: str) -> None:
        self.run_label.setText(f"Run: {run_dir}")

    def _on_checkpoint(self, run_dir: str) -> None:
        self.runs.invalidate(run_dir)
        if run_dir in self.runs.checked_runs():  # a live run ticked in the overlay grows with it
            self.runs.redraw_overlay()
        self.checkpoint_written.emit(run_dir)
        if self.session_controller is not None and hasattr(self.session_controller, "checkpoint_written"):
            self.session_controller.checkpoint_written(run_dir)
        elif self.session_controller is not None:
            self.session_controller.set_run(run_dir)

    def _on_run_finished(self, run_dir: str, reason: str) -> None:
        self.runs.refresh()
        if run_dir:
            self.runs.invalidate(run_dir)
            self.runs.set_checked(run_dir, True)
            self.runs.select_run(run_dir)
            if reason != "failed":
                self.use_run(run_dir)

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
        cfg_json = s.value("setup/config")
        cfg = None
        if cfg_json:
            try:
                cfg = C.RunConfig.from_json(str(cfg_json))
            except C.ConfigError:
                cfg = None  # settings from another version: start from the defaults
        if cfg is None:
            cfg = self._default_config()
        self.setup.set_config(cfg)
        self.setup.steps.setCurrentRow(int(s.value("setup/step", 0)))
        self.tabs.setCurrentIndex(int(s.value("window/tab", 0)))
        self.runs.metric.setCurrentIndex(int(s.value("runs/metric", 0)))
        self.runs.x_axis.setCurrentIndex(int(s.value("runs/x_axis", 0)))
        self.training.log_box.setChecked(s.value("training/log_scale", "false") in (True, "true"))

    def _default_config(self) -> C.RunConfig:
        presets = self.controller.presets()
        for name in ("tiny_tang",):
            if name in presets:
                try:
                    return self.controller.load_preset(name)
                except Exception:
                    break
        return C.RunConfig()

    def _save_settings(self) -> None:
        s = open_settings()
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("window/tab", self.tabs.currentIndex())
        s.setValue("setup/step", self.setup.steps.currentRow())
        cfg, _ = self.setup.config()
        s.setValue("setup/config", cfg.to_json())
        s.setValue("runs/metric", self.runs.metric.currentIndex())
        s.setValue("runs/x_axis", self.runs.x_axis.currentIndex())
        s.setValue("training/log_scale", "true" if self.training.log_box.isChecked() else "false")
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
            self.training.worker.finished.connect(self._close_after_stop, Qt.ConnectionType.QueuedConnection)
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
        shutdown = getattr(self.session_controller, "shutdown", None)
        if callable(shutdown):
            shutdown()
        workers.cancel_all()
        workers.wait_all()
