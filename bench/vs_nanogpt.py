"""lmstudio's trainer vs nanoGPT's train.py as it runs on a CPU, for nanoGPT's "baby" config, side by side.

nanoGPT is not installed here (and its code is not ours to ship), so the "nanogpt" contender re-creates what
its train.py does per iteration with the README's CPU command (``--device=cpu --compile=False
--log_interval=1``, baby sizes): a fresh ``np.memmap`` of train.bin per batch, int64 copies stacked into
(B, T), AdamW over the same decay groups with fused kernels only on CUDA (so torch's default foreach AdamW
here), the learning rate set every iteration, forward, the next batch fetched before backward, clipping,
``zero_grad(set_to_none=True)``, ``loss.item()`` every iteration for the log line, and glibc's default
allocator settings. The model is lmstudio's GPT, which is nanoGPT's architecture (pre-LN, fused QKV, SDPA,
GELU MLP, no biases, tied embeddings), so the two differ only in the loop and its runtime settings.

Each contender runs in its own process (lmstudio's allocator setting is process-wide), one after the other,
alternating ``lmstudio, nanogpt, nanogpt, lmstudio, ...``; each process trains a warm-up chunk, then
``--chunks`` chunks of ``--chunk`` steps, and reports its median ms/step. Printed: the median over processes
and the ratio of the medians, plus the ratio of each back-to-back pair.

    .venv/bin/python bench/vs_nanogpt.py                        # 4 processes of each
    .venv/bin/python bench/vs_nanogpt.py --also lmstudio-defaults   # + the trainer without host_memory
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONTENDERS = ("lmstudio", "nanogpt", "lmstudio-defaults")


def _config(cache: str):
    from lmstudio.config import load_preset
    from lmstudio.engine.data import prepare_data

    cfg = load_preset("baby_shakespeare").override(["train.device=cpu", "train.compile=off"]).validate()
    tokenizer, data = prepare_data(cfg, cache_dir=cache)
    cfg.model.vocab_size = tokenizer.vocab_size
    return cfg, data


def lmstudio_chunks(cache: str, run_dir: str, chunk: int):
    """The Trainer on the preset, reports every ``chunk`` steps; evaluation, samples, saving out of the way."""
    from lmstudio.engine.events import Failed, Started, StepMetrics
    from lmstudio.engine.trainer import Trainer

    cfg, _ = _config(cache)
    cfg = cfg.override([f"train.log_interval={chunk}", "train.eval_interval=10000000", "train.sample_interval=0",
                        "train.checkpoint_interval=10000000", "train.max_steps=10000000"])
    events = Trainer(cfg, run_dir, cache_dir=cache).run()
    while True:
        start = time.perf_counter()
        for event in events:
            if isinstance(event, StepMetrics):
                break
            if isinstance(event, Failed):
                raise SystemExit(event.message)
            if isinstance(event, Started):
                start = time.perf_counter()
        yield time.perf_counter() - start


def nanogpt_chunks(cache: str, run_dir: str, chunk: int):
    """train.py's CPU iteration, re-created (see the module docstring)."""
    import numpy as np
    import torch

    from lmstudio.engine.device import seed_everything
    from lmstudio.engine.models import build_model
    from lmstudio.engine.schedule import lr_at, param_groups

    cfg, data = _config(cache)
    t, block, batch = cfg.train, cfg.model.block_size, cfg.train.batch_size
    bin_path = Path(run_dir) / "train.bin"
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    np.asarray(data.train, dtype=np.uint16).tofile(bin_path)
    seed_everything(t.seed)
    model = build_model(cfg.model)
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2))

    def get_batch():
        # train.py opens the memmap anew for every batch (its comment: to avoid a memory leak)
        arr = np.memmap(bin_path, dtype=np.uint16, mode="r")
        ix = torch.randint(len(arr) - block, (batch,))
        x = torch.stack([torch.from_numpy(arr[i:i + block].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(arr[i + 1:i + 1 + block].astype(np.int64)) for i in ix])
        return x, y

    step = 0
    x, y = get_batch()
    while True:
        start = time.perf_counter()
        for _ in range(chunk):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, t)
            _, loss = model(x, y)
            x, y = get_batch()  # fetched while (on a GPU) the forward pass runs
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()  # the per-iteration log line of --log_interval=1
            step += 1
        yield time.perf_counter() - start


