"""The bake-off box on the Runs tab: five architectures, one corpus, the same time each, in one click.

It runs the engine's bake-off (engine/bakeoff.py, through the controller) in a worker thread. Each
contestant is an ordinary run, so when it is over the Runs tab ticks the five runs and plots them against
wall-clock seconds; the table (parameters, tokens/s, validation loss over the whole split, a sample) is
shown here.
"""

from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from lmstudio.ui.controller import Controller
from lmstudio.ui.workers import TrainWorker, start_worker

BUILTIN = ("tiny_shakespeare", "tang300", "tang_poems")


class _BakeoffWorker(TrainWorker):
    """A TrainWorker whose ``cancel`` (the window closing) stops the bake-off like the Stop button."""

    def __init__(self, make_events, control):
        super().__init__(make_events)
        self._control = control

    def cancel(self) -> None:
        self._control.stop()


class BakeoffBox(QGroupBox):
    runs_done = Signal(list)  # run folders of the contestants, in run order
    run_started = Signal(str)  # a contestant's run folder, as soon as it exists
    error_shown = Signal(str)

    def __init__(self, controller: Controller, parent: QWidget | None = None):
        super().__init__("Bake-off: every architecture, the same time each", parent)
        self.controller = controller
        self.worker = None
        self.control = None
        self.overrides: list[str] = []  # settings applied to every contestant (tests shrink the models)
        self.busy = lambda: False  # the window says whether another run is training
        self.rows: list = []
        self.corpus = QComboBox()
        self.corpus.setObjectName("bakeoffCorpus")
        self.corpus.addItems(list(BUILTIN))
        self.corpus.setEditable(True)  # a path to the user's own text works too
        self.budget = QDoubleSpinBox()
        self.budget.setObjectName("bakeoffBudget")
        self.budget.setRange(0.1, 3600.0)
        self.budget.setDecimals(1)
        self.budget.setValue(90.0)
        self.budget.setSuffix(" s each")
        self.start_btn = QPushButton("Run bake-off")
        self.start_btn.setObjectName("bakeoffStart")
        self.start_btn.setToolTip(
            "Train RNN, LSTM, GRU, convolutional and Transformer models of about 0.8M parameters one after "
            "another, each for the same wall-clock time, on the same text and tokenizer"
        )
        self.start_btn.clicked.connect(self.start)
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.stop_btn.clicked.connect(self.stop)
        self.status = QLabel("")
        self.status.setObjectName("bakeoffStatus")
        self.status.setWordWrap(True)
        self.table = QPlainTextEdit(readOnly=True)
        self.table.setObjectName("bakeoffTable")
        self.table.setMaximumHeight(150)
        self.table.hide()
        row = QHBoxLayout()
        for w in (QLabel("Corpus"), self.corpus, QLabel("Time"), self.budget, self.start_btn, self.stop_btn):
            row.addWidget(w)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.status)
        layout.addWidget(self.table)

    def is_running(self) -> bool:
        return self.worker is not None

    @Slot()
    def start(self) -> bool:
        if self.is_running():
            return False
        if self.busy():
            self.error_shown.emit(
                "A run is training; stop it first, so the bake-off has the machine to itself."
            )
            return False
        corpus, budget = self.corpus.currentText().strip(), float(self.budget.value())
        if not corpus:
            self.error_shown.emit("Choose a corpus for the bake-off.")
            return False
        self.control = self.controller.new_control()
        control, controller, overrides = self.control, self.controller, list(self.overrides)
        self.worker = _BakeoffWorker(
            lambda: controller.bakeoff_events(corpus, budget, control, overrides), control
        )
        self.worker.event.connect(self.on_event)
        self.worker.crashed.connect(self._on_crashed)
        self.worker.finished.connect(self._on_finished)
        self.rows = []
        self.table.hide()
        self.start_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self.status.setText(f"Preparing {corpus} and its tokenizer…")
        start_worker(self.worker)
        return True

    @Slot()
    def stop(self) -> None:
        if self.control is not None and self.is_running():
            self.control.stop()
            self.status.setText("Stopping the bake-off (the current run saves a checkpoint)…")

    def on_event(self, ev) -> None:
        kind = type(ev).__name__
        if kind == "BakeoffStarted":
            self.status.setText(
                f"{ev.index + 1} of {ev.total}: training the {ev.arch} model for {ev.budget:g} s…"
            )
            self.run_started.emit(ev.run_dir)
        elif kind == "FullEvalMetrics":
            self.status.setText(self.status.text() + f" whole-split validation loss {ev.val_loss:.4f}.")
        elif kind == "Failed":
            self.error_shown.emit(ev.message)
        elif kind == "BakeoffDone":
            self.rows = list(ev.rows)
            self.table.setPlainText(self.controller.bakeoff_table(self.rows))
            self.table.show()
            self.status.setText(
                f"Done: {len(self.rows)} architectures, {ev.budget:g} s each on {ev.corpus}. Their curves are "
                "ticked on the right, against wall-clock seconds."
            )
            self.runs_done.emit([r.run_dir for r in self.rows])

    def _on_crashed(self, message: str) -> None:
        self.error_shown.emit(message)
        self.status.setText("The bake-off stopped: " + message)

    def _on_finished(self) -> None:
        self.worker = None
        self.control = None
        self.start_btn.setEnabled(True)
        self.stop_btn.setEnabled(False)
