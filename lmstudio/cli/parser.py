"""The command line's arguments: one sub-parser per command (``lmstudio COMMAND --help``)."""

from __future__ import annotations

import argparse
import sys

from lmstudio import __version__


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (exit 2), like every other error here."""

    def error(self, message: str):
        print(f"lmstudio: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="lmstudio",
        description="Train and explore small language models. Run without a command to open the app.",
    )
    p.add_argument("--version", action="version", version=f"lmstudio {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a model from a preset, printing progress")
    t.add_argument("--preset", help="preset name or .toml file (default: tiny_tang)")
    t.add_argument("--corpus", help="built-in corpus name or path to a .txt file or folder")
    t.add_argument("--tokenizer", choices=("char", "word", "bpe"))
    t.add_argument("--arch", choices=("rnn", "lstm", "gru", "conv", "transformer"))
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set train.lr=3e-4 (repeatable)",
    )
    t.add_argument("--out", help="run folder to create (default: a new folder in the runs folder)")
    t.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"))
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last checkpoint")
    t.add_argument("--json", action="store_true", help="print one JSON object per event")
    t.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train on N processes of this machine (one per GPU, or CPU processes) through torchrun",
    )

    e = sub.add_parser("eval", help="validation loss, perplexity and accuracy of a trained run")
    e.add_argument("run_dir")
    e.add_argument("--which", choices=("latest", "best"), default="latest")
    e.add_argument("--iters", type=int, help="batches to average (default: the run's eval_iters)")
    e.add_argument(
        "--full",
        action="store_true",
        help="score every validation token once (non-overlapping windows of the context) instead of batches",
    )
    e.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"))
    e.add_argument("--json", action="store_true")

    c = sub.add_parser("corpus", help="statistics of a corpus (built-in name, file or folder)")
    c.add_argument("source")
    c.add_argument("--json", action="store_true")

    g = sub.add_parser("generate", help="generate text from a trained run")
    g.add_argument("run_dir")
    g.add_argument("--prompt", default="", help="text to continue (default: start from a newline)")
    g.add_argument("--max-tokens", type=int)
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--stream", action="store_true", help="print each token as soon as it is generated")
    g.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per generated token: id, text, prob, unk, masked, sampled_prob (see docs/cli.md)",
    )
    g.add_argument(
        "--top",
        type=int,
        default=0,
        metavar="N",
        help="with --json: the N likeliest candidates of each token, with prob and sampled_prob",
    )
    g.add_argument("--which", choices=("latest", "best"), default="latest")
    g.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"))

    i = sub.add_parser(
        "inspect",
        help="save an attention map, activations, the logit lens or the embedding map as PNG or CSV",
    )
    i.add_argument("run_dir")
    i.add_argument("--text", help="text to run through the model (every view but embeddings)")
    i.add_argument("--layer", type=int, default=0)
    i.add_argument(
        "--head", type=int, help="attention head (default: all heads side by side in a PNG, head 0 in a CSV)"
    )
    i.add_argument(
        "--what",
        default="attention",
        help="attention (Transformer), hidden, a recurrent gate such as gate.forget, lens (what each "
        "layer would predict) or embeddings (a 2-D PCA map of the token embeddings)",
    )
    i.add_argument(
        "--embedding",
        choices=("input", "output"),
        default="input",
        help="with --what embeddings: the input embedding or the output head (one matrix when tied)",
    )
    i.add_argument("--out", required=True, help="FILE.png or FILE.csv")
    i.add_argument("--which", choices=("latest", "best"), default="latest")

    x = sub.add_parser("export", help="write a run's model for Hugging Face Transformers or ONNX Runtime")
    x.add_argument("run_dir")
    x.add_argument("--format", required=True, choices=("hf", "onnx"), help="hf: a folder; onnx: a file")
    x.add_argument("--out", required=True, help="DIR for hf (new or empty), FILE.onnx for onnx")
    x.add_argument("--which", choices=("latest", "best"), default="latest")
    x.add_argument("--step", action="store_true", help="onnx: also FILE.step.onnx (KV cache / state)")
    x.add_argument("--force", action="store_true", help="replace an earlier export at --out")

    r = sub.add_parser("runs", help="list the runs in the runs folder")
    r.add_argument("--root", help="runs folder (default: $LMSTUDIO_RUNS or ~/.lmstudio/runs)")
    r.add_argument("--json", action="store_true")

    b = sub.add_parser(
        "bakeoff",
        help="train RNN, LSTM, GRU, convolutional and Transformer models for the same time and compare",
    )
    b.add_argument(
        "--corpus",
        default="tiny_shakespeare",
        help="built-in corpus name or path (default: tiny_shakespeare)",
    )
    b.add_argument(
        "--budget", type=float, default=90.0, help="seconds of training per architecture (default: 90)"
    )
    b.add_argument("--tokenizer", choices=("char", "word", "bpe"), default="char")
    b.add_argument(
        "--archs", default="rnn,lstm,gru,conv,transformer", help="comma-separated architectures, in run order"
    )
    b.add_argument("--seed", type=int, default=1337)
    b.add_argument(
        "--root", help="runs folder for the five runs (default: $LMSTUDIO_RUNS or ~/.lmstudio/runs)"
    )
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting for every run")
    b.add_argument("--json", action="store_true", help="print the table as one JSON object at the end")

    sub.add_parser("presets", help="list the bundled presets")
    return p
