"""Keep freed host memory in the process while training, so each step does not fault it back in (opt-in).

A training step allocates its activations and frees them again after the backward pass. With its default
settings glibc hands large freed blocks straight back to the kernel (big ones are ``munmap``-ed, the top of
the heap is trimmed), and the next step pays a page fault and a page of zeroing for every 4 KiB it allocates
again. For nanoGPT's baby GPT on two CPU cores that is 1,100-1,600 faults per step, and the step runs 2-5%
faster without them, at the same peak memory (bench/vs_nanogpt.py, docs/benchmarks.md).

``freed_memory_kept()`` raises glibc's mmap and trim thresholds when a training run starts and returns what is
free (``malloc_trim``) when it ends, so a finished run leaves no extra resident memory behind. The thresholds
stay raised for the rest of the process: setting them at all turns off glibc's self-adjusting ones, so there is
no default to go back to. That is a change to the whole process's allocator for a gain of a few percent, so it
is opt-in: ``LMSTUDIO_KEEP_FREED_MEMORY=1`` turns it on; by default, elsewhere (macOS, Windows, musl) and under
a user's own ``MALLOC_*`` or ``GLIBC_TUNABLES`` setting (left alone) it does nothing. bench/host_memory_thread.py
measures it, on and off side by side, where the app trains: in a worker thread.

Limit: a thread other than the main one (the app's training thread) allocates from its own arena, whose heaps
grow to 64 MiB at most; blocks larger than what such a heap can hold are still mapped afresh each step. That
spares the small models this matters most for (the baby GPT: ~800 faults per step to 0 in a thread) but not
larger ones (a 6-layer, 384-wide model at batch 16 in a thread: ~8,000 either way). The CLI trains in the main
thread, where it works for both.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt(3) parameter numbers (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks below this come from the heap and are reused. Some glibc versions refuse more than 32 MiB; then that.
KEEP_MMAP_THRESHOLDS = (256 << 20, 32 << 20)
# Free memory at the top of the heap is kept up to this much (reused by the next step, so the peak does not
# grow) and handed back when the run ends.
KEEP_TRIM_THRESHOLD = 256 << 20

_lock = threading.Lock()
_users = 0
_applied = False  # the thresholds are raised (they stay so: see the module docstring)
mmap_threshold = 0  # the one glibc accepted


def _glibc():
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _user_tuned_malloc() -> bool:
    return "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ)


ENV = "LMSTUDIO_KEEP_FREED_MEMORY"  # "1" turns the setting on


def available() -> bool:
    """Whether the allocator can be tuned here: Linux with glibc, not tuned by the user."""
    return not _user_tuned_malloc() and _glibc() is not None


def enabled() -> bool:
    """Whether a training run will tune this process's allocator: asked for (``LMSTUDIO_KEEP_FREED_MEMORY=1``)
    and available."""
    return os.environ.get(ENV, "0") == "1" and available()


def _apply(libc) -> bool:
    global _applied, mmap_threshold
    if not _applied:
        mmap_threshold = next((v for v in KEEP_MMAP_THRESHOLDS if libc.mallopt(M_MMAP_THRESHOLD, v) == 1), 0)
        _applied = mmap_threshold > 0 and libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD) == 1
    return _applied


@contextmanager
def freed_memory_kept() -> Iterator[bool]:
    """Keep freed memory for reuse inside the block when ``enabled()``; yields whether the allocator is tuned.

    Nested and concurrent uses (two runs at once) share the setting; the last to leave returns free memory.
    """
    global _users
    libc = _glibc() if enabled() else None
    if libc is None:
        yield False
        return
    with _lock:
        tuned = _apply(libc)
        _users += 1
    try:
        yield tuned
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                libc.malloc_trim(0)
