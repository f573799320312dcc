"""What every command shares: the exit codes, the one-line error, JSON output, graceful Ctrl-C."""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
from pathlib import Path

from lmstudio.errors import UserError

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130  # the shell's convention for "stopped by Ctrl-C" (128 + SIGINT)


class CliError(UserError):
    pass


def print_error(message: str) -> None:
    print(f"lmstudio: error: {message}", file=sys.stderr)


# ---- helpers shared by the commands -----------------------------------------------------------------
def print_json(obj: dict) -> None:
    print(json.dumps(obj, ensure_ascii=False, allow_nan=False, default=_json_default), flush=True)


def _json_default(value):
    return str(value)


def finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class InterruptToStop:
    """While active, Ctrl-C, SIGTERM and SIGHUP ask ``on_interrupt`` to stop gracefully (a training run
    saves a checkpoint); a second signal aborts at once. ``exit_code`` is the shell's 128 + the signal."""

    SIGNALS = tuple(
        getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
    )

    def __init__(self, on_interrupt, doing: str = "stopping (saving a checkpoint)"):
        self.on_interrupt = on_interrupt
        self.doing = doing
        self.interrupted = False
        self.exit_code = EXIT_INTERRUPTED
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        self.exit_code = 128 + signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(
            f"\nlmstudio: {name}: {self.doing}; press Ctrl-C again to abort",
            file=sys.stderr,
            flush=True,
        )
        self.on_interrupt()

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        return False


def existing_run_dir(path: str) -> Path:
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise CliError(f"{run_dir} is not a folder; pass a run folder (see `lmstudio runs`)")
    return run_dir
