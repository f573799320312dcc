"""Peak memory while a very large corpus is opened, tokenized and encoded (reliability: bounded memory).

    .venv/bin/python bench/large_corpus_memory.py [--size-mb 1024] [--keep]

Writes a corpus of ``--size-mb`` MB in /tmp (tiny Shakespeare and Tang poems lines, so both 1- and
3-byte UTF-8 characters), then, in a fresh process that samples its own RSS every 20 ms (psutil), runs
what the app does with it: ``corpus_info`` (stats), ``prepare_data`` with a char tokenizer (tokenizer
training and encoding are streamed above 64 MB) and 20 training steps of a tiny model on the result.
Prints the peak RSS above the post-import baseline for each phase, and the time it took.
RSS includes the pages of the memory-mapped token cache that were touched: those are file-backed and
the kernel can drop them, so they are reported separately (``mapped``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_corpus(path: Path, size_mb: int) -> None:
    corpora = REPO / "resources" / "corpora"
    block = (
        (corpora / "tiny_shakespeare.txt").read_text(encoding="utf-8")[:2_000_000]
        + (corpora / "tang_poems.txt").read_text(encoding="utf-8")[:700_000]
    ).encode("utf-8")
    target = size_mb << 20
    with open(path, "wb") as f:
        written = 0
        while written < target:
            piece = block[: target - written]
            cut = piece.rfind(b"\n") + 1 or len(piece)  # never split a UTF-8 character
            f.write(piece[:cut])
            written += cut


def child(corpus: str, cache: str, runs: str) -> None:
    import psutil

    proc = psutil.Process()
    peak = {"rss": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], proc.memory_info().rss)
            stop.wait(0.02)

    import torch

    from lmstudio.config import RunConfig
    from lmstudio.engine.corpus import corpus_info
    from lmstudio.engine.data import prepare_data
    from lmstudio.engine.trainer import Trainer

    torch.set_num_threads(1)
    threading.Thread(target=sample, daemon=True).start()
    base = proc.memory_info().rss
    results = {"baseline_mb": base / 2**20}

    def phase(name, fn):
        peak["rss"] = proc.memory_info().rss
        t = time.perf_counter()
        out = fn()
        results[name] = {
            "seconds": round(time.perf_counter() - t, 1),
            "peak_above_baseline_mb": round((peak["rss"] - base) / 2**20, 1),
        }
        return out

    info = phase("corpus_info", lambda: corpus_info(corpus))
    results["chars"] = info.chars
    cfg = RunConfig(name="big").override(
        [
            f"corpus.source={corpus}",
            "tokenizer.kind=char",
            "model.arch=transformer",
            "model.n_layer=1",
            "model.n_head=2",
            "model.n_embd=32",
            "model.block_size=32",
            "train.batch_size=8",
            "train.max_steps=20",
            "train.eval_interval=20",
            "train.eval_iters=2",
            "train.sample_interval=0",
            "train.device=cpu",
        ]
    )
    tok, data = phase("prepare_data", lambda: prepare_data(cfg, cache_dir=cache))
    results["tokens"] = int(len(data.train) + len(data.val))
    results["vocab"] = tok.vocab_size
    events = phase("train_20_steps", lambda: list(Trainer(cfg, Path(runs) / "big", cache_dir=cache).run()))
    results["train_result"] = type(events[-1]).__name__
    mem = proc.memory_full_info()
    results["end_rss_mb"] = round(mem.rss / 2**20, 1)
    results["end_uss_mb"] = round(getattr(mem, "uss", 0) / 2**20, 1)
    stop.set()
    print(json.dumps(results))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--keep", action="store_true", help="keep the corpus and cache in /tmp")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(tempfile.mkdtemp(prefix="lmstudio-bigcorpus-"))
    corpus = work / f"big-{args.size_mb}mb.txt"
    t = time.perf_counter()
    make_corpus(corpus, args.size_mb)
    print(
        f"wrote {corpus} ({corpus.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - t:.1f} s",
        flush=True,
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(corpus), str(work / "cache"), str(work / "runs")],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
        )
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            sys.exit(done.returncode)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["size_mb"] = args.size_mb
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
