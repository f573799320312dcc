"""``lmstudio corpus``, ``runs`` and ``presets``: what there is to train on, what has been trained, and the
bundled settings."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from lmstudio.cli.common import print_json


def cmd_corpus(args) -> int:
    from lmstudio.engine.corpus import corpus_info

    info = corpus_info(args.source)
    data = dataclasses.asdict(info)
    if args.json:
        print_json({k: str(v) if isinstance(v, Path) else v for k, v in data.items()})
        return 0
    print(f"{info.title or info.name}  ({'built-in' if info.builtin else info.path})")
    print(
        f"characters {info.chars:,}  distinct {info.distinct_chars:,}  lines {info.lines:,}  "
        f"bytes {info.bytes:,}  encoding {info.encoding}"
    )
    if info.source:
        print(f"source     {info.source}")
    print("preview:")
    print("  " + str(info.preview)[:400].replace("\n", "\n  "))
    return 0


def cmd_runs(args) -> int:
    from lmstudio.run_list import scan_runs

    runs, skipped = scan_runs(args.root)
    for bad in skipped:  # named on stderr, so `--json` output stays one run per line
        print(f"lmstudio: skipped {bad.path}: {bad.reason}", file=sys.stderr)
    if args.json:
        for run in runs:
            print_json(dataclasses.asdict(run))
        return 0
    if not runs:
        print("no runs yet; start one with `lmstudio train --preset tiny_tang`")
    for run in runs:
        best = f"{run.best_val_loss:.4f}" if run.best_val_loss is not None else "-"
        full = f"{run.full_val_loss:.4f}" if run.full_val_loss is not None else "-"
        busy = f"  (training in process {run.training_pid})" if run.training_pid is not None else ""
        print(
            f"{run.name:24s} {run.arch:11s} {run.corpus:18s} step {run.steps:>6}/{run.max_steps:<6} "
            f"best val {best:>7}  full val {full:>7}  {run.state_text:28s} {run.path}{busy}"
        )
    return 0


def cmd_presets(args) -> int:
    from lmstudio.resources import list_presets, preset_path

    for name in list_presets():
        first = preset_path(name).read_text(encoding="utf-8").splitlines()[:1]
        about = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        print(f"{name:20s} {about}")
    return 0
