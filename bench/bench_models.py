"""Model speed on this machine: training step time per architecture, and decoding with and without state.

    python bench/bench_models.py [--quick]

Each measurement alternates its variants (A, B, A, B, ...) and reports medians, since timings here
drift by +-15% from run to run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lmstudio.config import ModelConfig
from lmstudio.engine.models import build_model, param_count


def train_step_ms(model, x, y, opt) -> float:
    start = time.perf_counter()
    _, loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return (time.perf_counter() - start) * 1e3


@torch.no_grad()
def decode_tok_per_s(model, n_tokens: int, cached: bool) -> float:
    """Greedy-free decoding cost: feed a fixed token stream, one token at a time."""
    ctx = model.block_size
    ids = torch.randint(0, model.cfg.vocab_size, (1, n_tokens + 1))
    start = time.perf_counter()
    if cached:
        state = model.init_state(1)
        for t in range(n_tokens):
            if model.state_capacity is not None and model.state_len(state) >= model.state_capacity:
                state = model.init_state(1)  # refill from the last half window
                _, state = model.step(ids[:, t - ctx // 2 : t], state)
            _, state = model.step(ids[:, t : t + 1], state)
    else:
        for t in range(n_tokens):
            model(ids[:, max(0, t + 1 - ctx) : t + 1])  # the whole window every token
    return n_tokens / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    reps = 3 if args.quick else 5
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    # training: nanoGPT's CPU baby size for the Transformer, a 2x256 LSTM-sized stack for the others
    B, T, V = 12, 64, 65
    cfgs = {
        "transformer 4L/4H/128": ModelConfig(
            arch="transformer", n_layer=4, n_head=4, n_embd=128, block_size=T, vocab_size=V
        ),
        "lstm 2x256": ModelConfig(
            arch="lstm", n_layer=2, n_embd=128, hidden_size=256, block_size=T, vocab_size=V
        ),
        "gru 2x256": ModelConfig(
            arch="gru", n_layer=2, n_embd=128, hidden_size=256, block_size=T, vocab_size=V
        ),
        "rnn 2x256": ModelConfig(
            arch="rnn", n_layer=2, n_embd=128, hidden_size=256, block_size=T, vocab_size=V
        ),
    }
    models = {k: build_model(c).train() for k, c in cfgs.items()}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}
    x = torch.randint(0, V, (B, T))
    y = torch.randint(0, V, (B, T))
    times: dict[str, list[float]] = {k: [] for k in models}
    for k in models:  # warm-up (first-touch memory, kernel selection)
        for _ in range(3):
            train_step_ms(models[k], x, y, opts[k])
    for _ in range(reps):
        for k in models:
            times[k].extend(train_step_ms(models[k], x, y, opts[k]) for _ in range(10))
    print(f"\ntraining step, batch {B} x {T} tokens (median ms, AdamW included)")
    for k, ts in times.items():
        print(f"  {k:24s} {param_count(cfgs[k]) / 1e6:6.2f}M params  {statistics.median(ts):7.1f} ms")

    # decoding: the 6L/384/ctx-256 model (gpt_shakespeare's size), with and without the KV cache; and an LSTM
    n = 100 if args.quick else 300
    gpt = build_model(
        ModelConfig(arch="transformer", n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=V)
    ).eval()
    lstm = models["lstm 2x256"].eval()
    rates: dict[str, list[float]] = {
        "gpt cache": [],
        "gpt no cache": [],
        "lstm state": [],
        "lstm no state": [],
    }
    for _ in range(reps):
        rates["gpt cache"].append(decode_tok_per_s(gpt, n, cached=True))
        rates["gpt no cache"].append(decode_tok_per_s(gpt, n, cached=False))
        rates["lstm state"].append(decode_tok_per_s(lstm, n, cached=True))
        rates["lstm no state"].append(decode_tok_per_s(lstm, n, cached=False))
    print(f"\ndecoding {n} tokens one at a time (median tokens/s)")
    for k, rs in rates.items():
        print(f"  {k:24s} {statistics.median(rs):8.1f} tok/s")


if __name__ == "__main__":
    main()
