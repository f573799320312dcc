"""``lmstudio bakeoff``: every architecture trained for the same time on one corpus, then a table."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from lmstudio.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    CliError,
    InterruptToStop,
    print_error,
    print_json,
)


def cmd_bakeoff(args) -> int:
    from lmstudio.engine import bakeoff
    from lmstudio.engine import checkpoint as ckpt
    from lmstudio.engine.trainer import TrainControl

    if not 0 < args.budget <= 7 * 86_400:
        raise CliError("--budget must be a positive number of seconds, at most a week (604800)")
    if not 0 <= args.seed < 2**63:
        raise CliError("--seed must be between 0 and 2**63 - 1")
    archs = tuple(a.strip() for a in args.archs.split(",") if a.strip())
    unknown = [a for a in archs if a not in bakeoff.ARCH_ORDER]
    if unknown or not archs:
        raise CliError(
            f"--archs: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(bakeoff.ARCH_ORDER)}"
        )
    root = Path(args.root) if args.root else ckpt.default_runs_dir()
    control = TrainControl()
    done = None
    failed = False
    with InterruptToStop(control.stop) as interrupt:
        for event in bakeoff.run_bakeoff(
            args.corpus,
            args.budget,
            root,
            archs=archs,
            tokenizer=args.tokenizer,
            seed=args.seed,
            control=control,
            overrides=list(args.set),
            cache_dir=ckpt.default_cache_dir(),
        ):
            kind = type(event).__name__
            if kind == "BakeoffStarted":
                print(
                    f"[{event.index + 1}/{event.total}] {event.arch}: {event.budget:g} s of training "
                    f"into {event.run_dir}",
                    file=sys.stderr,
                    flush=True,
                )
            elif kind == "FullEvalMetrics":
                print(f"    whole validation split: {event.val_loss:.4f}", file=sys.stderr, flush=True)
            elif kind == "Failed":
                failed = True
                print_error(event.message)
            elif kind == "BakeoffDone":
                done = event
    rows = done.rows if done is not None else []
    if args.json:
        print_json(
            {"corpus": args.corpus, "budget": args.budget, "rows": [dataclasses.asdict(r) for r in rows]}
        )
    else:
        print(f"\nBake-off on {args.corpus}, {args.budget:g} s of training each ({args.tokenizer} tokens):\n")
        print(bakeoff.table_markdown(rows))
        print("\nValidation loss (running estimate) by training time:\n")
        print(bakeoff.curve_table({r.arch: r.run_dir for r in rows}, args.budget))
        print(
            "\nThe runs are ordinary run folders: tick them on the Runs tab and plot against wall-clock seconds."
        )
    if interrupt.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_USER_ERROR if failed else 0
