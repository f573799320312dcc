"""Generation and inspection for the window: a loaded Session driven from one engine worker thread.

How the main window wires it:

    sessions = SessionController(parent=window)
    follower = RunFollower(sessions, training_run)  # ui/run_follower.py: decides which run to show
    tabs.addTab(GenerationPane(sessions, follower=follower), "Generate")
    tabs.addTab(InspectorPane(sessions, follower=follower), "Inspect")
    # the follower calls set_run / checkpoint_written / unload as runs start, save and get pinned
    window close: sessions.shutdown()         # stops generation, ends the worker's thread and waits

Every request is a call of ``SessionEngine`` (ui/session_engine.py, which owns the Session) submitted to
this controller's ``EngineWorker`` (ui/workers.py): they run one at a time in its thread, and each result
arrives as a signal carrying plain data (numbers, strings, lists, numpy arrays).

``checkpoint_written`` reloads a fresh Session from disk (the latest checkpoint) when idle, or marks it
stale so the next request reloads first; generation runs beside training and never touches the live model.
Step mode keeps the weights it started with until it is restarted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from lmstudio.ui.session_engine import SessionEngine
from lmstudio.ui.workers import EngineWorker


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

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.info: dict | None = None
        self._wanted: str | None = None  # the run last asked for: a late answer for another is dropped
        self._pending = 0
        self._cancel = threading.Event()
        self._stale = threading.Event()
        self._engine = SessionEngine(self._cancel, self._stale)
        self._worker = EngineWorker("lmstudio-session", self, cancel=self._cancel)
        # what the engine streams while it works: ("loaded", info), ("note", text), ("tokens", batch)
        self._streams: dict[str, Callable[[Any], None]] = {
            "loaded": self._on_loaded,
            "note": self.prompt_note.emit,
            "tokens": self.tokens_generated.emit,
        }

    # ---- state -----------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._pending > 0

    def _request(
        self, call: Callable[..., Any], *args: Any, then: Callable[[Any], None] | None = None
    ) -> None:
        """Submit ``call(report, *args)``; its result goes to ``then``, a failure to ``error``."""
        self._pending += 1
        if self._pending == 1:
            self.busy_changed.emit(True)
        job = self._worker.submit_reporting(call, *args)
        job.reported.connect(self._on_report)
        if then is not None:
            job.done.connect(then)
        job.failed.connect(self.error)
        job.finished.connect(self._on_done)

    @Slot(object)
    def _on_report(self, item: tuple[str, Any]) -> None:
        kind, value = item
        self._streams[kind](value)

    @Slot()
    def _on_done(self) -> None:
        self._pending = max(0, self._pending - 1)
        if self._pending == 0:
            self.busy_changed.emit(False)

    @Slot(object)
    def _on_loaded(self, info: dict) -> None:
        if self._wanted is None or Path(info["run_dir"]).resolve() != Path(self._wanted).resolve():
            return  # a load overtaken by unload() or by a load of another run
        self.info = info
        self.session_loaded.emit(info)

    # ---- requests (GUI thread) ---------------------------------------------------------------------
    def set_run(self, run_dir: str) -> None:
        """Load the run's latest checkpoint in the worker; ends with ``session_loaded`` or ``error``."""
        self._wanted = str(run_dir)
        self._request(self._engine.load, str(run_dir), then=self._on_loaded)

    def unload(self) -> None:
        """Forget the loaded run (a generation in flight is stopped); ends with ``session_cleared``."""
        self._cancel.set()
        self.info = None
        self._wanted = None
        self._request(self._engine.unload)
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
        self._request(self._engine.generate, prompt, dict(settings), then=self.generation_finished.emit)

    def stop(self) -> None:
        """Stop a generation in flight (a flag the worker checks before every token)."""
        self._cancel.set()

    def step_start(self, prompt: str, settings: dict) -> None:
        self._request(self._engine.step_start, prompt, dict(settings), then=self.step_ready.emit)

    def step_choose(self, token_id: int) -> None:
        """Append this token in step mode; a negative id lets the sampler pick."""
        self._request(self._engine.step_choose, int(token_id), then=self.step_ready.emit)

    def step_sample(self) -> None:
        self.step_choose(-1)

    def inspect_attention(self, text: str) -> None:
        self._request(self._engine.attention, text, then=self.attention_ready.emit)

    def inspect_activations(self, text: str) -> None:
        self._request(self._engine.activations, text, then=self.activations_ready.emit)

    def inspect_losses(self, text: str, n_top: int = 5) -> None:
        self._request(self._engine.losses, text, int(n_top), then=self.losses_ready.emit)

    def inspect_lens(self, text: str, n_top: int = 5) -> None:
        """What every layer would predict at every position of ``text``: ``lens_ready``."""
        self._request(self._engine.lens, text, int(n_top), then=self.lens_ready.emit)

    def inspect_embeddings(self, which: str = "input") -> None:
        """The 2-D map of the "input" or "output" embedding: ``embeddings_ready``."""
        self._request(self._engine.embeddings, str(which), then=self.embeddings_ready.emit)

    def validation_snippet(self, n_chars: int = 600, offset: int = 0) -> None:
        self._request(
            self._engine.validation_snippet, int(n_chars), int(offset), then=self.snippet_ready.emit
        )

    @Slot()
    def shutdown(self) -> None:
        """Stop generation, end the worker's thread and wait for it (safe to call twice)."""
        self._cancel.set()
        self._worker.shutdown()
