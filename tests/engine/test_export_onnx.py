"""ONNX export: onnxruntime, given only the .onnx file, computes the logits lmstudio computes.

Every architecture's forward graph is run at several batch sizes and lengths (dynamic axes); the step
graphs are driven token by token the way a deployment would, against one forward pass of ours.
"""

from __future__ import annotations

import os
import sys

import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lmstudio.cli import main  # noqa: E402
from lmstudio.engine.export_onnx import step_path  # noqa: E402
from lmstudio.engine.session import Session  # noqa: E402

ARCHS = ["transformer", "conv", "lstm", "gru", "rnn"]
TINY = [
    *("--set", "model.n_layer=2", "--set", "model.n_embd=32", "--set", "model.n_head=2"),
    *("--set", "model.block_size=16", "--set", "model.hidden_size=24", "--set", "train.batch_size=4"),
    *("--set", "train.max_steps=8", "--set", "train.eval_interval=8", "--set", "train.eval_iters=1"),
    *("--set", "train.sample_interval=0", "--device", "cpu"),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """arch -> (run folder, .onnx file), each exported with its step graph through the CLI."""
    root = tmp_path_factory.mktemp("onnx")
    old = os.environ.get("LMSTUDIO_CACHE")
    os.environ["LMSTUDIO_CACHE"] = str(root / "cache")
    try:
        out = {}
        for arch in ARCHS:
            run = root / arch
            # the GRU without biases, the RNN untied: the graphs must not depend on the defaults
            extra = {
                "gru": ["--set", "model.bias=false"],
                "rnn": ["--set", "model.tie_weights=false"],
                "conv": ["--set", "model.dilation_cycle=2", "--set", "model.n_layer=3"],
            }
            argv = ["train", "--preset", "tiny_tang", "--arch", arch, "--out", str(run), *TINY]
            assert main(argv + extra.get(arch, [])) == 0
            onnx_file = root / f"{arch}.onnx"
            assert main(["export", str(run), "--format", "onnx", "--out", str(onnx_file), "--step"]) == 0
            out[arch] = (run, onnx_file)
        yield out
    finally:
        if old is None:
            os.environ.pop("LMSTUDIO_CACHE", None)
        else:
            os.environ["LMSTUDIO_CACHE"] = old


def ort_session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("arch", ARCHS)
def test_onnxruntime_logits_equal_ours_at_any_length(exported, arch):
    run, onnx_file = exported[arch]
    session = Session.load(run)
    sess = ort_session(onnx_file)
    vocab = session.config.model.vocab_size
    gen = torch.Generator().manual_seed(2)
    lengths = [1, 5, 16] + ([40] if arch != "transformer" else [])  # recurrent models run past the context
    text = torch.tensor([session.tokenizer.encode("春眠不覺曉，處處聞啼鳥。")])
    for idx in [text] + [torch.randint(0, vocab, (b, n), generator=gen) for b in (1, 3) for n in lengths]:
        theirs = sess.run(["logits"], {"idx": idx.numpy()})[0]
        with torch.no_grad():
            ours = session.model(idx)[0].numpy()
        assert theirs.shape == ours.shape
        np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_step_graph_decodes_like_one_forward_pass(exported, arch):
    run, onnx_file = exported[arch]
    session = Session.load(run)
    cfg = session.config.model
    sess = ort_session(step_path(onnx_file))
    names = [o.name for o in sess.get_outputs()]
    idx = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(3))
    if arch == "transformer":
        empty = np.zeros((cfg.n_layer, 2, cfg.n_head, 0, cfg.n_embd // cfg.n_head), np.float32)
        state = {"past_keys": empty, "past_values": empty}
    elif arch == "conv":  # each layer keeps its last (k-1)*d normalised inputs
        state = {i.name: np.zeros([2, *i.shape[1:]], np.float32) for i in sess.get_inputs()[1:]}
        assert [v.shape[2] for v in state.values()] == [b.history for b in session.model.blocks]
    else:
        zeros = np.zeros((cfg.n_layer, 2, cfg.hidden_size), np.float32)
        state = {"h": zeros, "c": zeros} if arch == "lstm" else {"h": zeros}
    got = []
    for a, b in ((0, 5), (5, 6), (6, 7), (7, 16)):  # a prompt, two single tokens, the rest at once
        outputs = sess.run(names, {"idx": idx[:, a:b].numpy(), **state})
        got.append(outputs[0])
        state = dict(zip(state, outputs[1:], strict=True))
    with torch.no_grad():
        np.testing.assert_allclose(
            np.concatenate(got, axis=1), session.model(idx)[0].numpy(), atol=1e-4, rtol=0
        )


def test_the_transformer_graph_refuses_more_than_its_context(exported):
    sess = ort_session(exported["transformer"][1])
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime raises its own exception types
        sess.run(["logits"], {"idx": np.zeros((1, 17), np.int64)})


def test_bad_names_and_existing_files_are_refused_and_kept(exported, tmp_path, capsys):
    run = str(exported["lstm"][0])
    assert main(["export", run, "--format", "onnx", "--out", str(tmp_path / "model.txt")]) == 1
    assert ".onnx" in capsys.readouterr().err
    keep = tmp_path / "keep.onnx"
    keep.write_bytes(b"not mine to lose")
    assert main(["export", run, "--format", "onnx", "--out", str(keep)]) == 1
    assert "--force" in capsys.readouterr().err and keep.read_bytes() == b"not mine to lose"
    assert main(["export", run, "--format", "onnx", "--out", str(keep), "--force"]) == 0
    assert "onnxruntime logits match" in capsys.readouterr().out
    assert ort_session(keep).get_inputs()[0].name == "idx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.onnx"]  # no temporary file left


def test_missing_onnxruntime_says_how_to_install(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    out = tmp_path / "m.onnx"
    assert main(["export", str(exported["gru"][0]), "--format", "onnx", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "onnxruntime" in err and "pip install" in err
    assert not out.exists()


def test_a_cancelled_export_writes_nothing(exported, tmp_path):
    import threading

    from lmstudio.engine.export_common import ExportCancelled
    from lmstudio.engine.export_onnx import export_onnx

    cancel = threading.Event()
    seen = []

    def progress(fraction):  # the app closes while the first graph is being checked
        seen.append(fraction)
        cancel.set()

    with pytest.raises(ExportCancelled):
        export_onnx(exported["rnn"][0], tmp_path / "m.onnx", step=True, progress=progress, cancel=cancel)
    assert seen and list(tmp_path.iterdir()) == []
