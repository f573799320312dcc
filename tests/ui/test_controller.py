"""The controller hands the tokenizer Setup built to the trainer instead of training it again."""

from __future__ import annotations

import threading

from lmstudio import events as E
from lmstudio.engine import data as engine_data
from lmstudio.ui.controller import Controller
from tests.ui.conftest import tiny_config


def test_training_reuses_the_tokenizer_setup_built(monkeypatch):
    ctl = Controller()
    cfg = tiny_config("lstm")
    built = ctl.build_tokenizer(cfg.corpus.source, cfg.tokenizer, lambda f: None, threading.Event())
    assert built["vocab_size"] > 0

    def must_not_retrain(*args, **kwargs):
        raise AssertionError("the trainer trained the tokenizer again")

    monkeypatch.setattr(engine_data, "train_tokenizer", must_not_retrain)
    events = list(ctl.training_events(cfg, ctl.new_control()))
    assert isinstance(events[-1], E.Finished), events[-1]

    # other settings than the ones it was built for: the trainer builds its own
    other = cfg.override(["tokenizer.min_frequency=2"])
    assert ctl.built_tokenizer_for(other) is None
