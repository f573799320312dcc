"""Stopping long phases: a real SIGINT during `lmstudio eval` and `lmstudio generate`, and a stop request
while HF trains a BPE tokenizer (native code that never looks at a flag; Ctrl-C took 45 s on 78 MB).
"""

from __future__ import annotations

import os
import signal
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
