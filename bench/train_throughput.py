"""Trainer overhead: lmstudio's Trainer vs a plain PyTorch loop of the same model, side by side.

Both train the same architecture on the same data in one process. They take turns in chunks of
``--chunk`` optimizer steps (A, B, A, B, ...), so slow phases of a shared machine hit both alike; the
first round of each is a warm-up and is dropped. Prints the median milliseconds per step of each and
their ratio (trainer / plain). The plain loop is nanoGPT's shape: ``get_batch`` from the token array, the
trainer's optimizer (same decay groups, fused AdamW), clipping, a learning rate set each step,
``zero_grad(set_to_none=True)``. Both run in one process, so both see the allocator setting the trainer makes
when asked (``host_memory``, ``LMSTUDIO_KEEP_FREED_MEMORY=1``): this measures the cost of the trainer's loop, not
its runtime settings. For those, against nanoGPT's train.py as it runs on a CPU, see vs_nanogpt.py.

    .venv/bin/python bench/train_throughput.py                   # baby GPT (nanoGPT's CPU config)
    .venv/bin/python bench/train_throughput.py --arch lstm --rounds 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import numpy as np
import torch

from lmstudio.config import load_preset
from lmstudio.engine.data import prepare_data
from lmstudio.engine.models import build_model
from lmstudio.engine.schedule import build_optimizer, lr_at
from lmstudio.engine.trainer import Trainer
from lmstudio.events import StepMetrics


def plain_loop(cfg, data, steps_per_chunk: int):
    """A generator: each ``next()`` trains one chunk and returns its wall time."""
    t = cfg.train
    torch.manual_seed(t.seed)
    model = build_model(cfg.model)
    model.train()
    optimizer = build_optimizer(model, t, torch.device("cpu"))
    train = np.asarray(data.train).astype(np.int64)  # nanoGPT reads a uint16 memmap; same cost class
    block, batch = cfg.model.block_size, t.batch_size

    def get_batch():
        ix = torch.randint(len(train) - block, (batch,))
        x = torch.stack([torch.from_numpy(train[i : i + block]) for i in ix])
        y = torch.stack([torch.from_numpy(train[i + 1 : i + 1 + block]) for i in ix])
        return x, y

    step = 0
    while True:
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps_per_chunk):
            lr = lr_at(step, t)
            for g in optimizer.param_groups:
                g["lr"] = lr
            x, y = get_batch()
            _, loss = model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
        loss.item()
        yield time.perf_counter() - start, time.process_time() - cpu


def trainer_loop(cfg, run_dir: str, cache_dir: str, steps_per_chunk: int):
    cfg = cfg.override(
        [
            f"train.log_interval={steps_per_chunk}",
            "train.eval_interval=10000000",
            "train.sample_interval=0",
            "train.checkpoint_interval=10000000",
            "train.max_steps=10000000",
            "train.device=cpu",
            "train.compile=off",
        ]
    )
    events = Trainer(cfg, run_dir, cache_dir=cache_dir).run()
    while True:
        start, cpu = time.perf_counter(), time.process_time()
        for event in events:
            if isinstance(event, StepMetrics):
                break
            if type(event).__name__ == "Failed":
                raise SystemExit(event.message)
            if type(event).__name__ == "Started":
                start, cpu = time.perf_counter(), time.process_time()
        yield time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="baby_shakespeare")
    p.add_argument("--arch", help="override model.arch (e.g. lstm)")
    p.add_argument("--chunk", type=int, default=25, help="steps per turn")
    p.add_argument("--rounds", type=int, default=10, help="turns of each, after one warm-up turn")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_preset(args.preset)
    if args.arch:
        cfg = cfg.override([f"model.arch={args.arch}"])
    cfg = cfg.override(["train.device=cpu"]).validate()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, data = prepare_data(cfg, cache_dir=tmp + "/cache")
        cfg.model.vocab_size = tokenizer.vocab_size
        a = trainer_loop(cfg, tmp + "/run", tmp + "/cache", args.chunk)
        b = plain_loop(cfg, data, args.chunk)
        next(a), next(b)  # warm-up: first-touch memory, allocator, thread pool
        wall_a, wall_b, cpu_a, cpu_b = [], [], [], []
        turns = ((a, wall_a, cpu_a), (b, wall_b, cpu_b))
        for r in range(args.rounds):
            # A B, B A, A B...: a load that rises or falls during the run favours neither side
            for gen, wall, cpu in turns if r % 2 == 0 else turns[::-1]:
                w, c = next(gen)
                wall.append(w / args.chunk * 1000)
                cpu.append(c / args.chunk * 1000)
        a.close()
    med = statistics.median
    result = {
        "preset": args.preset,
        "arch": cfg.model.arch,
        "threads": torch.get_num_threads(),
        "chunk": args.chunk,
        "rounds": args.rounds,
        "trainer_ms_per_step": round(med(wall_a), 2),
        "plain_ms_per_step": round(med(wall_b), 2),
        "ratio": round(med(wall_a) / med(wall_b), 4),
        # CPU time of this process: far less sensitive to other load than wall time (exact with 1 thread)
        "trainer_cpu_ms_per_step": round(med(cpu_a), 2),
        "plain_cpu_ms_per_step": round(med(cpu_b), 2),
        "cpu_ratio": round(med(cpu_a) / med(cpu_b), 4),
        # the two chunks of a round ran back to back, under about the same load
        "median_round_ratio": round(med([x / y for x, y in zip(wall_a, wall_b, strict=True)]), 4),
        "trainer_all": [round(x, 1) for x in wall_a],
        "plain_all": [round(x, 1) for x in wall_b],
    }
    if args.json:
        print(json.dumps(result))
        return
    r = result
    print(
        f"{args.preset} ({cfg.model.arch}), {r['threads']} threads, {args.rounds} rounds of {args.chunk} steps"
    )
    print(
        f"  trainer : median {r['trainer_ms_per_step']:.1f} ms/step wall, {r['trainer_cpu_ms_per_step']:.1f} "
        f"ms/step CPU   {r['trainer_all']}"
    )
    print(
        f"  plain   : median {r['plain_ms_per_step']:.1f} ms/step wall, {r['plain_cpu_ms_per_step']:.1f} "
        f"ms/step CPU   {r['plain_all']}"
    )
    print(
        f"  ratio trainer/plain = {r['ratio']:.3f} (wall medians), {r['median_round_ratio']:.3f} (median of "
        f"per-round wall ratios), {r['cpu_ratio']:.3f} (CPU time)"
    )


if __name__ == "__main__":
    main()
