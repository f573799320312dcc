"""Stopping long phases: a real SIGINT during `lmstudio eval` and `lmstudio generate`, and a stop request
while HF trains a BPE tokenizer (native code that never looks at a flag; Ctrl-C took 45 s on 78 MB).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from lmstudio.cli import main as cli_main
from lmstudio.config import RunConfig
from lmstudio.engine.data import Cancelled, prepare_data
from tests.reliability.conftest import copy_run


def _sigint_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def test_ctrl_c_during_eval_is_one_line_not_a_traceback(finished_runs, tmp_path, capsys):
    run = copy_run(finished_runs["transformer"], tmp_path / "run")
    timer = _sigint_after(1.0)
    try:
        code = cli_main(["eval", str(run), "--iters", "10000"])
    finally:
        timer.cancel()
    err = capsys.readouterr().err
    assert code == 130 and err.strip() == "lmstudio: error: interrupted", err


def test_ctrl_c_during_generate_stops_without_talk_of_checkpoints(finished_runs, tmp_path, capsys):
    run = copy_run(finished_runs["transformer"], tmp_path / "run")
    timer = _sigint_after(1.0)
    try:
        code = cli_main(["generate", str(run), "--max-tokens", "100000", "--stream"])
    finally:
        timer.cancel()
    err = capsys.readouterr().err
    assert code == 130, err
    assert "Ctrl-C: stopping" in err and "checkpoint" not in err and "Traceback" not in err


def test_a_stop_while_bpe_trains_is_honoured_within_a_second(tmp_path):
    """4 MB of text and 4,000 merges: several seconds of HF's native training on this machine."""
    corpus = tmp_path / "big.txt"
    words = [f"w{i * 7919 % 100_003:x}q{i % 97}" for i in range(20_000)]
    with open(corpus, "w", encoding="utf-8") as f:
        for i in range(40):
            f.write(" ".join(words[i * 500 :] + words[: i * 500]) + "\n")
    cfg = RunConfig().override(
        [f"corpus.source={corpus}", "tokenizer.kind=bpe", "tokenizer.vocab_size=4000", "model.block_size=8"]
    )
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        prepare_data(cfg, cache_dir=tmp_path / "cache", cancel=cancel)
    took = time.monotonic() - started
    assert took < 2.5, f"the stop took {took - 0.5:.1f} s to be honoured"


# ---- a stop during an evaluation ----------------------------------------------------------------------
# batches of 32 x 64 tokens through a 64-wide model with tang300's ~2,700-token head: each evaluation batch
# takes milliseconds, so 10,000 of them per split (train.eval_iters' upper bound) take minutes
_EVAL_MODEL = ["model.block_size=64", "model.n_embd=64", "train.batch_size=32"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_an_evaluation_inside_training_stops_at_once_and_saves(tmp_path, sig):
    """A real signal to a real `lmstudio train` while it evaluates: the evaluation is abandoned after the batch
    in hand and the steps are saved. **Fixed**: the stop waited for all eval_iters batches (minutes here)."""
    from lmstudio.engine import checkpoint as ckpt
    from lmstudio.engine.trainer import Trainer
    from tests.reliability.conftest import tiny_config

    run, cache = tmp_path / "run", tmp_path / "cache"
    first = list(Trainer(tiny_config("transformer", *_EVAL_MODEL), run, cache_dir=cache).run())
    assert type(first[-1]).__name__ == "Finished" and first[-1].step == 20
    # resumed at step 20 (no step-0 evaluation), it evaluates at step 25 with 2 x 10,000 batches
    env = dict(os.environ, LMSTUDIO_CACHE=str(cache), OMP_NUM_THREADS="1")
    sets = ["train.max_steps=100", "train.eval_interval=5", "train.eval_iters=10000", "train.log_interval=1"]
    cmd = [sys.executable, "-m", "lmstudio", "train", "--resume", str(run), "--json"]
    proc = subprocess.Popen(
        cmd + [a for s in sets for a in ("--set", s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        for line in proc.stdout:
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("event") == "StepMetrics" and event["step"] == 25:  # the evaluation comes next
                break
        else:
            pytest.fail(f"no step 25: {proc.stderr.read()[-2000:]}")
        proc.send_signal(sig)
        signalled = time.monotonic()
        rest, err = proc.communicate(timeout=120)
        took = time.monotonic() - signalled
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 128 + sig, err[-2000:]
    assert took < 10, f"the stop took {took:.1f} s: it waited for the evaluation"
    events = [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
    assert events[-1]["event"] == "Finished" and events[-1]["reason"] == "stopped", events[-3:]
    assert events[-1]["step"] == 25 and not any(e["event"] == "EvalMetrics" for e in events)
    assert "Traceback" not in err
    assert ckpt.load_train_state(run)["step"] == 25  # the steps since the last checkpoint are kept


def test_a_stop_during_the_whole_split_score_is_honoured_within_a_second():
    """The final score reads the whole validation split (minutes on a big corpus): a stop ends it."""
    import numpy as np
    import torch

    from lmstudio.engine import full_eval
    from lmstudio.engine.models import build_model
    from tests.reliability.conftest import tiny_config

    cfg = tiny_config("transformer", *_EVAL_MODEL, "model.vocab_size=2000")
    model = build_model(cfg.model)
    ids = np.random.default_rng(0).integers(0, 2000, size=4_000_000, dtype=np.int64)  # ~60,000 windows
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(full_eval.EvalStopped), torch.no_grad():
            full_eval.full_split_loss(model, ids, cfg.model.block_size, stop=stop)
    finally:
        timer.cancel()
    took = time.monotonic() - started
    assert took < 3, f"the stop took {took - 0.3:.1f} s to be honoured"


def test_a_stop_before_the_final_score_keeps_the_completed_run_and_says_what_is_missing(tmp_path):
    from lmstudio.engine.train_control import TrainControl
    from lmstudio.engine.trainer import Trainer
    from lmstudio.events import Checkpointed, Finished, FullEvalMetrics, Notice
    from tests.reliability.conftest import tiny_config

    control = TrainControl()
    trainer = Trainer(
        tiny_config("gru", "train.full_eval=true"),
        tmp_path / "run",
        control=control,
        cache_dir=tmp_path / "c",
    )
    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, Checkpointed) and event.step == 20:  # the last one: the score comes next
            control.stop()
    assert isinstance(events[-1], Finished) and events[-1].reason == "completed", events[-1]
    assert not any(isinstance(e, FullEvalMetrics) for e in events)
    assert any(isinstance(e, Notice) and "whole validation split" in e.message for e in events)
