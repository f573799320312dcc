"""Broken or hostile files in a run folder: a clear error naming the file, and nothing ever executed.

Every case is opened the three ways a person can: ``Session.load`` (what the app's Generate and Inspect
panes use), ``lmstudio generate`` (one line on stderr, exit 1) and resuming training.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct

import pytest
import torch

from lmstudio.cli import main as cli_main
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine.session import Session
from lmstudio.engine.trainer import Trainer
from lmstudio.errors import UserError
from lmstudio.events import Failed
from tests.reliability.conftest import copy_run, run_all, tiny_config


def _edit_json(path, change):
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _header_len(path) -> int:
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


# (what is done to the run, the file the message must name, words it must contain)
DAMAGE = {
    "weights-truncated-in-data": (
        lambda d: _truncate(d / "model.safetensors", 0.6),
        "model.safetensors",
        "damaged",
    ),
    "weights-truncated-in-header": (
        lambda d: _truncate(d / "model.safetensors", 0.001),
        "model.safetensors",
        "damaged",
    ),
    "weights-empty": (lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors", "damaged"),
    "weights-garbage": (
        lambda d: (d / "model.safetensors").write_bytes(bytes(range(256)) * 40),
        "model.safetensors",
        "damaged",
    ),
    "weights-header-claims-exabytes": (
        lambda d: _patch(d / "model.safetensors", 0, struct.pack("<Q", 1 << 60)),
        "model.safetensors",
        "damaged",
    ),
    "weights-header-not-json": (
        lambda d: _patch(d / "model.safetensors", 8, b'{"x":[' + b"\xff" * 8),
        "model.safetensors",
        "damaged",
    ),
    "weights-a-pickle": (
        lambda d: (d / "model.safetensors").write_bytes(pickle.dumps({"a": 1})),
        "model.safetensors",
        "damaged",
    ),
    "weights-wrong-shapes": (lambda d: _swap_weights(d, n_embd=24), "model.safetensors", "does not fit"),
    "config-not-json": (
        lambda d: (d / "config.json").write_text('{"model": '),
        "config.json",
        "not valid JSON",
    ),
    "config-a-list": (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json", "expected a table"),
    "config-not-utf8": (lambda d: (d / "config.json").write_bytes(b"\xff\xfe{\x00"), "config.json", ""),
    "config-wrong-type": (
        lambda d: _edit_json(d / "config.json", lambda c: c["model"].update(n_embd="wide")),
        "config.json",
        "model.n_embd",
    ),
    "config-null-field": (
        lambda d: _edit_json(d / "config.json", lambda c: c["model"].update(n_layer=None)),
        "config.json",
        "model.n_layer",
    ),
    "config-bool-for-int": (
        lambda d: _edit_json(d / "config.json", lambda c: c["model"].update(n_layer=True)),
        "config.json",
        "model.n_layer",
    ),
    "config-out-of-range": (
        lambda d: _edit_json(d / "config.json", lambda c: c["model"].update(n_embd=-16)),
        "config.json",
        "model.n_embd",
    ),
    "config-section-not-a-table": (
        lambda d: _edit_json(d / "config.json", lambda c: c.update(model=7)),
        "config.json",
        "model",
    ),
    "config-future-version": (
        lambda d: _edit_json(d / "config.json", lambda c: c.update(version=99)),
        "config.json",
        "newer lmstudio",
    ),
    "config-missing-vocab": (
        lambda d: _edit_json(d / "config.json", lambda c: c["model"].pop("vocab_size")),
        "config.json",
        "tokens",
    ),
    "config-missing-width": (
        lambda d: _edit_json(d / "config.json", lambda c: c["model"].pop("n_embd")),
        "config.json",
        "does not fit",
    ),
    "config-unknown-arch": (
        lambda d: _edit_json(d / "config.json", lambda c: c["model"].update(arch="mamba")),
        "config.json",
        "model.arch",
    ),
    "tokenizer-other-vocab-size": (lambda d: _other_tokenizer(d), "tokenizer.json", "tokens"),
    "tokenizer-not-json": (lambda d: (d / "tokenizer.json").write_text('{"model": {'), "tokenizer.json", ""),
    "tokenizer-empty-object": (lambda d: (d / "tokenizer.json").write_text("{}"), "tokenizer.json", ""),
    "tokenizer-binary": (
        lambda d: (d / "tokenizer.json").write_bytes(bytes(range(256))),
        "tokenizer.json",
        "",
    ),
    # hostile rather than damaged: each broke something before (a traceback, a hang, gigabytes allocated)
    "config-nested-100000-deep": (
        lambda d: (d / "config.json").write_text('{"model": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        "config.json",
        "nested",
    ),
    "config-a-5000-digit-number": (
        lambda d: (d / "config.json").write_text('{"model": {"n_layer": ' + "7" * 5000 + "}}"),
        "config.json",
        "JSON",
    ),
    "config-a-fifo": (lambda d: _replace_by_fifo(d / "config.json"), "config.json", "FIFO"),
    "config-a-link-to-dev-zero": (
        lambda d: _replace_by_link(d / "config.json", "/dev/zero"),
        "config.json",
        "device",
    ),
    "config-too-big": (
        lambda d: (d / "config.json").write_text('{"name": "' + "x" * (5 << 20) + '"}'),
        "config.json",
        "bytes",
    ),
    "tokenizer-an-id-of-500-million": (lambda d: _huge_token_id(d), "tokenizer.json", "token id 500000000"),
    "tokenizer-a-fifo": (lambda d: _replace_by_fifo(d / "tokenizer.json"), "tokenizer.json", "FIFO"),
    "tokenizer-a-link-to-dev-zero": (
        lambda d: _replace_by_link(d / "tokenizer.json", "/dev/zero"),
        "tokenizer.json",
        "device",
    ),
    "weights-nan": (
        lambda d: _rewrite_weights(d, lambda t: t.fill_(float("nan"))),
        "model.safetensors",
        "NaN",
    ),
    "weights-fp16": (lambda d: _rewrite_weights(d, lambda t: t.half()), "model.safetensors", "F16"),
    "weights-int64": (lambda d: _rewrite_weights(d, lambda t: t.long()), "model.safetensors", "I64"),
    "weights-a-fifo": (
        lambda d: _replace_by_fifo(d / "model.safetensors"),
        "model.safetensors",
        "special file",
    ),
    "weights-a-folder": (
        lambda d: _replace_by_folder(d / "model.safetensors"),
        "model.safetensors",
        "a folder",
    ),
}


def _replace_by_fifo(path):
    path.unlink()
    os.mkfifo(path)


def _replace_by_link(path, target):
    path.unlink()
    path.symlink_to(target)


def _replace_by_folder(path):
    path.unlink()
    path.mkdir()


def _huge_token_id(run):
    """One id of 500,000,000 in a 34 KB file: HF would size its tables by it (12 GB seen in generate)."""
    spec = json.loads((run / "tokenizer.json").read_text(encoding="utf-8"))
    token = next(iter(spec["model"]["vocab"]))
    spec["model"]["vocab"][token] = 500_000_000
    (run / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")


def _rewrite_weights(run, change):
    from safetensors.torch import load_file, save_file

    path = run / "model.safetensors"
    meta = ckpt.weights_metadata(path)
    tensors = {k: change(v.clone()).contiguous() for k, v in load_file(path).items()}
    save_file(tensors, path, metadata={k: json.dumps(v) for k, v in meta.items()})


def _truncate(path, fraction):
    raw = path.read_bytes()
    path.write_bytes(raw[: max(1, int(len(raw) * fraction))])


def _patch(path, offset, data):
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


def _swap_weights(run, n_embd):
    from lmstudio.config import RunConfig
    from lmstudio.engine.models import build_model

    cfg = RunConfig.load(run / "config.json")
    cfg.model.n_embd = n_embd
    ckpt.save_weights(build_model(cfg.model), run / "model.safetensors", {"step": 20})


def _other_tokenizer(run):
    from lmstudio.config import TokenizerConfig
    from lmstudio.engine.tokenizer import train_tokenizer

    train_tokenizer(TokenizerConfig(kind="char"), "only a few letters").save(run / "tokenizer.json")


@pytest.fixture(autouse=True)
def _no_hang():
    """A FIFO or a link to /dev/zero used to hang the reader: fail such a test instead of the whole suite."""

    def hung(signum, frame):
        raise TimeoutError("hung reading a hostile file")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(params=DAMAGE.values(), ids=DAMAGE.keys())
def damaged(request, finished_runs, tmp_path):
    damage, file, words = request.param
    run = copy_run(finished_runs["transformer"], tmp_path / "damaged")
    damage(run)
    return run, file, words


def _assert_clear(message: str, file: str, words: str):
    assert file in message, f"the message does not name {file}: {message}"
    assert words.lower() in message.lower(), message
    assert "Traceback" not in message and "\n" not in message.strip(), message


def test_session_load_names_the_damaged_file(damaged):
    run, file, words = damaged
    with pytest.raises(UserError) as exc:
        Session.load(run)
    _assert_clear(str(exc.value), file, words)


def test_cli_generate_prints_one_line_naming_the_damaged_file(damaged, capsys):
    run, file, words = damaged
    assert cli_main(["generate", str(run), "--prompt", "床", "--max-tokens", "3"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmstudio: error:") and len(err.splitlines()) == 1, err
    _assert_clear(err, file, words)


def test_resuming_a_damaged_run_on_the_cli_names_the_file(damaged, capsys, request):
    run, file, words = damaged
    code = cli_main(["train", "--resume", str(run), "--device", "cpu", "--set", "train.max_steps=22"])
    if request.node.callspec.id == "config-missing-vocab":
        assert code == 0  # the vocabulary size is known from tokenizer.json: nothing is lost, it resumes
        return
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and file in err, err


def test_the_runs_list_shows_damaged_runs_without_failing(finished_runs, tmp_path):
    root = tmp_path / "runs"
    for name, (damage, _, _) in DAMAGE.items():
        damage(copy_run(finished_runs["transformer"], root / name))
    odd = copy_run(finished_runs["transformer"], root / "odd-values")
    _edit_json(odd / "config.json", lambda c: c["train"].update(max_steps="many"))
    ckpt.save_weights(torch.nn.Linear(1, 1), odd / "model.safetensors", {"step": "x", "best_val": "low"})
    runs = ckpt.list_runs(root)
    assert [
        (r.steps, r.max_steps, r.best_val_loss)
        for r in runs
        if r.name.endswith("odd-values") or r.path.endswith("odd-values")
    ] == [(0, 0, None)]
    listed = {r.name for r in runs} | {r.path.rsplit("/", 1)[-1] for r in runs}
    # a readable config is listed (the error comes when the run is opened); an unreadable one is skipped
    assert "weights-garbage" in listed and "tokenizer-binary" in listed
    assert not {"config-not-json", "config-a-list", "config-not-utf8"} & listed


# ---- a training state crafted to run code ------------------------------------------------------------
class _Payload:
    """Unpickling this calls ``marker.write_text`` (a stand-in for os.system)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.write_text, (Path(self.marker), "pwned"))


