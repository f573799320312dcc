"""Quality check: train a preset to the end and report its validation loss (nanoGPT's baby GPT: 1.886).

Prints each evaluation as it happens, then re-measures the final weights on ``--final-iters`` validation
batches (the in-run evaluations use the preset's ``eval_iters``, 20 for the baby, as nanoGPT does, which
is noisy to a few hundredths).

    .venv/bin/python bench/baby_quality.py                          # baby_shakespeare, about 100 s
    .venv/bin/python bench/baby_quality.py --preset lstm_shakespeare --threads 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from lmstudio.config import load_preset
from lmstudio.engine import device as dev
from lmstudio.engine.data import prepare_data
from lmstudio.engine.session import Session
from lmstudio.engine.train_eval import estimate_losses
from lmstudio.engine.trainer import Trainer
from lmstudio.events import EvalMetrics, Failed, Finished, Started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="baby_shakespeare")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--threads", type=int)
    p.add_argument("--final-iters", type=int, default=200)
    p.add_argument("--out", help="keep the run here (default: a temporary folder)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_preset(args.preset).override(["train.device=cpu", *args.set]).validate()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.out) if args.out else Path(tmp) / "run"
        cache = Path(tmp) / "cache"
        start = time.perf_counter()
        evals = []
        for event in Trainer(cfg, run_dir, cache_dir=cache).run():
            if isinstance(event, Started):
                start = time.perf_counter()
                print(f"{args.preset}: {event.n_params / 1e6:.2f}M parameters on {event.device}", flush=True)
            elif isinstance(event, EvalMetrics):
                evals.append(event)
                print(
                    f"  step {event.step:5d}  train {event.train_loss:.4f}  val {event.val_loss:.4f}  "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
            elif isinstance(event, Failed):
                raise SystemExit(f"failed: {event.message}")
            elif isinstance(event, Finished):
                wall = time.perf_counter() - start
        session = Session.load(run_dir)
        cfg_final = session.config
        cfg_final.train.eval_iters = args.final_iters
        _, data = prepare_data(cfg_final, tokenizer=session.tokenizer, cache_dir=cache)
        final = estimate_losses(
            session.model, data, cfg_final, session.device, dev.choose_precision(session.device)
        )
    result = {
        "preset": args.preset,
        "steps": cfg.train.max_steps,
        "threads": torch.get_num_threads(),
        "wall_s": round(wall, 1),
        "ms_per_step": round(1000 * wall / cfg.train.max_steps, 1),
        "val_loss_in_run": round(evals[-1].val_loss, 4),
        f"val_loss_{args.final_iters}_batches": round(final["val_loss"], 4),
        f"train_loss_{args.final_iters}_batches": round(final["train_loss"], 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
