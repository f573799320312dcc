"""Start-up time of the app: from process start to the window's first paint, for each tab being the last open.

Each launch is a whole new process (``python -c`` building the real window through ``lmstudio.ui.app``), timed
from just before the parent starts it to the child's first paint event on the main window. "cold" launches use
an empty bytecode cache (``-X pycache_prefix`` pointing at a fresh folder: every module compiled again); "warm"
ones reuse a filled one. The operating system's file cache is not dropped (the machine is shared). The runs
folder holds one run, so the Runs tab has something to list. Launches alternate tabs round-robin; medians.

    QT_QPA_PLATFORM=offscreen python bench/startup.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABS = ("Setup", "Training", "Runs", "Generate", "Inspect")

CHILD = r"""
import sys, time
from PySide6.QtCore import QEvent, QObject, QSettings, QTimer
from lmstudio.ui.app import make_application
from lmstudio.ui.main_window import MainWindow, open_settings

app = make_application([])
QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, sys.argv[1])
settings = open_settings()
settings.setValue("window/tab", int(sys.argv[2]))
settings.sync()


class FirstPaint(QObject):
    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Paint and not hasattr(self, "at"):
            self.at = time.time()
            QTimer.singleShot(0, app.quit)
        return False


window = MainWindow()
watcher = FirstPaint()
window.installEventFilter(watcher)
window.show()
app.exec()
print(watcher.at)
window.close()
from lmstudio.ui import workers
workers.wait_all()
"""


def fake_run(root: Path) -> None:
    sys.path.insert(0, str(REPO))
    from lmstudio import config as C
    from lmstudio import runfolder

    run = root / "lstm"
    run.mkdir(parents=True, exist_ok=True)
    (run / runfolder.CONFIG_FILE).write_text(C.RunConfig(name="lstm").to_json(), encoding="utf-8")
    header = json.dumps({"__metadata__": {"step": "10"}}).encode()
    (run / runfolder.LATEST_FILE).write_bytes(len(header).to_bytes(8, "little") + header)


def launch(tab: int, pycache: Path, tmp: Path) -> float:
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen"),
        "LMSTUDIO_RUNS": str(tmp / "runs"),
        "LMSTUDIO_CACHE": str(tmp / "cache"),
        "PYTHONPATH": str(REPO),
    }
    started = time.time()
    out = subprocess.run(
        [sys.executable, "-X", f"pycache_prefix={pycache}", "-c", CHILD, str(tmp / "qsettings"), str(tab)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1]) - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="launches per tab and kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        fake_run(tmp / "runs")
        warm_cache = tmp / "pycache-warm"
        launch(0, warm_cache, tmp)  # fill the warm bytecode cache once
        times: dict[tuple[str, int], list[float]] = {}
        for i in range(args.repeat):
            for tab in range(len(TABS)):
                times.setdefault(("cold", tab), []).append(launch(tab, tmp / f"pycache-cold-{i}-{tab}", tmp))
                times.setdefault(("warm", tab), []).append(launch(tab, warm_cache, tmp))
    print(f"{'last tab':10} {'cold s (median)':>16} {'warm s (median)':>16}   launches: {args.repeat} each")
    for tab, name in enumerate(TABS):
        cold, warm = statistics.median(times[("cold", tab)]), statistics.median(times[("warm", tab)])
        print(f"{name:10} {cold:16.2f} {warm:16.2f}")


if __name__ == "__main__":
    main()
