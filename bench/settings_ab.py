"""One preset under several sets of overrides, side by side: warm worker processes take turns.

    nice -n 5 env PYTHONPATH=$PWD /work/venv/bin/python bench/settings_ab.py --preset demo_tang \\
        --variant 1thread:train.threads=1 --variant 2threads:train.threads=2 --seconds 20 --rounds 6

Each variant runs lmstudio's Trainer on the preset plus its overrides in its own process (the thread count
and the allocator settings are per process), with evaluation, samples, checkpoints and the time budget out of
the way. After a warm-up (the step-0 evaluation, first-touch memory, the thread pool) each worker sizes its
chunk to about ``--seconds`` of training from its own warm-up pace; then the workers train one chunk each in
turn, never two at once, the order reversing every round, so a machine whose speed drifts (a shared one does,
by tens of percent within a minute) slows every variant alike. Printed per variant: the median tokens/s over
its chunks (wall clock), the median ms/step, the process's CPU seconds per 1,000 tokens (a spinning thread
burns CPU without training, so this is shown but not the figure that decides), and against the first variant
the median of the per-round ratios and how many rounds it was faster in. The load average before and after is
printed: on a loaded machine the ratios carry over, the absolute figures do not.

The bench measures speed, not what a run reaches in its time: a larger batch does more per step and may
need fewer steps or not; bench/demo_preset.py measures the loss a preset reaches in its budget.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from warm_worker import WarmWorker  # bench/ is the script's own folder, first on sys.path

ROOT = Path(__file__).resolve().parents[1]
OUT_OF_THE_WAY = [
    "train.max_time=0",  # the stopwatch runs while a worker waits for its turn: no budget
    "train.max_steps=10000000",
    "train.eval_interval=10000000",
    "train.sample_interval=0",
    "train.checkpoint_interval=10000000",
    "train.full_eval=false",
]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(args) -> None:
    """Serve the parent: a warm-up, then one chunk of ``steps`` per "chunk" line on stdin, one JSON line back."""
    import torch

    from lmstudio.config import load_preset
    from lmstudio.engine.trainer import Trainer
    from lmstudio.events import Failed, StepMetrics

    cfg = load_preset(args.preset).override(OUT_OF_THE_WAY + args.set).validate()
    t = cfg.train
    log = t.log_interval
    tokens_per_step = t.batch_size * t.grad_accum * cfg.model.block_size
    events = Trainer(cfg, args.run, cache_dir=args.cache).run()

    def train(reports: int) -> float:
        """Seconds for ``reports`` more step reports (``log_interval`` steps each)."""
        start = time.perf_counter()
        for event in events:
            if isinstance(event, Failed):
                raise SystemExit(event.message)
            if isinstance(event, StepMetrics):
                reports -= 1
                if reports == 0:
                    return time.perf_counter() - start
        raise SystemExit("the run ended")

    train(1)  # set-up, the step-0 evaluation, the first steps
    warm = train(args.warmup_reports)
    per_report = warm / args.warmup_reports
    reports = max(1, round(args.seconds / per_report))
    threads = torch.get_num_threads()
    print(json.dumps({"ready": True, "threads": threads, "steps": reports * log}), flush=True)
    for line in sys.stdin:
        if line.strip() != "chunk":
            break
        cpu = _cpu_seconds()
        seconds = train(reports)
        cpu = _cpu_seconds() - cpu
        tokens = reports * log * tokens_per_step
        print(
            json.dumps(
                {
                    "tokens_per_s": tokens / seconds,
                    "ms_per_step": seconds / (reports * log) * 1000,
                    "cpu_s_per_ktok": cpu / tokens * 1000,
                    "seconds": seconds,
                }
            ),
            flush=True,
        )
    events.close()


class Worker(WarmWorker):
    def __init__(self, name: str, settings: list[str], args, cache: str, run_dir: str):
        cmd = [sys.executable, __file__, "--worker", "--preset", args.preset, "--cache", cache]
        cmd += [
            "--run",
            run_dir,
            "--seconds",
            str(args.seconds),
            "--warmup-reports",
            str(args.warmup_reports),
        ]
        for s in settings:
            cmd += ["--set", s]
        super().__init__(name, cmd, {**os.environ, "PYTHONPATH": str(ROOT)})
        self.threads, self.steps = self.ready["threads"], self.ready["steps"]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``name:key=value,key=value`` (``name:`` alone: the preset as it is)."""
    name, _, settings = text.partition(":")
    return name, [s for s in settings.split(",") if s]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo_tang")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="a set of overrides (give two or more; the first is the reference)",
    )
    p.add_argument(
        "--seconds", type=float, default=20.0, help="about this many seconds of training per chunk"
    )
    p.add_argument("--rounds", type=int, default=6, help="chunks per variant, taking turns")
    p.add_argument("--warmup-reports", type=int, default=3, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    variants = [parse_variant(v) for v in args.variant]
    if len(variants) < 2 or len({n for n, _ in variants}) != len(variants):
        p.error("give two or more --variant NAME:SETTINGS with different names")
    load_before = os.getloadavg()
    results: dict[str, list[dict]] = {n: [] for n, _ in variants}
    with tempfile.TemporaryDirectory() as tmp:
        cache = f"{tmp}/cache"
        team = []
        for name, settings in variants:  # one after another, so the first builds the token cache alone
            team.append(Worker(name, settings, args, cache, f"{tmp}/{name}"))
        for r in range(args.rounds):
            for w in team if r % 2 == 0 else team[::-1]:
                results[w.name].append(w.chunk())
        for w in team:
            w.close()
    load_after = os.getloadavg()
    ref = variants[0][0]
    summary: dict = {
        "preset": args.preset,
        "rounds": args.rounds,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "variants": {},
    }
    for w in team:
        rows = results[w.name]
        ratios = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(rows, results[ref], strict=True)]
        summary["variants"][w.name] = {
            "settings": dict(variants)[w.name],
            "threads": w.threads,
            "steps_per_chunk": w.steps,
            "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in rows)),
            "ms_per_step": round(statistics.median(r["ms_per_step"] for r in rows), 1),
            "cpu_s_per_ktok": round(statistics.median(r["cpu_s_per_ktok"] for r in rows), 4),
            "all_tokens_per_s": [round(r["tokens_per_s"]) for r in rows],
            "median_round_ratio": round(statistics.median(ratios), 3),
            "rounds_faster": sum(x > 1 for x in ratios),
        }
    if args.json:
        print(json.dumps(summary))
        return
    print(
        f"{args.preset}: {len(team)} warm processes, {args.rounds} chunks of about {args.seconds:g} s each, "
        f"taking turns; load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    for name, v in summary["variants"].items():
        versus = (
            "(reference)"
            if name == ref
            else f"x{v['median_round_ratio']:.3f} of {ref} (median per round), "
            f"faster in {v['rounds_faster']} of {args.rounds}"
        )
        print(
            f"  {name:12s} {v['threads']} thr  {v['tokens_per_s']:7,d} tok/s  {v['ms_per_step']:7.1f} ms/step  "
            f"{v['cpu_s_per_ktok']:.4f} CPU-s/ktok  {versus}  {v['all_tokens_per_s']}"
        )
    if max(load_before[0], load_after[0]) > 1.5:
        print("NOTE: the machine was loaded: the ratios carry over, the absolute tokens/s do not.")


if __name__ == "__main__":
    main()
