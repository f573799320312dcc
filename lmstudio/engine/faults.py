"""What went wrong, by what it is rather than by exception type: out of memory, a disk that refuses writes.

Each library reports the same fault its own way. Running out of memory is ``torch.cuda.OutOfMemoryError``
on CUDA, a ``RuntimeError`` reading "DefaultCPUAllocator: can't allocate memory" on the CPU, "MPS backend out
of memory" on Apple GPUs, ``MemoryError`` from Python or numpy. A full disk is an ``OSError`` from Python,
a ``SafetensorError`` ("No space left on device (os error 28)") from safetensors, and a ``RuntimeError``
("[enforce fail at inline_container.cc] unexpected pos") from ``torch.save``. So the trainer treats any
failure while writing the run folder as a disk failure and describes it with what the disk can tell:
the errno where there is one, the free space and the space the write needed.

``check_memory`` compares the training-memory estimate with the memory there is before anything is
allocated, so an absurd model is refused with numbers instead of the kernel killing the process.
"""

from __future__ import annotations

import errno as errno_module
import os
import re
import shutil
from pathlib import Path

import torch

from lmstudio.errors import UserError

# what allocators say when they fail (lower case); CUDA's own type is checked separately
_OOM_PATTERNS = (
    "out of memory",  # CUDA, MPS, HIP
    "can't allocate memory",  # torch's DefaultCPUAllocator
    "cannot allocate memory",  # ENOMEM spelled out
    "alloc_failed",  # cuBLAS / cuDNN workspace allocation
    "failed to allocate",
)


class NotEnoughMemory(UserError):
    """The estimate of what a training run needs is larger than the memory available."""


def is_oom(e: BaseException) -> bool:
    """True for an allocator failure on any backend (CPU, CUDA, MPS) or Python's own ``MemoryError``."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if isinstance(e, MemoryError) or (oom_type is not None and isinstance(e, oom_type)):
        return True
    if isinstance(e, RuntimeError):
        text = str(e).lower()
        return any(p in text for p in _OOM_PATTERNS)
    return False


# ---- disks ------------------------------------------------------------------------------------------
def fault_errno(e: BaseException) -> int | None:
    """The errno behind a write failure: an OSError's own, or the "(os error N)" Rust libraries print."""
    link: BaseException | None = e
    while link is not None:
        if isinstance(link, OSError) and link.errno:
            return link.errno
        found = re.search(r"os error (\d+)", str(link))
        if found:
            return int(found.group(1))
        link = link.__cause__ or link.__context__
    return None


def free_bytes(folder: str | Path) -> int | None:
    """Free space for an unprivileged writer on the filesystem holding ``folder`` (its nearest existing
    parent), or None when it cannot be asked."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def describe_write_failure(e: BaseException, folder: str | Path, needed: int | None = None) -> str:
    """Why writing into ``folder`` failed, e.g.
    "No space left on device (errno 28; 12.0 KB free; the files need about 1.4 MB)"."""
    code = fault_errno(e)
    free = free_bytes(folder)
    if code is not None:
        head, facts = os.strerror(code), [f"errno {code}"]
    else:
        head, facts = _first_line(e), []
        if free is not None and needed is not None and free < needed:
            # torch.save says only "unexpected pos": the numbers tell what happened
            head, facts = "not enough free space", [f"the writer said: {head}"]
    if free is not None:
        facts.append(f"{format_bytes(free)} free")
    if needed is not None:
        facts.append(f"the files need about {format_bytes(needed)}")
    return f"{head} ({'; '.join(facts)})" if facts else head


def is_space_problem(e: BaseException) -> bool:
    return fault_errno(e) in (errno_module.ENOSPC, errno_module.EDQUOT, errno_module.EFBIG)


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0][:200] if lines else "") or type(e).__name__


# ---- memory -----------------------------------------------------------------------------------------
def available_memory(device: torch.device) -> tuple[int, str] | None:
    """Bytes a new allocation can still get on ``device`` and what they are ("free GPU memory on cuda:0",
    "available RAM"); None where the system does not say (then nothing is refused)."""
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except RuntimeError:
            return None
        return int(free), f"free GPU memory on {device}"
    ram = _available_ram()
    return None if ram is None else (ram, "available RAM")


def _available_ram() -> int | None:
    values = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    values.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    if not values:
        try:
            values.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    limit = _cgroup_room()
    if limit is not None:
        values.append(limit)
    return min(values) if values else None


def _cgroup_room() -> int | None:
    # a container's memory limit (cgroup v2) is what the kernel's OOM killer enforces, not the host's RAM
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        return max(int(limit) - used, 0)
    except (OSError, ValueError):
        return None


def check_memory(estimate: dict[str, int], device: torch.device) -> None:
    """Refuse a run whose estimated training memory exceeds what ``device`` has available.

    ``estimate`` is ``models.memory_estimate``'s dict. The estimate is rough (it leaves out the allocator's
    slack and the framework's own memory), so only a run that clearly cannot fit is refused; one that is
    close may still fail at its first step, and that is reported as out of memory too.
    """
    room = available_memory(device)
    if room is None:
        return
    available, what = room
    total = estimate["total"]
    if total <= available:
        return
    big = max(("activations", "optimizer", "params"), key=lambda k: estimate[k])
    advice = (
        "a smaller batch size (train.batch_size) or a shorter context (model.block_size)"
        if big == "activations"
        else "fewer layers (model.n_layer) or a narrower model (model.n_embd / model.hidden_size)"
    )
    raise NotEnoughMemory(
        f"this model needs about {format_bytes(total)} to train (an estimate: "
        f"{estimate['n_params'] / 1e6:,.1f}M parameters take {format_bytes(estimate['params'])}, "
        f"gradients {format_bytes(estimate['grads'])}, optimizer state {format_bytes(estimate['optimizer'])}, "
        f"activations {format_bytes(estimate['activations'])}) but only {format_bytes(available)} of {what} "
        f"is left. Use {advice}."
    )
