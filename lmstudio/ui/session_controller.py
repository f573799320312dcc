"""Generation and inspection for the window: a loaded Session driven from one worker thread.

How the main window wires it:

    sessions = SessionController(parent=window)
    follower = RunFollower(sessions, training_run)  # ui/run_follower.py: decides which run to show
    tabs.addTab(GenerationPane(sessions, follower=follower), "Generate")
    tabs.addTab(InspectorPane(sessions, follower=follower), "Inspect")
    # the follower calls set_run / checkpoint_written / unload as runs start, save and get pinned
    window close: sessions.shutdown()         # stops generation, quits and waits for the thread

``checkpoint_written`` reloads a fresh Session from disk (the latest checkpoint) when idle, or marks it
stale so the next request reloads first; generation runs beside training and never touches the live model.
Step mode keeps the weights it started with until it is restarted.
Every result arrives as a signal carrying plain data (numbers, strings, lists, numpy arrays).

Engine modules (torch) are imported inside the worker, never in the GUI thread's code paths.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal, Slot

from lmstudio.errors import UserError

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


class _Worker(QObject):
    """Lives in the controller's thread; owns the Session. Slots run one request at a time."""

    loaded = Signal(dict)
    failed = Signal(str)
    request_done = Signal()
    tokens = Signal(list)
    generation_finished = Signal(str)
    step_ready = Signal(dict)
    attention = Signal(dict)
    activations = Signal(dict)
    losses = Signal(dict)
    lens = Signal(dict)
    embeddings = Signal(dict)
    snippet = Signal(str)
    prompt_note = Signal(str)

    def __init__(self, cancel: threading.Event, stale: threading.Event):
        super().__init__()
        self.cancel = cancel
        self.stale = stale
        self.session = None
        self.run_dir: str | None = None
        self.stepper = None
        self.counts: tuple[str, object] | None = None  # (run_dir, token counts): the corpus does not change

    # ---- plumbing --------------------------------------------------------------------------------
    def _run(self, work) -> None:
        try:
            if self.stale.is_set() and self.run_dir:
                self._load(self.run_dir)
            if self.session is None:
                raise UserError("No run is loaded: open a run from the runs list or start training first.")
            work()
        except UserError as e:
            self.failed.emit(str(e))
        except Exception as e:  # noqa: BLE001 - a bug must reach the user, not kill the thread silently
            self.failed.emit(
                f"Unexpected error ({type(e).__name__}: {e}). Please report it.\n"
                + traceback.format_exc(limit=4)
            )
        finally:
            self.request_done.emit()

    def _load(self, run_dir: str) -> None:
        from lmstudio.engine.session import Session

        self.stale.clear()
        self.session = Session.load(run_dir, device="cpu")
        if run_dir != self.run_dir:
            self.stepper = None  # a reload of the same run keeps step mode going on the weights it began with
        self.run_dir = run_dir
        s = self.session
        m = s.config.model
        self.loaded.emit(
            {
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
        )

    # ---- requests ----------------------------------------------------------------------------------
    @Slot(str)
    def load(self, run_dir: str) -> None:
        try:
            self._load(run_dir)
        except UserError as e:
            self.session = None
            self.failed.emit(str(e))
        except Exception as e:  # noqa: BLE001
            self.session = None
            self.failed.emit(f"Could not load {run_dir} ({type(e).__name__}: {e}).")
        finally:
            self.request_done.emit()

    @Slot()
    def unload(self) -> None:
        self.session, self.run_dir, self.stepper = None, None, None
        self.stale.clear()
        self.request_done.emit()

    @Slot(str, dict)
    def generate(self, prompt: str, settings: dict) -> None:
        def work():
            from lmstudio.engine import sampling

            cfg = _sample_config(settings)
            self.prompt_note.emit(sampling.fit_prompt(self.session, prompt).note)
            batch, last = [], time.monotonic()
            reason = "completed"
            n = 0
            for step in sampling.generate(
                self.session, prompt, cfg, cancel=self.cancel, n_top=int(settings.get("n_top", 10))
            ):
                n += 1
                batch.append(_step_dict(step, self.session.tokenizer))
                if time.monotonic() - last >= _EMIT_EVERY_S:
                    self.tokens.emit(batch)
                    batch, last = [], time.monotonic()
            if batch:
                self.tokens.emit(batch)
            if self.cancel.is_set():
                reason = "stopped"
            elif n < cfg.max_tokens:
                reason = "stop string"
            self.generation_finished.emit(reason)

        self._run(work)

    @Slot(str, dict)
    def step_start(self, prompt: str, settings: dict) -> None:
        def work():
            from lmstudio.engine import sampling

            self.prompt_note.emit(sampling.fit_prompt(self.session, prompt).note)
            self.stepper = sampling.Stepper(
                self.session, prompt, _sample_config(settings), n_top=int(settings.get("n_top", 10))
            )
            self.step_ready.emit({"step": None, "choices": self._choices()})

        self._run(work)

    def _choices(self) -> list[tuple[int, str, float, float]]:
        """Step mode's next-token candidates: (id, label, model prob, sampler prob)."""
        return [(c.token_id, c.label, c.prob, c.sampled_prob) for c in self.stepper.candidates()]

    @Slot(int)
    def step_choose(self, token_id: int) -> None:
        def work():
            if self.stepper is None:
                raise UserError("Step mode is not running: press Start step mode first.")
            step = self.stepper.append(token_id) if token_id >= 0 else self.stepper.sample()
            self.step_ready.emit(
                {"step": _step_dict(step, self.session.tokenizer), "choices": self._choices()}
            )

        self._run(work)

    @Slot(str)
    def inspect_attention(self, text: str) -> None:
        def work():
            from lmstudio.engine import inspect as lm_inspect

            tokens, weights = lm_inspect.attention(self.session, text)
            note = lm_inspect.fit_to_context(self.session, text).note
            self.attention.emit({"tokens": tokens, "weights": weights, "note": note})

        self._run(work)

    @Slot(str)
    def inspect_activations(self, text: str) -> None:
        def work():
            from lmstudio.engine import inspect as lm_inspect

            tokens, maps = lm_inspect.activations(self.session, text)
            note = lm_inspect.fit_to_context(self.session, text).note
            self.activations.emit(
                {"tokens": tokens, "maps": maps, "note": note, "arch": self.session.config.model.arch}
            )

        self._run(work)

    @Slot(str, int)
    def inspect_losses(self, text: str, n_top: int) -> None:
        def work():
            from lmstudio.engine import inspect as lm_inspect

            rows = lm_inspect.token_losses(self.session, text, n_top)
            fitted = lm_inspect.fit_to_context(self.session, text, extra=1)
            self.losses.emit(
                {
                    "first": fitted.pieces[0],
                    "note": fitted.note,
                    "rows": [
                        {
                            "token": r.token,
                            "loss": r.loss,
                            "prob": r.prob,
                            "top": r.top,
                            "unk": self.session.tokenizer.is_unk(r.token_id),
                        }
                        for r in rows
                    ],
                }
            )

        self._run(work)

    @Slot(str, int)
    def inspect_lens(self, text: str, n_top: int) -> None:
        def work():
            from dataclasses import fields

            from lmstudio.engine import lens as lm_lens

            result = lm_lens.logit_lens(self.session, text, n_top)
            out = {f.name: getattr(result, f.name) for f in fields(result)}
            out["correct"] = result.correct
            out["arch"] = self.session.config.model.arch
            self.lens.emit(out)

        self._run(work)

    @Slot(str)
    def inspect_embeddings(self, which: str) -> None:
        def work():
            from dataclasses import fields

            from lmstudio.engine import embeddings as lm_emb

            if self.counts is None or self.counts[0] != self.run_dir:
                self.counts = (str(self.run_dir), lm_emb.token_counts(self.session))
            result = lm_emb.embedding_map(self.session, which, counts=self.counts[1])
            out = {f.name: getattr(result, f.name) for f in fields(result)}
            out["note"] = result.note
            out["step"] = int(getattr(self.session, "step", 0))
            self.embeddings.emit(out)

        self._run(work)

    @Slot(int, int)
    def validation_snippet(self, n_chars: int, offset: int) -> None:
        def work():
            from lmstudio.engine import inspect as lm_inspect

            self.snippet.emit(lm_inspect.validation_text(self.session, n_chars, offset))

        self._run(work)


class SessionController(QObject):
    """The Generate and Inspect tabs' way to the engine. See the module docstring for the wiring."""

    session_loaded = Signal(dict)  # run info: run_dir, name, arch, step, block_size, vocab_size, n_layer, ...
    session_cleared = Signal()  # no run is loaded any more (e.g. waiting for a new run's first checkpoint)
    error = Signal(str)  # a message for the user
    busy_changed = Signal(bool)
    tokens_generated = Signal(list)  # [{token_id, text, label, prob, top: [(label, prob)]}] in order
    generation_finished = Signal(str)  # "completed", "stopped", "stop string"
    step_ready = Signal(dict)  # {"step": token dict or None, "choices": [(id, label, prob, sampled_prob)]}
    attention_ready = Signal(dict)  # {"tokens", "weights": (L, H, T, T), "note"}
    activations_ready = Signal(dict)  # {"tokens", "maps": {name: (L, T, H)}, "note", "arch"}
    losses_ready = Signal(dict)  # {"first": str, "rows": [{token, loss, prob, top}], "note"}
    # {"kind", "tokens", "rows", "top_ids" (R, T, k), "top_probs", "target_ids" (T,), "target_probs" (R, T),
    #  "labels": {id: label}, "correct" (R, T), "note", "arch"}
    lens_ready = Signal(dict)
    # {"which", "tied", "labels", "kinds", "coords" (V, 2), "explained", "neighbours" (V, k), "similarity",
    #  "counts" (V,) or None, "note", "step"}
    embeddings_ready = Signal(dict)
    snippet_ready = Signal(str)
    prompt_note = Signal(str)  # what fitting the prompt to the run's characters changed ('' if nothing)

    _load = Signal(str)
    _unload = Signal()
    _generate = Signal(str, dict)
    _step_start = Signal(str, dict)
    _step_choose = Signal(int)
    _attention = Signal(str)
    _activations = Signal(str)
    _losses = Signal(str, int)
    _snippet = Signal(int, int)
    _lens = Signal(str, int)
    _embeddings = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.info: dict | None = None
        self._wanted: str | None = None  # the run last asked for: a late answer for another is dropped
        self._pending = 0
        self._cancel = threading.Event()
        self._stale = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName("lmstudio-session")
        self._worker = _Worker(self._cancel, self._stale)
        self._worker.moveToThread(self._thread)
        for mine, theirs in (
            (self._load, self._worker.load),
            (self._unload, self._worker.unload),
            (self._generate, self._worker.generate),
            (self._step_start, self._worker.step_start),
            (self._step_choose, self._worker.step_choose),
            (self._attention, self._worker.inspect_attention),
            (self._activations, self._worker.inspect_activations),
            (self._losses, self._worker.inspect_losses),
            (self._snippet, self._worker.validation_snippet),
            (self._lens, self._worker.inspect_lens),
            (self._embeddings, self._worker.inspect_embeddings),
        ):
            mine.connect(theirs)
        w = self._worker
        w.loaded.connect(self._on_loaded)
        w.failed.connect(self.error)
        w.request_done.connect(self._on_done)
        w.tokens.connect(self.tokens_generated)
        w.generation_finished.connect(self.generation_finished)
        w.step_ready.connect(self.step_ready)
        w.attention.connect(self.attention_ready)
        w.activations.connect(self.activations_ready)
        w.losses.connect(self.losses_ready)
        w.snippet.connect(self.snippet_ready)
        w.prompt_note.connect(self.prompt_note)
        w.lens.connect(self.lens_ready)
        w.embeddings.connect(self.embeddings_ready)
        self._thread.start()
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    # ---- state -----------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._pending > 0

    def _request(self, signal: Any, *args: Any) -> None:
        self._pending += 1
        if self._pending == 1:
            self.busy_changed.emit(True)
        signal.emit(*args)

    @Slot()
    def _on_done(self) -> None:
        self._pending = max(0, self._pending - 1)
        if self._pending == 0:
            self.busy_changed.emit(False)

    @Slot(dict)
    def _on_loaded(self, info: dict) -> None:
        if self._wanted is None or Path(info["run_dir"]).resolve() != Path(self._wanted).resolve():
            return  # a load overtaken by unload() or by a load of another run
        self.info = info
        self.session_loaded.emit(info)

    # ---- requests (GUI thread) ---------------------------------------------------------------------
    def set_run(self, run_dir: str) -> None:
        """Load the run's latest checkpoint in the worker; ends with ``session_loaded`` or ``error``."""
        self._wanted = str(run_dir)
        self._request(self._load, str(run_dir))

    def unload(self) -> None:
        """Forget the loaded run (a generation in flight is stopped); ends with ``session_cleared``."""
        self._cancel.set()
        self.info = None
        self._wanted = None
        self._request(self._unload)
        self.session_cleared.emit()

    @Slot(str)
    def checkpoint_written(self, path: str) -> None:
        """A new checkpoint exists (``path``: the run folder or a file in it) of the run to show.

        For the loaded run: reload now when idle, else mark it stale so the next request reloads first
        (a generation in progress finishes on the weights it started with). With no run or another run
        loaded (a new training run has no checkpoint until its first save), load this one.
        """
        if not path:
            return
        p = Path(path)
        run_dir = p if p.is_dir() else p.parent
        if self.info is None or run_dir.resolve() != Path(self.info["run_dir"]).resolve():
            self.set_run(str(run_dir))
        else:
            if self.busy:
                self._stale.set()
            else:
                self.set_run(self.info["run_dir"])

    def generate(self, prompt: str, settings: dict) -> None:
        """Stream tokens (``tokens_generated``) then ``generation_finished``; settings: SampleConfig fields + n_top."""
        self._cancel.clear()
        self._request(self._generate, prompt, dict(settings))

    def stop(self) -> None:
        """Stop a generation in flight (a flag the worker checks before every token)."""
        self._cancel.set()

    def step_start(self, prompt: str, settings: dict) -> None:
        self._request(self._step_start, prompt, dict(settings))

    def step_choose(self, token_id: int) -> None:
        """Append this token in step mode; a negative id lets the sampler pick."""
        self._request(self._step_choose, int(token_id))

    def step_sample(self) -> None:
        self.step_choose(-1)

    def inspect_attention(self, text: str) -> None:
        self._request(self._attention, text)

    def inspect_activations(self, text: str) -> None:
        self._request(self._activations, text)

    def inspect_losses(self, text: str, n_top: int = 5) -> None:
        self._request(self._losses, text, int(n_top))

    def inspect_lens(self, text: str, n_top: int = 5) -> None:
        """What every layer would predict at every position of ``text``: ``lens_ready``."""
        self._request(self._lens, text, int(n_top))

    def inspect_embeddings(self, which: str = "input") -> None:
        """The 2-D map of the "input" or "output" embedding: ``embeddings_ready``."""
        self._request(self._embeddings, str(which))

    def validation_snippet(self, n_chars: int = 600, offset: int = 0) -> None:
        self._request(self._snippet, int(n_chars), int(offset))

    @Slot()
    def shutdown(self) -> None:
        """Stop generation, end the thread and wait for it (safe to call twice)."""
        self._cancel.set()
        if self._thread.isRunning():
            self._thread.quit()
            self._thread.wait()
