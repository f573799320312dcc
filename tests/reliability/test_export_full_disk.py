"""An export onto a full disk (a real, small tmpfs) says so in one line and loses nothing: no half-written
export, no temporary files, and an earlier export it was asked to replace stays whole."""

from __future__ import annotations

import pytest

from lmstudio.cli import main
from tests.reliability.conftest import leftovers

TINY = {
    "tokenizer.kind": "bpe",
    "tokenizer.vocab_size": 300,  # small files: a first export fits on the 400 KB disk
    "model.n_layer": 1,
    "model.n_embd": 16,
    "model.hidden_size": 16,
    "model.n_head": 2,
    "model.block_size": 16,
    "train.batch_size": 4,
    "train.max_steps": 2,
    "train.eval_interval": 2,
    "train.eval_iters": 1,
    "train.sample_interval": 0,
}


@pytest.fixture
def run(tmp_path):
    def train(arch: str) -> str:
        out = tmp_path / arch
        argv = ["train", "--preset", "tiny_tang", "--arch", arch, "--out", str(out), "--device", "cpu"]
        assert main(argv + [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]) == 0
        return str(out)

    return train


@pytest.mark.parametrize(
    ("fmt", "arch", "extra"), [("hf", "transformer", "transformers"), ("onnx", "gru", "onnxscript")]
)
def test_a_full_disk_keeps_the_earlier_export_and_leaves_no_temporary_files(
    small_disk, run, fmt, arch, extra, capsys
):
    pytest.importorskip(extra)
    pytest.importorskip("onnxruntime" if fmt == "onnx" else "transformers")
    run_dir = run(arch)
    out = small_disk.mount / ("model-hf" if fmt == "hf" else "model.onnx")
    assert main(["export", run_dir, "--format", fmt, "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in ([*out.iterdir()] if out.is_dir() else [out])}
    capsys.readouterr()
    small_disk.fill(leave=8192)  # a real ENOSPC for the next write of any size
    assert main(["export", run_dir, "--format", fmt, "--out", str(out), "--force"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "disk is full" in err and "Traceback" not in err
    after = {p.name: p.read_bytes() for p in ([*out.iterdir()] if out.is_dir() else [out])}
    assert after == before  # the earlier export, whole
    assert leftovers(small_disk.mount) == [] and sorted(p.name for p in small_disk.mount.iterdir()) == sorted(
        ["runs", "filler.bin", out.name]
    )
