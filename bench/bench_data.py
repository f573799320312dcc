"""Data-preparation timings: tokenizer training, encoding, batch drawing, and streaming a big file.

    .venv/bin/python bench/bench_data.py [--repeats 5] [--big-mb 256]

Alternatives are run in alternation and medians reported (timings vary +-15% on a shared 2-core box).
The big-file part runs in a fresh subprocess that samples its own RSS while it encodes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from lmstudio.config import TokenizerConfig
from lmstudio.engine.corpus import read_corpus
from lmstudio.engine.data import Batcher, TokenData, encode_to_cache
from lmstudio.engine.tokenizer import train_tokenizer


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def alternate(named: dict, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in named}
    for _ in range(repeats):
        for k, fn in named.items():
            times[k].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def nanogpt_get(arr: np.ndarray, batch_size: int, block_size: int, gen: torch.Generator):
    ix = torch.randint(len(arr) - block_size, (batch_size,), generator=gen)
    x = torch.stack([torch.from_numpy(arr[i : i + block_size].astype(np.int64)) for i in ix.tolist()])
    y = torch.stack([torch.from_numpy(arr[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix.tolist()])
    return x, y


def batch_timings(data: TokenData, b: int, t: int, repeats: int, n: int) -> dict[str, float]:
    batcher = Batcher(data, b, t, seed=0)
    gen = torch.Generator().manual_seed(0)
    med = alternate(
        {
            "numpy gather (ours)": lambda: [batcher.get() for _ in range(n)],
            "nanoGPT stack": lambda: [nanogpt_get(data.train, b, t, gen) for _ in range(n)],
        },
        repeats,
    )
    return {k: v / n for k, v in med.items()}


def big_file_child(path: str, cache: str) -> None:
    # RSS sampled by a thread: ru_maxrss survives fork+exec on Linux, so it would report the parent's peak
    import psutil

    proc = psutil.Process()
    tok = train_tokenizer(TokenizerConfig(kind="char"), read_corpus("tiny_shakespeare"))
    base = proc.memory_info().rss
    peak, done = [base], threading.Event()

    def watch():
        while not done.wait(0.02):
            peak[0] = max(peak[0], proc.memory_info().rss)

    watcher = threading.Thread(target=watch)
    watcher.start()
    t = time.perf_counter()
    ids = encode_to_cache(None, tok, cache, source=path)
    dt = time.perf_counter() - t
    done.set()
    watcher.join()
    print(
        json.dumps(
            {
                "tokens": int(len(ids)),
                "seconds": dt,
                "base_rss_mb": base / 2**20,
                "peak_rss_mb": peak[0] / 2**20,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--big-mb", type=int, default=256)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        big_file_child(*args.child)
        return
    r = args.repeats
    text = read_corpus("tiny_shakespeare")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; tiny_shakespeare {len(text):,} chars"
    )

    med = alternate(
        {
            "bpe1000": lambda: train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=1000), text),
            "word": lambda: train_tokenizer(TokenizerConfig(kind="word", vocab_size=65536), text),
            "char": lambda: train_tokenizer(TokenizerConfig(kind="char"), text),
        },
        r,
    )
    print("train tokenizer (s): " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))

    char = train_tokenizer(TokenizerConfig(kind="char"), text)
    stoi = {c: i for i, c in enumerate(char._tokens)}
    med = alternate(
        {
            "numpy lookup (ours)": lambda: char.encode_array(text),
            "python dict": lambda: [stoi.get(c, 0) for c in text],
            "HF WordLevel file": lambda: char._hf.encode(text),
        },
        r,
    )
    print("char encode (s): " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))

    for kind in ("bpe", "word"):
        tok = train_tokenizer(TokenizerConfig(kind=kind, vocab_size=1000 if kind == "bpe" else 65536), text)
        med = alternate(
            {
                "pieces+encode_batch (ours)": lambda tok=tok: tok.encode_array(text),
                "one HF encode": lambda tok=tok: tok._hf.encode(text),
            },
            r,
        )
        print(f"{kind} encode (s): " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))

    ids = char.encode_array(text).astype(np.uint16)
    data = TokenData(ids, 0.1)
    for b, t in ((12, 64), (64, 256)):
        med = batch_timings(data, b, t, r, n=200)
        print(f"batch ({b}, {t}) us/batch: " + ", ".join(f"{k} {v * 1e6:.0f}" for k, v in med.items()))

    if args.big_mb:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "big.txt"
            with open(path, "w", encoding="utf-8") as f:
                for _ in range(max(1, args.big_mb * (1 << 20) // len(text.encode()))):
                    f.write(text)
            size_mb = path.stat().st_size / (1 << 20)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(path), str(Path(tmp) / "cache")],
                capture_output=True,
                text=True,
                check=True,
            )
            res = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"stream-encode a {size_mb:.0f} MB file (char): {res['seconds']:.1f} s, "
                f"{res['tokens']:,} tokens, RSS {res['base_rss_mb']:.0f} MB before, peak {res['peak_rss_mb']:.0f} MB"
            )


if __name__ == "__main__":
    main()
