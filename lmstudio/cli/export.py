"""``lmstudio export``: a run's model as a Hugging Face Transformers folder or an ONNX file."""

from __future__ import annotations

from lmstudio.cli.common import CliError, existing_run_dir


def cmd_export(args) -> int:
    run_dir = existing_run_dir(args.run_dir)
    if args.format == "hf":
        if args.step:
            raise CliError("--step is for --format onnx (a Hugging Face model caches on its own)")
        from lmstudio.engine.export_hf import export_hf

        result = export_hf(run_dir, args.out, which=args.which, overwrite=args.force)
    else:
        from lmstudio.engine.export_onnx import export_onnx

        result = export_onnx(run_dir, args.out, which=args.which, overwrite=args.force, step=args.step)
    print(result.summary())
    for note in result.notes:
        print(f"  note: {note}")
    print("How to load it: docs/export.md" + (" or README.md in the folder" if args.format == "hf" else ""))
    return 0
