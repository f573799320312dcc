"""lmstudio's trainer vs nanoGPT's train.py as it runs on a CPU, for nanoGPT's "baby" config, side by side.

nanoGPT is not installed here (and its code is not ours to ship), so the "nanogpt" contender re-creates what
its train.py does per iteration with the README's CPU command (``--device=cpu --compile=False
--log_interval=1``, baby sizes): a fresh ``np.memmap`` of train.bin per batch, int64 copies stacked into
(B, T), AdamW over the same decay groups with fused kernels only on CUDA (so torch's default foreach AdamW
here), the learning rate set every iteration, forward, the next batch fetched before backward, clipping,
``zero_grad(set_to_none=True)``, ``loss.item()`` every iteration for the log line, and glibc's default
allocator settings. The model is lmstudio's GPT, which is nanoGPT's architecture (pre-LN, fused QKV, SDPA,
GELU MLP, no biases, tied embeddings), so the two differ only in the loop and its runtime settings.

Each contender runs in its own process (lmstudio's allocator setting is process-wide), kept warm; the
processes take turns, one chunk of ``--chunk`` steps each (order flipping every round), so a machine whose
speed drifts (it does here, by tens of percent within a minute) slows both alike. ``--processes`` fresh sets
of workers are started one after another, since one process can be luckier than another in where its memory
lands. Printed: medians over all chunks, their ratio, and the median ratio of back-to-back chunk pairs.

Further contenders ("Nearer the floor", docs/benchmarks.md), each the Trainer with one thing changed, taking
turns with the others in the same way: ``lmstudio-defaults`` (glibc's allocator defaults, no host_memory),
``lmstudio-foreach`` (torch's foreach AdamW instead of the fused CPU kernels), ``lmstudio-bf16``
(``train.precision=bf16``: autocast to bfloat16 on the CPU), ``lmstudio-compile`` (``train.compile=on``) and
``lmstudio-compile-bf16``. Compilation happens in a worker's warm-up chunk, so it is not in the step times;
the warm-up's seconds are printed beside them (inductor caches its kernels under /tmp/torchinductor_$USER,
so a rerun compiles faster). Each contender's median is printed as a ratio to the fp32 trainer's and to the
matrix-multiply floor (the step's FLOPs at this machine's sgemm rate; the bf16 gemm rate at the same shape
is printed too, and whether the CPU has AVX512-BF16 or AMX, without which bf16 runs in converted fp32).

    .venv/bin/python bench/vs_nanogpt.py                        # 3 sets of 8 chunks
    .venv/bin/python bench/vs_nanogpt.py --also lmstudio-defaults   # + the trainer without host_memory
    nice -n 5 .venv/bin/python bench/vs_nanogpt.py --also all       # every contender

"lmstudio" runs with ``LMSTUDIO_KEEP_FREED_MEMORY=1`` (host_memory is opt-in); "lmstudio-defaults" without it.
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

from warm_worker import WarmWorker, memory_summary  # bench/ is the script's own folder, first on sys.path

# contender: the Trainer's overrides (None: the train.py loop); lmstudio and nanogpt always run
CONTENDERS: dict[str, list[str] | None] = {
    "lmstudio": [],
    "nanogpt": None,
    "lmstudio-defaults": [],  # with LMSTUDIO_KEEP_FREED_MEMORY=0
    "lmstudio-foreach": [],  # with AdamW's fused CPU kernels off
    "lmstudio-bf16": ["train.precision=bf16"],
    "lmstudio-compile": ["train.compile=on"],
    "lmstudio-compile-bf16": ["train.compile=on", "train.precision=bf16"],
}
EXTRA = tuple(CONTENDERS)[2:]


def _config(cache: str):
    from lmstudio.config import load_preset
    from lmstudio.engine.data import prepare_data

    cfg = load_preset("baby_shakespeare").override(["train.device=cpu", "train.compile=off"]).validate()
    tokenizer, data = prepare_data(cfg, cache_dir=cache)
    cfg.model.vocab_size = tokenizer.vocab_size
    return cfg, data


def lmstudio_chunks(cache: str, run_dir: str, chunk: int, settings: list[str]):
    """The Trainer on the preset, reports every ``chunk`` steps; evaluation, samples, saving out of the way."""
    from lmstudio.engine.trainer import Trainer
    from lmstudio.events import Failed, Started, StepMetrics

    cfg, _ = _config(cache)
    cfg = cfg.override(
        settings
        + [
            f"train.log_interval={chunk}",
            "train.eval_interval=10000000",
            "train.sample_interval=0",
            "train.checkpoint_interval=10000000",
            "train.max_steps=10000000",
        ]
    )
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
        x = torch.stack([torch.from_numpy(arr[i : i + block].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(arr[i + 1 : i + 1 + block].astype(np.int64)) for i in ix])
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
    """Serve the parent: a warm-up chunk, then one timed chunk per "chunk" line on stdin, one JSON line back."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker == "nanogpt":
        chunks = nanogpt_chunks(args.cache, args.run, args.chunk)
    else:
        if args.worker == "lmstudio-foreach":
            from lmstudio.engine import schedule

            schedule.FUSED_ADAMW_DEVICES = ()  # the optimizer is built after this: foreach AdamW
        chunks = lmstudio_chunks(args.cache, args.run, args.chunk, CONTENDERS[args.worker] or [])
    started = time.perf_counter()
    next(chunks)  # warm-up: first-touch memory, allocator, thread pool, and compilation where asked
    warmup = time.perf_counter() - started
    print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "warmup_s": warmup}), flush=True)
    for line in sys.stdin:
        if line.strip() != "chunk":
            break
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        seconds = next(chunks)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            json.dumps(
                {
                    "ms": seconds / args.chunk * 1000,
                    "faults_per_step": faults / args.chunk,
                    "peak_rss_mb": peak_mb,
                }
            ),
            flush=True,
        )
    chunks.close()


