"""Which device to train on, at which precision, and how to seed it.

``auto`` prefers CUDA, then Apple's MPS, then the CPU. Choices measured on the 2-core CPU machines
(docs/benchmarks.md): fp32 and no ``torch.compile`` on the CPU (bf16 autocast was slower and
compiling gave no steady gain); on CUDA bf16 autocast where the GPU supports it (fp16 with a GradScaler
otherwise), TF32 matmuls and ``torch.compile`` on by default.
"""

from __future__ import annotations

import contextlib
import gc
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from lmstudio.engine.faults import is_oom
from lmstudio.errors import UserError

T = TypeVar("T")


class DeviceError(UserError):
    """The requested device is not available on this machine."""


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``/``cpu``/``cuda``/``mps`` (or ``cuda:1``) to a torch.device; DeviceError when unavailable."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA was requested but no CUDA GPU is available (or this torch build has no "
                "CUDA support); set the device to auto or cpu"
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"{name} was requested but only {torch.cuda.device_count()} CUDA GPU(s) exist; "
                "choose cuda:0 or auto"
            )
        return dev
    if name == "mps":
        if not mps_available():
            raise DeviceError(
                "Apple MPS was requested but is not available on this machine; set the device to auto or cpu"
            )
        return torch.device("mps")
    raise DeviceError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")


def describe_device(device: torch.device | str) -> str:
    """A short label for the status bar: ``"CUDA: NVIDIA H100"``, ``"CPU, 2 threads"``."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple MPS"
    n = torch.get_num_threads()
    return f"CPU, {n} thread{'s' if n != 1 else ''}"


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32", "bf16" or "fp16"
    autocast_dtype: torch.dtype | None  # None: no autocast
    use_scaler: bool  # fp16 needs loss scaling to keep small gradients from underflowing


def choose_precision(device: torch.device, setting: str = "auto") -> Precision:
    """Resolve ``train.precision`` for a device; DeviceError for a combination that cannot work."""
    if setting == "auto":
        if device.type == "cuda":
            setting = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            setting = "fp32"
    if setting == "fp32":
        return Precision("fp32", None, False)
    if setting == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise DeviceError("this GPU does not support bf16; set precision to fp16 or auto")
        return Precision("bf16", torch.bfloat16, False)
    if setting == "fp16":
        if device.type == "cpu":
            raise DeviceError("fp16 training is not supported on the CPU; set precision to fp32 or auto")
        return Precision("fp16", torch.float16, device.type == "cuda")
    raise DeviceError(f"unknown precision {setting!r}; choose auto, fp32, bf16 or fp16")


def autocast_context(device: torch.device, precision: Precision):
    """The forward-pass context: autocast for bf16/fp16, nothing for fp32."""
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.autocast_dtype)


def should_compile(device: torch.device, setting: str = "auto") -> bool:
    """``train.compile``: auto compiles on CUDA only (no steady gain on the CPU, 20-40 s first compile)."""
    if setting == "on":
        return True
    if setting == "off":
        return False
    return device.type == "cuda"


class CompileFallback:
    """The model as the training loop calls it: ``torch.compile``d when asked, eager again if the compiler fails.

    ``torch.compile`` compiles on a module's first call (and again when, say, eval mode changes the graph),
    so a compiler failure can surface at any call, not only when wrapping. ``call`` then switches to the
    plain module for good and runs the work once more; running out of memory is never taken for a compiler
    failure. Each fallback leaves a message in ``notices`` for the trainer to report.
    """

    def __init__(self, model: torch.nn.Module, compile: bool):
        """``model``: the eager module to call (the plain model, or its DistributedDataParallel wrapper)."""
        self.model = model
        self.forward: Callable[..., Any] = model
        self.notices: list[str] = []
        if compile:
            try:
                self.forward = torch.compile(model)
            except Exception as e:  # noqa: BLE001 - any compiler failure falls back to eager
                self._fall_back(e)

    @property
    def compiled(self) -> bool:
        return self.forward is not self.model

    def call(
        self, work: Callable[[Callable[..., Any]], T], *, before_retry: Callable[[], None] | None = None
    ) -> T:
        """``work(forward)``; when the compiled forward fails, ``before_retry()`` and ``work(model)``."""
        try:
            return work(self.forward)
        except Exception as e:
            if not self.compiled or is_oom(e):
                raise
            self._fall_back(e)
        if before_retry is not None:
            before_retry()
        return work(self.forward)

    def take_notices(self) -> list[str]:
        notices, self.notices = self.notices, []
        return notices

    def _fall_back(self, e: BaseException) -> None:
        self.forward = self.model
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        self.notices.append(f"torch.compile failed ({type(e).__name__}: {first}); training without it")


def release_memory(device: torch.device | None) -> None:
    """Give memory back after a failure (out of memory above all), once the big tensors are dropped.

    A full collection only where cycles can pin accelerator memory: on the CPU refcounting frees the tensors,
    and a collection on a worker thread could finalize a GUI's Qt objects off the GUI thread, which deadlocks
    PySide (seen in the app's tests)."""
    if device is not None and device.type != "cpu":
        gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """``train.threads``: torch's intra-op threads set to ``n`` for the block (``n <= 0``: left as they are).

    With OpenMP the count is partly per thread: ``torch.set_num_threads`` sets the calling thread's count
    and the default for threads that start torch work later, while threads already running torch keep
    theirs (the app's GUI thread, say). So it is set in the thread that trains and put back there, to the
    calling thread's previous count, when the block ends, and a later run or generation starts from that.
    """
    if n <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def configure_backends(device: torch.device) -> None:
    """Allow TF32 matmuls on CUDA (Ampere and newer): a large speed-up at no visible cost to training."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device) so a run repeats exactly on the CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def rng_state() -> dict:
    """torch's global RNG states (dropout draws from them), as tensors for ``train_state.pt``."""
    state: dict[str, torch.Tensor | list[torch.Tensor]] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
