"""Run folders: atomic writes, tied weights through safetensors, listing, sessions and their errors."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
import torch

from lmstudio import runfolder
from lmstudio.config import RunConfig
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine.models import build_model
from lmstudio.engine.session import Session
from lmstudio.engine.trainer import TrainControl, Trainer
from lmstudio.events import StepMetrics


def tiny(*overrides: str) -> RunConfig:
    return (
        RunConfig(name="ck")
        .override(
            [
                "corpus.source=tang300",
                "model.n_layer=1",
                "model.n_head=2",
                "model.n_embd=32",
                "model.hidden_size=32",
                "model.block_size=16",
                "train.batch_size=4",
                "train.max_steps=6",
                "train.eval_interval=3",
                "train.eval_iters=1",
                "train.log_interval=2",
                "train.sample_interval=3",
                "train.sample_tokens=4",
                "train.device=cpu",
                *overrides,
            ]
        )
        .validate()
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One finished tiny run shared by the read-only tests below."""
    root = tmp_path_factory.mktemp("runs")
    os.environ.setdefault("LMSTUDIO_CACHE", str(root / "cache"))
    run = root / "tiny"
    events = list(Trainer(tiny(), run, cache_dir=root / "cache").run())
    assert type(events[-1]).__name__ == "Finished", events[-1]
    return run


def test_default_folders_follow_the_environment(tmp_path, monkeypatch):
    assert ckpt.default_runs_dir() == tmp_path / "runs"
    assert ckpt.default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("LMSTUDIO_RUNS")
    assert ckpt.default_runs_dir() == runfolder.Path.home() / ".lmstudio" / "runs"


def test_new_run_dir_never_reuses_a_folder(tmp_path):
    a = ckpt.new_run_dir(tmp_path, "my run/1")
    b = ckpt.new_run_dir(tmp_path, "my run/1")
    assert a != b and a.is_dir() and b.is_dir() and a.parent == tmp_path and "/" not in a.name


