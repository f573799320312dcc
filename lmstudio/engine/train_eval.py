"""What the trainer measures between steps: loss estimates (reported as ``EvalMetrics``) and a text sample.

Both run under ``torch.random.fork_rng`` on their own seeded generators, so evaluating or sampling never
changes the random numbers training draws next: a run that evaluates often and one that does not (or
one stopped and resumed) see the same batches and dropout masks.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch

from lmstudio import measures
from lmstudio.config import RunConfig, SampleConfig
from lmstudio.engine import device as dev
from lmstudio.engine.finite_watch import NonFiniteLoss
from lmstudio.engine.full_eval import EvalStopped
from lmstudio.events import EvalMetrics

if TYPE_CHECKING:
    from lmstudio.engine.distributed import SingleProcess
    from lmstudio.engine.train_parts import TrainParts


def _fork_rng(device: torch.device):
    if device.type == "cuda":
        return torch.random.fork_rng(
            devices=[device.index if device.index is not None else torch.cuda.current_device()]
        )
    return torch.random.fork_rng(devices=[])


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module):
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@torch.no_grad()
def estimate_losses(
    forward,
    data,
    cfg: RunConfig,
    device: torch.device,
    precision: dev.Precision,
    *,
    rank: int = 0,
    world_size: int = 1,
    stop: threading.Event | None = None,
) -> dict[str, float]:
    """Mean loss on ``eval_iters`` batches of each split, and next-token accuracy on validation.

    ``stop`` set (a Ctrl-C, a SIGTERM, the app's Stop) abandons the evaluation after the batch in hand
    with ``EvalStopped``: with many ``eval_iters`` an evaluation can take minutes.

    The batches come from a Batcher seeded the same way every time, so successive evaluations compare
    the model on the same text instead of adding sampling noise to the curve. In a distributed run each
    rank evaluates its slice of those batches (``rank``, ``world_size``); averaging the ranks' results
    gives the one-process figures.
    """
    from lmstudio.engine.data import Batcher

    t = cfg.train
    out: dict[str, float] = {}
    with _fork_rng(device), _eval_mode(forward):
        for split in ("train", "val"):
            batcher = Batcher(
                data, t.batch_size, cfg.model.block_size, t.seed + 1, rank=rank, world_size=world_size
            )
            losses = torch.zeros(t.eval_iters, device=device)
            correct = torch.zeros((), device=device)
            count = 0
            for i in range(t.eval_iters):
                if stop is not None and stop.is_set():
                    raise EvalStopped
                x, y = batcher.get(split, device)
                with dev.autocast_context(device, precision):
                    logits, loss = forward(x, y)
                losses[i] = loss.float()
                if split == "val":
                    correct += (logits.argmax(dim=-1) == y).sum()
                    count += y.numel()
            out[f"{split}_loss"] = losses.mean().item()
            if split == "val":
                out["val_acc"] = correct.item() / max(count, 1)
    return out


def evaluate(
    parts: TrainParts,
    cfg: RunConfig,
    dist: SingleProcess,
    step: int,
    elapsed: Callable[[], float],
    stop: threading.Event | None = None,
) -> EvalMetrics | None:
    """The running evaluation at ``step``: ``estimate_losses`` (compiled forward, eager again if the compiler
    fails; several ranks: each its slice of the batches, averaged). A non-finite validation loss raises
    ``NonFiniteLoss``. ``elapsed()``: the training seconds, read once the evaluation is done. None when
    ``stop`` was set during the evaluation (one process only: several ranks must finish it together)."""
    if dist.world_size > 1:
        stop = None

    def work(fwd) -> dict[str, float] | None:  # a stop is returned, so the compile fallback never sees it
        try:
            return estimate_losses(
                fwd, parts.data, cfg, parts.device, parts.precision, **dist.shard, stop=stop
            )
        except EvalStopped:
            return None

    losses = parts.forward.call(work)
    if losses is None:
        return None
    losses = dist.average(losses)
    val_loss = losses["val_loss"]
    if not math.isfinite(val_loss):
        raise NonFiniteLoss
    stats = parts.data.stats
    return EvalMetrics(
        step=step,
        train_loss=losses["train_loss"],
        val_loss=val_loss,
        val_ppl=measures.perplexity(val_loss),
        val_acc=losses["val_acc"],
        val_bpc=measures.bits_per_char(val_loss, parts.data.val_chars_per_token),
        train_unk=stats["train"].unk_share if stats else 0.0,
        val_unk=stats["val"].unk_share if stats else 0.0,
        elapsed=elapsed(),
    )


def training_sample(model: torch.nn.Module, tokenizer, cfg: RunConfig, step: int) -> str:
    """``sample_tokens`` tokens from a newline, seeded by the run's seed and the step (repeatable)."""
    from lmstudio.engine.sampling import generate

    s = cfg.sample
    sample_cfg = SampleConfig(
        max_tokens=cfg.train.sample_tokens,
        temperature=s.temperature,
        top_k=s.top_k,
        top_p=s.top_p,
        seed=(cfg.train.seed + step) % 2**63,
        stop=[],
    )
    session = SimpleNamespace(model=model, tokenizer=tokenizer, config=cfg)
    device = next(model.parameters()).device
    with _fork_rng(device), _eval_mode(model):
        return "".join(t.text for t in generate(session, "", sample_cfg, n_top=0))
