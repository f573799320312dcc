"""Faults during training: out of memory, a diverging loss, a full or read-only disk, a bad token cache.

Each fault must end the run with a ``Failed`` event that says what to do, leave the last good checkpoint
loadable, leave no temporary files behind, and let the user start again at once.
"""

from __future__ import annotations

import errno
import gc
import os

import pytest
import torch

from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine import data as data_module
from lmstudio.engine import models as models_module
from lmstudio.engine.events import Checkpointed, Failed, Finished, Notice, StateChanged, StepMetrics
from lmstudio.engine.session import Session
from lmstudio.engine.trainer import TrainControl, Trainer
from tests.reliability.conftest import fault_in_forward as _fault_in_forward
from tests.reliability.conftest import run_all, tiny_config


def _all_finite(run, which="latest") -> bool:
    return all(bool(torch.isfinite(t).all()) for t in ckpt.load_weights(run, which).values())


def _leftovers(folder) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ---- out of memory ------------------------------------------------------------------------------------
OOM_ERRORS = {
    "cuda-oom-type": lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "runtime-error": lambda: RuntimeError("CUDA error: out of memory"),
    "mps": lambda: RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB)"),
}


@pytest.mark.parametrize("make_error", OOM_ERRORS.values(), ids=OOM_ERRORS.keys())
def test_out_of_memory_frees_memory_keeps_the_checkpoint_and_allows_a_restart(
    tmp_path, monkeypatch, make_error
):
    run = tmp_path / "run"
    spy = {"empty_cache": 0}
    gpu = pytest.MonkeyPatch()

    def oom():
        # from here on the process looks like it uses a GPU, so the clean-up must hand its cache back
        gpu.setattr(torch.cuda, "is_available", lambda: True)
        gpu.setattr(torch.cuda, "is_initialized", lambda: True)
        gpu.setattr(torch.cuda, "empty_cache", lambda: spy.__setitem__("empty_cache", spy["empty_cache"] + 1))
        raise make_error()

    built = _fault_in_forward(monkeypatch, 15, oom)
    trainer = Trainer(tiny_config(), run)
    try:
        events = run_all(trainer)
    finally:
        gpu.undo()
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "oom", failed
    assert "smaller batch" in failed.message and "shorter context" in failed.message
    assert spy["empty_cache"] >= 1, "the GPU cache was not emptied after running out of memory"
    # the model and optimizer are let go: nothing keeps the big allocations alive
    del trainer, events
    gc.collect()
    assert built[0]() is None, "the model is still referenced after the OOM"
    # the last good checkpoint (step 10) is intact and loads
    assert ckpt.weights_metadata(run / ckpt.LATEST_FILE)["step"] == 10
    assert Session.load(run).step == 10 and _all_finite(run)
    assert not _leftovers(run)
    # and the user can start again at once, with a smaller batch, from that checkpoint
    monkeypatch.undo()
    again = run_all(Trainer(tiny_config("transformer", "train.batch_size=2"), run, resume=True))
    assert isinstance(again[-1], Finished) and again[-1].step == 20
    assert [e.step for e in again if isinstance(e, StepMetrics)][0] == 11


def test_out_of_memory_while_building_the_model_is_reported_too(tmp_path, monkeypatch):
    def build(cfg):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")

    monkeypatch.setattr(models_module, "build_model", build)
    events = run_all(Trainer(tiny_config(), tmp_path / "run"))
    assert isinstance(events[-1], Failed) and events[-1].kind == "oom" and "smaller" in events[-1].message


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_real_cuda_out_of_memory_releases_the_memory_and_a_smaller_run_then_works(tmp_path):
    """Activations of batch 4096 x context 8192 x width 1024 need ~137 GB: more than any single GPU."""
    huge = tiny_config(
        "transformer",
        "corpus.source=tiny_shakespeare",
        "model.block_size=8192",
        "model.n_embd=1024",
        "model.n_head=8",
        "train.batch_size=4096",
        "train.device=cuda",
        "train.compile=off",
    )
    events = run_all(Trainer(huge, tmp_path / "huge"))
    assert isinstance(events[-1], Failed) and events[-1].kind == "oom", events[-1]
    del events
    gc.collect()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() < 256 << 20, "memory still held after the OOM"
    small = run_all(
        Trainer(tiny_config("transformer", "train.device=cuda", "train.compile=off"), tmp_path / "small")
    )
    assert isinstance(small[-1], Finished), small[-1]


