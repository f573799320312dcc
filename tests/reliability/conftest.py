"""Shared pieces for the reliability tests: tiny configs (1 layer, context 8) and a finished run to damage."""

from __future__ import annotations

import shutil
import weakref
from pathlib import Path

import pytest

from lmstudio.config import RunConfig
from lmstudio.engine import models as models_module

# a model small enough that a 20-step run takes well under a second on 2 CPU cores
TINY = [
    "corpus.source=tang300",
    "tokenizer.kind=char",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=16",
    "model.hidden_size=16",
    "model.block_size=8",
    "train.batch_size=4",
    "train.max_steps=20",
    "train.log_interval=1",
    "train.eval_interval=10",
    "train.eval_iters=1",
    "train.sample_interval=0",
    "train.warmup_steps=0",
    "train.min_lr=0",
    "train.device=cpu",
    "train.seed=3",
]


def tiny_config(arch: str = "transformer", *overrides: str) -> RunConfig:
    return RunConfig(name=f"rel-{arch}").override(TINY + [f"model.arch={arch}", *overrides]).validate()


def run_all(trainer, on_event=None) -> list:
    events = []
    for event in trainer.run():
        events.append(event)
        if on_event is not None:
            on_event(event)
    return events


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory):
    """A finished tiny run per architecture, trained on first use and shared read-only (tests damage copies):
    ``finished_runs["lstm"]``."""
    root = tmp_path_factory.mktemp("reliability-runs")

    class Runs(dict):
        def __missing__(self, arch: str) -> Path:
            from lmstudio.engine.trainer import Trainer

            run = root / arch
            events = list(Trainer(tiny_config(arch), run, cache_dir=root / "cache").run())
            assert type(events[-1]).__name__ == "Finished", events[-1]
            self[arch] = run
            return run

    return Runs()


def fault_in_forward(monkeypatch, at_call: int, fault):
    """Call ``fault()`` inside the model's training forward from its ``at_call``-th call on."""
    real_build = models_module.build_model
    built = []

    def build(cfg):
        model = real_build(cfg)
        forward = model.forward
        calls = {"n": 0}

        def patched(idx, targets=None):
            if model.training:
                calls["n"] += 1
                if calls["n"] >= at_call:
                    fault()
            return forward(idx, targets)

        model.forward = patched
        built.append(weakref.ref(model))
        return model

    monkeypatch.setattr(models_module, "build_model", build)
    return built
