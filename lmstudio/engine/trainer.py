"""The training loop: a generator of events, steerable from another thread.

``Trainer(config, run_dir).run()`` yields plain-data events (``events.py``) while it trains; the UI iterates
it in a worker thread, the CLI in the main thread. ``TrainControl`` carries pause / resume / stop / new
learning rate requests from any thread; the loop looks at it once per optimizer step.

Choices that keep the hot loop as fast as a hand-written one (bench/train_throughput.py):
the loss leaves the device (``.item()``) only every ``log_interval`` steps (on the CPU a per-step
finiteness check is free, on CUDA it is read one step late without stalling), gradients are dropped
with ``set_to_none``, batches are the only per-step allocations, AdamW runs fused kernels (CPU too), and
freed activations stay in the process for the next step instead of being faulted back in (``host_memory``).

The loop is minGPT's: it trains and yields events. Around it, each in its own module: the parts a run is
made of and a checkpoint's restore (``train_parts``), the run's files (``recorder``, subscribed to the
events), the clock (``stopwatch``), the ``torch.compile`` fallback (``device.CompileFallback``) and what a
fault becomes (``train_failures``: a final ``Failed`` event, never an exception).
"""

from __future__ import annotations

import copy
import gc
import math
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import torch

from lmstudio import runfolder, safe_read
from lmstudio.config import RunConfig
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine import device as dev
from lmstudio.engine import distributed, host_memory
from lmstudio.engine.data import Cancelled
from lmstudio.engine.recorder import RunRecorder
from lmstudio.engine.schedule import lr_at
from lmstudio.engine.stopwatch import Stopwatch
from lmstudio.engine.train_control import FiniteWatch, NonFiniteLoss, TrainControl, is_oom
from lmstudio.engine.train_eval import estimate_losses, training_sample
from lmstudio.engine.train_failures import DiskError, checkpoint_bytes, classify, disk_error
from lmstudio.engine.train_parts import STATE_VERSION, TrainParts, build_parts, prepare, restore, start_device
from lmstudio.events import (
    Checkpointed,
    EvalMetrics,
    Event,
    Failed,
    Finished,
    FullEvalMetrics,
    Notice,
    Sample,
    Started,
    StateChanged,
    StepMetrics,
)
from lmstudio.runlock import LOCK_FILE, RunLock

__all__ = ["STATE_VERSION", "TrainControl", "Trainer", "is_oom"]