# ---- a diverging loss ---------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_an_absurd_learning_rate_is_caught_within_a_step_and_never_saved(tmp_path, arch):
    """The user types a learning rate of 1e6 into the running trainer; checkpoints are due every step."""
    run = tmp_path / "run"
    control = TrainControl()
    losses = {}

    def on_event(e):
        if isinstance(e, StepMetrics):
            losses[e.step] = e.loss
            if e.step == 10:
                control.set_lr(1e6)

    events = run_all(
        Trainer(tiny_config(arch, "train.checkpoint_interval=1"), run, control=control), on_event
    )
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "nan", failed
    assert "learning rate" in failed.message
    # the run stopped at the first step whose loss was not finite: every reported loss is finite
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert failed.step == max(losses)
    # whatever was saved last is from before the failure, holds only finite numbers and still loads
    assert ckpt.weights_metadata(run / ckpt.LATEST_FILE)["step"] <= failed.step
    assert _all_finite(run) and _all_finite(run, "best")
    assert Session.load(run).step <= failed.step
    assert not _leftovers(run)


def test_gradients_that_overflow_while_the_loss_is_finite_are_not_saved(tmp_path, monkeypatch):
    """Inf gradients with a finite loss turn the weights into NaN at the optimizer step; the checkpoint
    written right after that step must not contain them."""
    real_build = models_module.build_model

    def build(cfg):
        model = real_build(cfg)
        calls = {"n": 0}

        def poison(grad):
            calls["n"] += 1
            return grad * float("inf") if calls["n"] == 13 else grad

        next(model.parameters()).register_hook(poison)
        return model

    monkeypatch.setattr(models_module, "build_model", build)
    run = tmp_path / "run"
    events = run_all(Trainer(tiny_config("transformer", "train.checkpoint_interval=1"), run))
    assert isinstance(events[-1], Failed) and events[-1].kind == "nan", events[-1]
    saved = [e.step for e in events if isinstance(e, Checkpointed)]
    assert saved and max(saved) <= 12
    assert ckpt.weights_metadata(run / ckpt.LATEST_FILE)["step"] == max(saved)
    assert _all_finite(run)


# ---- a full or read-only disk -------------------------------------------------------------------------
def _fail_writes_after(monkeypatch, n_ok: int, error: OSError, target: str = "replace"):
    """Let the first ``n_ok`` checkpoint renames through, then fail like a full/read-only disk."""
    calls = {"n": 0}
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if str(dst).endswith((".safetensors", ".pt")):
            calls["n"] += 1
            if calls["n"] > n_ok:
                raise error
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(ckpt.os, "replace", replace)


DISK_ERRORS = {
    "disk-full": OSError(errno.ENOSPC, "No space left on device"),
    "read-only": OSError(errno.EROFS, "Read-only file system"),
    "permission": PermissionError(errno.EACCES, "Permission denied"),
}


@pytest.mark.parametrize("error", DISK_ERRORS.values(), ids=DISK_ERRORS.keys())
def test_a_disk_that_refuses_writes_fails_cleanly_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch, error
):
    run = tmp_path / "run"
    _fail_writes_after(monkeypatch, 3, error)  # step 10: latest + best + state succeed, step 20 fails
    control = TrainControl()
    trainer = Trainer(tiny_config(), run, control=control)
    events = run_all(trainer)
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "disk", failed
    assert os.strerror(error.errno) in failed.message or error.strerror in failed.message
    assert str(run) in failed.message and "previous checkpoint is intact" in failed.message
    assert ckpt.weights_metadata(run / ckpt.LATEST_FILE)["step"] == 10
    assert ckpt.load_train_state(run)["step"] == 10
    assert Session.load(run).step == 10 and _all_finite(run)
    assert not _leftovers(run), "a temporary file was left behind"
    # the training state is still in memory: with the disk back, saving works and resumes from it
    monkeypatch.undo()
    assert trainer.step == 20 and trainer.model is not None
    again = run_all(Trainer(tiny_config(), run, resume=True))
    assert isinstance(again[-1], Finished) and again[-1].step == 20


def test_with_someone_at_the_controls_a_full_disk_pauses_and_resume_saves_again(tmp_path, monkeypatch):
    """The app's control: the failed save pauses the run; space freed, Resume saves those very steps."""
    run = tmp_path / "run"
    _fail_writes_after(monkeypatch, 3, DISK_ERRORS["disk-full"])  # the save at step 20 fails
    control = TrainControl(pause_on_disk_error=True)
    seen = []

    def on_event(event):
        seen.append(type(event).__name__)
        if isinstance(event, StateChanged) and event.state == "paused":
            assert control.paused and ckpt.weights_metadata(run / ckpt.LATEST_FILE)["step"] == 10
            monkeypatch.undo()  # the user frees some space...
            control.resume()  # ...and presses Resume

    events = run_all(
        Trainer(tiny_config("transformer", "train.max_steps=30"), run, control=control), on_event
    )
    notice = next(e for e in events if isinstance(e, Notice))
    assert notice.step == 20 and "No space left on device" in notice.message and "Resume" in notice.message
    assert (
        seen.index("Notice") < seen.index("StateChanged") < seen.index("Checkpointed", seen.index("Notice"))
    )
    assert [e.step for e in events if isinstance(e, Checkpointed)].count(20) == 1  # saved once it could be
    assert isinstance(events[-1], Finished) and events[-1].reason == "completed" and events[-1].step == 30
    assert ckpt.load_train_state(run)["step"] == 30 and not _leftovers(run)


