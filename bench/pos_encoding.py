"""Learned against sinusoidal positions (scaled as shipped, or at full amplitude): a short char-level run.

    STEPS=200 python bench/pos_encoding.py learned|sinusoidal|sinusoidal-full

4L/4H/128 GPT, batch 32 x 64 of tiny Shakespeare, AdamW 1e-3, clip 1.0, one thread. Results (200 steps):
learned val 2.35, sinusoidal (scaled) 2.33, sinusoidal at full amplitude 3.36.
"""

import math
import os
import sys

import torch
from char_lm_run import chars, train_and_validate

from lmstudio.config import ModelConfig
from lmstudio.engine.models import build_model, transformer

variant = sys.argv[1]
if variant == "sinusoidal-full":
    transformer.SINUSOID_SCALE = 1.0
torch.manual_seed(0)
cfg = ModelConfig(
    arch="transformer",
    n_layer=4,
    n_head=4,
    n_embd=128,
    block_size=64,
    vocab_size=len(chars),
    pos_encoding="learned" if variant == "learned" else "sinusoidal",
)
model = build_model(cfg)
if variant != "learned":
    print(
        "sinusoid RMS",
        round(model.pe.square().mean().sqrt().item(), 4),
        "(sin/cos at full size:",
        round(1 / math.sqrt(2), 4),
        ")",
    )
tl, vl, secs = train_and_validate(model, 1e-3, int(os.environ.get("STEPS", 200)))
print(f"{variant}: train {tl:.3f} val {vl:.3f} {secs:.0f}s")
