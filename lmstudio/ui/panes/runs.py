"""The Runs tab: every saved run, how it ended, its settings and samples, its curves overlaid with others.

Tick several runs to draw them on the same axes (e.g. an RNN, an LSTM and a Transformer trained on the
same corpus), switching the x axis between steps and wall-clock seconds to see which learns faster.
The table says how each run ended (``run_status``: finished, stopped at N of M, failed and why) and
which one is training now (from the window's ``TrainingRun``, which it follows); runs can be renamed
and deleted (after a question) here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from lmstudio import measures, run_status
from lmstudio.ui import dialogs
from lmstudio.ui.controller import Controller
from lmstudio.ui.panes.bakeoff import BakeoffBox
from lmstudio.ui.training_run import TrainingRun
from lmstudio.ui.widgets.plots import PALETTE, MetricPlot
from lmstudio.ui.workers import describe_error

COLUMNS = ("", "run", "state", "arch", "corpus", "steps", "best val loss", "full-split val", "duration")
STATE_COLUMN = 2


# what the overlay can show: label -> (x key for step axis, x key for time axis, y key)
METRICS = {
    "validation loss": ("eval_step", "eval_time", "val_loss"),
    "training loss (batch)": ("step", "time", "loss"),
    "validation perplexity": ("eval_step", "eval_time", "val_ppl"),
    "next-token accuracy": ("eval_step", "eval_time", "val_acc"),
}


def busy_note(pid: int | None) -> str:
    """What the run column adds for a run some process is training (its lock is held)."""
    if pid is None:
        return ""
    if pid == os.getpid():
        return " (training)"
    return f" (training in another process{f', pid {pid}' if pid else ''})"


def skipped_note(skipped: list[dict]) -> str:
    """A line under the list naming the folders that look like runs but could not be read."""
    if not skipped:
        return ""
    names = "; ".join(f"{Path(s['path']).name}: {s['reason']}" for s in skipped[:5])
    more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return f"\nSkipped {len(skipped)} damaged folder{'s' if len(skipped) > 1 else ''}: {names}{more}"


class RunsPane(QWidget):
    run_selected = Signal(str)  # run_dir: the run Generate and Inspect should use
    open_config = Signal(str)  # run_dir: load this run's settings into Setup
    continue_requested = Signal(str)  # run_dir: resume training from its last checkpoint
    run_renamed = Signal(str, str)  # old run_dir, new run_dir
    run_deleted = Signal(str)  # run_dir
    error_shown = Signal(str)

    def __init__(self, controller: Controller, run: TrainingRun | None = None, parent: QWidget | None = None):
        """``run``: the window's live run, so the table says which run trains now and the overlay grows."""
        super().__init__(parent)
        self.controller = controller
        self.live = run
        self.runs: list[dict] = []
        self._curves: dict[str, dict] = {}  # run_dir -> arrays (cached; refreshed for the live run)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("runsTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.currentCellChanged.connect(self._on_current_changed)
        self.refresh_btn = QPushButton("Refresh")
        self.refresh_btn.clicked.connect(self.refresh)
        self.use_btn = QPushButton("Generate / inspect with this run")
        self.use_btn.setObjectName("useRun")
        self.use_btn.clicked.connect(self._use_current)
        self.setup_btn = QPushButton("Load its settings")
        self.setup_btn.clicked.connect(
            lambda: self.current_run() and self.open_config.emit(self.current_run())
        )
        self.continue_btn = QPushButton("Continue training")
        self.continue_btn.setObjectName("continueRun")
        self.continue_btn.setToolTip("Resume from the last checkpoint (a finished run trains as long again)")
        self.continue_btn.clicked.connect(self._continue_current)
        self.rename_btn = QPushButton("Rename…")
        self.rename_btn.setObjectName("renameRun")
        self.rename_btn.clicked.connect(self.rename_current)
        self.delete_btn = QPushButton("Delete…")
        self.delete_btn.setObjectName("deleteRun")
        self.delete_btn.clicked.connect(self.delete_current)
        self.folder_label = QLabel()
        self.folder_label.setWordWrap(True)
        buttons = QHBoxLayout()
        for b in (self.refresh_btn, self.use_btn, self.setup_btn, self.continue_btn):
            buttons.addWidget(b)
        buttons.addStretch(1)
        self.bakeoff = BakeoffBox(controller)
        self.bakeoff.runs_done.connect(self.show_bakeoff)
        self.bakeoff.run_started.connect(self._on_bakeoff_run)
        self.bakeoff.error_shown.connect(self.error_shown)
        manage = QHBoxLayout()
        manage.addWidget(self.rename_btn)
        manage.addWidget(self.delete_btn)
        manage.addStretch(1)

        self.metric = QComboBox()
        self.metric.addItems(list(METRICS))
        self.metric.setObjectName("overlayMetric")
        self.x_axis = QComboBox()
        self.x_axis.addItems(["step", "wall-clock seconds"])
        self.x_axis.setObjectName("overlayXAxis")
        self.metric.currentIndexChanged.connect(self.redraw_overlay)
        self.x_axis.currentIndexChanged.connect(self.redraw_overlay)
        self.plot = MetricPlot("Compare runs", "validation loss")
        plot_bar = QHBoxLayout()
        plot_bar.addWidget(QLabel("Show"))
        plot_bar.addWidget(self.metric)
        plot_bar.addWidget(QLabel("against"))
        plot_bar.addWidget(self.x_axis)
        plot_bar.addStretch(1)
        plot_host = QWidget()
        plot_layout = QVBoxLayout(plot_host)
        plot_layout.setContentsMargins(0, 0, 0, 0)
        plot_layout.addLayout(plot_bar)
        plot_layout.addWidget(self.plot, 1)

        self.config_text = QPlainTextEdit(readOnly=True)
        self.samples_text = QPlainTextEdit(readOnly=True)
        details = QTabWidget()
        details.addTab(self.config_text, "Settings")
        details.addTab(self.samples_text, "Samples")

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(QLabel("Tick runs to compare their curves; select one to see its details."))
        left_layout.addWidget(self.table, 2)
        left_layout.addLayout(buttons)
        left_layout.addLayout(manage)
        left_layout.addWidget(self.bakeoff)
        left_layout.addWidget(self.folder_label)
        left_layout.addWidget(details, 1)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(plot_host)
        split.setSizes([520, 560])
        QVBoxLayout(self).addWidget(split)
        if run is not None:
            run.state_changed.connect(self._on_live_state)
            run.checkpoint_saved.connect(self._on_live_checkpoint)
            run.ended.connect(self._on_live_ended)

    # ---- the list ---------------------------------------------------------------------------
    def refresh(self) -> None:
        checked = set(self.checked_runs())
        current = self.current_run()
        try:
            self.runs = self.controller.list_runs()
            self.folder_label.setText(
                f"Runs folder: {self.controller.runs_dir()}"
                + skipped_note(getattr(self.controller, "skipped_runs", []))
            )
        except Exception as exc:
            self.error_shown.emit(describe_error(exc))
            self.runs = []
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.runs))
        for row, run in enumerate(self.runs):
            path = str(run.get("path", ""))
            box = QTableWidgetItem()
            box.setFlags(
                Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
            )
            box.setCheckState(Qt.CheckState.Checked if path in checked else Qt.CheckState.Unchecked)
            box.setData(Qt.ItemDataRole.UserRole, path)
            self.table.setItem(row, 0, box)
            best = run.get("best_val_loss")
            full = run.get("full_val_loss")
            steps, max_steps = run.get("steps", 0), run.get("max_steps", 0)
            values = (
                (run.get("name") or Path(path).name) + busy_note(run.get("training_pid")),
                self.state_text(run),
                run.get("arch", ""),
                run.get("corpus", ""),
                f"{steps:,} / {max_steps:,}" if isinstance(steps, int) and isinstance(max_steps, int) else "",
                f"{best:.4f}" if isinstance(best, float) and math.isfinite(best) else "–",
                # the whole validation split, where it was scored for the latest weights (else unknown)
                f"{full:.4f}" if isinstance(full, float) and math.isfinite(full) else "–",
                measures.clock(run.get("elapsed")),
            )
            for col, value in enumerate(values, start=1):
                item = QTableWidgetItem(str(value))
                item.setToolTip(path)
                self.table.setItem(row, col, item)
        self.table.blockSignals(False)
        for row, run in enumerate(self.runs):
            if str(run.get("path")) == current:
                self.table.setCurrentCell(row, 1)
        self._curves.clear()
        self.redraw_overlay()

    def state_text(self, run: dict) -> str:
        """How the run ended, or what the live run is doing now (the window knows better than the disk)."""
        live = self.live
        if live is not None and live.is_running() and str(run.get("path")) == live.run_dir:
            return run_status.describe(live.state, live.step, live.max_steps)
        return str(run.get("state_text") or "")

    def _on_live_state(self, state: str) -> None:
        for row, run in enumerate(self.runs):
            item = self.table.item(row, STATE_COLUMN)
            if item is not None and self.live is not None and str(run.get("path")) == self.live.run_dir:
                item.setText(self.state_text(run))

    def _on_live_checkpoint(self, run_dir: str, step: int) -> None:
        self.invalidate(run_dir)
        if run_dir not in self.run_paths():
            self.refresh()  # the new run's first checkpoint: it joins the table
        elif run_dir in self.checked_runs():  # a live run ticked in the overlay grows with it
            self.redraw_overlay()

    def _on_live_ended(self, run_dir: str, state: str) -> None:
        self.refresh()
        if run_dir:
            self.invalidate(run_dir)
            self.set_checked(run_dir, True)
            self.select_run(run_dir)

    def run_paths(self) -> list[str]:
        return [str(r.get("path", "")) for r in self.runs]

    def checked_runs(self) -> list[str]:
        out = []
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item is not None and item.checkState() == Qt.CheckState.Checked:
                out.append(item.data(Qt.ItemDataRole.UserRole))
        return out

    def set_checked(self, run_dir: str, on: bool = True) -> None:
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item.data(Qt.ItemDataRole.UserRole) == run_dir:
                item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def current_run(self) -> str:
        row = self.table.currentRow()
        item = self.table.item(row, 0) if row >= 0 else None
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else ""

    def select_run(self, run_dir: str) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == run_dir:
                self.table.setCurrentCell(row, 1)
                return

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == 0:
            self.redraw_overlay()

    def _on_current_changed(self, row: int, *_) -> None:
        path = self.current_run()
        if not path:
            return
        try:
            self.config_text.setPlainText(self.controller.run_config(path).to_toml())
        except Exception as exc:
            self.config_text.setPlainText(describe_error(exc))
        try:
            samples = self.controller.run_samples(path)
            self.samples_text.setPlainText(
                "\n\n".join(f"— step {s.get('step', '?')} —\n{s.get('text', '')}" for s in reversed(samples))
            )
        except Exception as exc:
            self.samples_text.setPlainText(describe_error(exc))

    def _continue_current(self) -> None:
        path = self.current_run()
        if path:
            self.continue_requested.emit(path)

    def run_summary(self, run_dir: str) -> dict:
        return next((r for r in self.runs if str(r.get("path")) == run_dir), {})

    def rename_current(self) -> None:
        path = self.current_run()
        if not path:
            return
        if self._is_live(path):
            self.error_shown.emit("This run is training; rename it after it stops.")
            return
        name = dialogs.ask_text(
            self, "Rename run", "New name (it is also the folder's name):", Path(path).name
        )
        if name is None or name.strip() == Path(path).name:
            return
        try:
            new = str(self.controller.rename_run(path, name))
        except Exception as exc:
            self.error_shown.emit(describe_error(exc))
            return
        checked = path in self.checked_runs()
        self.refresh()
        self.set_checked(new, checked)
        self.select_run(new)
        self.run_renamed.emit(path, new)

    def delete_current(self) -> None:
        path = self.current_run()
        if not path:
            return
        if self._is_live(path):
            self.error_shown.emit("This run is training; stop it before deleting it.")
            return
        if not dialogs.ask_yes_no(
            self,
            "Delete run",
            f"Delete the run {Path(path).name}?\n\nIts folder {path} (weights, history, samples) is "
            "deleted for good.",
        ):
            return
        try:
            self.controller.delete_run(path)
        except Exception as exc:
            self.error_shown.emit(describe_error(exc))
            return
        self.invalidate(path)
        self.refresh()
        self.run_deleted.emit(path)

    def _is_live(self, path: str) -> bool:
        return self.live is not None and self.live.is_running() and path == self.live.run_dir

    def _use_current(self) -> None:
        path = self.current_run()
        if path:
            self.run_selected.emit(path)

    def _on_bakeoff_run(self, run_dir: str) -> None:
        self.refresh()  # the new contestant appears in the list at once

    def show_bakeoff(self, run_dirs: list[str]) -> None:
        """Tick exactly the bake-off's runs and plot their validation loss against training time."""
        self.refresh()
        for path in self.checked_runs():
            self.set_checked(path, False)
        for path in run_dirs:
            self.set_checked(path, True)
        self.metric.setCurrentText("validation loss")
        self.x_axis.setCurrentIndex(1)
        self.redraw_overlay()

    # ---- settings kept between launches (a QSettings) -----------------------------------------
    def restore_settings(self, s) -> None:
        self.metric.setCurrentIndex(int(s.value("runs/metric", 0)))
        self.x_axis.setCurrentIndex(int(s.value("runs/x_axis", 0)))

    def save_settings(self, s) -> None:
        s.setValue("runs/metric", self.metric.currentIndex())
        s.setValue("runs/x_axis", self.x_axis.currentIndex())

    # ---- overlay ----------------------------------------------------------------------------
    def invalidate(self, run_dir: str) -> None:
        """Forget cached curves of a run that is still being written (the live one)."""
        self._curves.pop(run_dir, None)

    def curves(self, run_dir: str) -> dict:
        if run_dir not in self._curves:
            self._curves[run_dir] = self.controller.run_curves(run_dir)
        return self._curves[run_dir]

    def redraw_overlay(self) -> None:
        label = self.metric.currentText()
        step_x, time_x, y_key = METRICS[label]
        by_time = self.x_axis.currentIndex() == 1
        self.plot.getPlotItem().setLabel("left", label)
        self.plot.set_x_label("wall-clock seconds (training time)" if by_time else "step")
        for key in self.plot.curve_keys():
            self.plot.remove_curve(key)
        names = {str(r.get("path")): (r.get("name") or Path(str(r.get("path"))).name) for r in self.runs}
        for n, run_dir in enumerate(self.checked_runs()):
            try:
                data = self.curves(run_dir)
            except Exception as exc:
                self.error_shown.emit(describe_error(exc))
                continue
            colour = PALETTE[n % len(PALETTE)]
            self.plot.add_curve(
                run_dir, names.get(run_dir, run_dir), colour, symbol="o" if y_key != "loss" else None
            )
            self.plot.set_series(run_dir, data[time_x if by_time else step_x], data[y_key])
        self.plot.refresh()
        self.plot.autoscale()