def _eta(by_steps: float, max_time: float, elapsed: float) -> float:
    """Seconds left: at the current pace for the steps, or what is left of the time budget if sooner."""
    return min(by_steps, max(0.0, max_time - elapsed)) if max_time > 0 else by_steps


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
    ):
        """``tokenizer``: one already trained for this config (e.g. by the setup screen), so the trainer
        need not train it again; ignored when resuming (the run's own tokenizer.json is used).
        ``dist``: this process's place in a torchrun launch (``distributed.init_from_env``); the default
        is an ordinary one-process run."""
        self.dist = dist or distributed.SINGLE
        self.config = copy.deepcopy(config)
        self.run_dir = Path(run_dir)
        self.control = control or TrainControl()
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
    def _p(self) -> TrainParts:
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
        p = self._p
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
                skipped = runfolder.truncate_history(self.run_dir, self.step)
                self.notices += [
                    f"{name}: skipped {n} damaged line{'s' if n > 1 else ''} (torn by a crash or edited); "
                    "the rest of the history is kept"
                    for name, n in skipped.items()
                    if n
                ]
            else:
                self.recorder.write_settings(self.config.to_json(), parts.tokenizer.save)
        except safe_read.FileRefused:
            raise
        except Exception as e:
            raise disk_error(e, self.run_dir) from e

    # ---- the loop ---------------------------------------------------------------------------
    def _run(self) -> Generator[Event, None, None]:
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
        p, t = self._p, self.config.train
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
            if control.stopping:
                break
            if control.paused:
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
            grad_norm = self._optimizer_step(params, log_now)
            if log_now:
                yield self._step_metrics(loss, lr, grad_norm)
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
            yield from self._full_eval(val_loss)
        reason = "completed" if completed else "stopped"
        yield Finished(step=self.step, reason=reason, run_dir=str(self.run_dir), elapsed=elapsed)

    def _started(self) -> Started:
        return Started(
            run_dir=str(self.run_dir),
            device=self.dist.describe(self.device_label),
            n_params=self._p.model.num_params(),
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
        for group in self._p.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _train_step(self) -> torch.Tensor:
        """One step's forward and backward passes (eager again if the compiler fails: the step is redone)."""
        p = self._p
        return p.forward.call(
            self._micro_batches, before_retry=lambda: p.optimizer.zero_grad(set_to_none=True)
        )

    def _micro_batches(self, forward: Callable[..., Any] | None = None) -> torch.Tensor:
        """Forward and backward over ``grad_accum`` micro-batches; returns the step's mean loss (detached)."""
        p, accum = self._p, self.config.train.grad_accum
        forward = p.forward.forward if forward is None else forward
        total: torch.Tensor | None = None
        for i in range(accum):
            x, y = p.batcher.get("train", p.device)
            with self.dist.no_sync(last=i == accum - 1):  # several ranks: all-reduce once per step
                with dev.autocast_context(p.device, p.precision):
                    _, loss = forward(x, y)
                if accum > 1:
                    loss = loss / accum  # gradients add up over micro-batches; scale so they average
                if p.scaler is not None:
                    p.scaler.scale(loss).backward()
                else:
                    loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        assert total is not None  # grad_accum >= 1
        return self.dist.mean(total)  # several ranks: the mean, the same on each

    def _optimizer_step(self, params: list[torch.nn.Parameter], need_norm: bool) -> torch.Tensor | float:
        """Clip, step and clear the gradients; returns the norm before clipping (when clipping or logging)."""
        p = self._p
        grad_norm = self._clip(params, need_norm)
        if p.scaler is not None:
            p.scaler.step(p.optimizer)
            p.scaler.update()
        else:
            p.optimizer.step()
        p.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return grad_norm

    def _clip(self, params: list[torch.nn.Parameter], need_norm: bool) -> torch.Tensor | float:
        """Clip the global gradient norm; returns the norm before clipping (computed when clipping or logging)."""
        p, clip = self._p, self.config.train.grad_clip
        if p.scaler is not None and (clip > 0 or need_norm):
            p.scaler.unscale_(p.optimizer)
        if clip > 0:
            return torch.nn.utils.clip_grad_norm_(params, clip)
        if need_norm:
            return torch.nn.utils.get_total_norm([q.grad for q in params if q.grad is not None])
        return 0.0

    def _step_metrics(self, loss: torch.Tensor, lr: float, grad_norm: torch.Tensor | float) -> StepMetrics:
        t = self.config.train
        loss_value = loss.item()  # the one sync with the device per log interval
        per_step, elapsed = self.clock.seconds_per_step(self.step), self.clock.elapsed()
        return StepMetrics(
            step=self.step,
            max_steps=t.max_steps,
            loss=loss_value,
            lr=lr,
            grad_norm=float(grad_norm),
            tokens_per_s=t.batch_size * self.config.model.block_size * t.grad_accum / per_step,
            elapsed=elapsed,
            eta=_eta(per_step * (t.max_steps - self.step), t.max_time, elapsed),
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
        p = self._p
        text = training_sample(p.model, p.tokenizer, self.config, self.step) if self.dist.is_main else ""
        return Sample(step=self.step, text=text)

    def _evaluate(self, track_best: bool = True) -> Generator[Event, None, float]:
        """Estimate the losses and report them; ``track_best=False`` for the untrained model (step 0),
        which has no checkpoint to be the best one."""
        p = self._p
        losses = p.forward.call(
            lambda fwd: estimate_losses(fwd, p.data, self.config, p.device, p.precision, **self.dist.shard)
        )
        losses = self.dist.average(losses)  # several ranks: each evaluated its slice of the batches
        val_loss = losses["val_loss"]
        if not math.isfinite(val_loss):
            raise NonFiniteLoss
        if track_best:
            self.best_val = min(self.best_val, val_loss)
        stats = p.data.stats
        yield EvalMetrics(
            step=self.step,
            train_loss=losses["train_loss"],
            val_loss=val_loss,
            val_ppl=math.exp(min(val_loss, 700.0)),
            val_acc=losses["val_acc"],
            val_bpc=val_loss / math.log(2) / max(p.data.val_chars_per_token, 1e-9),
            train_unk=stats["train"].unk_share if stats else 0.0,
            val_unk=stats["val"].unk_share if stats else 0.0,
            elapsed=self.clock.elapsed(),
        )
        yield from self._pop_notices()
        return val_loss

    def _full_eval(self, estimate: float | None) -> Iterator[Event]:
        """Score the final weights on the whole validation split and record it beside the checkpoint."""
        from lmstudio.engine import full_eval

        p = self._p
        try:
            result = full_eval.full_split_loss(
                p.model,
                p.data.val,
                self.config.model.block_size,
                chars_per_token=p.data.val_chars_per_token,
                device=p.device,
                autocast=lambda: dev.autocast_context(p.device, p.precision),
            )
            full_eval.record(self.run_dir, "latest", self.step, result)
        except (OSError, RuntimeError) as e:
            if not (isinstance(e, OSError) or is_oom(e)):
                raise
            # the run itself is complete and saved: say what is missing rather than fail it
            yield Notice(step=self.step, message=f"Could not score the whole validation split ({e}).")
            return
        yield FullEvalMetrics(
            step=self.step,
            val_loss=result.val_loss,
            val_ppl=result.val_ppl,
            val_acc=result.val_acc,
            val_bpc=result.val_bpc,
            tokens=result.tokens,
            windows=result.windows,
            estimate=estimate,
            seconds=result.seconds,
        )

    def _save(self, *, best: bool, val_loss: float | None) -> Checkpointed:
        p = self._p
        state = {
            "version": STATE_VERSION,
            "step": self.step,
            "best_val": None if math.isinf(self.best_val) else self.best_val,
            "val_loss": val_loss,
            "peak_lr": self.peak_lr,
            "elapsed": self.clock.elapsed(),
            "optimizer": p.optimizer.state_dict(),
            "scaler": p.scaler.state_dict() if p.scaler is not None else {},
            "batcher": p.batcher.state_dict(),
            "rng": dev.rng_state(),  # rank 0's; other ranks re-derive theirs (distributed.py)
            "world_size": self.dist.world_size,
        }
        # gradients that overflow behind a finite loss leave NaN weights after the step: never save those
        if not torch.stack([torch.isfinite(q).all() for q in p.model.parameters()]).all():
            raise NonFiniteLoss
        try:
            path = (
                ckpt.save_checkpoint(self.run_dir, p.model, state, best=best)
                if self.dist.is_main  # rank 0 alone writes; the weights are the same on every rank
                else self.run_dir / runfolder.LATEST_FILE
            )
        except Exception as e:
            raise disk_error(e, self.run_dir, checkpoint_bytes(p.model, state, best)) from e
        self.saved_step = self.step
        return Checkpointed(step=self.step, path=str(path), best=best)

    def _save_or_pause(self, *, best: bool, val_loss: float | None) -> Iterator[Event]:
        """Save; if the disk refuses and the caller's control says ``pause_on_disk_error`` (someone is there
        to free space), pause and try again on resume; the wait is not training time."""
        control = self.control
        while True:
            try:
                yield self._save(best=best, val_loss=val_loss)
                return
            except DiskError as e:
                if not control.pause_on_disk_error or control.stopping:
                    raise
                control.pause()
                if control.stopping:  # a Stop that arrived just now: the pause was refused
                    raise
                yield Notice(
                    step=self.step,
                    message=(
                        f"Could not save the checkpoint at step {self.step} in {self.run_dir} ({e.description}). Training "
                        "is paused and nothing is lost: free disk space (or fix the folder's permissions), then press "
                        "Resume to save again. Stop tries once more, then ends the run with the last checkpoint saved."
                    ),
                )
                yield StateChanged("paused", self.step)
                with self.clock.paused():
                    control.wait_while_paused()
                if not control.stopping:
                    yield StateChanged("running", self.step)
                # resumed or stopped, save again: the space may have been freed before Stop was pressed

    def _pop_notices(self) -> Iterator[Event]:
        if self.parts is not None:
            self.notices += self.parts.forward.take_notices()
        while self.notices:
            yield Notice(step=self.step, message=self.notices.pop(0))

    def _free_memory(self, drop_state: bool = False) -> None:
        # after an OOM gradients, optimizer state and the model are the big allocations to give back
        if self.parts is not None:
            self.parts.optimizer.zero_grad(set_to_none=True)
            device = self.parts.device
            if drop_state:
                self.parts = None
            # A full collection only where cycles can pin accelerator memory. On the CPU refcounting frees the
            # tensors, and a collection on this (worker) thread could finalize a GUI's Qt objects off the GUI
            # thread, which deadlocks PySide (seen in the app's tests).
            if device.type != "cpu":
                gc.collect()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