def _run_and_stop_when_paused(run, monkeypatch, error: OSError, free_space_first: bool) -> list:
    """Saves fail from step 20 on; at the pause the user (maybe after freeing space) presses Stop."""
    _fail_writes_after(monkeypatch, 3, error)
    control = TrainControl(pause_on_disk_error=True)

    def on_event(event):
        if isinstance(event, StateChanged) and event.state == "paused":
            if free_space_first:
                monkeypatch.undo()
            control.stop()

    return run_all(Trainer(tiny_config("transformer", "train.max_steps=30"), run, control=control), on_event)


def test_stop_while_paused_on_a_full_disk_ends_as_a_disk_failure_with_the_last_checkpoint(
    tmp_path, monkeypatch
):
    run = tmp_path / "run"
    events = _run_and_stop_when_paused(run, monkeypatch, DISK_ERRORS["read-only"], free_space_first=False)
    assert isinstance(events[-1], Failed) and events[-1].kind == "disk", events[-1]
    assert "previous checkpoint is intact" in events[-1].message
    assert ckpt.weights_metadata(run / ckpt.LATEST_FILE)["step"] == 10 and not _leftovers(run)


def test_stop_after_freeing_space_saves_the_waiting_checkpoint(tmp_path, monkeypatch):
    """Space freed, then Stop rather than Resume: the stop still saves the steps that were waiting."""
    run = tmp_path / "run"
    events = _run_and_stop_when_paused(run, monkeypatch, DISK_ERRORS["disk-full"], free_space_first=True)
    assert isinstance(events[-1], Finished) and events[-1].reason == "stopped" and events[-1].step == 20
    assert [e.step for e in events if isinstance(e, Checkpointed)] == [10, 20]  # once, not again at the stop
    assert ckpt.load_train_state(run)["step"] == 20 and not _leftovers(run)


def test_a_full_disk_while_writing_the_file_itself_leaves_no_half_file(tmp_path, monkeypatch):
    """ENOSPC in the middle of writing the bytes (not at the rename)."""
    run = tmp_path / "run"
    real_save = torch.save
    calls = {"n": 0}

    def full_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] > 1:
            with open(f, "wb") as fh:
                fh.write(b"\x80\x02half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt.torch, "save", full_save)
    events = run_all(Trainer(tiny_config(), run))
    assert isinstance(events[-1], Failed) and events[-1].kind == "disk"
    assert ckpt.load_train_state(run)["step"] == 10
    # step 20's weights were written too, but every file is renamed only once all are written: none was
    assert ckpt.weights_metadata(run / ckpt.LATEST_FILE)["step"] == 10
    assert not _leftovers(run)
    monkeypatch.undo()
    again = run_all(Trainer(tiny_config(), run, resume=True))  # so the run resumes from step 10
    assert isinstance(again[-1], Finished) and again[-1].step == 20


def test_a_read_only_runs_folder_at_the_start_is_a_disk_failure(tmp_path, monkeypatch):
    real_mkstemp = ckpt.tempfile.mkstemp

    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(ckpt.tempfile, "mkstemp", refuse)
    run = tmp_path / "run"
    events = run_all(Trainer(tiny_config(), run))
    assert isinstance(events[-1], Failed) and events[-1].kind == "disk", events[-1]
    assert "Read-only" in events[-1].message and "runs folder" in events[-1].message
    monkeypatch.setattr(ckpt.tempfile, "mkstemp", real_mkstemp)
    assert not _leftovers(tmp_path)


def test_a_full_disk_while_logging_metrics_is_a_disk_failure(tmp_path, monkeypatch):
    real = ckpt.append_jsonl
    calls = {"n": 0}

    def append(path, record):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, record)

    monkeypatch.setattr(ckpt, "append_jsonl", append)
    events = run_all(Trainer(tiny_config(), tmp_path / "run"))
    assert isinstance(events[-1], Failed) and events[-1].kind == "disk" and "No space" in events[-1].message


