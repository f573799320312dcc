"""The training loop: a generator of events, steerable from another thread.

``Trainer(config, run_dir).run()`` yields plain-data events (``events.py``) while it trains; the UI iterates
it in a worker thread, the CLI in the main thread. ``TrainControl`` carries pause / resume / stop / new
learning rate requests from any thread; the loop looks at it once per optimizer step.

Choices that keep the hot loop as fast as a hand-written one (bench/train_throughput.py):
the loss leaves the device (``.item()``) only every ``log_interval`` steps (on the CPU a per-step
finiteness check is free, on CUDA it is read one step late without stalling), gradients are dropped
with ``set_to_none``, batches are the only per-step allocations, AdamW runs fused kernels (CPU too), and
freed activations stay in the process for the next step instead of being faulted back in (``host_memory``).

Faults become a final ``Failed`` event, never an exception: a non-finite loss (``nan``), running out of
memory (``oom``), a failed checkpoint write (``disk``), bad settings (``config``), unreadable data
(``data``); anything else is a bug and reported as ``error`` with its traceback in ``detail``.
"""

from __future__ import annotations

import gc
import math
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import torch

from lmstudio import runfolder
from lmstudio.config import ConfigError, RunConfig
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine import device as dev
from lmstudio.engine import distributed, faults, host_memory
from lmstudio.engine.schedule import build_optimizer, lr_at
from lmstudio.engine.train_control import FiniteWatch, NonFiniteLoss, TrainControl, is_oom
from lmstudio.engine.train_eval import estimate_losses, training_sample
from lmstudio.errors import UserError
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

__all__ = ["TrainControl", "Trainer", "is_oom"]

STATE_VERSION = 1


class _DiskError(Exception):
    """Writing the run folder failed; ``description`` says why (errno, free space, space needed)."""

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


def _disk_error(e: Exception, folder: Path, needed: int | None = None) -> Exception:
    """Any failure while writing the run folder is the disk's (safetensors and torch.save do not raise
    OSError for a full disk), except running out of memory while doing it."""
    if faults.is_oom(e):
        return e
    return _DiskError(faults.describe_write_failure(e, folder, needed))


def _eta(by_steps: float, max_time: float, elapsed: float) -> float:
    """Seconds left: at the current pace for the steps, or what is left of the time budget if sooner."""
    return min(by_steps, max(0.0, max_time - elapsed)) if max_time > 0 else by_steps


