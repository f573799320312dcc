"""The training-time estimate: real steps of the configured model, timed, scaled to the run."""

from __future__ import annotations

import threading

import pytest

from lmstudio.config import ModelConfig, TrainConfig
from lmstudio.engine.speed_probe import estimate_training_time

MODEL = ModelConfig(arch="lstm", n_layer=1, n_embd=16, hidden_size=16, block_size=8, vocab_size=50)


def test_the_estimate_scales_the_timed_steps_to_the_run():
    train = TrainConfig(max_steps=1000, batch_size=4, eval_interval=100, eval_iters=3, device="cpu")
    est = estimate_training_time(MODEL, train, steps=2)
    assert est["steps_timed"] == 2 and est["per_step"] > 0 and est["device"].startswith("CPU")
    assert est["tokens_per_s"] == pytest.approx(4 * 8 / est["per_step"])
    evals = 1000 // 100 + 1  # every interval and step 0
    assert est["seconds"] == pytest.approx(est["per_step"] * (1000 + evals * 2 * 3 / 3))


def test_a_time_budget_caps_the_estimate_and_a_cancel_stops_it():
    train = TrainConfig(max_steps=10_000_000, batch_size=4, max_time=60.0, device="cpu")
    assert estimate_training_time(MODEL, train, steps=1)["seconds"] == 60.0
    cancelled = threading.Event()
    cancelled.set()
    assert estimate_training_time(MODEL, train, cancel=cancelled) == {}


def test_the_estimate_is_timed_on_the_runs_threads():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(3)  # not 1, whatever this machine's default
    try:
        train = TrainConfig(max_steps=10, batch_size=4, device="cpu", threads=1)
        assert estimate_training_time(MODEL, train, steps=1)["device"] == "CPU, 1 thread"
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
