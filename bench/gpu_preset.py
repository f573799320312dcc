"""The GPU preset on a CUDA GPU: tokens/s and time to a validation loss, with bf16, fused AdamW and compile on/off.

Trains ``gpt_shakespeare`` (nanoGPT's GPU config) once per variant, one after another in this process, and
prints for each: median training tokens/s (steps after ``--skip`` only, so compilation is not counted), the
wall-clock time (evaluations included, as nanoGPT's would be) until the first evaluation at or below
``--target``, the training seconds at the first step report (compilation happens in the first steps; data and
model building come before the clock starts), and the last validation loss. Variants share one process, so
later ones may reuse torch.compile's caches: run one variant per process for cold compile times.

    .venv/bin/python bench/gpu_preset.py                                   # every variant, 5000 steps each
    .venv/bin/python bench/gpu_preset.py --variants all-on no-compile --max-steps 2000
    .venv/bin/python bench/gpu_preset.py --device cpu --max-steps 20 --set model.n_layer=1 \\
        --set model.n_embd=48 --set model.n_head=2 --set model.block_size=32 --set train.batch_size=4   # smoke run

Variants: all-on (bf16 autocast where supported, fused AdamW, torch.compile: the defaults on CUDA), fp32 (no
autocast; TF32 matmuls stay on), no-fused (torch's foreach AdamW), no-compile, all-off (all three off).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

import torch

from lmstudio.config import load_preset
from lmstudio.engine import schedule
from lmstudio.engine.trainer import Trainer
from lmstudio.events import EvalMetrics, Failed, Finished, Started, StepMetrics

VARIANTS = {
    "all-on": {"overrides": [], "fused": True},
    "fp32": {"overrides": ["train.precision=fp32"], "fused": True},
    "no-fused": {"overrides": [], "fused": False},
    "no-compile": {"overrides": ["train.compile=off"], "fused": True},
    "all-off": {"overrides": ["train.precision=fp32", "train.compile=off"], "fused": False},
}


def run_variant(name: str, args, tmp: str) -> dict:
    variant = VARIANTS[name]
    cfg = load_preset(args.preset).override([f"train.device={args.device}", *args.set, *variant["overrides"]])
    if args.max_steps:
        cfg = cfg.override([f"train.max_steps={args.max_steps}"])
    cfg.validate()
    # build_optimizer reads this tuple when the trainer builds its optimizer
    schedule.FUSED_ADAMW_DEVICES = ("cuda", "cpu", "mps") if variant["fused"] else ()
    rates, first_report, reached, last_val, device = [], None, None, None, ""
    for event in Trainer(cfg, f"{tmp}/{name}", cache_dir=f"{tmp}/cache").run():
        if isinstance(event, Started):
            device = event.device
        elif isinstance(event, StepMetrics):
            first_report = event.elapsed if first_report is None else first_report
            if event.step > args.skip:
                rates.append(event.tokens_per_s)
        elif isinstance(event, EvalMetrics):
            last_val = event.val_loss
            if reached is None and event.val_loss <= args.target:
                reached = (event.step, event.elapsed)
        elif isinstance(event, Failed):
            return {"variant": name, "failed": event.message}
        elif isinstance(event, Finished):
            return {
                "variant": name,
                "device": device,
                "steps": event.step,
                "elapsed_s": round(event.elapsed, 1),
                "tokens_per_s": round(statistics.median(rates)) if rates else None,
                "first_report_s": round(first_report or 0.0, 1),
                "target": args.target,
                "step_at_target": reached[0] if reached else None,
                "s_to_target": round(reached[1], 1) if reached else None,
                "last_val_loss": None if last_val is None else round(last_val, 4),
            }
    return {"variant": name, "failed": "the run ended without a Finished event"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="gpt_shakespeare")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--max-steps", type=int, help="instead of the preset's")
    p.add_argument("--target", type=float, default=1.50, help="validation loss to time")
    p.add_argument(
        "--skip", type=int, default=100, help="steps left out of the tokens/s median (compilation)"
    )
    p.add_argument("--set", action="append", default=[], help="extra key=value overrides")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here; use --device cpu with small --set sizes for a smoke run")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants:
            results.append(run_variant(name, args, tmp))
            print(json.dumps(results[-1]) if args.json else _line(results[-1]), flush=True)


def _line(r: dict) -> str:
    if "failed" in r:
        return f"{r['variant']:11s} failed: {r['failed']}"
    target = (
        f"{r['s_to_target']} s (step {r['step_at_target']})"
        if r["s_to_target"] is not None
        else "not reached"
    )
    return (
        f"{r['variant']:11s} {r['device']}: {r['tokens_per_s']} tokens/s, val {r['target']} after {target}, "
        f"first report after {r['first_report_s']} s, {r['steps']} steps in {r['elapsed_s']} s, "
        f"last val {r['last_val_loss']}"
    )


if __name__ == "__main__":
    main()