def test_a_full_disk_while_caching_the_encoded_corpus_is_a_clear_data_failure(tmp_path, monkeypatch):
    real_fsync = data_module.os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(data_module.os, "fsync", full)
    cache = tmp_path / "cache"
    events = run_all(Trainer(tiny_config(), tmp_path / "run", cache_dir=cache))
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "data", failed
    assert "No space left" in failed.message and "LMSTUDIO_CACHE" in failed.message
    assert not _leftovers(cache) and not list(cache.glob("*.bin"))
    monkeypatch.setattr(data_module.os, "fsync", real_fsync)
    assert isinstance(
        run_all(Trainer(tiny_config("transformer", "train.max_steps=2"), tmp_path / "run2", cache_dir=cache))[
            -1
        ],
        Finished,
    )


# ---- the token cache ----------------------------------------------------------------------------------
def _cache_files(cache):
    bins = sorted(cache.glob("*.bin"))
    assert len(bins) == 1, bins
    return bins[0], bins[0].with_suffix(".json")


def _ids_for(text, tok, cache):
    return data_module.encode_to_cache(text, tok, cache)


@pytest.fixture
def char_tok():
    from lmstudio.config import TokenizerConfig
    from lmstudio.engine.tokenizer import train_tokenizer

    return train_tokenizer(TokenizerConfig(kind="char"), "abcdefgh \n" * 50)


@pytest.mark.parametrize(
    "damage", ["truncate", "grow", "zero-length", "garbage-sidecar", "no-sidecar", "wrong-length-in-sidecar"]
)
def test_a_damaged_token_cache_is_detected_and_rebuilt(tmp_path, char_tok, damage):
    text = "abc defg\nhab " * 200
    cache = tmp_path / "cache"
    good = _ids_for(text, char_tok, cache).copy()
    bin_path, meta_path = _cache_files(cache)
    raw = bin_path.read_bytes()
    if damage == "truncate":
        bin_path.write_bytes(raw[: len(raw) // 2])
    elif damage == "grow":
        bin_path.write_bytes(raw + b"\x01\x00" * 7)
    elif damage == "zero-length":
        bin_path.write_bytes(b"")
    elif damage == "garbage-sidecar":
        meta_path.write_text('{"version": 1, "length": ')
    elif damage == "no-sidecar":
        meta_path.unlink()
    elif damage == "wrong-length-in-sidecar":
        import json

        meta = json.loads(meta_path.read_text())
        meta["length"] += 1
        meta_path.write_text(json.dumps(meta))
    again = _ids_for(text, char_tok, cache)
    assert again.tolist() == good.tolist() == char_tok.encode(text)
    assert bin_path.stat().st_size == len(good) * good.dtype.itemsize


def test_a_cache_of_the_same_size_but_other_ids_from_a_different_tokenizer_is_never_used(tmp_path, char_tok):
    """Swap in a cache written by another tokenizer under this key: the sidecar's tokenizer hash refuses it."""
    import json

    from lmstudio.config import TokenizerConfig
    from lmstudio.engine.tokenizer import train_tokenizer

    text = "abc defg\nhab " * 200
    other = train_tokenizer(TokenizerConfig(kind="char"), "abcdefgZ \n" * 50)  # same size, other ids
    assert other.vocab_size == char_tok.vocab_size and other.encode(text) != char_tok.encode(text)
    cache_a, cache_b = tmp_path / "a", tmp_path / "b"
    _ids_for(text, char_tok, cache_a)
    _ids_for(text, other, cache_b)
    (bin_a, meta_a), (bin_b, meta_b) = _cache_files(cache_a), _cache_files(cache_b)
    assert bin_a.name != bin_b.name  # keyed by the tokenizer too
    # plant the other tokenizer's ids (and sidecar) under this tokenizer's key
    bin_a.write_bytes(bin_b.read_bytes())
    meta_a.write_text(meta_b.read_text())
    assert json.loads(meta_a.read_text())["tokenizer"] != char_tok.fingerprint()
    assert _ids_for(text, char_tok, cache_a).tolist() == char_tok.encode(text)


def test_training_on_a_corrupted_cache_rebuilds_it(tmp_path):
    """End to end: a run whose cached ids were truncated behind its back trains on the true data."""
    cache = tmp_path / "cache"
    first = run_all(Trainer(tiny_config("lstm", "train.max_steps=2"), tmp_path / "a", cache_dir=cache))
    assert isinstance(first[-1], Finished)
    bin_path, _ = _cache_files(cache)
    size = bin_path.stat().st_size
    bin_path.write_bytes(bin_path.read_bytes()[: size // 3])
    second = run_all(Trainer(tiny_config("lstm", "train.max_steps=2"), tmp_path / "b", cache_dir=cache))
    assert isinstance(second[-1], Finished)
    assert bin_path.stat().st_size == size
    # same seed, same data: the same first losses as the run on the intact cache
    first_loss = [e.loss for e in first if isinstance(e, StepMetrics)]
    second_loss = [e.loss for e in second if isinstance(e, StepMetrics)]
    assert first_loss == second_loss
