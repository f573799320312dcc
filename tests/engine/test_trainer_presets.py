"""Bundled presets: each loads, validates and describes a model of the intended size."""

from __future__ import annotations

import pytest

from lmstudio.config import load_preset
from lmstudio.engine.models import param_count
from lmstudio.resources import list_presets

SHAKESPEARE_VOCAB = 65  # distinct characters of tiny Shakespeare


def test_the_promised_presets_exist():
    assert {"tiny_tang", "baby_shakespeare", "gpt_shakespeare", "lstm_shakespeare", "gru_shakespeare"} <= set(
        list_presets()
    )


@pytest.mark.parametrize("name", list_presets())
def test_preset_loads_and_validates(name):
    cfg = load_preset(name)
    assert cfg.errors() == {}
    assert cfg.name == name
    cfg.model.vocab_size = SHAKESPEARE_VOCAB
    assert param_count(cfg.model) > 0


def test_presets_match_the_nanogpt_configs():
    baby = load_preset("baby_shakespeare")
    m, t = baby.model, baby.train
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout) == (4, 4, 128, 64, 0.0)
    assert (t.batch_size, t.max_steps, t.warmup_steps, t.beta2) == (12, 2000, 100, 0.99)
    # the one deliberate change from nanoGPT: twice the learning rate (1.91 -> 1.80 val, docs/benchmarks.md)
    assert (t.lr, t.min_lr) == (2e-3, 2e-4)
    gpt = load_preset("gpt_shakespeare")
    assert (gpt.model.n_layer, gpt.model.n_head, gpt.model.n_embd, gpt.model.block_size) == (6, 6, 384, 256)
    assert (gpt.train.batch_size, gpt.train.max_steps, gpt.model.dropout) == (64, 5000, 0.2)
    baby.model.vocab_size = gpt.model.vocab_size = SHAKESPEARE_VOCAB
    # nanoGPT reports 0.80M and 10.65M parameters for these (without position embeddings: +8K and +98K)
    assert param_count(baby.model) == pytest.approx(0.81e6, rel=0.02)
    assert param_count(gpt.model) == pytest.approx(10.75e6, rel=0.02)


@pytest.mark.parametrize("name", ["lstm_shakespeare", "gru_shakespeare", "rnn_shakespeare"])
def test_recurrent_presets_are_comparable_to_the_baby_gpt(name):
    cfg, baby = load_preset(name), load_preset("baby_shakespeare")
    cfg.model.vocab_size = baby.model.vocab_size = SHAKESPEARE_VOCAB
    assert 0.25 < param_count(cfg.model) / param_count(baby.model) < 2.0
    assert cfg.corpus.source == baby.corpus.source and cfg.tokenizer.kind == "char"
