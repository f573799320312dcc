"""Is the window responsive while it trains, and does training in the app run as fast as headless?

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/gui_responsiveness.py [--steps 150] [--pairs 3] [--threads 1]

For each pair it runs, alternately:
  A. the app: a MainWindow trains the baby preset (4L/4H/128, ctx 64, batch 12, tiny Shakespeare) through
     its TrainWorker while a 10 ms QTimer measures how late the GUI event loop serves it;
  B. headless: ``python -m lmstudio train --preset baby_shakespeare --json`` with the same settings.
Throughput is the median of the trainer's own tokens/s reports (evaluation, sampling and saving are
excluded by the trainer), after the first report (warm-up). Prints per-run figures and the medians.
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

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def overrides(steps: int) -> list[str]:
    return [
        f"train.max_steps={steps}",
        f"train.eval_interval={steps}",
        "train.eval_iters=1",
        "train.sample_interval=0",
        "train.log_interval=10",
        "train.warmup_steps=10",
    ]


def run_headless(steps: int, runs: str) -> list[float]:
    cmd = [
        sys.executable,
        "-m",
        "lmstudio",
        "train",
        "--preset",
        "baby_shakespeare",
        "--json",
        "--out",
        os.path.join(runs, f"headless-{time.monotonic_ns()}"),
    ]
    for o in overrides(steps):
        cmd += ["--set", o]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return [e["tokens_per_s"] for e in events if e.get("event") == "StepMetrics"]


def run_app(app, steps: int) -> tuple[list[float], list[float]]:
    from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer

    from lmstudio import events as E
    from lmstudio.config import load_preset
    from lmstudio.ui.main_window import MainWindow

    win = MainWindow(warm_up=False)
    win.resize(1280, 800)
    win.show()
    speeds: list[float] = []
    gaps: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]

    def tick():
        now = clock.nsecsElapsed()
        gaps.append((now - last[0]) / 1e6)
        last[0] = now

    def on_event(ev):
        if isinstance(ev, E.StepMetrics):
            speeds.append(ev.tokens_per_s)

    timer = QTimer()
    timer.setTimerType(timer.timerType().PreciseTimer)
    timer.setInterval(10)
    timer.timeout.connect(tick)
    cfg = load_preset("baby_shakespeare").override(overrides(steps))
    loop = QEventLoop()  # the real, blocking event loop, as in the app (no polling)
    win.training.start(cfg)
    win.run.worker.event.connect(on_event)
    win.run.worker.finished.connect(loop.quit)
    timer.start()
    loop.exec()
    timer.stop()
    win.close()
    app.processEvents()
    return speeds, gaps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads for both sides (app: torch.set_num_threads, headless: "
        "OMP_NUM_THREADS); 0: torch's default",
    )
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="lmstudio-bench-")
    os.environ["LMSTUDIO_RUNS"] = os.path.join(tmp, "runs")
    os.environ["LMSTUDIO_CACHE"] = os.path.join(tmp, "cache")
    from PySide6.QtCore import QCoreApplication, QSettings

    from lmstudio.ui.app import make_application

    app = make_application()
    QCoreApplication.setOrganizationName("lmstudio-bench")
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, os.path.join(tmp, "settings"))
    run_headless(10, os.environ["LMSTUDIO_RUNS"])  # encode the corpus into the cache once, outside timing
    from lmstudio.ui.controller import Controller

    Controller().warm_up()  # import torch now, as the app does in a worker at start-up, not during timing
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the headless subprocess
    print(f"torch threads: {torch.get_num_threads()} (app and headless alike)", flush=True)
    app_speeds, cli_speeds, p99s, p50s = [], [], [], []
    for pair in range(args.pairs):
        order = ("app", "cli") if pair % 2 == 0 else ("cli", "app")
        for which in order:
            if which == "app":
                speeds, gaps = run_app(app, args.steps)
                late = sorted(g - 10.0 for g in gaps)
                p50 = statistics.median(late)
                p99 = late[int(0.99 * (len(late) - 1))]
                p50s.append(p50)
                p99s.append(p99)
                app_speeds.append(statistics.median(speeds[1:]))
                print(
                    f"pair {pair} app: {app_speeds[-1]:8.0f} tokens/s; 10 ms timer lateness p50 {p50:5.1f} ms, "
                    f"p99 {p99:5.1f} ms, max {late[-1]:5.1f} ms over {len(gaps)} ticks",
                    flush=True,
                )
            else:
                speeds = run_headless(args.steps, os.environ["LMSTUDIO_RUNS"])
                cli_speeds.append(statistics.median(speeds[1:]))
                print(f"pair {pair} cli: {cli_speeds[-1]:8.0f} tokens/s", flush=True)
    a, c = statistics.median(app_speeds), statistics.median(cli_speeds)
    print(f"\nmedian tokens/s: app {a:.0f}, headless {c:.0f}, app/headless = {a / c:.3f}")
    print(
        f"median of per-run 10 ms timer lateness: p50 {statistics.median(p50s):.1f} ms, "
        f"p99 {statistics.median(p99s):.1f} ms (worst run p99 {max(p99s):.1f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
