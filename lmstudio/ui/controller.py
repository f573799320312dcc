"""The one place the window calls the engine; everything it hands back is plain data.

Engine modules import torch, so they are imported lazily inside the methods: ``warm_up`` imports them
once in a worker thread at start-up, so later calls from the GUI thread find them already loaded.
Methods marked *worker* take ``(progress, cancel)`` and are meant for ``workers.TaskWorker``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lmstudio import config, resources, run_history, run_list, run_status, runfolder

Progress = Callable[[float], None]


def cache_dir() -> Path:
    """Where encoded corpora are cached ($LMSTUDIO_CACHE or ~/.lmstudio/cache)."""
    return runfolder.default_cache_dir()


def _plain(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _pause_for_space(error: Any) -> bool:
    """The app's disk policy: someone is at the controls, so a checkpoint the disk refuses pauses the run and
    Resume saves it again, rather than failing it (the bake-off and the CLI keep the trainer's default: fail)."""
    return True


class Controller:
    """Plain-data front of the engine. Holds the last built tokenizer for the live split preview."""

    def __init__(self) -> None:
        self._tokenizer = None  # engine Tokenizer; never handed to the UI
        self._tokenizer_key: tuple | None = None
        self._lock = threading.Lock()
        self._estimates: dict[tuple, tuple[int, dict]] = {}
        self._times: dict[tuple, dict] = {}  # measured training-time estimates per config
        # set once warm_up has imported the engine: until then the GUI thread must not import torch
        # itself (seconds of a frozen window at start-up)
        self.ready = False

    # ---- start-up ---------------------------------------------------------------------------
    def warm_up(self, progress: Progress | None = None, cancel: threading.Event | None = None) -> str:
        """*worker*: import the engine (torch) once and describe the device for the status bar."""
        from lmstudio.engine import checkpoint, corpus, data, device, models, tokenizer, trainer  # noqa: F401

        self.ready = True
        return self.describe_device()

    def describe_device(self) -> str:
        from lmstudio.engine import device

        try:
            return device.describe_device(device.resolve_device("auto"))
        except Exception:  # the label is informative only; training reports the device it really uses
            return "CPU"

    # ---- corpus -----------------------------------------------------------------------------
    def builtin_corpora(self) -> list[dict]:
        from lmstudio.engine import corpus

        return [_plain(c) for c in corpus.builtin_corpora()]

    def corpus_info(self, source: str) -> dict:
        """Stats and a preview of a built-in name, a file or a folder; raises UserError (CorpusError)."""
        from lmstudio.engine import corpus

        return _plain(corpus.corpus_info(source))

    def corpus_sources_text(self) -> str:
        """The built-in corpora's sources and licences (SOURCES.md) for the About box."""
        path = resources.corpora_dir() / "SOURCES.md"
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    # ---- tokenizer --------------------------------------------------------------------------
    def build_tokenizer(
        self, source: str, tok_cfg: config.TokenizerConfig, progress: Progress, cancel: threading.Event
    ) -> dict:
        """*worker*: train a tokenizer on the corpus, count token frequencies, keep it for previews.

        Returns ``{kind, vocab_size, tokens (object array), ids, freq (int64 arrays), n_tokens,
        chars_per_token}``. Encoding streams through the engine's cache (and reports progress), so the
        trainer later finds the corpus already encoded.
        """
        from lmstudio.engine import corpus, data, tokenizer

        progress(0.0)
        from lmstudio.engine.script import convert as convert_script

        text = convert_script(corpus.read_corpus(source), tok_cfg.script)
        progress(0.05)
        tok = tokenizer.train_tokenizer(tok_cfg, text)
        if cancel.is_set():
            return {}
        progress(0.2)
        try:
            ids = data.encode_to_cache(
                text, tok, cache_dir(), progress=lambda f: progress(0.2 + 0.8 * f), cancel=cancel
            )
        except data.Cancelled:
            return {}
        ids = np.asarray(ids)
        vocab = tok.vocab()
        tokens = np.empty(len(vocab), dtype=object)
        tokens[:] = [t for t, _ in vocab]
        tok_ids = np.fromiter((i for _, i in vocab), dtype=np.int64, count=len(vocab))
        counts = np.bincount(ids.astype(np.int64), minlength=int(tok_ids.max(initial=-1)) + 1)
        advice = self._advice(tok, tok_cfg, text, ids)
        with self._lock:
            self._tokenizer = tok
            self._tokenizer_key = (source, dataclasses.astuple(tok_cfg))
        progress(1.0)
        return {
            "kind": tok.kind,
            "vocab_size": int(tok.vocab_size),
            "tokens": tokens,
            "ids": tok_ids,
            "freq": counts[tok_ids],
            "n_tokens": int(ids.size),
            "chars_per_token": len(text) / max(1, int(ids.size)),
            **advice,
        }

    @staticmethod
    def _advice(tok, tok_cfg: config.TokenizerConfig, text: str, ids: np.ndarray) -> dict:
        """Coverage of the splits (the default validation share), a suggested size, warnings."""
        from lmstudio.engine import corpus, split_stats, vocab_advice

        n_train, _ = corpus.split_sizes(int(ids.size), config.CorpusConfig().val_fraction)
        stats = split_stats.split_stats(tok, ids[:n_train], ids[n_train:], len(text))
        distinct = len(set(text))
        words = tok.vocab_size - 1 if tok.kind == "word" and tok.vocab_size - 1 < tok_cfg.vocab_size else None
        chars_per_token = len(text) / max(1, int(ids.size))
        return {
            "distinct_chars": distinct,
            "unk_train": stats["train"].unk_share,
            "unk_val": stats["val"].unk_share,
            "suggested_vocab": vocab_advice.suggested_vocab_size(tok.kind, distinct, words),
            "warnings": vocab_advice.warnings(tok.kind, tok.vocab_size, chars_per_token, distinct, stats),
        }

    def has_tokenizer(self) -> bool:
        return self._tokenizer is not None

    def tokenizer_key(self) -> tuple | None:
        return self._tokenizer_key

    def built_tokenizer_for(self, cfg: config.RunConfig):
        """The tokenizer Setup built, if it was built for this corpus and these tokenizer settings: the
        trainer reuses it (the vocabulary the user browsed) instead of training it again."""
        with self._lock:
            if self._tokenizer_key == (cfg.corpus.source, dataclasses.astuple(cfg.tokenizer)):
                return self._tokenizer
        return None

    def is_unk(self, token_id: int) -> bool:
        """Whether ``token_id`` is the unknown token of the last built tokenizer."""
        with self._lock:
            tok = self._tokenizer
        return tok is not None and tok.is_unk(int(token_id))

    def split(self, text: str) -> list[tuple[str, int]]:
        """How the last built tokenizer splits ``text``: pieces (display form) with their ids."""
        with self._lock:
            tok = self._tokenizer
        if tok is None or not text:
            return []
        return [(str(piece), int(i)) for piece, i in tok.split(text)]

    # ---- model size -------------------------------------------------------------------------
    def estimate(self, model_cfg: config.ModelConfig, train_cfg: config.TrainConfig) -> tuple[int, dict]:
        """(parameter count, memory estimate dict) for a config; cached per distinct config."""
        key = (dataclasses.astuple(model_cfg), dataclasses.astuple(train_cfg))
        if key not in self._estimates:
            from lmstudio.engine import models

            n = int(models.param_count(model_cfg))
            mem = {
                k: (float(v) if isinstance(v, (int, float)) else v)
                for k, v in models.memory_estimate(model_cfg, train_cfg).items()
            }
            if len(self._estimates) > 256:
                self._estimates.clear()
            self._estimates[key] = (n, mem)
        return self._estimates[key]

    def receptive_field(self, model_cfg: config.ModelConfig) -> int | None:
        """Tokens the convolutional model's prediction can depend on; None for the other architectures."""
        if model_cfg.arch != "conv":
            return None
        from lmstudio.engine.models.conv import receptive_field

        return int(receptive_field(model_cfg))

    def estimate_time(
        self,
        model_cfg: config.ModelConfig,
        train_cfg: config.TrainConfig,
        progress: Progress,
        cancel: threading.Event,
    ) -> dict:
        """*worker*: time a few real training steps of this model here (engine/speed_probe.py); cached."""
        from lmstudio.engine.speed_probe import estimate_training_time

        key = (dataclasses.astuple(model_cfg), dataclasses.astuple(train_cfg))
        if key not in self._times:
            result = estimate_training_time(model_cfg, train_cfg, cancel=cancel)
            if not result:
                return {}
            self._times[key] = result
        return dict(self._times[key])

    # ---- presets ----------------------------------------------------------------------------
    def preset_description(self, name: str) -> str:
        """The preset file's first comment line: what it is and what it costs."""
        try:
            lines = resources.preset_path(name).read_text(encoding="utf-8").splitlines()
        except (resources.ResourceError, OSError):
            return ""
        text = []
        for line in lines:
            if not line.startswith("#"):
                break
            text.append(line.lstrip("# ").strip())
        return " ".join(text)

    def presets(self) -> list[str]:
        try:
            return resources.list_presets()
        except resources.ResourceError:
            return []

    def load_preset(self, name: str) -> config.RunConfig:
        return config.load_preset(name)

    # ---- training ---------------------------------------------------------------------------
    def runs_dir(self) -> Path:
        return runfolder.default_runs_dir()

    def new_control(self):
        """The engine's thread-safe TrainControl (pause/resume/stop/set_lr are safe from any thread)."""
        from lmstudio.engine.trainer import TrainControl

        return TrainControl()

    def bakeoff_events(
        self, corpus: str, budget: float, control, overrides: list[str] | None = None
    ) -> Iterator[Any]:
        """*worker*: the bake-off's events (engine/bakeoff.py), its runs in the runs folder."""
        from lmstudio.engine import bakeoff

        yield from bakeoff.run_bakeoff(
            corpus, budget, self.runs_dir(), control=control, overrides=overrides, cache_dir=cache_dir()
        )

    def bakeoff_table(self, rows: list) -> str:
        from lmstudio.engine import bakeoff

        return bakeoff.table_markdown(rows)

    def gpu_count(self) -> int:
        """CUDA GPUs to offer "train on all N GPUs" for; 0 until ``warm_up`` has imported torch."""
        if not self.ready:
            return 0
        from lmstudio.engine import launch

        return launch.gpu_count()

    def training_events(
        self, cfg: config.RunConfig, control, resume_dir: str | None = None, *, nproc: int = 1
    ) -> Iterator[Any]:
        """*worker*: create the run folder and iterate the trainer's events (frozen dataclasses).

        ``nproc`` > 1: the run trains in a child process on that many ranks (``lmstudio train --nproc``),
        followed through its event stream; the events and the controls are the same."""
        from lmstudio.engine.trainer import Trainer

        if resume_dir:
            run_dir, resume = Path(resume_dir), True
        else:
            run_dir, resume = runfolder.new_run_dir(self.runs_dir(), cfg.name or cfg.model.arch), False
            # the folder's name is the run's name: a second "demo" becomes "demo-2" everywhere
            cfg = dataclasses.replace(cfg, name=run_dir.name)
        if nproc > 1:
            from lmstudio.engine.child_run import child_run_events

            yield from child_run_events(
                None if resume else cfg.to_json(), run_dir, nproc, control, resume=resume
            )
            return
        trainer = Trainer(
            cfg,
            run_dir,
            control=control,
            resume=resume,
            cache_dir=cache_dir(),
            tokenizer=None if resume else self.built_tokenizer_for(cfg),
            on_save_refused=_pause_for_space,
        )
        yield from run_status.record(trainer.run(), run_dir)

    # ---- runs -------------------------------------------------------------------------------
    def list_runs(self) -> list[dict]:
        """The readable runs; ``skipped_runs`` then holds the damaged folders (path, reason) left out."""
        runs, skipped = run_list.scan_runs(self.runs_dir())
        self.skipped_runs = [_plain(s) for s in skipped]
        return [_plain(r) for r in runs]

    def rename_run(self, run_dir: str, new_name: str) -> Path:
        from lmstudio import run_files

        return run_files.rename_run(run_dir, new_name, self.runs_dir())

    def delete_run(self, run_dir: str) -> None:
        from lmstudio import run_files

        run_files.delete_run(run_dir, self.runs_dir())

    def run_config(self, run_dir: str) -> config.RunConfig:
        return config.RunConfig.load(Path(run_dir) / runfolder.CONFIG_FILE)

    def run_curves(self, run_dir: str) -> dict[str, np.ndarray]:
        """A run's metrics.jsonl as arrays: ``step``/``time``/``loss`` for steps and ``eval_*`` for evals."""
        steps, evals = [], []
        for row in run_history.read_metrics(run_dir):
            kind = row.get("event", "")
            if kind == "EvalMetrics" or ("val_loss" in row and kind != "StepMetrics"):
                evals.append(row)
            elif kind == "StepMetrics" or "loss" in row:
                steps.append(row)

        def col(rows: list[dict], key: str) -> np.ndarray:
            return np.array([float(r.get(key, np.nan)) for r in rows], dtype=np.float64)

        return {
            "step": col(steps, "step"),
            "time": col(steps, "elapsed"),
            "loss": col(steps, "loss"),
            "lr": col(steps, "lr"),
            "tokens_per_s": col(steps, "tokens_per_s"),
            "eval_step": col(evals, "step"),
            "eval_time": col(evals, "elapsed"),
            "train_loss": col(evals, "train_loss"),
            "val_loss": col(evals, "val_loss"),
            "val_ppl": col(evals, "val_ppl"),
            "val_acc": col(evals, "val_acc"),
        }

    def run_samples(self, run_dir: str) -> list[dict]:
        return [_plain(s) for s in run_history.read_samples(run_dir)]

    # ---- export -----------------------------------------------------------------------------
    def export_missing(self, fmt: str) -> str:
        """Why ``fmt`` ("hf" or "onnx") cannot be exported here ("" when it can): the optional libraries
        it needs that are not installed, and how to install them. Looks them up without importing them."""
        import importlib.util

        from lmstudio.engine.export_common import EXTRA_MODULES, INSTALL_HINT

        missing = []
        for name in EXTRA_MODULES[fmt]:
            try:
                found = importlib.util.find_spec(name) is not None
            except (ImportError, ValueError):  # a broken or blocked installation
                found = False
            if not found:
                missing.append(name)
        if not missing:
            return ""
        return f"This export needs {', '.join(missing)}, not installed here. Install the export extra:\n{INSTALL_HINT}"

    def export_run(
        self,
        run_dir: str,
        fmt: str,
        out: str,
        which: str = "latest",
        overwrite: bool = False,
        step: bool = False,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> dict:
        """*worker*: write the export (see docs/export.md); returns ``{path, summary, notes}``."""
        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "hf":
            from lmstudio.engine.export_hf import export_hf

            result = export_hf(
                run_dir, target, which=which, overwrite=overwrite, progress=progress, cancel=cancel
            )
        else:
            from lmstudio.engine.export_onnx import export_onnx

            result = export_onnx(
                run_dir, target, which=which, overwrite=overwrite, step=step, progress=progress, cancel=cancel
            )
        return {"path": str(result.path), "summary": result.summary(), "notes": list(result.notes)}
