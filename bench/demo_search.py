"""The search behind the demo presets: candidate settings trained for the same time, alternating, scored
on the whole validation split.

    PYTHONPATH=$PWD /work/venv/bin/python bench/demo_search.py --budget 90 --rounds 2
    PYTHONPATH=$PWD /work/venv/bin/python bench/demo_search.py --budget 30 --only lstm_base,lstm_ctx256

Each round trains every candidate once (in a fresh process each, in the listed order, so drift in the
machine's speed hits all of them alike); the script prints every run and then, per candidate, the median
full-split validation loss, the median tokens/s and the steps reached. Candidates are overrides of one base
(tiny Shakespeare, char tokens, ``train.max_time`` = budget, cosine decay over the time). What each one
tried and bought is in docs/benchmarks.md ("90-second demo").

On a shared machine compare candidates with each other only: the absolute losses depend on how much of the
two cores each run got (the load average is printed). ``--cpu-clock`` makes the comparison independent of
the load: each run trains on one torch thread and its budget is that thread's CPU time
(``time.thread_time``), not the wall clock. One core for 90 s is less than an idle machine's two cores for
90 s (two threads train about 1.7x as fast as one in an earlier measurement), so a candidate that reaches the target on
90 CPU-seconds of one thread should reach it on an idle 2-core machine too; bench/demo_preset.py then
checks that claim for real on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.demo_preset import run_seed  # noqa: E402

BASE = [
    "corpus.source=tiny_shakespeare",
    "tokenizer.kind=char",
    "train.max_steps=10000000",
    "train.warmup_steps=50",
    "train.schedule=cosine",
    "train.weight_decay=0.0",
    "train.grad_clip=1.0",
    "train.eval_interval=500",
    "train.eval_iters=10",
    "train.log_interval=20",
    "train.sample_interval=0",
    "model.dropout=0.0",
    "model.tie_weights=true",
]
LSTM = ["model.arch=lstm", "model.n_layer=2", "model.n_embd=256", "model.hidden_size=256"]
CANDIDATES: dict[str, list[str]] = {
    # the lstm_shakespeare preset's model and batch, its schedule put on the clock
    "lstm_base": LSTM + ["model.block_size=64", "train.batch_size=32", "train.lr=2e-3", "train.min_lr=1e-4"],
    # a higher peak rate: the decay to the floor comes with the time budget
    "lstm_lr4e-3": LSTM
    + ["model.block_size=64", "train.batch_size=32", "train.lr=4e-3", "train.min_lr=1e-4"],
    # the same tokens per step in longer windows: fewer positions start from an empty state
    "lstm_ctx256": LSTM
    + ["model.block_size=256", "train.batch_size=8", "train.lr=3e-3", "train.min_lr=1e-4"],
    # the two that paid, together
    "lstm_ctx256_lr4e-3": LSTM
    + ["model.block_size=256", "train.batch_size=8", "train.lr=4e-3", "train.min_lr=1e-4"],
    "lstm_ctx128": LSTM
    + ["model.block_size=128", "train.batch_size=16", "train.lr=3e-3", "train.min_lr=1e-4"],
    # a GRU is three gates to the LSTM's four
    "gru_ctx128": ["model.arch=gru", "model.n_layer=2", "model.n_embd=256", "model.hidden_size=256"]
    + ["model.block_size=128", "train.batch_size=16", "train.lr=3e-3", "train.min_lr=1e-4"],
    # wider and shallower
    "lstm1x512_ctx128": ["model.arch=lstm", "model.n_layer=1", "model.n_embd=128", "model.hidden_size=512"]
    + [
        "model.block_size=128",
        "train.batch_size=16",
        "train.lr=3e-3",
        "train.min_lr=1e-4",
        "model.tie_weights=false",
    ],
    # the baby GPT at its tuned rate, on the clock
    "gpt_baby": [
        "model.arch=transformer",
        "model.n_layer=4",
        "model.n_head=4",
        "model.n_embd=128",
        "model.bias=false",
    ]
    + [
        "model.block_size=64",
        "train.batch_size=12",
        "train.lr=2e-3",
        "train.min_lr=2e-4",
        "train.weight_decay=0.1",
    ],
}


def child(settings: list[str], out: str) -> int:
    """One run on one thread with the trainer's clock on this thread's CPU time (``--cpu-clock``)."""
    import functools
    import time

    import torch

    from lmstudio.config import RunConfig
    from lmstudio.engine import trainer as trainer_module
    from lmstudio.engine.stopwatch import Stopwatch

    torch.set_num_threads(1)
    # the budget counts this thread's CPU seconds: the trainer's clock (a Stopwatch) reads thread_time
    trainer_module.Stopwatch = functools.partial(Stopwatch, clock=time.thread_time)
    cfg = RunConfig(name="demo-search").override(settings).validate()
    for event in trainer_module.Trainer(cfg, out).run():
        print(json.dumps(event.to_dict()), flush=True)
    return 0


def run_cpu_clock(settings: list[str], seed: int, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", str(out), "--", *settings, f"train.seed={seed}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    full = [e for e in events if e["event"] == "FullEvalMetrics"]
    done = [e for e in events if e["event"] == "Finished"]
    steps = [e["tokens_per_s"] for e in events if e["event"] == "StepMetrics"]
    return {
        "rc": proc.returncode,
        "full_val_loss": full[-1]["val_loss"] if full else None,
        "estimate": full[-1]["estimate"] if full else None,
        "steps": done[-1]["step"] if done else None,
        "tokens_per_s": statistics.median(steps) if steps else None,  # per CPU-second of one thread
        "error": proc.stderr.strip().splitlines()[-1] if proc.returncode and proc.stderr.strip() else "",
    }


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[4:], sys.argv[2])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=90.0, help="seconds of training per run")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--only", help="comma-separated candidate names (default: all)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument(
        "--cpu-clock", action="store_true", help="one thread, budget in its CPU seconds (load-independent)"
    )
    args = p.parse_args()
    names = [n for n in (args.only.split(",") if args.only else CANDIDATES) if n]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        p.error(f"unknown candidates {unknown}; known: {', '.join(CANDIDATES)}")
    clock = "CPU seconds of one thread" if args.cpu_clock else "s wall, default threads"
    print(
        f"budget {args.budget:g} {clock}, {args.rounds} round(s), load {os.getloadavg()[0]:.2f}", flush=True
    )
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        preset = Path(tmp) / "base.toml"
        preset.write_text('name = "demo-search"\n', encoding="utf-8")
        for rnd in range(args.rounds):
            for name in names:
                extra = BASE + CANDIDATES[name] + [f"train.max_time={args.budget}"]
                out = Path(tmp) / f"{name}-{rnd}"
                if args.cpu_clock:
                    r = run_cpu_clock(extra, args.seed + rnd, out)
                else:
                    r = run_seed(str(preset), args.seed + rnd, out, extra)
                results[name].append(r)
                loss = r["full_val_loss"]
                print(
                    f"round {rnd + 1} {name:18s} full val {loss if loss is None else f'{loss:.4f}'}  "
                    f"steps {r['steps']}  {(r['tokens_per_s'] or 0):,.0f} tok/s  "
                    f"load {os.getloadavg()[0]:.2f}{'  ERROR ' + r['error'] if r['rc'] else ''}",
                    flush=True,
                )
    print("\n| candidate | full-split val (median) | runs | tokens/s (median) | steps (median) |")
    print("|---|---:|---|---:|---:|")
    for name, rs in results.items():
        losses = [r["full_val_loss"] for r in rs if r["full_val_loss"] is not None]
        tps = [r["tokens_per_s"] for r in rs if r["tokens_per_s"]]
        steps = [r["steps"] for r in rs if r["steps"]]
        print(
            f"| {name} | {statistics.median(losses):.4f} | {', '.join(f'{x:.4f}' for x in losses)} | "
            f"{statistics.median(tps):,.0f} | {statistics.median(steps):,.0f} |"
            if losses
            else f"| {name} | – | failed | – | – |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
