"""``lmstudio <command>``: the headless face of the app (train, eval, corpus, generate, inspect, export, runs).

Every user mistake (unknown preset, bad ``--set``, missing file, any UserError) prints one line on stderr
and exits 1, never a traceback. Nothing here touches Qt. Reference: docs/cli.md.

One module per command family, each with a ``cmd_<command>(args) -> exit code``; the arguments are in
``parser.py``, what the commands share in ``common.py``. The command modules import torch only inside the
commands, so ``lmstudio --help`` stays instant.
"""

from __future__ import annotations

import sys

from lmstudio.cli import bakeoff, evaluate, export, generate, inspect, listing, train
from lmstudio.cli.common import EXIT_INTERRUPTED, EXIT_USER_ERROR, print_error
from lmstudio.cli.parser import build_parser
from lmstudio.errors import UserError

COMMANDS = {
    "train": train.cmd_train,
    "eval": evaluate.cmd_eval,
    "corpus": listing.cmd_corpus,
    "generate": generate.cmd_generate,
    "inspect": inspect.cmd_inspect,
    "export": export.cmd_export,
    "runs": listing.cmd_runs,
    "bakeoff": bakeoff.cmd_bakeoff,
    "presets": listing.cmd_presets,
}


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # a lone surrogate (a file name that is not UTF-8, an odd prompt) must not crash a strict terminal
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (argparse printed it)
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return 0
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` passes them on
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except (UserError, LookupError) as e:  # LookupError: resources.ResourceError (unknown preset)
        print_error(str(e).strip('"'))
        return EXIT_USER_ERROR
    except BrokenPipeError:  # output piped into `head`
        return 0
    except KeyboardInterrupt:  # Ctrl-C where no command-specific handler was active (eval, corpus ...)
        print_error("interrupted")
        return EXIT_INTERRUPTED
