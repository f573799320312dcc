"""The engine side of the Generate and Inspect tabs: one loaded Session and the calls made on it.

``SessionController`` (ui/session_controller.py) submits these methods to its ``EngineWorker``, so they
all run in that one thread, one at a time; they return plain data (numbers, strings, lists, numpy
arrays) and never touch Qt. Each takes ``report`` first: ``report((kind, value))`` streams
``("loaded", info)`` when a stale run was reloaded first, ``("note", text)`` for what fitting the prompt
changed, and ``("tokens", batch)`` while generating.

Engine modules (torch) are imported inside the methods, so importing this module stays cheap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from lmstudio.errors import UserError

Report = Callable[[tuple[str, Any]], None]

# token batches reach the GUI at most this often while streaming (a signal per token costs more than the token)
_EMIT_EVERY_S = 0.04


def _step_dict(step, tokenizer) -> dict:
    return {
        "token_id": step.token_id,
        "text": step.text,
        "prob": step.prob,
        "top": list(step.top),
        "label": tokenizer.id_to_token(step.token_id),
        "unk": bool(getattr(step, "unk", False)),
        "masked": float(getattr(step, "masked", 0.0)),
        "sampled_prob": step.sampled_prob,
        # (id, label, model prob, sampled prob): the model's likeliest tokens, then the chosen one if not among them
        "candidates": [(c.token_id, c.label, c.prob, c.sampled_prob) for c in step.candidates],
    }


def _sample_config(settings: dict):
    from lmstudio.config import ConfigError, SampleConfig, section_errors

    cfg = SampleConfig(**{k: v for k, v in settings.items() if k in SampleConfig.__dataclass_fields__})
    errs = section_errors("sample", cfg)
    if errs:
        raise ConfigError(errs)
    return cfg


class SessionEngine:
    """Owns the Session. ``cancel`` stops a generation; ``stale`` asks the next call to reload first."""

    def __init__(self, cancel: threading.Event, stale: threading.Event):
        self.cancel = cancel
        self.stale = stale
        self.session: Any = None
        self.run_dir: str | None = None
        self.stepper: Any = None
        self.counts: tuple[str, object] | None = None  # (run_dir, token counts): the corpus does not change

    # ---- loading ---------------------------------------------------------------------------------
    def load(self, report: Report, run_dir: str) -> dict:
        """The run's latest checkpoint; returns the run info the tabs show."""
        try:
            return self._load(run_dir)
        except Exception:
            self.session = None
            raise

    def unload(self, report: Report) -> None:
        self.session, self.run_dir, self.stepper = None, None, None
        self.stale.clear()

    def _load(self, run_dir: str) -> dict:
        from lmstudio.engine.session import Session

        self.stale.clear()
        self.session = Session.load(run_dir, device="cpu")
        if run_dir != self.run_dir:
            self.stepper = None  # a reload of the same run keeps step mode going on the weights it began with
        self.run_dir = run_dir
        s = self.session
        m = s.config.model
        return {
            "run_dir": str(run_dir),
            "name": Path(run_dir).name,  # unique, unlike config.name
            "arch": m.arch,
            "step": int(getattr(s, "step", 0)),
            "block_size": int(s.model.block_size),
            "vocab_size": int(s.tokenizer.vocab_size),
            "n_layer": m.n_layer,
            "n_head": m.n_head if m.arch == "transformer" else 0,
            "params": int(s.model.num_params()),
            "tokenizer": s.config.tokenizer.kind,
            "sample": asdict(s.config.sample),
        }

    def _ready(self, report: Report) -> Any:
        """The session to work on: reloaded first when a newer checkpoint was written meanwhile."""
        if self.stale.is_set() and self.run_dir:
            report(("loaded", self._load(self.run_dir)))
        if self.session is None:
            raise UserError("No run is loaded: open a run from the runs list or start training first.")
        return self.session

    # ---- generation ------------------------------------------------------------------------------
    def generate(self, report: Report, prompt: str, settings: dict) -> str:
        """Streams ("tokens", [token dict]) batches; returns "completed", "stopped" or "stop string"."""
        from lmstudio.engine import sampling

        session = self._ready(report)
        cfg = _sample_config(settings)
        report(("note", sampling.fit_prompt(session, prompt).note))
        batch: list[dict] = []
        last = time.monotonic()
        n = 0
        for step in sampling.generate(
            session, prompt, cfg, cancel=self.cancel, n_top=int(settings.get("n_top", 10))
        ):
            n += 1
            batch.append(_step_dict(step, session.tokenizer))
            if time.monotonic() - last >= _EMIT_EVERY_S:
                report(("tokens", batch))
                batch, last = [], time.monotonic()
        if batch:
            report(("tokens", batch))
        if self.cancel.is_set():
            return "stopped"
        return "stop string" if n < cfg.max_tokens else "completed"

    def step_start(self, report: Report, prompt: str, settings: dict) -> dict:
        from lmstudio.engine import sampling

        session = self._ready(report)
        report(("note", sampling.fit_prompt(session, prompt).note))
        self.stepper = sampling.Stepper(
            session, prompt, _sample_config(settings), n_top=int(settings.get("n_top", 10))
        )
        return {"step": None, "choices": self._choices()}

    def step_choose(self, report: Report, token_id: int) -> dict:
        """Append ``token_id`` in step mode (a negative id: the sampler picks)."""
        session = self._ready(report)
        if self.stepper is None:
            raise UserError("Step mode is not running: press Start step mode first.")
        step = self.stepper.append(token_id) if token_id >= 0 else self.stepper.sample()
        return {"step": _step_dict(step, session.tokenizer), "choices": self._choices()}

    def _choices(self) -> list[tuple[int, str, float, float]]:
        """Step mode's next-token candidates: (id, label, model prob, sampler prob)."""
        return [(c.token_id, c.label, c.prob, c.sampled_prob) for c in self.stepper.candidates()]

    # ---- inspection ------------------------------------------------------------------------------
    def attention(self, report: Report, text: str) -> dict:
        from lmstudio.engine import inspect as lm_inspect

        session = self._ready(report)
        tokens, weights = lm_inspect.attention(session, text)
        note = lm_inspect.fit_to_context(session, text).note
        return {"tokens": tokens, "weights": weights, "note": note}

    def activations(self, report: Report, text: str) -> dict:
        from lmstudio.engine import inspect as lm_inspect

        session = self._ready(report)
        tokens, maps = lm_inspect.activations(session, text)
        note = lm_inspect.fit_to_context(session, text).note
        return {"tokens": tokens, "maps": maps, "note": note, "arch": session.config.model.arch}

    def losses(self, report: Report, text: str, n_top: int) -> dict:
        from lmstudio.engine import inspect as lm_inspect

        session = self._ready(report)
        rows = lm_inspect.token_losses(session, text, n_top)
        fitted = lm_inspect.fit_to_context(session, text, extra=1)
        return {
            "first": fitted.pieces[0],
            "note": fitted.note,
            "rows": [
                {
                    "token": r.token,
                    "loss": r.loss,
                    "prob": r.prob,
                    "top": r.top,
                    "unk": session.tokenizer.is_unk(r.token_id),
                }
                for r in rows
            ],
        }

    def lens(self, report: Report, text: str, n_top: int) -> dict:
        from lmstudio.engine import lens as lm_lens

        session = self._ready(report)
        result = lm_lens.logit_lens(session, text, n_top)
        out = {f.name: getattr(result, f.name) for f in fields(result)}
        out["correct"] = result.correct
        out["arch"] = session.config.model.arch
        return out

    def embeddings(self, report: Report, which: str) -> dict:
        from lmstudio.engine import embeddings as lm_emb

        session = self._ready(report)
        if self.counts is None or self.counts[0] != self.run_dir:
            self.counts = (str(self.run_dir), lm_emb.token_counts(session))
        result = lm_emb.embedding_map(session, which, counts=self.counts[1])
        out = {f.name: getattr(result, f.name) for f in fields(result)}
        out["note"] = result.note
        out["step"] = int(getattr(session, "step", 0))
        return out

    def validation_snippet(self, report: Report, n_chars: int, offset: int) -> str:
        from lmstudio.engine import inspect as lm_inspect

        return lm_inspect.validation_text(self._ready(report), n_chars, offset)
