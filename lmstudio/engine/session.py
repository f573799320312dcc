"""A trained model ready to use: its settings, tokenizer and weights, loaded from a run folder.

Generation and inspection work on a Session, never on the live training model, so they can run while
training continues (they read the latest checkpoint).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lmstudio import runfolder
from lmstudio.config import RunConfig
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine import device as dev
from lmstudio.errors import UserError


@dataclass
class Session:
    run_dir: Path
    config: RunConfig
    tokenizer: object  # lmstudio.engine.tokenizer.Tokenizer
    model: torch.nn.Module  # in eval mode
    device: torch.device
    which: str  # "latest" or "best"
    step: int  # optimizer steps behind these weights (from the checkpoint's metadata)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu", which: str = "latest") -> Session:
        """Load a run's config.json, tokenizer.json and weights; CheckpointError names a missing or bad file."""
        from lmstudio.engine.models import build_model
        from lmstudio.engine.tokenizer import Tokenizer

        run_dir = Path(run_dir)
        config = runfolder.load_run_config(run_dir)
        tok_path = run_dir / ckpt.TOKENIZER_FILE
        if not os.path.lexists(tok_path):
            raise ckpt.CheckpointError(f"{tok_path} is missing: the run has no tokenizer")
        try:
            tokenizer = Tokenizer.load(tok_path)
        except UserError as e:
            raise ckpt.CheckpointError(f"{tok_path} cannot be read: {e}") from None
        except Exception as e:  # noqa: BLE001 - a damaged file can fail in many ways inside `tokenizers`
            raise ckpt.CheckpointError(f"{tok_path} is damaged ({type(e).__name__}: {e})") from None
        runfolder.check_vocab(run_dir, tokenizer.vocab_size, config.model.vocab_size)
        torch_device = dev.resolve_device(device)
        with torch.device(torch_device):
            model = build_model(config.model)
        ckpt.load_weights_into(model, run_dir, which, torch_device)
        model.eval()
        meta = ckpt.weights_metadata(ckpt.weights_path(run_dir, which))
        return cls(
            run_dir=run_dir,
            config=config,
            tokenizer=tokenizer,
            model=model,
            device=torch_device,
            which=which,
            step=ckpt.whole_step(meta.get("step")),
        )
