"""Which embedding init trains a recurrent model faster: a short run on tiny Shakespeare (chars).

    STEPS=200 python bench/recurrent_init.py lstm 64 1.0        # arch, n_embd, embedding std ("default": ours)

Tied when n_embd == hidden_size (256). Prints train and validation loss after STEPS steps (batch 32 x 64,
AdamW 2e-3, clip 1.0, one thread). Results (200 steps, 2x256 LSTM): n_embd 64: std 1.0 -> val 2.00,
std 1/8 -> 2.31; tied 256: std 1.0 -> 1.88, 0.25 -> 1.90, 1/16 -> 2.06, 0.02 -> 2.44.
"""

import os
import sys

import torch
from char_lm_run import chars, train_and_validate
from torch import nn

from lmstudio.config import ModelConfig
from lmstudio.engine.models import build_model

arch, n_embd, std = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
cfg = ModelConfig(arch=arch, n_layer=2, n_embd=n_embd, hidden_size=256, block_size=64, vocab_size=len(chars))
model = build_model(cfg)
if std != "default":
    nn.init.normal_(model.wte.weight, std=float(std))
tl, vl, secs = train_and_validate(model, 2e-3, int(os.environ.get("STEPS", 200)))
print(f"{arch} n_embd={n_embd} std={std} train {tl:.3f} val {vl:.3f} {secs:.0f}s")
