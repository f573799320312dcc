"""Keep freed host memory in the process while training, so each step does not fault it back in.

A training step allocates its activations and frees them again after the backward pass. With its default
settings glibc hands large freed blocks straight back to the kernel (big ones are ``munmap``-ed, the top of
the heap is trimmed), and the next step pays a page fault and a page of zeroing for every 4 KiB it allocates
again. For nanoGPT's baby GPT on two CPU cores that is 1,100-1,600 faults per step, and the step runs 2-5%
faster without them, at the same peak memory (bench/vs_nanogpt.py, docs/benchmarks.md).

``freed_memory_kept()`` raises glibc's mmap and trim thresholds for as long as a training run lasts, then
puts glibc's documented defaults back and returns what is free (``malloc_trim``), so a finished run leaves no
extra resident memory behind. Elsewhere (macOS, Windows, musl) it does nothing. ``LMSTUDIO_KEEP_FREED_MEMORY=0``
turns it off (to measure the difference, or if it ever misbehaves).
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
# Blocks below this come from the heap and are reused; a step's largest activation for the models this app
# trains on a CPU is tens of MiB.
KEEP_MMAP_THRESHOLD = 256 << 20
# Free memory at the top of the heap is kept up to this much (it is reused by the next step, so the peak does
# not grow); handed back when the run ends.
KEEP_TRIM_THRESHOLD = 1 << 30
GLIBC_DEFAULT_THRESHOLD = 128 << 10  # both thresholds' documented default

_lock = threading.Lock()
_users = 0


def _glibc():
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def supported() -> bool:
    """Whether this process's allocator can be tuned (Linux with glibc) and the user has not turned it off."""
    return os.environ.get("LMSTUDIO_KEEP_FREED_MEMORY", "1") != "0" and _glibc() is not None


@contextmanager
def freed_memory_kept() -> Iterator[bool]:
    """Keep freed memory for reuse inside the block; yields whether the allocator was tuned.

    Nested and concurrent uses (two runs at once) share one setting; the last to leave restores it.
    """
    global _users
    libc = _glibc() if supported() else None
    if libc is None:
        yield False
        return
    with _lock:
        _users += 1
        if _users == 1:
            libc.mallopt(M_MMAP_THRESHOLD, KEEP_MMAP_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)
    try:
        yield True
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                libc.mallopt(M_MMAP_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
                libc.mallopt(M_TRIM_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
                libc.malloc_trim(0)