class Trainer:
    """Trains ``config`` into ``run_dir`` (``resume=True`` continues the checkpoint found there)."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path,
        *,
        control: TrainControl | None = None,
        resume: bool = False,
        cache_dir: str | Path | None = None,
        tokenizer=None,
        dist: distributed.SingleProcess | None = None,
    ):
        """``tokenizer``: one already trained for this config (e.g. by the setup screen), so the trainer
        need not train it again; ignored when resuming (the run's own tokenizer.json is used).
        ``dist``: this process's place in a torchrun launch (``distributed.init_from_env``); the default
        is an ordinary one-process run."""
        self.dist = dist or distributed.SINGLE
        self.config = config
        self.run_dir = Path(run_dir)
        self.control = control or TrainControl()
        self.resume = resume
        self.cache_dir = Path(cache_dir) if cache_dir is not None else ckpt.default_cache_dir()
        self.given_tokenizer = tokenizer
        self.step = 0
        self.saved_step: int | None = None  # the step of the last checkpoint this trainer wrote
        self.model = None  # the plain module (weights are saved from it)
        self.forward = None  # what the loop calls: the compiled module, or the plain one
        self._written: list[str] = []  # files a new run wrote while starting (removed if the start fails)

    # ---- public ------------------------------------------------------------------------------
    def run(self) -> Iterator[Event]:
        """Train, yielding events; ends with ``Finished`` or ``Failed`` and never raises for faults."""
        try:
            yield from self._run()
            return
        except Exception as e:  # noqa: BLE001 - every fault becomes a Failed event
            if self.control.stopping and type(e).__name__ == "Cancelled":
                # stopped while the data was being prepared: nothing to save, nothing went wrong
                yield Finished(step=self.step, reason="stopped", run_dir=str(self.run_dir), elapsed=0.0)
                return
            failed = self._classify(e)
        # outside the except block: the traceback (and the tensors its frames hold) is gone by now
        self._free_memory(drop_state=failed.kind == "oom")
        yield failed

    def _classify(self, e: Exception) -> Failed:
        if self.dist.is_peer_failure(e):
            return self._failed("peer", "another process of this run failed and reports why")
        if isinstance(e, NonFiniteLoss):
            return self._failed(
                "nan",
                f"the loss became NaN or infinite near step {self.step + 1}: training "
                "diverged. Try a lower learning rate (or stronger gradient clipping); "
                "the last good checkpoint is kept.",
            )
        kept = (
            "the previous checkpoint is intact"
            if self.saved_step is not None or self.resume
            else "no checkpoint had been saved yet"
        )
        if isinstance(e, _DiskError):
            return self._failed(
                "disk",
                f"could not write to the run folder {self.run_dir}: {e.description}. "
                f"Free disk space or choose another runs folder; {kept}.",
                detail="".join(traceback.format_exception(e.__cause__)) if e.__cause__ else "",
            )
        if isinstance(e, faults.NotEnoughMemory):
            return self._failed("oom", f"not enough memory on {self.device_label}: {e}")
        if isinstance(e, ckpt.CheckpointError):
            return self._failed("checkpoint", str(e))
        if isinstance(e, (ConfigError, dev.DeviceError)):
            return self._failed("config", str(e))
        if isinstance(e, UserError):
            return self._failed("data", str(e))
        if faults.is_oom(e):
            return self._failed(
                "oom",
                f"out of memory on {self.device_label}. Use a smaller batch size, a "
                f"shorter context or a smaller model; {kept.replace('is intact', 'is kept')}.",
            )
        return self._failed(
            "error",
            f"training failed unexpectedly ({type(e).__name__}: {e}); this is a bug, "
            "please report it with the details",
            detail=traceback.format_exc(),
        )

    # ---- set-up -----------------------------------------------------------------------------
    device_label = "this device"

    def _setup(self) -> None:
        self.dist.together(self._prepare)  # several ranks: a failure is reported by one rank, not by all
        self._setup_forward()

    def _prepare(self) -> None:
        """Device, data, model, optimizer and run folder (no waiting for other ranks in here)."""
        from lmstudio.engine.data import Batcher, prepare_data
        from lmstudio.engine.models import build_model, memory_estimate
        from lmstudio.engine.tokenizer import Tokenizer

        cfg = self.config
        cfg.validate()
        self.device = self.dist.place(dev.resolve_device(cfg.train.device))
        self.device_label = dev.describe_device(self.device)
        self.precision = dev.choose_precision(self.device, cfg.train.precision)
        dev.configure_backends(self.device)
        dev.seed_everything(cfg.train.seed)
        self.state: dict = {}
        tokenizer = self.given_tokenizer
        if self.resume:
            if self.dist.is_main:  # a killed run's half-written files, never read
                ckpt.remove_stale_temp_files(self.run_dir)
            self.state = ckpt.load_train_state(self.run_dir)
            tokenizer = Tokenizer.load(self.run_dir / ckpt.TOKENIZER_FILE)
            runfolder.check_same_run(self.run_dir, cfg, tokenizer.vocab_size)
        elif (self.run_dir / ckpt.CONFIG_FILE).exists():
            raise ConfigError(
                {"run": f"{self.run_dir} already holds a run; resume it or choose a new folder"}
            )
        self.tokenizer, self.data = prepare_data(
            cfg, tokenizer=tokenizer, cache_dir=self.cache_dir, cancel=self.control.stop_event
        )
        cfg.model.vocab_size = self.tokenizer.vocab_size
        faults.check_memory(memory_estimate(cfg.model, cfg.train), self.device)
        with torch.device(self.device):
            self.model = build_model(cfg.model)
        self.model.train()
        self.optimizer = build_optimizer(self.model, cfg.train, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision.use_scaler else None
        self.batcher = Batcher(
            self.data, cfg.train.batch_size, cfg.model.block_size, cfg.train.seed, **self.dist.shard
        )
        self.best_val = math.inf
        self.peak_lr = cfg.train.lr
        self.elapsed = 0.0
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.resume:
            self._restore()
        elif self.dist.is_main:
            try:
                ckpt.atomic_write_text(self.run_dir / ckpt.CONFIG_FILE, cfg.to_json())
                self._written.append(ckpt.CONFIG_FILE)
                ckpt.atomic_write(self.run_dir / ckpt.TOKENIZER_FILE, self.tokenizer.save)
                self._written.append(ckpt.TOKENIZER_FILE)
            except Exception as e:
                raise _disk_error(e, self.run_dir) from e

    def _setup_forward(self) -> None:
        """What the loop calls: the model, wrapped for several ranks (a collective: kept out of ``_setup``,
        which every rank must be able to fail alone), compiled where that pays."""
        cfg = self.config
        self.dist.seed_ranks(cfg.train.seed, self.step)
        self.forward = self.dist.wrap(self.model, self.device)
        self.compile_pending = dev.should_compile(self.device, cfg.train.compile)
        self.notices: list[str] = []
        from lmstudio.engine.split_stats import unk_warning

        if self.data.stats and unk_warning(self.data.stats):
            self.notices.append(unk_warning(self.data.stats))
        if self.compile_pending:
            try:
                self.forward = torch.compile(self.forward)
            except Exception as e:  # noqa: BLE001 - any compiler failure falls back to eager
                self._compile_failed(e)

    def _undo_failed_start(self, was_empty: bool) -> None:
        """A new run that could not start leaves nothing: the files it wrote and the empty folder go."""
        for name in self._written:
            (self.run_dir / name).unlink(missing_ok=True)
        if was_empty:
            try:
                self.run_dir.rmdir()
            except OSError:
                pass  # not empty after all (someone else's files), or gone already

    def _restore(self) -> None:
        st = self.state
        if st.get("version") != STATE_VERSION:
            raise ckpt.CheckpointError(
                f"{self.run_dir / ckpt.STATE_FILE} has an unknown format; start a new run"
            )
        ckpt.load_weights_into(self.model, self.run_dir, "latest", self.device)
        meta = ckpt.weights_metadata(self.run_dir / ckpt.LATEST_FILE)
        if meta.get("step") != st["step"]:
            raise ckpt.CheckpointError(
                f"{self.run_dir}: the weights (step {meta.get('step')}) and the "
                f"training state (step {st['step']}) do not match, probably after a "
                "crash mid-save; start a new run or use the weights as they are"
            )
        self.optimizer.load_state_dict(st["optimizer"])
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.batcher.load_state_dict(st["batcher"])
        dev.set_rng_state(st["rng"])
        self.step = int(st["step"])
        self.best_val = math.inf if st.get("best_val") is None else float(st["best_val"])
        self.peak_lr = float(st.get("peak_lr", self.config.train.lr))
        self.elapsed = float(st.get("elapsed", 0.0))
        if not self.dist.is_main:
            return
        try:
            ckpt.truncate_history(self.run_dir, self.step)
        except Exception as e:
            raise _disk_error(e, self.run_dir) from e

    def _compile_failed(self, e: BaseException) -> None:
        self.forward = self.dist.ddp or self.model
        self.compile_pending = False
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        self.notices.append(f"torch.compile failed ({type(e).__name__}: {first}); training without it")

    # ---- the loop ---------------------------------------------------------------------------
    def _run(self) -> Iterator[Event]:
        was_empty = not self.run_dir.exists() or (self.run_dir.is_dir() and not any(self.run_dir.iterdir()))
        try:
            self._setup()
        except BaseException:
            if not self.resume and self.dist.is_main:  # the files and folder are rank 0's
                self._undo_failed_start(was_empty)
            raise
        # the step loop only: data preparation and tokenizer training give their memory back as usual
        with host_memory.freed_memory_kept():
            yield from self._loop()

    def _loop(self) -> Iterator[Event]:
        cfg, t = self.config, self.config.train
        yield Started(
            run_dir=str(self.run_dir),
            device=self.dist.describe(self.device_label),
            n_params=self.model.num_params(),
            start_step=self.step,
            max_steps=t.max_steps,
            config=cfg.to_dict(),
            world_size=self.dist.world_size,
        )
        yield from self._pop_notices()
        control = self.dist.shared_control(self.control)  # several ranks: the flags all ranks agreed on
        tokens_per_step = t.batch_size * cfg.model.block_size * t.grad_accum
        watch = FiniteWatch(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        last_report, last_report_step = time.perf_counter(), self.step
        run_start = last_report - self.elapsed
        val_loss = None
        time_up = False
        while self.step < t.max_steps and not time_up:
            self.dist.sync_control(control)
            if control.stopping:
                break
            if control.paused:
                self.elapsed = time.perf_counter() - run_start
                yield StateChanged("paused", self.step)
                control.wait_while_paused()
                paused_for = time.perf_counter() - run_start - self.elapsed
                run_start += paused_for
                last_report += paused_for
                if control.stopping:
                    break
                yield StateChanged("running", self.step)
            new_lr = control.take_lr()
            if new_lr is not None:
                self.peak_lr = new_lr
            spent = time.perf_counter() - run_start
            if t.max_time > 0:  # several ranks: their clocks differ, and the schedule must not
                spent = self.dist.max(spent)
            lr = lr_at(self.step, t, self.peak_lr, spent)
            for group in self.optimizer.param_groups:
                group["lr"] = lr

            loss = self.dist.mean(self._train_step())  # several ranks: the mean, the same on each
            if self.compile_pending:
                self.compile_pending = False
                yield from self._pop_notices()
            watch.check(self.step, loss)
            # the time budget counts everything since the start but pauses (evaluations and saves too)
            time_up = t.max_time > 0 and self.dist.max(time.perf_counter() - run_start) >= t.max_time
            log_now = (self.step + 1) % t.log_interval == 0 or self.step + 1 == t.max_steps or time_up
            grad_norm = self._clip(params, log_now)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1

            if log_now:
                loss_value = loss.item()  # the one sync with the device per log interval
                now = time.perf_counter()
                steps = self.step - last_report_step
                per_step = (now - last_report) / max(steps, 1)
                self.elapsed = now - run_start
                event = StepMetrics(
                    step=self.step,
                    max_steps=t.max_steps,
                    loss=loss_value,
                    lr=lr,
                    grad_norm=float(grad_norm),
                    tokens_per_s=tokens_per_step / per_step,
                    elapsed=self.elapsed,
                    eta=_eta(per_step * (t.max_steps - self.step), t.max_time, self.elapsed),
                )
                self._append(ckpt.METRICS_FILE, event)
                yield event
                last_report, last_report_step = time.perf_counter(), self.step
            aux_start = time.perf_counter()
            at_end = self.step == t.max_steps or time_up
            evaluated = at_end or self.step % t.eval_interval == 0
            if evaluated:
                watch.flush()
                val_loss = yield from self._evaluate(run_start)
            if t.sample_interval and self.step % t.sample_interval == 0:
                yield self._sample()
            is_best = evaluated and val_loss == self.best_val
            # an improvement is always saved (best.safetensors), whatever the checkpoint interval
            due = (
                at_end
                or is_best
                or (evaluated if t.checkpoint_interval == 0 else self.step % t.checkpoint_interval == 0)
            )
            if due:
                watch.flush()
                run_start += yield from self._save_or_pause(run_start, best=is_best, val_loss=val_loss)
            # evaluating, sampling and saving are not training speed: keep them out of tokens/s
            last_report += time.perf_counter() - aux_start
        watch.flush()
        reason = "completed" if self.step >= t.max_steps or time_up else "stopped"
        if reason == "stopped" and self.saved_step != self.step:
            yield self._save(run_start, best=False, val_loss=None)
        self.elapsed = time.perf_counter() - run_start
        if reason == "completed" and t.full_eval and self.dist.is_main:  # rank 0 scores and records it
            yield from self._full_eval(val_loss)
        yield Finished(step=self.step, reason=reason, run_dir=str(self.run_dir), elapsed=self.elapsed)

    def _train_step(self) -> torch.Tensor:
        """Forward and backward over ``grad_accum`` micro-batches; returns the step's mean loss (detached)."""
        try:
            return self._micro_batches()
        except Exception as e:
            if not self.compile_pending or faults.is_oom(e):
                raise
            # a compiled module compiles on its first call: a failure there falls back to eager mode
            self.optimizer.zero_grad(set_to_none=True)
            self._compile_failed(e)
            return self._micro_batches()

    def _micro_batches(self) -> torch.Tensor:
        accum = self.config.train.grad_accum
        total = None
        for i in range(accum):
            x, y = self.batcher.get("train", self.device)
            with self.dist.no_sync(last=i == accum - 1):  # several ranks: all-reduce once per step
                with dev.autocast_context(self.device, self.precision):
                    _, loss = self.forward(x, y)
                if accum > 1:
                    loss = loss / accum  # gradients add up over micro-batches; scale so they average
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        return total

    def _clip(self, params: list[torch.nn.Parameter], need_norm: bool) -> torch.Tensor | float:
        """Clip the global gradient norm; returns the norm before clipping (computed when clipping or logging)."""
        clip = self.config.train.grad_clip
        if self.scaler is not None and (clip > 0 or need_norm):
            self.scaler.unscale_(self.optimizer)
        if clip > 0:
            return torch.nn.utils.clip_grad_norm_(params, clip)
        if need_norm:
            return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        return 0.0

    # ---- evaluation, samples, checkpoints -----------------------------------------------------
    def _evaluate(self, run_start: float) -> Iterator[Event]:
        losses = self._call_forward(
            lambda fwd: estimate_losses(
                fwd, self.data, self.config, self.device, self.precision, **self.dist.shard
            )
        )
        losses = self.dist.average(losses)  # several ranks: each evaluated its slice of the batches
        val_loss = losses["val_loss"]
        if not math.isfinite(val_loss):
            raise NonFiniteLoss
        self.best_val = min(self.best_val, val_loss)
        event = EvalMetrics(
            step=self.step,
            train_loss=losses["train_loss"],
            val_loss=val_loss,
            val_ppl=math.exp(min(val_loss, 700.0)),
            val_acc=losses["val_acc"],
            val_bpc=val_loss / math.log(2) / max(self.data.val_chars_per_token, 1e-9),
            train_unk=self.data.stats["train"].unk_share if self.data.stats else 0.0,
            val_unk=self.data.stats["val"].unk_share if self.data.stats else 0.0,
            elapsed=time.perf_counter() - run_start,
        )
        self._append(ckpt.METRICS_FILE, event)
        yield event
        yield from self._pop_notices()
        return val_loss

    def _full_eval(self, estimate: float | None) -> Iterator[Event]:
        """Score the final weights on the whole validation split and record it beside the checkpoint."""
        from lmstudio.engine import full_eval

        try:
            result = full_eval.full_split_loss(
                self.model,
                self.data.val,
                self.config.model.block_size,
                chars_per_token=self.data.val_chars_per_token,
                device=self.device,
                autocast=lambda: dev.autocast_context(self.device, self.precision),
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

    def _call_forward(self, fn):
        try:
            return fn(self.forward)
        except Exception as e:
            if self.forward is self.model or faults.is_oom(e):
                raise
            self._compile_failed(e)  # e.g. a recompile for eval mode failed
            return fn(self.forward)

    def _sample(self) -> Sample:
        text = (
            training_sample(self.model, self.tokenizer, self.config, self.step) if self.dist.is_main else ""
        )
        event = Sample(step=self.step, text=text)
        self._append(ckpt.SAMPLES_FILE, event)
        return event

    def _save(self, run_start: float, *, best: bool, val_loss: float | None) -> Checkpointed:
        self.elapsed = time.perf_counter() - run_start
        state = {
            "version": STATE_VERSION,
            "step": self.step,
            "best_val": None if math.isinf(self.best_val) else self.best_val,
            "val_loss": val_loss,
            "peak_lr": self.peak_lr,
            "elapsed": self.elapsed,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "batcher": self.batcher.state_dict(),
            "rng": dev.rng_state(),  # rank 0's; other ranks re-derive theirs (distributed.py)
            "world_size": self.dist.world_size,
        }
        # gradients that overflow behind a finite loss leave NaN weights after the step: never save those
        if not torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all():
            raise NonFiniteLoss
        try:
            path = (
                ckpt.save_checkpoint(self.run_dir, self.model, state, best=best)
                if self.dist.is_main  # rank 0 alone writes; the weights are the same on every rank
                else self.run_dir / ckpt.LATEST_FILE
            )
        except Exception as e:
            raise _disk_error(e, self.run_dir, _checkpoint_bytes(self.model, state, best)) from e
        self.saved_step = self.step
        return Checkpointed(step=self.step, path=str(path), best=best)

    def _save_or_pause(self, run_start: float, *, best: bool, val_loss: float | None) -> Iterator[Event]:
        """Save; if the disk refuses and ``control.pause_on_disk_error``, pause and try again on resume.

        Returns the seconds spent waiting, which do not count as training time.
        """
        control, waited = self.control, 0.0
        while True:
            try:
                yield self._save(run_start + waited, best=best, val_loss=val_loss)
                return waited
            except _DiskError as e:
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
                paused_at = time.perf_counter()
                control.wait_while_paused()
                waited += time.perf_counter() - paused_at
                if not control.stopping:
                    yield StateChanged("running", self.step)
                # resumed or stopped, save again: the space may have been freed before Stop was pressed

    def _append(self, name: str, event: Event) -> None:
        if not self.dist.is_main:
            return
        try:
            ckpt.append_jsonl(self.run_dir / name, event.to_dict())
        except Exception as e:
            raise _disk_error(e, self.run_dir) from e

    def _pop_notices(self) -> Iterator[Event]:
        while getattr(self, "notices", None):
            yield Notice(step=self.step, message=self.notices.pop(0))

    def _failed(self, kind: str, message: str, detail: str = "") -> Failed:
        return Failed(step=self.step, kind=kind, message=message, run_dir=str(self.run_dir), detail=detail)

    def _free_memory(self, drop_state: bool = False) -> None:
        # after an OOM gradients, optimizer state and the model are the big allocations to give back
        if getattr(self, "optimizer", None) is not None:
            self.optimizer.zero_grad(set_to_none=True)
        if drop_state:
            self.optimizer = self.model = self.forward = self.scaler = None
        # A full collection only where cycles can pin accelerator memory. On the CPU refcounting frees the
        # tensors, and a collection on this (worker) thread could finalize a GUI's Qt objects off the GUI
        # thread, which deadlocks PySide (seen in the app's tests).
        if getattr(self, "device", None) is not None and self.device.type != "cpu":
            gc.collect()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()


def _checkpoint_bytes(model: torch.nn.Module, state: dict, best: bool) -> int:
    """About what one checkpoint writes: the weights (twice with best.safetensors) and the optimizer state."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    moments = sum(
        t.numel() * t.element_size()
        for per_param in state.get("optimizer", {}).get("state", {}).values()
        for t in per_param.values()
        if isinstance(t, torch.Tensor)
    )
    return weights * (2 if best else 1) + moments
