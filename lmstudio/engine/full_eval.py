"""The loss over the whole validation split, not an estimate from a few random batches.

The running evaluation (``train_eval.estimate_losses``) averages ``eval_iters`` random windows: cheap, and
good enough to draw a curve, but two runs' estimates differ by a few hundredths from sampling alone. To
compare runs, this module scores every validation token exactly once.

How the split is cut: the validation ids ``v[0..N-1]`` are read as consecutive, non-overlapping windows of
``block_size`` inputs. Window ``k`` feeds ``v[kT .. kT+T-1]`` and is scored on the next tokens
``v[kT+1 .. kT+T]``; the last window is shorter when ``N - 1`` is not a multiple of ``T``. So every token
after the first is predicted once, and the mean is over all ``N - 1`` of them (token-weighted, the
partial window included). Each window starts afresh, as training batches do: the first position of a
window is predicted from one token of context, the second from two, and so on up to ``T`` (a recurrent
model starts from a zero state, a convolutional one sees zero padding before the window). Positions near
a window's start therefore score worse than they would with a sliding window; the figure is the average
over contexts of every length from 1 to ``T``, the same mix training sees, and the same for every
architecture. The results of a run are kept in ``full_eval.json`` in its folder (per checkpoint, with its
step), so the runs list can show them.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from lmstudio import measures
from lmstudio.engine import device as dev
from lmstudio.engine.faults import is_oom
from lmstudio.events import FullEvalMetrics, Notice
from lmstudio.run_history import known_full_loss as known_loss
from lmstudio.run_history import read_full_evals as read_all
from lmstudio.runfolder import FULL_EVAL_FILE, atomic_write_text

if TYPE_CHECKING:
    from lmstudio.engine.train_parts import TrainParts

__all__ = [
    "FULL_EVAL_FILE",
    "EvalStopped",
    "FullEval",
    "full_split_loss",
    "known_loss",
    "read_all",
    "record",
    "score_run",
    "windows_of",
]

# tokens per forward pass: enough to keep the matrix multiplies busy, small enough for any vocabulary here
TOKENS_PER_BATCH = 8192


class EvalStopped(Exception):
    """A stop was requested while an evaluation ran; it was abandoned after the batch in hand."""


@dataclass(frozen=True)
class FullEval:
    val_loss: float  # mean cross-entropy (nats) over every scored validation token
    val_ppl: float  # exp(val_loss)
    val_acc: float  # share of tokens whose likeliest prediction was right
    val_bpc: float  # bits per character
    tokens: int  # validation tokens scored (N - 1)
    windows: int  # windows they were cut into (the last may be shorter)
    window: int  # the window length (the model's context, block_size)
    seconds: float  # how long scoring took


def windows_of(ids: np.ndarray, block_size: int) -> list[tuple[int, int]]:
    """(start, length) of each non-overlapping window over ``ids``: inputs ids[start:start+length],
    targets ids[start+1:start+length+1]."""
    n = len(ids) - 1  # tokens that have a predecessor to be predicted from
    return [(s, min(block_size, n - s)) for s in range(0, max(n, 0), block_size)]


@torch.no_grad()
def full_split_loss(
    model: torch.nn.Module,
    ids: np.ndarray,
    block_size: int,
    *,
    chars_per_token: float = 1.0,
    device: torch.device | str = "cpu",
    autocast=None,
    stop: threading.Event | None = None,
) -> FullEval:
    """Score every token of ``ids`` (a split's token ids) once, in non-overlapping windows of ``block_size``.

    ``autocast``: a context-manager factory (e.g. ``lambda: device.autocast_context(dev, precision)``); None
    runs in the weights' own precision. The model is put in eval mode for the duration. ``stop`` set (a
    Ctrl-C, the app's Stop) ends the scoring after the batch in hand with ``EvalStopped``.
    """
    if len(ids) < 2:
        raise ValueError("the split has fewer than two tokens: nothing to score")
    device = torch.device(device)
    started = time.perf_counter()
    wins = windows_of(ids, block_size)
    full = [s for s, n in wins if n == block_size]
    tail = [(s, n) for s, n in wins if n < block_size]
    per_batch = max(1, TOKENS_PER_BATCH // block_size)
    offsets = np.arange(block_size + 1)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    total_right = torch.zeros((), dtype=torch.int64, device=device)
    was_training = model.training
    model.eval()
    try:
        batches = [(np.asarray(full[i : i + per_batch]), block_size) for i in range(0, len(full), per_batch)]
        batches += [(np.asarray([s]), n) for s, n in tail]
        for starts, length in batches:
            if stop is not None and stop.is_set():
                raise EvalStopped
            rows = np.asarray(ids[starts[:, None] + offsets[: length + 1]]).astype(np.int64)  # (B, n+1)
            window = torch.from_numpy(rows).to(device)
            x, y = window[:, :-1], window[:, 1:]  # (B, n), (B, n)
            with autocast() if autocast is not None else _nothing():
                logits, _ = model(x)  # (B, n, V)
            logits = logits.float()
            total_loss += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
            total_right += (logits.argmax(dim=-1) == y).sum()
    finally:
        model.train(was_training)
    tokens = len(ids) - 1
    loss = float(total_loss.item()) / tokens
    return FullEval(
        val_loss=loss,
        val_ppl=measures.perplexity(loss),
        val_acc=int(total_right.item()) / tokens,
        val_bpc=measures.bits_per_char(loss, chars_per_token),
        tokens=tokens,
        windows=len(wins),
        window=block_size,
        seconds=time.perf_counter() - started,
    )


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---- the record in the run folder -------------------------------------------------------------------
def record(run_dir: str | Path, which: str, step: int, result: FullEval) -> None:
    """Keep ``result`` as the full-split score of checkpoint ``which`` ("latest" or "best") at ``step``."""
    path = Path(run_dir) / FULL_EVAL_FILE
    data = read_all(run_dir)
    data[which] = {"step": int(step), **asdict(result)}
    atomic_write_text(path, json.dumps(data, indent=2))


def score_run(
    parts: TrainParts,
    run_dir: Path,
    step: int,
    estimate: float | None,
    stop: threading.Event | None = None,
) -> FullEvalMetrics | Notice:
    """A completed run's final weights scored on the whole validation split and recorded beside the checkpoint
    (``estimate``: the last running estimate, for comparison). Out of memory, a failed write or a ``stop``
    is a ``Notice`` saying what is missing: the run itself is complete and saved, so it does not fail for that."""
    try:
        result = full_split_loss(
            parts.model,
            parts.data.val,
            parts.config.model.block_size,
            chars_per_token=parts.data.val_chars_per_token,
            device=parts.device,
            autocast=lambda: dev.autocast_context(parts.device, parts.precision),
            stop=stop,
        )
        record(run_dir, "latest", step, result)
    except EvalStopped:
        return Notice(step=step, message="Stopped before the whole validation split was scored.")
    except (OSError, RuntimeError) as e:
        if not (isinstance(e, OSError) or is_oom(e)):
            raise
        return Notice(step=step, message=f"Could not score the whole validation split ({e}).")
    return FullEvalMetrics(
        step=step,
        val_loss=result.val_loss,
        val_ppl=result.val_ppl,
        val_acc=result.val_acc,
        val_bpc=result.val_bpc,
        tokens=result.tokens,
        windows=result.windows,
        estimate=estimate,
        seconds=result.seconds,
    )
