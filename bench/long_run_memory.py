"""A long training run in the app (offscreen): does memory stay flat, the event loop responsive, the curves complete?

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/long_run_memory.py [--steps 20000] [--arch lstm]

A MainWindow trains a tiny model (1 layer, width 32, context 8, batch 4, 300 Tang poems) for ``--steps``
steps with a report every step (``log_interval=1``: the heaviest event load the UI can get), an evaluation
every 500 steps and a sample every 2000. Meanwhile a 10 ms QTimer measures how late the GUI event loop
serves it, and a 1 s timer records the process RSS (psutil) against the step reached.
Prints: RSS at 10 % of the run (after warm-up) and at the end, growth per 1,000 steps (least squares over the
second half), the timer lateness p50/p99/max, the training speed, and whether the plots hold every point.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--arch", default="lstm", choices=("rnn", "lstm", "gru", "transformer"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="lmstudio-longrun-")
    os.environ["LMSTUDIO_RUNS"] = os.path.join(tmp, "runs")
    os.environ["LMSTUDIO_CACHE"] = os.path.join(tmp, "cache")

    import psutil
    import torch
    from PySide6.QtCore import QCoreApplication, QElapsedTimer, QEventLoop, QSettings, QTimer

    from lmstudio import events as E
    from lmstudio.config import RunConfig
    from lmstudio.ui.app import make_application
    from lmstudio.ui.controller import Controller
    from lmstudio.ui.main_window import MainWindow

    torch.set_num_threads(args.threads)
    app = make_application()
    QCoreApplication.setOrganizationName("lmstudio-bench")
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, os.path.join(tmp, "settings"))
    Controller().warm_up()
    steps, eval_every = args.steps, 500
    cfg = RunConfig(name="long").override(
        [
            "corpus.source=tang300",
            "tokenizer.kind=char",
            f"model.arch={args.arch}",
            "model.n_layer=1",
            "model.n_embd=32",
            "model.hidden_size=32",
            "model.n_head=2",
            "model.block_size=8",
            "train.batch_size=4",
            f"train.max_steps={steps}",
            "train.log_interval=1",
            f"train.eval_interval={eval_every}",
            "train.eval_iters=2",
            "train.sample_interval=2000",
            "train.sample_tokens=32",
            "train.warmup_steps=50",
            "train.device=cpu",
            "train.compile=off",
        ]
    )

    win = MainWindow(warm_up=False)
    win.resize(1280, 800)
    win.show()
    proc = psutil.Process()
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]
    gaps: list[float] = []
    rss: list[tuple[int, float]] = []  # (step, MB)
    counts = {"steps": 0, "evals": 0, "events": 0}
    speeds: list[float] = []

    stalls: list[tuple[int, float]] = []  # (step, ms) of each tick more than 200 ms late

    def tick():
        now = clock.nsecsElapsed()
        gaps.append((now - last[0]) / 1e6)
        if gaps[-1] > 210:
            stalls.append((win.training.last_step, gaps[-1] - 10))
        last[0] = now

    def sample_memory():
        rss.append((win.training.last_step, proc.memory_info().rss / 2**20))

    def on_event(ev):
        counts["events"] += 1
        if isinstance(ev, E.StepMetrics):
            counts["steps"] += 1
            speeds.append(ev.tokens_per_s)
        elif isinstance(ev, E.EvalMetrics):
            counts["evals"] += 1

    lateness = QTimer()
    lateness.setTimerType(lateness.timerType().PreciseTimer)
    lateness.setInterval(10)
    lateness.timeout.connect(tick)
    memory = QTimer()
    memory.setInterval(1000)
    memory.timeout.connect(sample_memory)
    loop = QEventLoop()
    started = time.perf_counter()
    win.training.start(cfg)
    win.training.worker.event.connect(on_event)
    win.training.worker.finished.connect(loop.quit)
    lateness.start()
    memory.start()
    loop.exec()
    wall = time.perf_counter() - started
    lateness.stop()
    memory.stop()
    app.processEvents()
    sample_memory()
    loss_points = win.training.loss_plot.point_count("loss")
    val_points = win.training.loss_plot.point_count("val_loss")
    win.close()
    app.processEvents()

    late = sorted(g - 10.0 for g in gaps)
    warm = [m for s, m in rss if s >= steps // 10] or [m for _, m in rss]
    second_half = [(s, m) for s, m in rss if s >= steps // 2]
    slope = 0.0
    if len(second_half) >= 3:
        xs, ys = [s for s, _ in second_half], [m for _, m in second_half]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        denom = sum((x - mx) ** 2 for x in xs) or 1.0
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / denom * 1000
    print(
        f"{args.arch}, {steps} steps in {wall:.0f} s ({steps / wall:.0f} steps/s, median "
        f"{statistics.median(speeds):.0f} tokens/s), {counts['events']} events"
    )
    print(
        f"RSS: start {rss[0][1]:.0f} MB, at 10% {warm[0]:.0f} MB, peak {max(m for _, m in rss):.0f} MB, "
        f"end {rss[-1][1]:.0f} MB; growth over the second half {slope:+.2f} MB per 1,000 steps"
    )
    print(
        f"10 ms timer lateness over {len(gaps)} ticks: p50 {statistics.median(late):.1f} ms, "
        f"p99 {late[int(0.99 * (len(late) - 1))]:.1f} ms, max {late[-1]:.1f} ms"
    )
    print(
        f"curves: {loss_points} of {steps} step points, {val_points} of {-(-steps // eval_every)} validation points; "
        f"events seen: {counts['steps']} StepMetrics, {counts['evals']} EvalMetrics"
    )
    print(f"stalls over 200 ms: {len(stalls)}", " ".join(f"step {s}: {ms:.0f} ms" for s, ms in stalls[:10]))
    print("rss samples (step, MB):", " ".join(f"{s}:{m:.0f}" for s, m in rss[:: max(1, len(rss) // 12)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
