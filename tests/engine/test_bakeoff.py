"""The bake-off end to end, headless: five architectures, one tokenizer, the same time budget each."""

from __future__ import annotations

import json

import pytest

from lmstudio.cli import main
from lmstudio.config import ModelConfig
from lmstudio.engine import bakeoff, full_eval
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine.models import param_count
from lmstudio.engine.tokenizer import Tokenizer

# shrink every contestant so five runs take seconds; the budget still ends each run
TINY = [
    "model.n_layer=1",
    "model.n_embd=32",
    "model.hidden_size=32",
    "model.n_head=2",
    "model.block_size=16",
    "train.batch_size=4",
    "train.eval_interval=5",
    "train.eval_iters=2",
]


def test_the_contestants_are_about_the_same_size_at_character_level():
    sizes = {}
    for arch in bakeoff.ARCH_ORDER:
        cfg = bakeoff.bakeoff_config(arch, "tiny_shakespeare", 90)
        assert cfg.train.max_time == 90 and cfg.model.block_size == 64 and cfg.train.batch_size == 32
        sizes[arch] = param_count(ModelConfig(**{**cfg.model.__dict__, "vocab_size": 65}))
    assert max(sizes.values()) / min(sizes.values()) < 1.05, sizes
    with pytest.raises(ValueError, match="unknown architecture"):
        bakeoff.bakeoff_config("mamba", "tang300", 1)


def test_cli_bakeoff_trains_every_architecture_for_the_budget_and_prints_the_table(tmp_path, capsys):
    root = tmp_path / "runs"
    args = ["bakeoff", "--corpus", "tang300", "--budget", "0.6", "--root", str(root), "--json"]
    for setting in TINY:
        args += ["--set", setting]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = out["rows"]
    assert [r["arch"] for r in rows] == list(bakeoff.ARCH_ORDER)
    tokenizers = set()
    for r in rows:
        run = r["run_dir"]
        assert not r["failed"] and r["steps"] > 0 and r["n_params"] > 0 and r["tokens_per_s"] > 0
        assert r["seconds"] >= 0.6  # each run had its whole budget
        cfg = json.loads((tmp_path / run / ckpt.CONFIG_FILE).read_text())
        assert cfg["model"]["arch"] == r["arch"] and cfg["train"]["max_time"] == 0.6
        assert ckpt.weights_metadata(tmp_path / run / ckpt.LATEST_FILE)["step"] == r["steps"]
        # the full-split score is the one recorded for the runs list, and a sample was drawn
        assert r["full_val_loss"] == pytest.approx(full_eval.known_loss(run, "latest", r["steps"]))
        assert r["sample"]
        tokenizers.add(Tokenizer.load(tmp_path / run / ckpt.TOKENIZER_FILE).fingerprint())
    assert len(tokenizers) == 1  # one tokenizer, shared
    listed = {run.path: run for run in ckpt.list_runs(root)}
    assert all(listed[r["run_dir"]].full_val_loss is not None for r in rows)


def test_the_text_report_has_the_table_and_the_curves_by_time(tmp_path, capsys):
    args = [
        "bakeoff",
        "--corpus",
        "tang300",
        "--budget",
        "0.5",
        "--root",
        str(tmp_path),
        "--archs",
        "lstm,conv",
    ]
    for setting in TINY:
        args += ["--set", setting]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (
        "| architecture | parameters | steps | tokens/s | val loss (estimate) | val loss (full split) |"
        in out
    )
    assert "| lstm |" in out and "| conv |" in out and "| gru |" not in out
    assert "by training time" in out and "| end |" in out


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["bakeoff", "--archs", "lstm,mamba", "--root", str(tmp_path)]) == 1
    assert "unknown mamba" in capsys.readouterr().err
    assert main(["bakeoff", "--budget", "0", "--root", str(tmp_path)]) == 1
