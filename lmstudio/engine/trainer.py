"""The training loop: a generator of events, steerable from another thread.

``Trainer(config, run_dir).run()`` yields plain-data events (``events.py``) while it trains; the UI iterates
it in a worker thread, the CLI in the main thread. ``TrainControl`` carries pause / resume / stop / new
learning rate requests from any thread; the loop looks at it once per optimizer step.

Choices that keep the hot loop as fast as a hand-written one (bench/train_throughput.py):
the loss leaves the device (``.item()``) only every ``log_interval`` steps (on the CPU a per-step
finiteness check is free, on CUDA it is read one step late without stalling), gradients are dropped
with ``set_to_none``, batches are the only per-step allocations, AdamW runs fused kernels (CPU too), and, when
asked for (``host_memory``, opt-in), freed activations stay in the process for the next step.

The loop is minGPT's: it trains and yields events. Around it, each in its own module: the parts a run is
made of and a checkpoint's restore (``train_parts``), one optimizer step (``train_step``), the evaluation and
the sample (``train_eval``), the final score on the whole validation split (``full_eval``), the checkpoint
(``train_save``), the run's files (``recorder``, subscribed to the events), the clock (``stopwatch``), the
``torch.compile`` fallback (``device.CompileFallback``) and what a fault becomes (``train_failures``: a final
``Failed`` event, never an exception).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import torch

from lmstudio import runfolder, safe_read
from lmstudio.config import RunConfig
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine import device as dev
from lmstudio.engine import distributed, full_eval, host_memory, train_eval, train_save, train_step
from lmstudio.engine.data import Cancelled
from lmstudio.engine.finite_watch import FiniteWatch
from lmstudio.engine.recorder import RunRecorder
from lmstudio.engine.schedule import lr_at
from lmstudio.engine.stopwatch import Stopwatch
from lmstudio.engine.train_control import TrainControl
from lmstudio.engine.train_failures import DiskError, classify, disk_error, paused_for_space
from lmstudio.engine.train_parts import STATE_VERSION, TrainParts, build_parts, prepare, restore, start_device
from lmstudio.events import (
    Checkpointed,
    Event,
    Failed,
    Finished,
    Notice,
    Sample,
    Started,
    StateChanged,
)
from lmstudio.runlock import LOCK_FILE, RunLock

__all__ = ["STATE_VERSION", "TrainControl", "Trainer"]


class Trainer:
    """Trains ``config`` into ``run_dir`` (``resume=True`` continues the checkpoint found there).

    minGPT's shape: the trainer trains and yields events, and never prints or writes history itself. A
    ``RunRecorder`` subscribed to the events writes the run's files; ``subscribe`` adds other listeners. The
    caller's ``config`` is never changed: the trainer completes its own copy (the vocabulary size).
    """

    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path,
        *,
        control: TrainControl | None = None,
        resume: bool = False,
        cache_dir: str | Path | None = None,
        tokenizer: Any = None,
        dist: distributed.SingleProcess | None = None,
        on_save_refused: Callable[[DiskError], bool] | None = None,
    ):
        """``tokenizer``: one already trained for this config (e.g. by the setup screen), so the trainer
        need not train it again; ignored when resuming (the run's own tokenizer.json is used).
        ``dist``: this process's place in a torchrun launch (``distributed.init_from_env``); the default
        is an ordinary one-process run.
        ``on_save_refused(error)``: the caller's answer when the disk refuses a checkpoint (full, read-only, no
        permission). True: pause (saying so) and save again on ``control.resume()``, so a person who frees some
        space loses no steps; a stop then tries once more and ends the run as a disk failure, the last saved
        checkpoint intact. False, or no answer (the default, for runs nobody watches): the run fails at once."""
        self.dist = dist or distributed.SINGLE
        self.config = copy.deepcopy(config)
        self.run_dir = Path(run_dir)
        self.control = control or TrainControl()
        self.on_save_refused = on_save_refused
        self.resume = resume
        self.cache_dir = Path(cache_dir) if cache_dir is not None else runfolder.default_cache_dir()
        self.given_tokenizer = tokenizer
        self.recorder = RunRecorder(self.run_dir)
        self._lock: RunLock | None = None  # held while this process trains the folder (rank 0)
        self._subscribers: list[Callable[[Event], None]] = []
        self.parts: TrainParts | None = None  # built by run(): slow, and on the training thread
        self.device_label = "this device"
        self.step = 0
        self.saved_step: int | None = None  # the step of the last checkpoint this trainer wrote
        self.best_val = math.inf
        self.peak_lr = self.config.train.lr
        self.clock = Stopwatch()  # restarted (with a resumed run's seconds) when the loop starts
        self._resumed_elapsed = 0.0
        self.notices: list[str] = []  # for the user, reported at the next chance

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` for every event, before the event is yielded."""
        self._subscribers.append(listener)

    @property
    def model(self) -> torch.nn.Module | None:
        """The plain module being trained (None before ``run`` built it, or after an out-of-memory failure)."""
        return self.parts.model if self.parts is not None else None

    @property
    def _built_parts(self) -> TrainParts:
        assert self.parts is not None, "run() builds the parts first"
        return self.parts

    # ---- public ------------------------------------------------------------------------------
    def run(self) -> Iterator[Event]:
        """Train, yielding events; ends with ``Finished`` or ``Failed`` and never raises for faults."""
        events = self._run()
        try:
            for event in events:
                self._publish(event)
                yield event
            return
        except Exception as e:  # noqa: BLE001 - every fault becomes a Failed event
            if self.control.stopping and isinstance(e, Cancelled):
                # stopped while the data was being prepared: nothing to save, nothing went wrong
                yield Finished(step=self.step, reason="stopped", run_dir=str(self.run_dir), elapsed=0.0)
                return
            failed = self._classify(e)
        finally:
            events.close()  # ends the step loop's context (host memory) even when a listener failed
            if self._lock is not None:
                self._lock.release()  # the run folder is free for another process
        # outside the except block: the traceback (and the tensors its frames hold) is gone by now
        self._free_memory(drop_state=failed.kind == "oom")
        for listener in self._subscribers:
            listener(failed)
        yield failed

    def _classify(self, e: Exception) -> Failed:
        if self.dist.is_peer_failure(e):
            message = "another process of this run failed and reports why"
            return Failed(step=self.step, kind="peer", message=message, run_dir=str(self.run_dir))
        saved = self.saved_step is not None or self.resume
        return classify(e, step=self.step, run_dir=self.run_dir, device_label=self.device_label, saved=saved)

    def _publish(self, event: Event) -> None:
        try:
            if self.dist.is_main:  # several ranks: rank 0 alone writes
                self.recorder(event)
        except Exception as e:
            raise disk_error(e, self.run_dir) from e
        for listener in self._subscribers:
            listener(event)

    # ---- set-up -----------------------------------------------------------------------------
    def _setup(self) -> None:
        self.dist.together(self._prepare)  # several ranks: a failure is reported by one rank, not by all
        # the DDP wrap is a collective, so it stays out of _prepare, which every rank must be able to fail alone
        p = self._built_parts
        self.dist.seed_ranks(self.config.train.seed, self.step)
        eager = self.dist.wrap(p.model, p.device)
        p.forward = dev.CompileFallback(eager, dev.should_compile(p.device, self.config.train.compile))

    def _prepare(self) -> None:
        """Device, data, model, optimizer and run folder (no waiting for other ranks in here)."""
        from lmstudio.engine.split_stats import unk_warning
        from lmstudio.engine.tokenizer import Tokenizer

        device, precision = start_device(self.config, self.dist)
        self.device_label = dev.describe_device(device)
        state: dict[str, Any] = {}
        tokenizer = self.given_tokenizer
        if self.dist.is_main:  # one trainer per folder; a new run only into a new or empty one
            self._lock = runfolder.open_run_folder(self.run_dir, resume=self.resume)
        if self.resume:
            if self.dist.is_main:  # a killed run's half-written files, never read
                runfolder.remove_stale_temp_files(self.run_dir)
            state = ckpt.load_train_state(self.run_dir)
            tokenizer = Tokenizer.load(self.run_dir / runfolder.TOKENIZER_FILE)
            runfolder.check_same_run(self.run_dir, self.config, tokenizer.vocab_size)
        self.config, tokenizer, data = prepare(
            self.config, tokenizer, self.cache_dir, self.control.stop_event
        )
        self.parts = parts = build_parts(self.config, device, precision, tokenizer, data, self.dist.shard)
        if self.resume:
            resumed = restore(parts, self.run_dir, state)
            self.step, self.best_val, self.peak_lr = resumed.step, resumed.best_val, resumed.peak_lr
            self._resumed_elapsed = resumed.elapsed
        if parts.data.stats and (warning := unk_warning(parts.data.stats)):
            self.notices.append(warning)
        if not self.dist.is_main:  # the run folder is rank 0's
            return
        try:
            if self.resume:
                self.notices += self.recorder.cut_history(self.step)
            else:
                self.recorder.write_settings(self.config.to_json(), parts.tokenizer.save)
        except safe_read.FileRefused:
            raise
        except Exception as e:
            raise disk_error(e, self.run_dir) from e

    # ---- the loop ---------------------------------------------------------------------------
    def _run(self) -> Generator[Event, None, None]:
        with dev.cpu_threads(self.config.train.threads):  # this thread's count, put back when the run ends
            yield from self._set_up_and_train()

    def _set_up_and_train(self) -> Generator[Event, None, None]:
        was_empty = not self.run_dir.exists() or (self.run_dir.is_dir() and not any(self.run_dir.iterdir()))
        try:
            self._setup()
        except BaseException:
            if not self.resume and self.dist.is_main:  # the files and folder are rank 0's
                if self._lock is not None and self._lock.held:
                    self._lock.release()
                    (self.run_dir / LOCK_FILE).unlink(missing_ok=True)
                self.recorder.undo_start(was_empty)
            raise
        # the step loop only: data preparation and tokenizer training give their memory back as usual
        with host_memory.freed_memory_kept():
            yield from self._loop()

    def _loop(self) -> Iterator[Event]:
        p, t = self._built_parts, self.config.train
        control = self.dist.shared_control(self.control)  # several ranks: the flags all ranks agreed on
        yield self._started()
        yield from self._pop_notices()
        watch = FiniteWatch(p.device)
        params = [q for q in p.model.parameters() if q.requires_grad]
        self.clock = clock = Stopwatch(self._resumed_elapsed, step=self.step)
        val_loss: float | None = None
        time_up = False
        if self.step == 0 and t.max_steps > 0 and not control.stopping:
            # nanoGPT's step-0 evaluation: every curve starts at the untrained loss (about ln V)
            with clock.aside():  # training time, but not part of the first steps' tokens/s
                yield from self._evaluate(track_best=False)
        while self.step < t.max_steps and not time_up:
            self.dist.sync_control(control)
            if control.paused:  # never while stopping: a stop wakes and ends a pause
                yield from self._wait_while_paused(control)
            if control.stopping:
                break
            lr = self._set_lr(control)
            loss = self._train_step()
            yield from self._pop_notices()
            watch.check(self.step, loss)
            # the time budget counts everything since the start but pauses (evaluations and saves too)
            time_up = t.max_time > 0 and self.dist.max(clock.elapsed()) >= t.max_time
            log_now = (self.step + 1) % t.log_interval == 0 or self.step + 1 == t.max_steps or time_up
            grad_norm = train_step.optimizer_step(p, params, t.grad_clip, need_norm=log_now)
            self.step += 1
            if log_now:
                yield train_step.metrics(self.step, self.config, self.clock, loss, lr, grad_norm)
                clock.start_lap(self.step)
            with clock.aside():  # evaluating, sampling and saving are not training speed: not in tokens/s
                val_loss = yield from self._after_step(
                    watch, val_loss, at_end=self.step == t.max_steps or time_up
                )
        watch.flush()
        yield from self._finish(completed=self.step >= t.max_steps or time_up, val_loss=val_loss)

    def _finish(self, *, completed: bool, val_loss: float | None) -> Iterator[Event]:
        """A stopped run saves its last steps; a completed one is scored on the whole validation split."""
        if not completed and self.saved_step != self.step:
            yield self._save(best=False, val_loss=None)
        elapsed = self.clock.elapsed()
        if completed and self.config.train.full_eval and self.dist.is_main:  # rank 0 scores and records it
            yield full_eval.score_run(
                self._built_parts, self.run_dir, self.step, val_loss, self.control.stop_event
            )
        reason = "completed" if completed else "stopped"
        yield Finished(step=self.step, reason=reason, run_dir=str(self.run_dir), elapsed=elapsed)

    def _started(self) -> Started:
        return Started(
            run_dir=str(self.run_dir),
            device=self.dist.describe(self.device_label),
            n_params=self._built_parts.model.num_params(),
            start_step=self.step,
            max_steps=self.config.train.max_steps,
            config=self.config.to_dict(),
            world_size=self.dist.world_size,
        )

    def _wait_while_paused(self, control: Any) -> Iterator[Event]:
        with self.clock.paused():  # a pause is neither training time nor pace
            yield StateChanged("paused", self.step)
            control.wait_while_paused()
        if not control.stopping:
            yield StateChanged("running", self.step)

    def _set_lr(self, control: Any) -> float:
        t = self.config.train
        new_lr = control.take_lr()
        if new_lr is not None:
            self.peak_lr = new_lr
        spent = self.clock.elapsed()
        if t.max_time > 0:  # several ranks: their clocks differ, and the schedule must not
            spent = self.dist.max(spent)
        lr = lr_at(self.step, t, self.peak_lr, spent)
        for group in self._built_parts.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _train_step(self) -> torch.Tensor:
        """One step's forward and backward passes (eager again if the compiler fails: the step is redone)."""
        p, accum = self._built_parts, self.config.train.grad_accum
        return p.forward.call(
            lambda forward: train_step.micro_batches(p, self.dist, accum, forward),
            before_retry=lambda: p.optimizer.zero_grad(set_to_none=True),
        )

    # ---- evaluation, samples, checkpoints -----------------------------------------------------
    def _after_step(
        self, watch: FiniteWatch, val_loss: float | None, *, at_end: bool
    ) -> Generator[Event, None, float | None]:
        """Evaluate, sample and save when they are due; returns the latest validation loss."""
        t = self.config.train
        evaluated = at_end or self.step % t.eval_interval == 0
        if evaluated:
            watch.flush()
            val_loss = yield from self._evaluate()
            evaluated = val_loss is not None  # None: stopped mid-evaluation, the loop ends at once
        if t.sample_interval and self.step % t.sample_interval == 0:
            yield self._sample()
        is_best = evaluated and val_loss == self.best_val
        # an improvement is always saved (best.safetensors), whatever the checkpoint interval
        interval = t.checkpoint_interval
        if at_end or is_best or (evaluated if interval == 0 else self.step % interval == 0):
            watch.flush()
            yield from self._save_or_pause(best=is_best, val_loss=val_loss)
        return val_loss

    def _sample(self) -> Sample:
        p = self._built_parts
        text = (
            train_eval.training_sample(p.model, p.tokenizer, self.config, self.step)
            if self.dist.is_main
            else ""
        )
        return Sample(step=self.step, text=text)

    def _evaluate(self, track_best: bool = True) -> Generator[Event, None, float | None]:
        """Estimate the losses and report them; ``track_best=False`` for the untrained model (step 0),
        which has no checkpoint to be the best one. None when a stop ended the evaluation early."""
        p = self._built_parts
        metrics = train_eval.evaluate(
            p, self.config, self.dist, self.step, self.clock.elapsed, self.control.stop_event
        )
        if metrics is None:
            return None
        if track_best:
            self.best_val = min(self.best_val, metrics.val_loss)
        yield metrics
        yield from self._pop_notices()
        return metrics.val_loss

    def _save(self, *, best: bool, val_loss: float | None) -> Checkpointed:
        p, dist = self._built_parts, self.dist
        progress = train_save.Progress(self.step, self.best_val, val_loss, self.peak_lr, self.clock.elapsed())
        path = train_save.save(
            p, self.run_dir, progress, best=best, world_size=dist.world_size, write=dist.is_main
        )
        self.saved_step = self.step
        return Checkpointed(step=self.step, path=str(path), best=best)

    def _save_or_pause(self, *, best: bool, val_loss: float | None) -> Iterator[Event]:
        """Save; if the disk refuses and the caller answers ``on_save_refused`` with True (someone is there to
        free space), pause and try again on resume; the wait is not training time."""
        control = self.control
        while True:
            try:
                yield self._save(best=best, val_loss=val_loss)
                return
            except DiskError as e:
                if control.stopping or self.on_save_refused is None or not self.on_save_refused(e):
                    raise
                control.pause()
                if control.stopping:  # a Stop that arrived just now: the pause was refused
                    raise
                yield Notice(step=self.step, message=paused_for_space(self.step, self.run_dir, e))
                yield from self._wait_while_paused(control)
                # resumed or stopped, save again: the space may have been freed before Stop was pressed

    def _pop_notices(self) -> Iterator[Event]:
        if self.parts is not None:
            self.notices += self.parts.forward.take_notices()
        while self.notices:
            yield Notice(step=self.step, message=self.notices.pop(0))

    def _free_memory(self, drop_state: bool = False) -> None:
        # after an OOM gradients, optimizer state and the model are the big allocations to give back
        device = None
        if self.parts is not None:
            self.parts.optimizer.zero_grad(set_to_none=True)
            device = self.parts.device
            if drop_state:
                self.parts = None
        dev.release_memory(device)