_FSIZE_WRITER = """
import resource, signal, sys
from lmstudio.runfolder import atomic_write_all, atomic_write_text

folder = sys.argv[1]
atomic_write_text(folder + "/a.txt", "old a")
atomic_write_text(folder + "/b.txt", "old b")
# from here no file may grow past 1,000 bytes: the kernel refuses the write (EFBIG), as a full disk would
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
text = lambda t: lambda tmp: open(tmp, "w", encoding="utf-8").write(t)
try:
    atomic_write_all([(folder + "/a.txt", text("new a")), (folder + "/b.txt", text("x" * 100_000))])
except OSError as e:
    print(e.errno)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_atomic_writes_keep_every_old_file_when_the_kernel_refuses_a_write(tmp_path):
    """A real refusal in a child process (RLIMIT_FSIZE): the second file cannot be written, so neither is
    replaced, and no temporary file stays. (A full tmpfs: tests/reliability/test_real_disk.py.)"""
    done = subprocess.run(
        [sys.executable, "-c", _FSIZE_WRITER, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(errno.EFBIG)
    assert (tmp_path / "a.txt").read_text() == "old a" and (tmp_path / "b.txt").read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def _shared(model) -> int:
    """How many parameters are the same tensor as another (tied)."""
    return len(list(model.named_parameters(remove_duplicate=False))) - len(list(model.parameters()))


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_tied_weights_round_trip_through_safetensors(tmp_path, arch):
    cfg = tiny(f"model.arch={arch}", "model.tie_weights=true", "model.vocab_size=40").model
    torch.manual_seed(0)
    model = build_model(cfg)
    assert _shared(model) == 1, "the config should tie the embedding and the head"
    ckpt.save_weights(model, tmp_path / "model.safetensors", {"step": 5})
    torch.manual_seed(1)
    fresh = build_model(cfg)
    ckpt.load_weights_into(fresh, tmp_path, "latest")
    for (n, p), (_, q) in zip(model.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(p, q), n
    # the tie survives loading: one tensor, not two copies that would drift apart in training
    assert _shared(fresh) == 1
    assert ckpt.weights_metadata(tmp_path / "model.safetensors")["step"] == 5


def test_a_session_reproduces_the_trained_model(trained_run):
    session = Session.load(trained_run)
    assert session.step == 6 and not session.model.training and session.which == "latest"
    assert session.config.model.vocab_size == session.tokenizer.vocab_size
    weights = ckpt.load_weights(trained_run)
    state = session.model.state_dict()
    for name, tensor in weights.items():
        assert torch.equal(state[name], tensor), name
    best = Session.load(trained_run, which="best")
    assert best.step in (3, 6)


def test_train_state_loads_with_weights_only(trained_run):
    state = torch.load(trained_run / "train_state.pt", weights_only=True)
    assert state["step"] == 6 and "optimizer" in state and "rng" in state and "batcher" in state
    assert ckpt.load_train_state(trained_run)["step"] == 6


def test_history_and_listing(trained_run):
    metrics = ckpt.read_metrics(trained_run)
    assert [m["step"] for m in metrics if m["event"] == "StepMetrics"] == [2, 4, 6]
    assert [m["step"] for m in metrics if m["event"] == "EvalMetrics"] == [0, 3, 6]
    assert [s["step"] for s in ckpt.read_samples(trained_run)] == [3, 6]
    runs = ckpt.list_runs(trained_run.parent)
    assert len(runs) == 1
    run = runs[0]
    # the folder's name (unique), not the name in config.json ("ck")
    assert (run.name, run.arch, run.corpus, run.steps, run.max_steps) == (
        "tiny",
        "transformer",
        "tang300",
        6,
        6,
    )
    assert (run.state, run.state_text) == ("finished", "finished")  # no status file: from the steps
    # the best checkpoint's loss: the untrained step-0 evaluation has no checkpoint to be the best
    evals = [m["val_loss"] for m in metrics if m["event"] == "EvalMetrics" and m["step"] > 0]
    assert run.best_val_loss == pytest.approx(min(evals))


def test_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"ste')
    assert ckpt.read_jsonl(path) == [{"step": 1}, {"step": 2}]
    ckpt.append_jsonl(path, {"step": 3, "loss": float("nan")})
    assert ckpt.read_jsonl(path)[-1] == {"step": 3, "loss": None}


def test_list_runs_skips_folders_that_are_not_runs(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{nope")
    assert ckpt.list_runs(tmp_path) == [] and ckpt.list_runs(tmp_path / "missing") == []


def _copy_run(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


@pytest.mark.parametrize(
    "damage, file, words",
    [
        (lambda d: (d / "model.safetensors").unlink(), "model.safetensors", "missing"),
        (lambda d: (d / "config.json").unlink(), "config.json", "missing"),
        (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json", "missing"),
        (
            lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:200]),
            "model.safetensors",
            "damaged",
        ),
        (lambda d: (d / "config.json").write_text("{not json"), "config.json", "damaged"),
        (lambda d: (d / "tokenizer.json").write_text("{}"), "tokenizer.json", ""),
        (
            lambda d: (d / "config.json").write_text(
                json.loads((d / "config.json").read_text())
                and RunConfig.from_json((d / "config.json").read_text())
                .override(["model.n_embd=64"])
                .to_json()
            ),
            "model.safetensors",
            "does not fit",
        ),
    ],
)
def test_session_errors_name_the_file(trained_run, tmp_path, damage, file, words):
    run = _copy_run(trained_run, tmp_path / "copy")
    damage(run)
    with pytest.raises(ckpt.CheckpointError) as exc:
        Session.load(run)
    assert file in str(exc.value) and words in str(exc.value)


def test_a_missing_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="not a run folder"):
        Session.load(tmp_path / "nope")


def test_resume_notices_weights_and_state_from_different_steps(tmp_path):
    control = TrainControl()
    run = tmp_path / "run"
    list(Trainer(tiny("train.max_steps=20"), run, control=control).run())
    state = ckpt.load_train_state(run)
    state["step"] = 3  # as if a crash hit between writing the weights and the state
    ckpt.save_train_state(run, state)
    events = list(Trainer(tiny("train.max_steps=30"), run, resume=True).run())
    assert events[-1].kind == "checkpoint" and "do not match" in events[-1].message


def test_resume_of_a_folder_without_checkpoint_fails_cleanly(tmp_path):
    events = list(Trainer(tiny(), tmp_path / "empty", resume=True).run())
    assert len(events) == 1 and events[0].kind == "checkpoint" and "train_state.pt" in events[0].message


def test_stopping_before_the_first_step_still_leaves_a_resumable_run(tmp_path):
    control = TrainControl()
    run = tmp_path / "run"
    gen = Trainer(tiny(), run, control=control).run()
    assert type(next(gen)).__name__ == "Started"
    control.stop()
    rest = list(gen)
    assert [type(e).__name__ for e in rest] == ["Checkpointed", "Finished"] and rest[-1].step == 0
    resumed = list(Trainer(tiny(), run, resume=True).run())
    assert [e.step for e in resumed if isinstance(e, StepMetrics)] == [2, 4, 6]


def test_stale_temp_files_are_removed_and_nothing_else(tmp_path):
    (tmp_path / ".model.safetensors.ab12cd.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".train_state.pt.x.tmp").write_bytes(b"")
    keep = ["model.safetensors", "notes.tmp", ".hidden", "config.json"]
    for name in keep:
        (tmp_path / name).write_text("x")
    removed = ckpt.remove_stale_temp_files(tmp_path)
    assert sorted(removed) == [".model.safetensors.ab12cd.tmp", ".train_state.pt.x.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
