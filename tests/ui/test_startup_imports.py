"""Building the window never imports torch (or tokenizers, safetensors) on the GUI thread, whatever tab
was open last: those imports take seconds, and the window would sit frozen for them at start-up.

Checked in a fresh interpreter (this test process has torch loaded already), with an import hook that
records which thread first imports each heavy package. The window is built without its warm-up worker,
so nothing else imports torch first and hides an import the GUI thread would make.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lmstudio import config as C
from lmstudio import run_history, runfolder

HEAVY = ("torch", "tokenizers", "safetensors")

SCRIPT = r"""
import importlib.abc, json, sys, threading

HEAVY = set(sys.argv[1].split(","))
first_import = {}  # package -> name of the thread that imported it first


class Recorder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in HEAVY and top not in first_import:
            first_import[top] = threading.current_thread().name
        return None  # let the real finders import it


sys.meta_path.insert(0, Recorder())

from PySide6.QtCore import QSettings
from lmstudio.ui import workers
from lmstudio.ui.app import make_application
from lmstudio.ui.main_window import MainWindow, open_settings

app = make_application([])
QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, sys.argv[2])
report = []
for tab in range(5):
    settings = open_settings()
    settings.setValue("window/tab", tab)
    settings.sync()
    window = MainWindow(warm_up=False)
    window.show()
    for _ in range(20):
        app.processEvents()
    report.append({"tab": window.tabs.currentIndex(), "runs_listed": window.runs.table.rowCount()})
    window.close()
    app.processEvents()
    workers.wait_all()
    app.processEvents()
print(json.dumps({"report": report, "first_import": first_import}))
"""


def _fake_run(root: Path) -> None:
    """A run folder written without the engine: settings, weights' header, history."""
    run = root / "lstm"
    run.mkdir(parents=True)
    cfg = C.RunConfig(name="lstm").override(["model.vocab_size=65"])
    (run / runfolder.CONFIG_FILE).write_text(cfg.to_json(), encoding="utf-8")
    header = json.dumps({"__metadata__": {"step": "10", "best_val": "2.5"}}).encode()
    (run / runfolder.LATEST_FILE).write_bytes(len(header).to_bytes(8, "little") + header)
    for step in (5, 10):
        run_history.append_jsonl(
            run / runfolder.METRICS_FILE, {"event": "StepMetrics", "step": step, "loss": 3.0}
        )
    run_history.append_jsonl(
        run / runfolder.METRICS_FILE, {"event": "EvalMetrics", "step": 10, "val_loss": 2.5}
    )


def _run_app(tmp_path: Path, script: str, *args: str) -> dict:
    """Run ``script`` in a fresh interpreter, offscreen, with its own runs, cache and settings folders; its
    last line of output is JSON."""
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "LMSTUDIO_RUNS": str(tmp_path / "runs"),
        "LMSTUDIO_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    out = subprocess.run(
        [sys.executable, "-c", script, *args, str(tmp_path / "qsettings")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_building_the_window_imports_no_torch_on_the_gui_thread_whatever_tab_was_last(tmp_path):
    _fake_run(tmp_path / "runs")
    result = _run_app(tmp_path, SCRIPT, ",".join(HEAVY))
    assert [r["tab"] for r in result["report"]] == [0, 1, 2, 3, 4]  # every tab really was restored
    assert result["report"][2]["runs_listed"] == 1, result  # the Runs tab listed the run folder
    on_gui_thread = {pkg: thread for pkg, thread in result["first_import"].items() if thread == "MainThread"}
    assert on_gui_thread == {}, f"imported on the GUI thread at start-up: {on_gui_thread}"


PAINT_SCRIPT = r"""
import json, sys
from PySide6.QtCore import QEvent, QObject, QSettings, QTimer
from lmstudio.ui.app import make_application
from lmstudio.ui.main_window import MainWindow

app = make_application([])
QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, sys.argv[1])


class FirstPaint(QObject):
    torch_loaded = None

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Paint and self.torch_loaded is None:
            self.torch_loaded = "torch" in sys.modules
        return False


window = MainWindow()
watcher = FirstPaint()
window.installEventFilter(watcher)
window.show()
poll = QTimer()  # until the warm-up worker has imported the engine
poll.timeout.connect(lambda: window.controller.ready and app.quit())
poll.start(20)
app.exec()
painted_first = watcher.torch_loaded is False
window.close()
print(json.dumps({"painted_before_torch": painted_first, "torch_after_warm_up": "torch" in sys.modules}))
"""


def test_the_engine_warm_up_starts_only_after_the_window_is_painted(tmp_path):
    """Importing torch takes seconds and holds the interpreter: the window paints first, then warms up."""
    result = _run_app(tmp_path, PAINT_SCRIPT)
    assert result == {"painted_before_torch": True, "torch_after_warm_up": True}
