"""What the trainer reports: frozen dataclasses of plain Python values (never tensors).

The shared layer (no torch, no Qt), so the UI and the CLI can use them typed without importing the engine.

The UI worker re-emits each one as a Qt signal; the CLI prints them (``--json``: ``to_dict``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Event:
    def to_dict(self) -> dict:
        return {"event": type(self).__name__, **asdict(self)}


@dataclass(frozen=True)
class Started(Event):
    run_dir: str
    device: str  # e.g. "CUDA: NVIDIA H100", "CPU, 2 threads"
    n_params: int
    start_step: int  # 0 for a new run, the checkpoint's step when resuming
    max_steps: int
    config: dict = field(default_factory=dict)
    world_size: int = 1  # processes training together (torchrun); train.batch_size is split among them


@dataclass(frozen=True)
class StepMetrics(Event):
    step: int  # optimizer steps done
    max_steps: int
    loss: float  # training loss of this step's batch
    lr: float
    grad_norm: float  # before clipping
    tokens_per_s: float  # over the steps since the last report
    elapsed: float  # seconds of training (pauses excluded)
    eta: float  # seconds left at the current pace


@dataclass(frozen=True)
class EvalMetrics(Event):
    step: int
    train_loss: float  # averaged over eval_iters batches of training data
    val_loss: float
    val_ppl: float  # exp(val_loss)
    val_acc: float  # next-token accuracy on validation batches
    val_bpc: float  # bits per character (val loss in bits * validation tokens / validation characters)
    elapsed: float
    train_unk: float = 0.0  # share of the training split's tokens that are <unk>
    val_unk: float = 0.0  # share of the validation split's tokens that are <unk>


@dataclass(frozen=True)
class FullEvalMetrics(Event):
    """The loss over the whole validation split (engine/full_eval.py), scored once when a run completes."""

    step: int
    val_loss: float  # mean over every validation token, non-overlapping windows of the context length
    val_ppl: float
    val_acc: float
    val_bpc: float
    tokens: int  # validation tokens scored
    windows: int
    estimate: float | None  # the last running estimate (eval_iters batches) at this step, for comparison
    seconds: float  # time spent scoring (not training time)


@dataclass(frozen=True)
class Sample(Event):
    step: int
    text: str


@dataclass(frozen=True)
class Checkpointed(Event):
    step: int
    path: str
    best: bool  # this checkpoint has the best validation loss so far


@dataclass(frozen=True)
class StateChanged(Event):
    state: str  # "running", "paused", "stopping"
    step: int


@dataclass(frozen=True)
class Notice(Event):
    step: int
    message: str  # something worth telling the user that does not stop training
    # (e.g. torch.compile failed and training continues without it)


@dataclass(frozen=True)
class Finished(Event):
    step: int
    reason: str  # "completed", "stopped"
    run_dir: str
    elapsed: float


@dataclass(frozen=True)
class Failed(Event):
    step: int
    kind: str  # "oom", "nan", "disk", "config", "data", "checkpoint", "error";
    # "peer": another process of a distributed run failed (it reports the cause itself)
    message: str  # what happened and what to do, for a person
    run_dir: str = ""
    detail: str = ""  # a traceback for kind "error" (a bug), to copy into a report; else empty
