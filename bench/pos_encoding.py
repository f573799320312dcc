"""Learned against sinusoidal positions (scaled as shipped, or at full amplitude): a short char-level run.

    STEPS=200 python bench/pos_encoding.py learned|sinusoidal|sinusoidal-full

4L/4H/128 GPT, batch 32 x 64 of tiny Shakespeare, AdamW 1e-3, clip 1.0, one thread. Results (200 steps):
learned val 2.35, sinusoidal (scaled) 2.33, sinusoidal at full amplitude 3.36.
"""

import math
import os
import sys
import time

import torch
from torch import nn

from lmstudio.config import ModelConfig
from lmstudio.engine.corpus import read_corpus
from lmstudio.engine.models import build_model, transformer

torch.set_num_threads(1)
variant = sys.argv[1]
if variant == "sinusoidal-full":
    transformer.SINUSOID_SCALE = 1.0
text = read_corpus("tiny_shakespeare")
chars = sorted(set(text))
stoi = {c: i for i, c in enumerate(chars)}
data = torch.tensor([stoi[c] for c in text])
n = int(0.9 * len(data))
train, val = data[:n], data[n:]


def batch(d, g, B=32, T=64):
    ix = torch.randint(len(d) - T - 1, (B,), generator=g)
    return torch.stack([d[i:i + T] for i in ix]), torch.stack([d[i + 1:i + T + 1] for i in ix])


torch.manual_seed(0)
cfg = ModelConfig(arch="transformer", n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=len(chars),
                  pos_encoding="learned" if variant == "learned" else "sinusoidal")
model = build_model(cfg)
if variant != "learned":
    print("sinusoid RMS", round(model.pe.square().mean().sqrt().item(), 4), "(sin/cos at full size:", round(1 / math.sqrt(2), 4), ")")
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(1)
start = time.time()
for _ in range(int(os.environ.get("STEPS", 200))):
    x, y = batch(train, g)
    _, loss = model(x, y)
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
model.eval()
gv = torch.Generator().manual_seed(2)
with torch.no_grad():
    val_loss = sum(model(*batch(val, gv))[1].item() for _ in range(10)) / 10
print(f"{variant}: train {loss.item():.3f} val {val_loss:.3f} {time.time() - start:.0f}s")
