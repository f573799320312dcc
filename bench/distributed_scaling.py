"""Tokens/s of one training run on 1 process against the same run on N processes (torchrun, DDP).

Each configuration is a whole ``lmstudio train`` process (``--nproc N`` for the distributed ones), with the same
preset and the same *global* batch; they take turns (A, B, C, A, B, C, ...) so that load from other jobs hits
all alike, and the figures are medians over rounds of the median tokens/s each run reported after its first
``--skip`` reports (start-up, first-touch memory). Evaluation and sampling are off.

    python bench/distributed_scaling.py                      # baby preset, 1 process x 2 threads vs 2 x 1, 1 x 1
    python bench/distributed_scaling.py --steps 300 --rounds 5
    python bench/distributed_scaling.py --nproc 4 --device cuda   # on a machine with 4 GPUs
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


def one_run(
    preset: str, steps: int, nproc: int, threads: int, device: str, skip: int, extra: list[str]
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "lmstudio", "train", "--preset", preset, "--out", f"{tmp}/run", "--json"]
        cmd += ["--device", device] if device else []
        cmd += ["--nproc", str(nproc)] if nproc > 1 else []
        for s in (
            f"train.max_steps={steps}",
            "train.eval_interval=1000000",
            "train.sample_interval=0",
            "train.log_interval=10",
            *extra,
        ):
            cmd += ["--set", s]
        env = dict(
            os.environ,
            OMP_NUM_THREADS=str(threads),
            LMSTUDIO_CACHE=f"{tmp}/cache",
            PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        )
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=False)
        wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    rates = [e["tokens_per_s"] for e in events if e["event"] == "StepMetrics"][skip:]
    started = next(e for e in events if e["event"] == "Started")
    return {"tok_s": statistics.median(rates), "wall": wall, "device": started["device"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="baby_shakespeare")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of the 1-process run")
    p.add_argument("--skip", type=int, default=3, help="reports (of 10 steps) to ignore at the start")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-one-thread", action="store_true", help="leave out the 1 process x 1 thread runs")
    a = p.parse_args()
    per_rank = max(1, a.threads // a.nproc)
    configs = [
        (f"1 process x {a.threads} threads", 1, a.threads),
        (f"{a.nproc} processes x {per_rank} thread(s)", a.nproc, per_rank),
    ]
    if a.threads != per_rank and not a.no_one_thread:
        configs.append((f"1 process x {per_rank} thread(s)", 1, per_rank))
    results: dict[str, list[dict]] = {name: [] for name, _, _ in configs}
    for r in range(a.rounds):
        for name, nproc, threads in configs:
            res = one_run(a.preset, a.steps, nproc, threads, a.device, a.skip, a.set)
            results[name].append(res)
            print(
                f"round {r + 1}: {name:28s} {res['tok_s']:9.0f} tok/s  wall {res['wall']:6.1f} s  "
                f"({res['device']})",
                flush=True,
            )
    base = statistics.median(x["tok_s"] for x in results[configs[0][0]])
    print(f"\nmedians over {a.rounds} rounds ({a.preset}, {a.steps} steps, device {a.device}):")
    for name, _, _ in configs:
        med = statistics.median(x["tok_s"] for x in results[name])
        wall = statistics.median(x["wall"] for x in results[name])
        print(f"  {name:28s} {med:9.0f} tok/s  ({med / base:.2f}x)  wall {wall:.1f} s")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
