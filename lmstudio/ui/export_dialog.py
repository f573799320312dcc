"""File → Export…: write a run's model for Hugging Face Transformers or ONNX Runtime (docs/export.md).

A small dialog: the run, the format, the checkpoint, the destination. The export runs in a TaskWorker (it
imports transformers or the ONNX exporter and checks its own result: seconds, never on the GUI thread);
the dialog shows its progress, then what was written and how closely it matches lmstudio's logits. When the
optional libraries are missing it says which and how to install them, and Export stays disabled.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from lmstudio.ui import dialogs
from lmstudio.ui.workers import TaskWorker, start_worker

FORMATS = {
    "hf": "Hugging Face folder (transformers: GPT2LMHeadModel, AutoTokenizer)",
    "onnx": "ONNX file (onnxruntime; every architecture)",
}


def default_destination(run_dir: str, fmt: str) -> str:
    name = Path(run_dir).name or "model"
    return str(Path.home() / "lmstudio-exports" / (f"{name}-hf" if fmt == "hf" else f"{name}.onnx"))


class ExportDialog(QDialog):
    exported = Signal(dict)  # {path, summary, notes} once an export has been written
    failed = Signal(str)

    def __init__(self, controller, run_dir: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Export a model")
        self.setObjectName("exportDialog")
        self.controller = controller
        self.worker: TaskWorker | None = None
        self.run_edit = QLineEdit(run_dir)
        self.run_edit.setObjectName("exportRun")
        self.format_box = QComboBox()
        self.format_box.setObjectName("exportFormat")
        for key, text in FORMATS.items():
            self.format_box.addItem(text, key)
        self.which_box = QComboBox()
        self.which_box.setObjectName("exportWhich")
        self.which_box.addItem("latest checkpoint", "latest")
        self.which_box.addItem("best checkpoint (lowest validation loss)", "best")
        self.step_box = QCheckBox(
            "Also write the step graph (KV cache / recurrent state) for incremental decoding"
        )
        self.step_box.setObjectName("exportStep")
        self.out_edit = QLineEdit(default_destination(run_dir, "hf") if run_dir else "")
        self.out_edit.setObjectName("exportOut")
        self.message = QLabel("")
        self.message.setObjectName("exportMessage")
        self.message.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setVisible(False)
        form = QFormLayout()
        form.addRow("Run folder", self._with_button(self.run_edit, "Browse…", self._browse_run))
        form.addRow("Format", self.format_box)
        form.addRow("Weights", self.which_box)
        form.addRow("", self.step_box)
        form.addRow("Save to", self._with_button(self.out_edit, "Browse…", self._browse_out))
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.export_button = QPushButton("Export")
        self.export_button.setObjectName("exportButton")
        self.export_button.setDefault(True)
        self.buttons.addButton(self.export_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.export_button.clicked.connect(self.start_export)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.message)
        layout.addWidget(self.progress)
        layout.addWidget(self.buttons)
        self.format_box.currentIndexChanged.connect(self._on_format)
        self.resize(640, self.sizeHint().height())
        self._on_format()

    def _with_button(self, edit: QLineEdit, text: str, slot) -> QWidget:
        row = QWidget()
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(edit, 1)
        button = QPushButton(text)
        button.clicked.connect(slot)
        box.addWidget(button)
        return row

    # ---- state --------------------------------------------------------------------------------
    def fmt(self) -> str:
        return str(self.format_box.currentData())

    def is_busy(self) -> bool:
        return self.worker is not None

    def _on_format(self) -> None:
        fmt = self.fmt()
        self.step_box.setEnabled(fmt == "onnx")
        run, out = self.run_edit.text().strip(), self.out_edit.text().strip()
        other = "onnx" if fmt == "hf" else "hf"
        if run and (not out or out == default_destination(run, other)):
            self.out_edit.setText(default_destination(run, fmt))
        missing = self.controller.export_missing(fmt)
        self.message.setText(missing)
        self.export_button.setEnabled(not missing and not self.is_busy())

    def _browse_run(self) -> None:
        path = dialogs.open_folder(self, "Choose the run to export", self.run_edit.text())
        if path:
            self.run_edit.setText(path)
            self.out_edit.setText(default_destination(path, self.fmt()))

    def _browse_out(self) -> None:
        current = self.out_edit.text().strip()
        if self.fmt() == "hf":
            parent = dialogs.open_folder(
                self, "Choose where the export folder goes", str(Path(current).parent)
            )
            if parent:
                self.out_edit.setText(str(Path(parent) / Path(current or "model-hf").name))
        else:
            path = dialogs.save_file(self, "Save the ONNX model as", current, "ONNX models (*.onnx)")
            if path:
                self.out_edit.setText(path if path.lower().endswith(".onnx") else path + ".onnx")

    # ---- the export ---------------------------------------------------------------------------
    def start_export(self) -> None:
        if self.is_busy():
            return
        run, out, fmt = self.run_edit.text().strip(), self.out_edit.text().strip(), self.fmt()
        if not run or not out:
            self.message.setText("Choose the run folder and where to save the export.")
            return
        overwrite = False
        if Path(out).exists():
            if not dialogs.ask_yes_no(
                self, "Replace?", f"{out} already exists. Replace it with this export?"
            ):
                return
            overwrite = True
        which, step = str(self.which_box.currentData()), fmt == "onnx" and self.step_box.isChecked()
        worker = TaskWorker(
            lambda progress, cancel: self.controller.export_run(
                run, fmt, out, which=which, overwrite=overwrite, step=step, progress=progress, cancel=cancel
            )
        )
        worker.progress.connect(self._on_progress)
        worker.done.connect(self._on_done)
        worker.failed.connect(self._on_failed)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.export_button.setEnabled(False)
        self.buttons.button(QDialogButtonBox.StandardButton.Close).setEnabled(False)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.message.setText("Exporting and checking the result against lmstudio…")
        start_worker(worker)

    @Slot(float)
    def _on_progress(self, fraction: float) -> None:
        self.progress.setValue(int(round(100 * fraction)))

    @Slot(object)
    def _on_done(self, result: dict) -> None:
        notes = "".join(f"\n• {n}" for n in result.get("notes", []))
        self.message.setText(f"{result['summary'][0].upper()}{result['summary'][1:]}.{notes}")
        self.exported.emit(result)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.message.setText("The export failed: " + message.split("\n\n", 1)[0])
        self.failed.emit(message)

    @Slot()
    def _on_finished(self) -> None:
        self.worker = None
        self.progress.setVisible(False)
        self.buttons.button(QDialogButtonBox.StandardButton.Close).setEnabled(True)
        self.export_button.setEnabled(not self.controller.export_missing(self.fmt()))

    def reject(self) -> None:
        if self.is_busy():  # the export finishes what it started (it writes atomically); wait for it
            self.message.setText("Still exporting: the dialog closes when the export has finished or failed.")
            return
        super().reject()
