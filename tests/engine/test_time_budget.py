"""``train.max_time``: a run ends when its time is up, evaluated and checkpointed, its schedule following the time."""

from __future__ import annotations

import math
import time

import pytest

from lmstudio.config import TrainConfig
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine import full_eval
from lmstudio.engine.schedule import lr_at
from lmstudio.engine.trainer import Trainer
from lmstudio.events import Checkpointed, EvalMetrics, Finished, FullEvalMetrics, StepMetrics
from tests.engine.test_trainer import run_all, tiny_config


def test_the_decay_follows_the_share_of_the_time_budget_spent():
    t = TrainConfig(max_steps=1_000_000, warmup_steps=10, lr=1.0, min_lr=0.1, max_time=100.0)
    assert lr_at(4, t, elapsed=50.0) == pytest.approx(0.5)  # warmup still counts steps
    assert lr_at(20, t, elapsed=0.0) == pytest.approx(1.0)
    assert lr_at(20, t, elapsed=50.0) == pytest.approx(0.55)  # half the time: half way down the cosine
    assert lr_at(20, t, elapsed=25.0) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr_at(20, t, elapsed=100.0) == pytest.approx(0.1) and lr_at(20, t, elapsed=1e4) == pytest.approx(
        0.1
    )
    # whichever runs out first sets the pace: steps nearly used up beat a young clock
    few = TrainConfig(max_steps=110, warmup_steps=10, lr=1.0, min_lr=0.1, max_time=1e6)
    assert lr_at(110, few, elapsed=1.0) == pytest.approx(0.1)
    # without a budget the clock is ignored
    assert lr_at(20, TrainConfig(max_steps=1_000_000, warmup_steps=10, lr=1.0), elapsed=1e9) > 0.99


def test_a_time_budget_ends_the_run_on_time_with_a_final_evaluation_and_checkpoint(tmp_path):
    budget = 1.5
    cfg = tiny_config(
        "train.max_steps=10000000",
        f"train.max_time={budget}",
        "train.eval_interval=100000",
        "train.log_interval=50",
    )
    started = time.perf_counter()
    events = run_all(Trainer(cfg, tmp_path / "run"))
    wall = time.perf_counter() - started
    done = events[-1]
    assert isinstance(done, Finished) and done.reason == "completed"
    assert 10 < done.step < 10_000_000  # it trained, and the clock, not the step count, ended it
    assert done.elapsed >= budget
    # the last step logged, evaluated and saved, at the very step the run ended
    last_log = [e for e in events if isinstance(e, StepMetrics)][-1]
    assert last_log.step == done.step and last_log.elapsed >= budget
    assert [e.step for e in events if isinstance(e, EvalMetrics)] == [0, done.step]  # untrained, final
    saved = [e for e in events if isinstance(e, Checkpointed)]
    assert saved and saved[-1].step == done.step
    assert ckpt.weights_metadata(tmp_path / "run" / ckpt.LATEST_FILE)["step"] == done.step
    assert ckpt.load_train_state(tmp_path / "run")["elapsed"] >= budget
    # the schedule reached its floor with the time, though the steps were nowhere near used up
    assert last_log.lr == pytest.approx(cfg.train.min_lr, rel=0.05)
    # the full-split score came last and was recorded for the runs list
    full = [e for e in events if isinstance(e, FullEvalMetrics)]
    assert len(full) == 1 and full[0].step == done.step
    assert full_eval.known_loss(tmp_path / "run", "latest", done.step) == pytest.approx(full[0].val_loss)
    # a generous bound, only to catch a run the clock fails to end (speed is for benchmarks, not tests)
    assert wall < budget + 120


def test_the_eta_of_a_timed_run_is_what_is_left_of_its_budget(tmp_path):
    cfg = tiny_config(
        "train.max_steps=10000000", "train.max_time=1.0", "train.log_interval=5", "train.full_eval=false"
    )
    events = run_all(Trainer(cfg, tmp_path / "run"))
    logs = [e for e in events if isinstance(e, StepMetrics)]
    assert all(e.eta <= max(0.0, 1.0 - e.elapsed) + 1e-9 for e in logs)
    assert not any(isinstance(e, FullEvalMetrics) for e in events)  # full_eval=false: none


def test_a_stopped_run_is_not_scored_on_the_full_split(tmp_path):
    from lmstudio.engine.trainer import TrainControl

    control = TrainControl()
    cfg = tiny_config("train.max_steps=1000")
    events = run_all(
        Trainer(cfg, tmp_path / "run", control=control),
        on_event=lambda e: control.stop() if isinstance(e, StepMetrics) and e.step == 3 else None,
    )
    assert events[-1].reason == "stopped"
    assert not any(isinstance(e, FullEvalMetrics) for e in events)
    assert ckpt.list_runs(tmp_path)[0].full_val_loss is None
