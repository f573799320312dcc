"""Trainer overhead: lmstudio's Trainer vs a plain PyTorch loop of the same model, side by side.

Both train the same architecture on the same data in one process. They take turns in chunks of
``--chunk`` optimizer steps (A, B, A, B, ...), so slow phases of a shared machine hit both alike; the
first round of each is a warm-up and is dropped. Prints the median milliseconds per step of each and
their ratio (trainer / plain). The plain loop is nanoGPT's: ``get_batch`` from a memmap, AdamW with the
same decay groups, clipping, a learning rate set each step, ``zero_grad(set_to_none=True)``.

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
from lmstudio.engine.events import StepMetrics
from lmstudio.engine.models import build_model
from lmstudio.engine.schedule import lr_at, param_groups
from lmstudio.engine.trainer import Trainer


def plain_loop(cfg, data, steps_per_chunk: int):
    """A generator: each ``next()`` trains one chunk and returns its wall time."""
    t = cfg.train
    torch.manual_seed(t.seed)
    model = build_model(cfg.model)
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2))
    train = np.asarray(data.train).astype(np.int64)  # nanoGPT reads a uint16 memmap; same cost class
    block, batch = cfg.model.block_size, t.batch_size

    def get_batch():
        ix = torch.randint(len(train) - block, (batch,))
        x = torch.stack([torch.from_numpy(train[i:i + block]) for i in ix])
        y = torch.stack([torch.from_numpy(train[i + 1:i + 1 + block]) for i in ix])
        return x, y

    step = 0
    while True:
        start = time.perf_counter()
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
        yield time.perf_counter() - start


def trainer_loop(cfg, run_dir: str, cache_dir: str, steps_per_chunk: int):
    cfg = cfg.override([f"train.log_interval={steps_per_chunk}", "train.eval_interval=10000000",
                        "train.sample_interval=0", "train.checkpoint_interval=10000000",
                        "train.max_steps=10000000", "train.device=cpu", "train.compile=off"])
    events = Trainer(cfg, run_dir, cache_dir=cache_dir).run()
    while True:
        start = time.perf_counter()
        for event in events:
            if isinstance(event, StepMetrics):
                break
            if type(event).__name__ == "Failed":
                raise SystemExit(event.message)
            start = time.perf_counter() if type(event).__name__ == "Started" else start
        yield time.perf_counter() - start


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
        times_a, times_b = [], []
        for _ in range(args.rounds):
            times_a.append(next(a) / args.chunk * 1000)
            times_b.append(next(b) / args.chunk * 1000)
        a.close()
    ms_a, ms_b = statistics.median(times_a), statistics.median(times_b)
    result = {"preset": args.preset, "arch": cfg.model.arch, "threads": torch.get_num_threads(),
              "chunk": args.chunk, "rounds": args.rounds, "trainer_ms_per_step": round(ms_a, 2),
              "plain_ms_per_step": round(ms_b, 2), "ratio": round(ms_a / ms_b, 4),
              "trainer_all": [round(x, 1) for x in times_a], "plain_all": [round(x, 1) for x in times_b]}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.preset} ({cfg.model.arch}), {result['threads']} threads, {args.rounds} rounds of {args.chunk} steps")
    print(f"  trainer : median {ms_a:.1f} ms/step   {result['trainer_all']}")
    print(f"  plain   : median {ms_b:.1f} ms/step   {result['plain_all']}")
    print(f"  ratio trainer/plain = {ms_a / ms_b:.3f}")


if __name__ == "__main__":
    main()
