"""host_memory on and off, side by side, where the app trains: the Trainer iterated in a worker thread.

``LMSTUDIO_KEEP_FREED_MEMORY=1`` (lmstudio/engine/host_memory.py) raises glibc's mmap and trim thresholds for
the whole process. Measured in the main thread (the CLI, bench/vs_nanogpt.py) it saves 2-5 % per step on the
baby GPT; the app iterates the trainer in a QThread, whose glibc arena grows in heaps of at most 64 MiB, so
the gain there is its own question. This bench answers it: two warm worker processes (the setting is
process-wide, so one process each), "on" and "off", each training the same preset in a ``threading.Thread``
that creates and iterates ``Trainer.run()`` as the app's worker does. They take turns, one chunk of
``--chunk`` optimizer steps each, the order flipping every round (A B, B A, ...), so a machine whose speed
drifts slows both alike; ``--processes`` fresh pairs are started one after another. Printed: the median
ms/step of each over all chunks, their ratio, the median of back-to-back pair ratios, page faults per step
and peak resident memory.

    .venv/bin/python bench/host_memory_thread.py                               # baby GPT, 3 pairs of 8 chunks
    .venv/bin/python bench/host_memory_thread.py --preset baby_shakespeare --override model.n_layer=6 \
        --override model.n_embd=384 --override train.batch_size=16              # a larger model
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import statistics
import sys
import tempfile
import threading
import time

from warm_worker import WarmWorker, memory_summary  # bench/ is the script's own folder, first on sys.path

SIDES = ("on", "off")


def _config(preset: str, overrides: list[str], chunk: int):
    from lmstudio.config import load_preset

    return (
        load_preset(preset)
        .override(
            [
                "train.device=cpu",
                "train.compile=off",
                *overrides,
                f"train.log_interval={chunk}",
                "train.eval_interval=10000000",
                "train.sample_interval=0",
                "train.checkpoint_interval=10000000",
                "train.max_steps=10000000",
                "train.full_eval=false",
            ]
        )
        .validate()
    )


def train_in_thread(cfg, run_dir: str, cache: str, requests: queue.Queue, replies: queue.Queue) -> None:
    """The worker thread: builds and iterates the trainer (as the app's TrainWorker does); one chunk per request,
    from one StepMetrics to the next. The first chunk, which includes preparing the data, is a warm-up."""
    from lmstudio.engine.trainer import Trainer
    from lmstudio.events import Failed, Started, StepMetrics

    events = Trainer(cfg, run_dir, cache_dir=cache).run()
    try:
        while requests.get() == "chunk":
            start = time.perf_counter()
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for event in events:
                if isinstance(event, StepMetrics):
                    break
                if isinstance(event, Failed):
                    replies.put({"failed": event.message})
                    return
                if isinstance(event, Started):
                    start = time.perf_counter()
                    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            seconds = time.perf_counter() - start
            replies.put(
                {
                    "seconds": seconds,
                    "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                }
            )
    finally:
        events.close()


def worker(args) -> None:
    """Serve the parent: a warm-up chunk, then one timed chunk per "chunk" line on stdin, one JSON line back."""
    import torch

    from lmstudio.engine import host_memory

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = _config(args.preset, args.override, args.chunk)
    requests: queue.Queue = queue.Queue()
    replies: queue.Queue = queue.Queue()
    thread = threading.Thread(
        target=train_in_thread, args=(cfg, args.run, args.cache, requests, replies), name="training"
    )
    thread.start()
    requests.put("chunk")  # warm-up: data preparation, first-touch memory, thread pool
    warm = replies.get()
    if "failed" in warm:
        raise SystemExit(warm["failed"])
    ready = {"ready": True, "threads": torch.get_num_threads(), "tuned": host_memory.mmap_threshold > 0}
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        if line.strip() != "chunk":
            break
        requests.put("chunk")
        reply = replies.get()
        if "failed" in reply:
            raise SystemExit(reply["failed"])
        reply = {
            "ms": reply["seconds"] / args.chunk * 1000,
            "faults_per_step": reply["faults"] / args.chunk,
            "peak_rss_mb": reply["peak_rss_mb"],
        }
        print(json.dumps(reply), flush=True)
    requests.put("stop")
    thread.join()


class Side(WarmWorker):
    """One worker process, kept warm and asked for one chunk at a time."""

    def __init__(self, name: str, args, cache: str, run_dir: str):
        env = {**os.environ, "LMSTUDIO_KEEP_FREED_MEMORY": "1" if name == "on" else "0"}
        cmd = [sys.executable, __file__, "--worker", "--cache", cache, "--run", run_dir]
        cmd += ["--preset", args.preset, "--chunk", str(args.chunk)]
        for o in args.override:
            cmd += ["--override", o]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        super().__init__(name, cmd, env)
        self.threads, self.tuned = self.ready["threads"], self.ready["tuned"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="baby_shakespeare")
    p.add_argument(
        "--override", action="append", default=[], help="a setting, e.g. model.n_layer=6 (repeatable)"
    )
    p.add_argument(
        "--processes", type=int, default=3, help="fresh pairs of worker processes, one after another"
    )
    p.add_argument("--chunk", type=int, default=20, help="steps per timed chunk")
    p.add_argument("--chunks", type=int, default=8, help="timed chunks per process, after one warm-up chunk")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    results: dict[str, list[dict]] = {n: [] for n in SIDES}
    threads, tuned = 0, {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = f"{tmp}/cache"
        for i in range(args.processes):
            # a fresh warm pair; one chunk each in turn, the order flipping every round
            pair = [Side(n, args, cache, f"{tmp}/{n}-{i}") for n in SIDES]
            threads, tuned = pair[0].threads, {s.name: s.tuned for s in pair}
            for r in range(args.chunks):
                for side in pair if r % 2 == 0 else pair[::-1]:
                    results[side.name].append(side.chunk())
            for side in pair:
                side.close()
    med = {n: statistics.median(r["ms"] for r in results[n]) for n in SIDES}
    pairs = [a["ms"] / b["ms"] for a, b in zip(results["on"], results["off"], strict=True)]
    summary = {
        "preset": args.preset,
        "overrides": args.override,
        "threads": threads,
        "tuned": tuned,  # whether each side's allocator was tuned (on: only with Linux and glibc)
        "processes": args.processes,
        "chunk": args.chunk,
        "chunks": args.chunks,
        "median_ms": {n: round(v, 2) for n, v in med.items()},
        "all_ms": {n: [round(r["ms"], 1) for r in results[n]] for n in SIDES},
        **memory_summary(results),
        "ratio_on_over_off": round(med["on"] / med["off"], 4),
        "median_pair_ratio": round(statistics.median(pairs), 4),
        "pairs_on_faster": sum(x < 1 for x in pairs),
        "pairs": len(pairs),
    }
    if args.json:
        print(json.dumps(summary))
        return
    print(
        f"{args.preset} {' '.join(args.override)} in a worker thread, {threads} torch threads, {args.processes} "
        f"pairs of processes, {args.chunks} alternating chunks of {args.chunk} steps (medians over all chunks)"
    )
    for n in SIDES:
        print(
            f"  host_memory {n:3s} (tuned: {tuned[n]!s:5s}) {med[n]:7.2f} ms/step   "
            f"{summary['page_faults_per_step'][n]:6d} page faults/step   peak RSS {summary['peak_rss_mb'][n]} MB   "
            f"{summary['all_ms'][n]}"
        )
    print(
        f"  on / off = {summary['ratio_on_over_off']:.4f} (medians), {summary['median_pair_ratio']:.4f} (median "
        f"of back-to-back pairs; on faster in {summary['pairs_on_faster']} of {summary['pairs']})"
    )


if __name__ == "__main__":
    main()