def matmul_floor(cache: str) -> dict:
    """The step's FLOPs and this machine's sgemm rate at the model's shapes: the floor under any loop."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lmstudio.engine.models import build_model

    cfg, _ = _config(cache)
    model = build_model(cfg.model)
    x = torch.randint(0, cfg.model.vocab_size, (cfg.train.batch_size, cfg.model.block_size))
    with FlopCounterMode(display=False) as counter:
        model(x, x)[1].backward()
    tokens, width = x.numel(), cfg.model.n_embd
    a, b = torch.randn(tokens, width), torch.randn(width, 4 * width)  # the MLP's first matmul
    for _ in range(20):
        a @ b
    best = min(_timed(lambda: a @ b, 100) for _ in range(5))
    a16, b16 = a.bfloat16(), b.bfloat16()  # what autocast hands the same matmul
    for _ in range(5):
        a16 @ b16
    best16 = min(_timed(lambda: a16 @ b16, 20) for _ in range(3))
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    return {
        "gflop_per_step": counter.get_total_flops() / 1e9,
        "sgemm_gflops": 2 * tokens * width * 4 * width / best / 1e9,
        "bf16_gemm_gflops": 2 * tokens * width * 4 * width / best16 / 1e9,
        "cpu_bf16": " ".join(f for f in ("avx512_bf16", "amx_bf16") if f in flags) or "none",
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _timed(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


class Contender(WarmWorker):
    """One worker process, kept warm and asked for one chunk at a time."""

    def __init__(self, name: str, args, cache: str, run_dir: str):
        # "lmstudio" with host_memory asked for (it is opt-in), "lmstudio-defaults" without it
        env = {**os.environ, "LMSTUDIO_KEEP_FREED_MEMORY": "0" if name == "lmstudio-defaults" else "1"}
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--cache",
            cache,
            "--run",
            run_dir,
            "--chunk",
            str(args.chunk),
        ]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        super().__init__(name, cmd, env)
        self.threads, self.warmup_s = self.ready["threads"], self.ready["warmup_s"]


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--processes", type=int, default=3, help="fresh sets of worker processes, one after another"
    )
    p.add_argument("--chunk", type=int, default=20, help="steps per timed chunk")
    p.add_argument("--chunks", type=int, default=8, help="timed chunks per process, after one warm-up chunk")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--also",
        choices=(*EXTRA, "all"),
        action="append",
        default=[],
        help="a further contender (repeat for more; all: every one)",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", choices=tuple(CONTENDERS), help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    names = ["lmstudio", "nanogpt", *(n for n in EXTRA if n in args.also or "all" in args.also)]
    results: dict[str, list[dict]] = {n: [] for n in names}
    warmups: dict[str, list[float]] = {n: [] for n in names}
    threads = 0
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        cache = f"{tmp}/cache"
        if args.threads:
            torch.set_num_threads(args.threads)
        floor = matmul_floor(cache)  # also builds the token cache once, outside the timings
        for i in range(args.processes):
            # a fresh set of warm processes; one chunk each in turn, the order flipping every round
            team = [Contender(n, args, cache, f"{tmp}/{n}-{i}") for n in names]
            threads = team[0].threads
            for c in team:
                warmups[c.name].append(c.warmup_s)
            for r in range(args.chunks):
                for c in team if r % 2 == 0 else team[::-1]:
                    results[c.name].append(c.chunk())
            for c in team:
                c.close()
    med = {n: statistics.median(r["ms"] for r in results[n]) for n in names}
    # lmstudio's and nanogpt's chunks of one round ran back to back, under about the same load
    pairs = [a["ms"] / b["ms"] for a, b in zip(results["lmstudio"], results["nanogpt"], strict=True)]
    floor["matmul_floor_ms"] = floor["gflop_per_step"] / floor["sgemm_gflops"] * 1000
    summary = {
        "threads": threads,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in floor.items()},
        "processes": args.processes,
        "chunk": args.chunk,
        "chunks": args.chunks,
        "median_ms": {n: round(v, 1) for n, v in med.items()},
        "over_lmstudio": {n: round(v / med["lmstudio"], 3) for n, v in med.items()},
        "over_floor": {n: round(v / floor["matmul_floor_ms"], 3) for n, v in med.items()},
        "warmup_s": {n: round(max(w), 1) for n, w in warmups.items()},
        "all_ms": {n: [round(r["ms"], 1) for r in results[n]] for n in names},
        **memory_summary(results),
        "ratio_lmstudio_over_nanogpt": round(med["lmstudio"] / med["nanogpt"], 3),
        "median_pair_ratio": round(statistics.median(pairs), 3),
        "pairs_lmstudio_faster": sum(x < 1 for x in pairs),
        "pairs": len(pairs),
    }
    if args.json:
        print(json.dumps(summary))
        return
    print(
        f"baby GPT, {threads} threads, {args.processes} sets of processes, {args.chunks} alternating chunks "
        f"of {args.chunk} steps each (medians over all chunks); load average before "
        f"{load_before[0]:.2f}, after {summary['load_after'][0]:.2f}"
    )
    for n in names:
        print(
            f"  {n:22s} {med[n]:6.1f} ms/step  x{summary['over_lmstudio'][n]:.3f} of lmstudio  "
            f"x{summary['over_floor'][n]:.2f} of the floor  warm-up {summary['warmup_s'][n]:5.1f} s  "
            f"{summary['page_faults_per_step'][n]:5d} faults/step  peak RSS {summary['peak_rss_mb'][n]} MB  "
            f"{summary['all_ms'][n]}"
        )
    print(
        f"  floor: {floor['gflop_per_step']:.2f} GFLOP per step at {floor['sgemm_gflops']:.0f} GFLOP/s (sgemm, "
        f"{threads} threads, the MLP's shape) = {floor['matmul_floor_ms']:.1f} ms/step of matrix multiplies; "
        f"bf16 gemm at that shape {floor['bf16_gemm_gflops']:.0f} GFLOP/s (CPU bf16 instructions: "
        f"{floor['cpu_bf16']}; torch's CPU kernels: {floor['torch_cpu_capability']})"
    )
    print(
        f"  lmstudio / nanogpt = {summary['ratio_lmstudio_over_nanogpt']:.3f} (medians), "
        f"{summary['median_pair_ratio']:.3f} (median of back-to-back pairs; lmstudio faster in "
        f"{summary['pairs_lmstudio_faster']} of {summary['pairs']})"
    )
    if "lmstudio-defaults" in med:
        print(f"  lmstudio / lmstudio-defaults = {med['lmstudio'] / med['lmstudio-defaults']:.3f}")
    if max(load_before[0], summary["load_after"][0]) > 1.5:
        print("NOTE: the machine was loaded: the ratios carry over, the absolute ms/step do not.")


if __name__ == "__main__":
    main()
