"""Which embedding init trains a recurrent model faster: a short run on tiny Shakespeare (chars).

    STEPS=200 python bench/recurrent_init.py lstm 64 1.0        # arch, n_embd, embedding std ("default": ours)

Tied when n_embd == hidden_size (256). Prints train and validation loss after STEPS steps (batch 32 x 64,
AdamW 2e-3, clip 1.0, one thread). Results (200 steps, 2x256 LSTM): n_embd 64: std 1.0 -> val 2.00,
std 1/8 -> 2.31; tied 256: std 1.0 -> 1.88, 0.25 -> 1.90, 1/16 -> 2.06, 0.02 -> 2.44.
"""

import os
import sys
import time

import torch
from torch import nn

from lmstudio.config import ModelConfig
from lmstudio.engine.corpus import read_corpus
from lmstudio.engine.models import build_model

torch.set_num_threads(1)
text = read_corpus("tiny_shakespeare")
chars = sorted(set(text))
stoi = {c: i for i, c in enumerate(chars)}
data = torch.tensor([stoi[c] for c in text])
n = int(0.9 * len(data))
train, val = data[:n], data[n:]


def batch(d, g, B=32, T=64):
    ix = torch.randint(len(d) - T - 1, (B,), generator=g)
    return torch.stack([d[i:i + T] for i in ix]), torch.stack([d[i + 1:i + T + 1] for i in ix])


arch, n_embd, std = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
cfg = ModelConfig(arch=arch, n_layer=2, n_embd=n_embd, hidden_size=256, block_size=64, vocab_size=len(chars))
model = build_model(cfg)
if std != "default":
    nn.init.normal_(model.wte.weight, std=float(std))
opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
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
print(f"{arch} n_embd={n_embd} std={std} train {loss.item():.3f} val {val_loss:.3f} {time.time() - start:.0f}s")
