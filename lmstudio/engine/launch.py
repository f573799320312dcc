"""``lmstudio train --nproc N``: start torchrun for this machine and report its outcome in one line.

It is torchrun itself (``torch.distributed.run``, the same code as the ``torchrun`` command), run in
this process with ``--standalone`` (a rendezvous on a free local port) and ``-m lmstudio train ...``
as the worker command, so the workers are exactly what ``torchrun --nproc-per-node N -m lmstudio
train ...`` starts. What it adds: torchrun's own log lines are kept quiet (the workers say what
matters), a worker that printed its failure is not reported again, a worker killed by a signal (the
kernel's out-of-memory killer, say) is, and Ctrl-C / SIGTERM reach the workers through torchrun, which
forwards them and waits ``--shutdown-timeout`` (default 30 s) for the checkpoint before killing.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from lmstudio.engine.distributed import DistError

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (the workers must not launch again)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def gpu_count() -> int:
    """CUDA GPUs this machine can train on together (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_nproc(nproc: int, device: str | None) -> None:
    import torch

    if nproc < 1:
        raise DistError(f"--nproc must be at least 1, got {nproc}")
    if device in (None, "auto", "cuda") and torch.cuda.is_available():
        n = torch.cuda.device_count()
        if nproc > n:
            raise DistError(
                f"--nproc {nproc} asks for one process per GPU but this machine has {n} GPU(s); "
                f"use --nproc {n} or fewer (or --device cpu)"
            )
    elif device == "mps":
        raise DistError("training on several processes needs CUDA GPUs or the CPU, not Apple MPS")
    elif nproc > (cores := os.cpu_count() or 1):  # more CPU processes than cores only slows each down
        raise DistError(
            f"--nproc {nproc} asks for more CPU processes than this machine's {cores} cores; "
            f"use --nproc {cores} or fewer"
        )


def launch(nproc: int, train_argv: list[str], *, extra: list[str] | None = None) -> int:
    """Run ``lmstudio <train_argv>`` on ``nproc`` ranks; the exit code of the run (0, 1 or 130)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # torchrun's modules each set their own logger's level: quiet all of them (the workers report)
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", *(extra or []), "--module", "lmstudio", *train_argv]
    )
    try:
        run(args)
    except SignalException:  # Ctrl-C or SIGTERM here: torchrun passed it on and the workers stopped
        return EXIT_INTERRUPTED
    except ChildFailedError as e:
        codes = {rank: failure.exitcode for rank, failure in e.failures.items()}
        killed = {rank: code for rank, code in codes.items() if code < 0}
        if any(code != -signal.SIGTERM for code in killed.values()):
            # SIGTERM is torchrun ending the survivors of the first failure: report only that failure
            killed = {rank: code for rank, code in killed.items() if code != -signal.SIGTERM}
        for rank, code in sorted(killed.items()):
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hint = " (out of memory?)" if -code == signal.SIGKILL else ""
            print(
                f"lmstudio: error: rank {rank} was killed by {name}{hint}; the other ranks were stopped, "
                "the last checkpoint is kept",
                file=sys.stderr,
                flush=True,
            )
        if not killed and all(code == EXIT_INTERRUPTED for code in codes.values()):
            return EXIT_INTERRUPTED  # a stop signalled to a worker directly: it stopped and saved
        return EXIT_FAILED
    return 0
