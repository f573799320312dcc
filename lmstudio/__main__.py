"""``python -m lmstudio`` and the ``lmstudio`` script: no arguments opens the app, subcommands run headless."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        from lmstudio.ui.app import run_app

        return run_app()
    from lmstudio.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
