"""What the Hugging Face and ONNX exports share: the optional extra, the output paths, the model card.

The export libraries (transformers, onnx, onnxruntime, onnxscript) are an optional extra. Nothing here
imports them at module level: ``require_extra`` imports them when an export starts and turns their
absence into an ``ExportUnavailable`` that says how to install them.

Writes never leave half an export behind: everything goes into a hidden temporary sibling first and is
renamed into place at the end. An existing destination is replaced only when the caller says so, and a
folder only when it is empty or an earlier lmstudio export (its README.md carries ``CARD_MARK``).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lmstudio import measures
from lmstudio.errors import UserError
from lmstudio.run_history import known_full_loss

INSTALL_HINT = "pip install -e '.[export]'  (or: pip install 'lmstudio-playground[export]')"
EXTRA_MODULES = {"hf": ("transformers",), "onnx": ("onnx", "onnxruntime", "onnxscript")}
CARD_MARK = "<!-- written by lmstudio export -->"
# the largest difference between exported and lmstudio logits an export may show and still be written
TOLERANCE = 1e-4


class ExportError(UserError):
    """An export cannot be written; the message says why and what to do."""


class ExportUnavailable(ExportError):
    """The optional export libraries are not installed."""


class ExportCancelled(ExportError):
    """The export was cancelled (the app is closing); nothing was written."""


def stage_reporter(progress: Callable[[float], None] | None, cancel: threading.Event | None):
    """``report(fraction)`` for the stages of an export: passes the fraction on, and before the end raises
    ExportCancelled once ``cancel`` is set (the export's cleanup then removes what it had written)."""

    def report(fraction: float) -> None:
        if fraction < 1.0 and cancel is not None and cancel.is_set():
            raise ExportCancelled("the export was cancelled; nothing was written")
        if progress is not None:
            progress(fraction)

    return report


@dataclass
class ExportResult:
    path: Path  # the folder (hf) or file (onnx) written
    format: str  # "hf" or "onnx"
    arch: str
    max_abs_diff: float  # largest |exported logits - lmstudio logits| over the check sequences
    checked_sequences: int  # how many sequences the check ran
    checked_by: str  # what computed the exported side ("transformers GPT2LMHeadModel", "onnxruntime")
    notes: list[str] = field(default_factory=list)  # what the user should know about the mapping

    def summary(self) -> str:
        return (
            f"wrote {self.path}: {self.checked_by} logits match lmstudio's within "
            f"{self.max_abs_diff:.1e} on {self.checked_sequences} sequences"
        )


def require_extra(fmt: str) -> None:
    """Import the libraries ``fmt`` needs, or raise ExportUnavailable naming the missing ones."""
    missing = []
    for name in EXTRA_MODULES[fmt]:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportUnavailable(
            f"Exporting to {'Hugging Face' if fmt == 'hf' else 'ONNX'} needs {', '.join(missing)}, "
            f"which {'is' if len(missing) == 1 else 'are'} not installed. Install the export extra: "
            f"{INSTALL_HINT}"
        )


@contextmanager
def quiet_libraries():
    """Silence transformers' progress bars and advice and the exporters' warnings while we export: the
    export checks its own result and reports what matters."""
    import logging
    import warnings

    restore: list[tuple[Callable[[Any], object], Any]] = []
    try:
        from transformers.utils import logging as hf_logging

        restore.append((hf_logging.set_verbosity, hf_logging.get_verbosity()))
        bars = hf_logging.is_progress_bar_enabled()
        restore.append(
            (lambda on: hf_logging.enable_progress_bar() if on else hf_logging.disable_progress_bar(), bars)
        )
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    onnx_logger = logging.getLogger("torch.onnx")
    restore.append((onnx_logger.setLevel, onnx_logger.level))
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for setter, value in reversed(restore):
            setter(value)


# ---- destinations ------------------------------------------------------------------------------------
def temp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def check_destination(path: Path, overwrite: bool, folder: bool) -> None:
    """Refuse a destination that exists (unless ``overwrite``) or that overwriting would harm."""
    if not path.parent.is_dir():
        raise ExportError(f"{path.parent} does not exist; create it or choose another destination")
    if not path.exists():
        return
    if folder:
        if not path.is_dir():
            raise ExportError(f"{path} is a file; choose a new folder for the export")
        if any(path.iterdir()) and not _is_earlier_export(path):
            raise ExportError(
                f"{path} is a folder with other files in it; choose a new or empty folder "
                "(lmstudio replaces only an earlier export)"
            )
        if any(path.iterdir()) and not overwrite:
            raise ExportError(f"{path} already holds an export; pass --force to replace it")
    else:
        if path.is_dir():
            raise ExportError(f"{path} is a folder; give a file name ending in .onnx")
        if not overwrite:
            raise ExportError(f"{path} already exists; pass --force to replace it or choose another name")


def _is_earlier_export(path: Path) -> bool:
    card = path / "README.md"
    try:
        return card.is_file() and CARD_MARK in card.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def move_into_place(tmp: Path, path: Path) -> None:
    """Rename the finished ``tmp`` onto ``path``; an old folder there is removed only after the rename."""
    if tmp.is_dir() and path.is_dir():
        old = path.with_name(f".{path.name}.{os.getpid()}.old")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def describe_write_error(e: BaseException) -> str:
    """A refused write in words, with what to do (a full disk is the usual cause)."""
    text = getattr(e, "strerror", None) or str(e)
    if "No space left" in str(e) or getattr(e, "errno", None) == 28:
        return "the disk is full (No space left on device); free some space or choose another place"
    return text


def remove_quietly(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink(missing_ok=True)


# ---- model card --------------------------------------------------------------------------------------
def evaluation(run_dir: Path, which: str, meta: dict[str, Any]) -> tuple[int, float | None]:
    """(step, validation loss) of the exported weights: from their safetensors metadata, else from the
    last evaluation at or before that step in metrics.jsonl."""
    step = int(meta.get("step") or 0)
    val = meta.get("best_val") if which == "best" else meta.get("val_loss")
    if isinstance(val, (int, float)) and math.isfinite(val):
        return step, float(val)
    from lmstudio.engine import checkpoint as ckpt

    evals = [r for r in ckpt.read_metrics(run_dir) if "val_loss" in r and int(r.get("step") or 0) <= step]
    if evals:
        vals = [float(r["val_loss"]) for r in evals]
        return step, (min(vals) if which == "best" else vals[-1])
    return step, None


def model_card(
    *,
    config,  # RunConfig
    run_dir: Path,
    which: str,
    meta: dict[str, Any],
    n_params: int,
    fmt_lines: list[str],
    load_code: str,
    notes: list[str],
) -> str:
    """README.md for an exported folder: what the model is, what it was trained on, how well, how to load it."""
    from lmstudio.engine.corpus import BUILTINS

    step, val = evaluation(run_dir, which, meta)
    source = config.corpus.source
    if source in BUILTINS:
        corpus_line = f"{BUILTINS[source][1]} (`{source}`, built into lmstudio)"
        licence = BUILTINS[source][2]
    else:
        corpus_line = f"the user's own text (`{Path(source).name}`)"
        licence = "Not recorded: the text was the user's own; check its licence before sharing this model."
    m, t, tok = config.model, config.train, config.tokenizer
    weights_file = run_dir / ("best.safetensors" if which == "best" else "model.safetensors")
    try:
        trained = datetime.fromtimestamp(weights_file.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except OSError:
        trained = "unknown"
    quality = (
        f"- validation loss {val:.4f} nats per token, perplexity {measures.perplexity(val):.2f}\n"
        if val is not None
        else "- no validation loss was recorded for these weights\n"
    )
    full = known_full_loss(run_dir, which, step)
    full_line = (
        f"- over the whole validation split: loss {full:.4f}, perplexity {measures.perplexity(full):.2f}"
        if full is not None
        else "- the whole validation split was not scored for these weights"
    )
    settings = {k: v for k, v in vars(t).items() if k not in ("device",)}
    lines = [
        CARD_MARK,
        "---",
        f"tags: [lmstudio, {m.arch}, text-generation]",
        "---",
        f"# {config.name or run_dir.name}",
        "",
        f"A {n_params:,}-parameter {m.arch} language model trained with lmstudio, exported on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        *fmt_lines,
        "",
        "## Training data",
        f"- corpus: {corpus_line}",
        f"- source and licence: {licence}",
        f"- held out for validation: the last {config.corpus.val_fraction:.0%} of the text",
        f"- tokenizer: {tok.kind}, {m.vocab_size:,} tokens",
        "",
        "## Evaluation",
        f"- weights: the {which} checkpoint, after {step:,} of {t.max_steps:,} optimizer steps "
        f"(saved {trained})",
        quality.rstrip("\n"),
        f"- estimated on {t.eval_iters} validation batches of {t.batch_size} x {m.block_size} tokens "
        "(an estimate, not the whole split; `lmstudio eval RUN --full` scores every validation token)",
        full_line,
        "",
        "## Model",
        "```json",
        json.dumps(vars(m), indent=2),
        "```",
        "",
        "## Training settings",
        "```json",
        json.dumps(settings, indent=2, default=str),
        "```",
        "",
        "## How to load",
        "```python",
        load_code.strip("\n"),
        "```",
    ]
    if notes:
        lines += ["", "## Notes on the conversion", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"
