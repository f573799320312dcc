"""Faults during training: a diverging loss, a bad token cache, a real CUDA out-of-memory (with a GPU).

A real full disk is in test_real_disk.py, a real CPU out-of-memory in test_real_oom.py.

Each fault must end the run with a ``Failed`` event that says what to do, leave the last good checkpoint
loadable, leave no temporary files behind, and let the user start again at once.
"""

from __future__ import annotations

import gc

import pytest
import torch

from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine import data as data_module
from lmstudio.engine import models as models_module
from lmstudio.engine.session import Session
from lmstudio.engine.trainer import TrainControl, Trainer
from lmstudio.events import Checkpointed, Failed, Finished, StepMetrics
from tests.reliability.conftest import run_all, tiny_config


def _all_finite(run, which="latest") -> bool:
    return all(bool(torch.isfinite(t).all()) for t in ckpt.load_weights(run, which).values())


def _leftovers(folder) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ---- out of memory: real allocation failures are in test_real_oom.py --------------------------------
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


# ---- a full or read-only disk: a real one, in test_real_disk.py ----------------------------------------


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
