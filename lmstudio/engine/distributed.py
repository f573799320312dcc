"""One run trained by several processes: PyTorch's DistributedDataParallel, started by ``torchrun``.

``torchrun --nproc-per-node N -m lmstudio train ...`` (or ``lmstudio train --nproc N``, see ``launch.py``)
starts N copies of the CLI; each finds its rank in the environment torchrun sets and calls
``init_from_env``. A process started any other way gets ``SINGLE``, whose every method is a no-op, so
the trainer calls the same hooks in both cases and never branches on "distributed or not".

What the ranks share, and how:

* **Batches.** ``train.batch_size`` is the *global* micro-batch: every rank draws the same seeded
  offsets (the Batcher's generator is identical on all ranks) and keeps its own slice of
  ``batch_size / world_size`` rows. So a run sees the same text whatever the number of ranks, the
  per-rank streams are rank-dependent slices of one seeded stream, and a checkpoint's data position
  is one generator state that resumes exactly on any number of ranks.
* **Gradients** are averaged by DDP in backward (``no_sync`` skips it for all but the last of
  ``grad_accum`` micro-batches); the loss the trainer logs and checks for NaN is the mean over ranks,
  so every rank sees the same number and reaches the same decision at the same step.
* **Evaluation** shards each evaluation batch the same way and averages the results over ranks.
* **Control** (stop, pause, a new learning rate) is agreed once per step by a small all-reduce on
  the CPU (gloo, even when gradients go over NCCL, so it never waits on the GPU): a stop or pause seen
  by any rank (a signal, rank 0's control file) takes effect on every rank at the same step.
* **Files** are written by rank 0 alone. Other ranks read the run folder only to resume.
* **Dropout** draws from torch's global generator: rank 0 keeps the single-process stream (saved in
  checkpoints); rank r > 0 is seeded from (seed, rank, step) when the run starts or resumes.

Failures: set-up steps run through ``together``: every rank runs the step, they compare outcomes,
and only the lowest failing rank raises its error (the others raise ``PeerFailed``, which the CLI
prints nothing for), so a bad setting is reported once, not N times. A rank that dies mid-run closes
its connections; the others see a communication error, classified as ``PeerFailed`` too.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from lmstudio.config import ConfigError
from lmstudio.errors import UserError
from lmstudio.run_control import CONTROL_FILE, ControlFile, write_control

__all__ = ["CONTROL_FILE", "ControlFile", "PeerFailed", "Ranks", "SINGLE", "init_from_env", "write_control"]

T = TypeVar("T")

TIMEOUT = datetime.timedelta(minutes=60)  # a collective waiting longer than this means a peer is gone


class PeerFailed(Exception):
    """Another rank failed and reports it itself; this rank stops without a message of its own."""


class DistError(UserError):
    """Training on several processes cannot start as asked (e.g. more ranks than GPUs)."""


class SingleProcess:
    """The trainer's hooks for an ordinary, one-process run: nothing is shared, nothing waits."""

    rank = 0
    world_size = 1
    local_rank = 0
    backend = ""
    is_main = True
    active = False
    ddp: Any = None  # the DistributedDataParallel wrapper, when there is one

    def place(self, device: torch.device) -> torch.device:
        return device

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        return model

    def no_sync(self, last: bool):
        return contextlib.nullcontext()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def average(self, values: dict[str, float]) -> dict[str, float]:
        return values

    def max(self, value: float) -> float:
        return value

    @property
    def shard(self) -> dict[str, int]:
        return {"rank": 0, "world_size": 1}

    def shared_control(self, control):
        return control

    def sync_control(self, control) -> None:
        pass

    def together(self, fn: Callable[[], T]) -> T:
        return fn()

    def broadcast(self, obj: Any) -> Any:
        return obj

    def seed_ranks(self, seed: int, step: int) -> None:
        pass

    def describe(self, label: str) -> str:
        return label

    def is_peer_failure(self, e: BaseException) -> bool:
        return isinstance(e, PeerFailed)

    def close(self) -> None:
        pass


