"""File → Export: the dialog writes a checked export off the GUI thread and says when the extra is missing."""

from __future__ import annotations

import sys

import pytest
from PySide6.QtCore import Qt

from lmstudio.cli import main
from lmstudio.ui import dialogs
from lmstudio.ui.controller import Controller
from lmstudio.ui.export_dialog import ExportDialog
from tests.ui.conftest import TINY, Recorder


@pytest.fixture
def run_dir(tmp_path):
    argv = [
        "train",
        "--preset",
        "tiny_tang",
        "--arch",
        "lstm",
        "--out",
        str(tmp_path / "lstm"),
        "--device",
        "cpu",
    ]
    sets = [s for s in TINY if not s.startswith("train.max_steps")] + ["train.max_steps=4"]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    return str(tmp_path / "lstm")


def make_dialog(qtbot, run_dir: str) -> ExportDialog:
    dialog = ExportDialog(Controller(), run_dir)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def choose(dialog: ExportDialog, fmt: str) -> None:
    dialog.format_box.setCurrentIndex(dialog.format_box.findData(fmt))


def test_onnx_export_runs_in_the_background_and_reports_the_check(qtbot, run_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    dialog = make_dialog(qtbot, run_dir)
    choose(dialog, "onnx")
    assert dialog.out_edit.text().endswith("lstm.onnx") and dialog.step_box.isEnabled()
    out = tmp_path / "exports" / "model.onnx"  # a folder that does not exist yet
    dialog.out_edit.setText(str(out))
    dialog.step_box.setChecked(True)
    with qtbot.waitSignal(dialog.exported, timeout=120_000) as blocker:
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
        assert dialog.is_busy() and not dialog.export_button.isEnabled()
        dialog.reject()  # closing while it works only says it is still working
        assert dialog.isVisible()
    qtbot.waitUntil(lambda: not dialog.is_busy(), timeout=30_000)
    assert blocker.args[0]["path"] == str(out)
    assert "onnxruntime logits match lmstudio's" in dialog.message.text()
    assert ort.InferenceSession(str(out)).get_outputs()[0].name == "logits"
    assert (tmp_path / "exports" / "model.step.onnx").is_file()
    assert dialog.export_button.isEnabled()


def test_an_existing_destination_is_replaced_only_when_the_user_says_so(
    qtbot, run_dir, tmp_path, monkeypatch
):
    pytest.importorskip("transformers")
    dialog = make_dialog(qtbot, run_dir)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    dialog.out_edit.setText(str(taken))
    no = Recorder(answer=False)
    monkeypatch.setattr(dialogs, "ask_yes_no", no)
    dialog.start_export()
    assert len(no.calls) == 1 and not dialog.is_busy()
    yes = Recorder(answer=True)
    monkeypatch.setattr(dialogs, "ask_yes_no", yes)
    with qtbot.waitSignal(dialog.failed, timeout=120_000) as blocker:
        dialog.start_export()  # the user said yes, but the folder is not an export: lmstudio keeps it
    qtbot.waitUntil(lambda: not dialog.is_busy(), timeout=30_000)
    assert "other files" in blocker.args[0] and "other files" in dialog.message.text()
    assert (taken / "notes.txt").read_text() == "mine"


def test_a_missing_extra_is_named_with_the_install_command(qtbot, run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    dialog = make_dialog(qtbot, run_dir)
    choose(dialog, "hf")
    assert "transformers" in dialog.message.text() and "pip install" in dialog.message.text()
    assert not dialog.export_button.isEnabled()


def test_file_menu_opens_the_dialog_on_the_current_run(window, run_dir):
    window.use_run(run_dir)
    window.act_export.trigger()
    dialog = window.export_dialog
    assert dialog.isVisible() and dialog.run_edit.text() == run_dir
    dialog.reject()
    assert not dialog.isVisible()
