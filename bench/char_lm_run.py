"""A short char-level training run on tiny Shakespeare, shared by the model-design benches
(pos_encoding.py, recurrent_init.py): the same data, batches, loop and validation for every variant."""

import time

import torch
from torch import nn

from lmstudio.engine.corpus import read_corpus

torch.set_num_threads(1)
text = read_corpus("tiny_shakespeare")
chars = sorted(set(text))
stoi = {c: i for i, c in enumerate(chars)}
data = torch.tensor([stoi[c] for c in text])
n = int(0.9 * len(data))
train, val = data[:n], data[n:]


def batch(d, g, B=32, T=64):
    ix = torch.randint(len(d) - T - 1, (B,), generator=g)
    return torch.stack([d[i : i + T] for i in ix]), torch.stack([d[i + 1 : i + T + 1] for i in ix])


def train_and_validate(model: nn.Module, lr: float, steps: int) -> tuple[float, float, float]:
    """AdamW at ``lr`` with clip 1.0 for ``steps`` steps; returns (last train loss, val loss over 10 batches, seconds)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    start = time.time()
    for _ in range(steps):
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
    return loss.item(), val_loss, time.time() - start
