"""One trainer per run folder: an OS file lock held while a process trains it.

Two processes writing one folder interleave their histories (steps 50, 100, 60, 100, 70 ...) and
overwrite each other's checkpoints, so a trainer takes an exclusive ``flock`` on ``<run>/.lmstudio.lock``
and a second trainer, or a resume, of the same folder is refused with the holder's process id. The
kernel drops the lock when the holder exits, however it exits (even SIGKILL): there is no stale lock to
clean up. The file itself stays (deleting a lock file races with a process about to lock it); it is
hidden and empty but for the holder's pid.

No torch, no Qt: the runs list asks ``locked_by`` to show a run as "training in another process". On a
system without ``fcntl`` (Windows) nothing is locked.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmstudio.errors import UserError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lmstudio.lock"


class RunLocked(UserError):
    """Another process is training this run folder."""

    def __init__(self, run_dir: Path, pid: int | None):
        self.pid = pid
        who = f"another process (pid {pid})" if pid else "another process"
        super().__init__(
            f"{run_dir} is being trained by {who}; wait for it to finish or stop it, "
            "or train into another folder"
        )


class RunLock:
    """``with RunLock(run_dir):`` holds the folder's lock (RunLocked when another process has it)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None or self._fd is not None:
            return
        # O_NOFOLLOW: a planted symlink must not make us create or write a file elsewhere. The descriptor
        # held is read-only (flock needs no more), so it never keeps the filesystem from going read-only.
        nofollow = os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | nofollow, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise RunLocked(self.run_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            writer = os.open(self.path, os.O_WRONLY | os.O_TRUNC | nofollow)
            try:
                os.write(writer, f"{os.getpid()}\n".encode())
            finally:
                os.close(writer)
        except OSError:
            pass  # the pid is only shown to the user; the lock is what counts
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def locked_by(run_dir: str | Path) -> int | None:
    """The pid of the process training ``run_dir`` (0 when it cannot be read), or None when none is."""
    if fcntl is None:
        return None
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None  # no lock file: never trained since locks exist, or not a run
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
