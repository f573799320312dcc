"""Generation speed on the CPU: KV cache / carried state vs recomputing the whole context every token.

Runs A (cached) and B (uncached) alternately, ``--repeats`` times each, and reports medians, so a
change in machine load hits both sides alike. Models have random weights (speed does not depend on
training) and the character vocabulary of tiny Shakespeare (65 tokens).

    .venv/bin/python bench/sampling_speed.py                  # all models, print a markdown table
    .venv/bin/python bench/sampling_speed.py --append docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from types import SimpleNamespace

import torch

from lmstudio.config import ModelConfig, RunConfig, SampleConfig, TokenizerConfig
from lmstudio.engine import sampling
from lmstudio.engine.corpus import read_corpus
from lmstudio.engine.models import build_model
from lmstudio.engine.tokenizer import train_tokenizer

MODELS = {
    # the GPU preset's shape (nanoGPT's shakespeare-char)
    "gpt 6L/6H/384, ctx 256": dict(arch="transformer", n_layer=6, n_head=6, n_embd=384, block_size=256),
    # nanoGPT's CPU "baby" config
    "baby gpt 4L/4H/128, ctx 64": dict(arch="transformer", n_layer=4, n_head=4, n_embd=128, block_size=64),
    "lstm 2x256": dict(arch="lstm", n_layer=2, n_embd=256, hidden_size=256, block_size=64),
}


def session_for(spec: dict, tokenizer) -> SimpleNamespace:
    mcfg = ModelConfig(vocab_size=tokenizer.vocab_size, bias=False, **spec)
    torch.manual_seed(0)
    return SimpleNamespace(config=RunConfig(model=mcfg), tokenizer=tokenizer, model=build_model(mcfg).eval())


def tokens_per_s(session, n_tokens: int, use_cache: bool) -> float:
    cfg = SampleConfig(max_tokens=n_tokens, temperature=1.0, seed=0)
    start = time.perf_counter()
    n = sum(1 for _ in sampling.generate(session, "", cfg, use_cache=use_cache))
    return n / (time.perf_counter() - start)


def count_rebuilds(capacity: int | None, n_tokens: int, prompt_len: int = 1) -> int:
    """How often generate() rebuilds a full cache: it holds the prompt, then one more per token fed."""
    if capacity is None:
        return 0
    held, rebuilds = prompt_len, 0
    for _ in range(n_tokens - 1):
        if held >= capacity:
            held, rebuilds = capacity // 2, rebuilds + 1
        else:
            held += 1
    return rebuilds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="*", default=list(MODELS), help="subset of: " + "; ".join(MODELS))
    ap.add_argument("--no-uncached", action="store_true", help="skip the slow reference on small models")
    ap.add_argument("--append", help="append the table to this markdown file")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = train_tokenizer(TokenizerConfig(kind="char"), read_corpus("tiny_shakespeare"))
    lines = [
        f"Generating {args.tokens} tokens from an empty prompt, batch 1, fp32, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
        f"median of {args.repeats} alternating runs each.",
        "",
        "| model | cached tok/s | recompute tok/s | speed-up | cache rebuilds |",
        "|---|---|---|---|---|",
    ]
    for name in args.models:
        s = session_for(MODELS[name], tokenizer)
        tokens_per_s(s, 20, True)  # warm-up: first-touch memory, lazy kernels
        cached, full = [], []
        for r in range(args.repeats):
            cached.append(tokens_per_s(s, args.tokens, True))
            if not args.no_uncached:
                full.append(tokens_per_s(s, args.tokens, False))
            print(
                f"  {name} run {r + 1}: cached {cached[-1]:.1f} tok/s, recompute "
                f"{full[-1] if full else float('nan'):.1f} tok/s",
                file=sys.stderr,
                flush=True,
            )
        a = statistics.median(cached)
        b = statistics.median(full) if full else float("nan")
        rebuilds = count_rebuilds(getattr(s.model, "state_capacity", None), args.tokens)
        line = f"| {name} | {a:.0f} | {b:.1f} | {a / b:.1f}x | {rebuilds} |"
        print(line, flush=True)
        lines.append(line)
    table = "\n".join(lines)
    print()
    print(table)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as f:
            f.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
