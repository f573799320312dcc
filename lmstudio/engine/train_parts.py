"""What a training run is made of, built in one place before its first step: the device and precision, the
tokenizer and the encoded data, the model (compiled when asked), the optimizer, the loss scaler, the batcher.

Building is slow (a tokenizer may be trained, a corpus encoded), so the trainer does it in ``run()`` on the
training thread, not in its constructor; ``restore`` then loads a checkpoint's state into the parts.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from lmstudio import runfolder
from lmstudio.config import RunConfig
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine import device as dev
from lmstudio.engine import faults, models
from lmstudio.engine.data import Batcher, TokenData, prepare_data
from lmstudio.engine.distributed import SingleProcess
from lmstudio.engine.models import LanguageModel
from lmstudio.engine.schedule import build_optimizer
from lmstudio.engine.tokenizer import Tokenizer

STATE_VERSION = 1  # the layout of train_state.pt


@dataclass
class TrainParts:
    config: RunConfig  # the run's settings, the vocabulary size filled in from the tokenizer
    device: torch.device
    precision: dev.Precision
    tokenizer: Tokenizer
    data: TokenData
    model: LanguageModel  # the plain module: weights are saved from it
    forward: dev.CompileFallback  # what the loop calls: compiled, or the plain module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None  # fp16 only
    batcher: Batcher


@dataclass(frozen=True)
class Resumed:
    """Where a resumed run picks up: its step, best validation loss, peak learning rate, training seconds."""

    step: int
    best_val: float
    peak_lr: float
    elapsed: float


def start_device(cfg: RunConfig, dist: SingleProcess) -> tuple[torch.device, dev.Precision]:
    """Check the settings, pick the device (this rank's, under torchrun) and precision, seed everything."""
    cfg.validate()
    device = dist.place(dev.resolve_device(cfg.train.device))
    precision = dev.choose_precision(device, cfg.train.precision)
    dev.configure_backends(device)
    dev.seed_everything(cfg.train.seed)
    return device, precision


def prepare(
    cfg: RunConfig, tokenizer: Tokenizer | None, cache_dir: Path, cancel: threading.Event
) -> tuple[RunConfig, Tokenizer, TokenData]:
    """The tokenizer (trained unless given) and the encoded data; the returned settings are a copy of ``cfg``
    with the vocabulary size filled in (``cfg`` itself is not changed)."""
    tokenizer, data = prepare_data(cfg, tokenizer=tokenizer, cache_dir=cache_dir, cancel=cancel)
    return replace(cfg, model=replace(cfg.model, vocab_size=tokenizer.vocab_size)), tokenizer, data


def build_parts(
    cfg: RunConfig,
    device: torch.device,
    precision: dev.Precision,
    tokenizer: Tokenizer,
    data: TokenData,
    shard: dict[str, int],
) -> TrainParts:
    """The model (refused first when the memory estimate says it cannot fit), optimizer, scaler, batcher
    (``shard``: this rank's slice of each batch, ``distributed``). ``forward`` starts as the plain model: the
    trainer wraps it (DDP, compile) once every rank has its parts."""
    faults.check_memory(models.memory_estimate(cfg.model, cfg.train), device)
    with torch.device(device):
        model = models.build_model(cfg.model)  # looked up on the module: tests replace it
    model.train()
    return TrainParts(
        config=cfg,
        device=device,
        precision=precision,
        tokenizer=tokenizer,
        data=data,
        model=model,
        forward=dev.CompileFallback(model, compile=False),
        optimizer=build_optimizer(model, cfg.train, device),
        scaler=torch.amp.GradScaler(device.type) if precision.use_scaler else None,
        batcher=Batcher(data, cfg.train.batch_size, cfg.model.block_size, cfg.train.seed, **shard),
    )


def restore(parts: TrainParts, run_dir: Path, state: dict[str, Any]) -> Resumed:
    """Load the latest checkpoint of ``run_dir`` (weights and ``state``, its train_state.pt) into ``parts``."""
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ckpt.CheckpointError(f"{run_dir / runfolder.STATE_FILE} has an unknown format; start a new run")
    ckpt.load_weights_into(parts.model, run_dir, "latest", parts.device)
    params = [p for group in parts.optimizer.param_groups for p in group["params"]]
    ckpt.check_train_state(run_dir, state, params)  # before the optimizer half-loads from it
    meta = runfolder.weights_metadata(run_dir / runfolder.LATEST_FILE)
    if meta.get("step") != state["step"]:
        raise ckpt.CheckpointError(
            f"{run_dir}: the weights (step {meta.get('step')}) and the training state (step {state['step']}) "
            "do not match, probably after a crash mid-save; start a new run or use the weights as they are"
        )
    try:
        parts.optimizer.load_state_dict(state["optimizer"])
        if parts.scaler is not None and state.get("scaler"):
            parts.scaler.load_state_dict(state["scaler"])
        parts.batcher.load_state_dict(state["batcher"])
        dev.set_rng_state(state["rng"])
        return Resumed(
            step=int(state["step"]),
            best_val=math.inf if state.get("best_val") is None else float(state["best_val"]),
            peak_lr=float(state.get("peak_lr", parts.config.train.lr)),
            elapsed=float(state.get("elapsed", 0.0)),
        )
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        raise ckpt.CheckpointError(
            f"{run_dir / runfolder.STATE_FILE} does not fit this run ({type(e).__name__}: {str(e)[:160]}); "
            "start a new run or use the weights as they are"
        ) from None