def worker(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    chunks = (nanogpt_chunks if args.worker == "nanogpt" else lmstudio_chunks)(args.cache, args.run, args.chunk)
    next(chunks)  # warm-up: first-touch memory, allocator, thread pool
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ms = [next(chunks) / args.chunk * 1000 for _ in range(args.chunks)]
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (args.chunk * args.chunks)
    chunks.close()
    print(json.dumps({"worker": args.worker, "threads": torch.get_num_threads(), "faults_per_step": faults,
                      "median_ms": statistics.median(ms), "all_ms": [round(m, 1) for m in ms]}))


def run_one(name: str, args, cache: str, tmp: str, i: int) -> dict:
    env = dict(os.environ)
    if name == "lmstudio-defaults":
        env["LMSTUDIO_KEEP_FREED_MEMORY"] = "0"
    cmd = [sys.executable, __file__, "--worker", "nanogpt" if name == "nanogpt" else "lmstudio",
           "--cache", cache, "--run", f"{tmp}/{name}-{i}", "--chunk", str(args.chunk), "--chunks", str(args.chunks)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=4, help="processes of each contender")
    p.add_argument("--chunk", type=int, default=20, help="steps per timed chunk")
    p.add_argument("--chunks", type=int, default=6, help="timed chunks per process, after one warm-up chunk")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--also", choices=CONTENDERS[2:], action="append", default=[], help="a third contender")
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", choices=("lmstudio", "nanogpt"), help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    names = ["lmstudio", "nanogpt", *args.also]
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        cache = f"{tmp}/cache"
        _config(cache)  # build the token cache once, outside the timings
        for i in range(args.processes):
            order = names if i % 2 == 0 else names[::-1]  # a drifting load favours neither side
            for name in order:
                results[name].append(run_one(name, args, cache, tmp, i))
    med = {n: statistics.median(r["median_ms"] for r in results[n]) for n in names}
    pairs = [a["median_ms"] / b["median_ms"] for a, b in zip(results["lmstudio"], results["nanogpt"], strict=True)]
    summary = {"threads": results["lmstudio"][0]["threads"], "processes": args.processes,
               "chunk": args.chunk, "chunks": args.chunks,
               "median_ms": {n: round(v, 1) for n, v in med.items()},
               "per_process_ms": {n: [round(r["median_ms"], 1) for r in results[n]] for n in names},
               "page_faults_per_step": {n: round(statistics.median(r["faults_per_step"] for r in results[n]))
                                        for n in names},
               "ratio_lmstudio_over_nanogpt": round(med["lmstudio"] / med["nanogpt"], 3),
               "pair_ratios": [round(x, 3) for x in pairs]}
    if args.json:
        print(json.dumps(summary))
        return
    print(f"baby GPT, {summary['threads']} threads, {args.processes} processes of each, "
          f"{args.chunks} chunks of {args.chunk} steps per process (medians)")
    for n in names:
        print(f"  {n:18s} {med[n]:6.1f} ms/step   per process {summary['per_process_ms'][n]}   "
              f"{summary['page_faults_per_step'][n]} page faults/step")
    print(f"  lmstudio / nanogpt = {summary['ratio_lmstudio_over_nanogpt']:.3f}   "
          f"back-to-back pairs {summary['pair_ratios']}")
    if "lmstudio-defaults" in med:
        print(f"  lmstudio / lmstudio-defaults = {med['lmstudio'] / med['lmstudio-defaults']:.3f}")


if __name__ == "__main__":
    main()