SINGLE = SingleProcess()


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def init_from_env() -> SingleProcess:
    """``SINGLE`` unless torchrun started this process; then join the process group and return a ``Ranks``."""
    if not launched_by_torchrun():
        return SINGLE
    import torch.distributed as dist

    cuda = torch.cuda.is_available() and dist.is_nccl_available()
    # CPU tensors (control, evaluation results, objects) over gloo, CUDA tensors over NCCL
    backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    return Ranks(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend="nccl" if cuda else "gloo",
    )


class Ranks(SingleProcess):
    """The hooks for one of ``world_size`` processes of a torchrun launch."""

    active = True

    def __init__(self, rank: int, world_size: int, local_rank: int, backend: str):
        self.rank, self.world_size, self.local_rank, self.backend = rank, world_size, local_rank, backend
        self.is_main = rank == 0
        self.ddp: Any = None
        self.control_file: ControlFile | None = None  # rank 0 reads requests from it when set

    # ---- placing the model --------------------------------------------------------------------
    def place(self, device: torch.device) -> torch.device:
        """The device of this rank: ``cuda:LOCAL_RANK`` on GPUs, the CPU as it is."""
        if device.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise DistError(
                    f"rank {self.rank} needs GPU {self.local_rank} but this machine has "
                    f"{torch.cuda.device_count()}; start at most that many processes per machine"
                )
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        if device.type != "cpu":
            raise DistError(
                f"training on several processes needs CUDA GPUs or the CPU, not {device.type}; "
                "set the device to cuda or cpu"
            )
        return device

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        # no buffer sync in forward: our buffers (causal masks) are constants, and syncing them would put
        # a collective into every forward, evaluation included
        self.ddp = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,
        )
        return self.ddp

    def no_sync(self, last: bool):
        """Skip the gradient all-reduce for every accumulated micro-batch but the last."""
        if last or self.ddp is None:
            return contextlib.nullcontext()
        return self.ddp.no_sync()

    # ---- numbers every rank must agree on ------------------------------------------------------
    def mean(self, value: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world_size

    def average(self, values: dict[str, float]) -> dict[str, float]:
        import torch.distributed as dist

        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist(), strict=True)}

    def max(self, value: float) -> float:
        """The largest of the ranks' values (e.g. the time spent, so that all decide alike)."""
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t[0])

    @property
    def shard(self) -> dict[str, int]:
        return {"rank": self.rank, "world_size": self.world_size}

    # ---- control ---------------------------------------------------------------------------------
    def shared_control(self, control) -> SharedControl:
        return SharedControl(control, self)

    def sync_control(self, control) -> None:
        control.sync()

    def _agree(self, stop: bool, pause: bool, lr: float) -> tuple[bool, bool, float]:
        import torch.distributed as dist

        t = torch.tensor([float(stop), float(pause), float(lr)], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t[0]), bool(t[1]), float(t[2])

    # ---- set-up steps ------------------------------------------------------------------------------
    def together(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on every rank; if it fails anywhere, the lowest rank that failed for a reason of its
        own (not because a peer did) raises its error and every other rank raises ``PeerFailed``.
        ``fn`` must not itself wait for other ranks."""
        import torch.distributed as dist

        error: BaseException | None = None
        result: Any = None
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - compared across ranks, re-raised below
            error = e
        # 2: failed for a reason of its own; 1: failed because another rank did; 0: fine
        status = 0.0 if error is None else 1.0 if self.is_peer_failure(error) else 2.0
        flags = [torch.zeros(1, dtype=torch.float64) for _ in range(self.world_size)]
        dist.all_gather(flags, torch.tensor([status], dtype=torch.float64))
        levels = [f.item() for f in flags]
        if not any(levels):
            return result
        worst = max(levels)
        failing = [r for r, level in enumerate(levels) if level == worst]
        if failing[0] == self.rank and error is not None:
            raise error
        raise PeerFailed(f"rank {failing[0]} failed")

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (plain data: strings, numbers, lists, dicts) on every rank."""
        import torch.distributed as dist

        box: list[Any] = [json.dumps(obj) if self.is_main else None]
        dist.broadcast_object_list(box, src=0)  # our own JSON text between our processes, never a file
        return json.loads(box[0])

    def seed_ranks(self, seed: int, step: int) -> None:
        """Give rank r > 0 its own dropout stream, derived from (seed, rank, step)."""
        if self.rank:
            torch.manual_seed((seed * 1_000_003 + self.rank * 7919 + step) % 2**63)

    def describe(self, label: str) -> str:
        return f"{label} × {self.world_size} ranks ({self.backend})"

    def is_peer_failure(self, e: BaseException) -> bool:
        import torch.distributed as dist

        if isinstance(e, PeerFailed):
            return True
        if isinstance(e, getattr(dist, "DistError", ())):
            return True
        text = str(e)
        return isinstance(e, RuntimeError) and any(
            s in text
            for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "gloo")
        )

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class SharedControl:
    """What the training loop reads as its ``TrainControl`` on every rank: the values all ranks agreed on
    at the last ``sync`` (once per step), never the local flags, which a signal or rank 0's user may
    change at any moment and which would send the ranks different ways."""

    def __init__(self, local, ranks: Ranks):
        self.local, self.ranks = local, ranks
        self._stop = self._pause = False
        self._lr: float | None = None

    def sync(self) -> None:
        r, local = self.ranks, self.local
        if r.is_main and r.control_file is not None:
            r.control_file.apply(local)
        lr = local.take_lr() if r.is_main else None
        # a stop from any rank counts (a signal may reach any of them); a pause only from rank 0
        stop, pause, lr = r._agree(local.stopping, r.is_main and local.paused, lr or 0.0)
        self._stop, self._pause = stop, pause and not stop
        self._lr = lr if lr > 0 else None

    @property
    def stopping(self) -> bool:
        return self._stop

    @property
    def paused(self) -> bool:
        return self._pause

    def take_lr(self) -> float | None:
        lr, self._lr = self._lr, None
        return lr

    def wait_while_paused(self, timeout: float | None = None) -> bool:
        """Wait for rank 0's resume or anyone's stop, checking in with the other ranks every half second
        (a pause may last longer than a collective is allowed to wait)."""
        r, local = self.ranks, self.local
        while True:
            if r.is_main:
                local.wait_while_paused(0.5)
                if r.control_file is not None:
                    r.control_file.apply(local)
            stop, pause, _ = r._agree(local.stopping, r.is_main and local.paused, 0.0)
            if stop or not pause:
                self._stop, self._pause = stop, False
                return not stop

    def pause(self) -> None:
        self.local.pause()

    def resume(self) -> None:
        self.local.resume()

    def stop(self) -> None:
        self.local.stop()

    @property
    def stop_event(self):
        return self.local.stop_event


def shared_tokenizer(ranks: SingleProcess, cfg, cache_dir):
    """Rank 0 reads the corpus, trains the tokenizer and fills the data cache (other ranks on its machine
    then find the encoded ids there); every rank gets rank 0's tokenizer."""
    from lmstudio.engine.data import prepare_data
    from lmstudio.engine.tokenizer import Tokenizer

    def prepare() -> str | None:
        if not ranks.is_main:
            return None
        tokenizer, _ = prepare_data(cfg, cache_dir=cache_dir)
        return tokenizer.to_str()

    return Tokenizer.from_str(ranks.broadcast(ranks.together(prepare)), "rank 0's tokenizer")


def check_batch_split(batch_size: int, world_size: int) -> None:
    """The global batch must split evenly into one slice per rank."""
    if batch_size % world_size:
        raise ConfigError(
            {
                "train.batch_size": f"{batch_size} sequences cannot be split evenly over {world_size} "
                f"processes; use a multiple of {world_size} (it is the batch of all processes together)"
            }
        )