class _ShellPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _plant(run, kind, marker):
    path = run / ckpt.STATE_FILE
    if kind == "torch-save-zip":  # the format torch.save writes, with a payload inside the state dict
        state = torch.load(path, weights_only=True)
        state["optimizer"]["evil"] = _Payload(marker)
        torch.save(state, path)
    elif kind == "raw-pickle-os-system":
        path.write_bytes(pickle.dumps(_ShellPayload(marker)))
    elif kind == "legacy-torch-format":
        torch.save({"version": 1, "evil": _Payload(marker)}, path, _use_new_zipfile_serialization=False)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # the raw pickle is protocol 4
@pytest.mark.parametrize("kind", ["torch-save-zip", "raw-pickle-os-system", "legacy-torch-format"])
def test_a_training_state_that_would_run_code_is_refused_and_never_executed(
    finished_runs, tmp_path, kind, capsys
):
    marker = tmp_path / "marker"
    run = copy_run(finished_runs["transformer"], tmp_path / "run")
    _plant(run, kind, marker)
    # the payload really is live: plain unpickling would run it (proves the test can fail)
    with open(run / ckpt.STATE_FILE, "rb") as f:
        assert f.read(2) in (b"PK", b"\x80\x04", b"\x80\x02", b"\x80\x05")
    # resuming through the trainer...
    events = run_all(Trainer(tiny_config("transformer", "train.max_steps=22"), run, resume=True))
    assert isinstance(events[-1], Failed) and events[-1].kind == "checkpoint", events[-1]
    assert ckpt.STATE_FILE in events[-1].message and "not written by lmstudio" in events[-1].message
    # ...and through the CLI
    assert cli_main(["train", "--resume", str(run), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert ckpt.STATE_FILE in err and "Traceback" not in err
    assert not marker.exists(), "the crafted training state ran code"
    # the weights themselves are still usable
    assert Session.load(run).step == 20


def test_the_payload_would_run_under_a_plain_unpickler(tmp_path):
    """Control for the test above: without weights_only the same file executes its payload."""
    marker = tmp_path / "marker"
    path = tmp_path / "state.pt"
    torch.save({"evil": _Payload(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"
