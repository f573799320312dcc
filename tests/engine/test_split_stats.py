"""Bits per character, <unk> coverage and the validation snippet, recomputed from a run's own files."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from tokenizers import Tokenizer as HFTokenizer

from lmstudio.config import RunConfig
from lmstudio.engine import inspect as lm_inspect
from lmstudio.engine.corpus import read_corpus, split_sizes
from lmstudio.engine.trainer import Trainer
from lmstudio.events import EvalMetrics, Notice


def _config(kind: str, source: str = "tang300", vocab: int = 1000) -> RunConfig:
    return (
        RunConfig(name="t")
        .override(
            [
                f"corpus.source={source}",
                f"tokenizer.kind={kind}",
                f"tokenizer.vocab_size={vocab}",
                "model.arch=gru",
                "model.n_layer=1",
                "model.n_embd=16",
                "model.hidden_size=16",
                "model.block_size=16",
                "train.batch_size=4",
                "train.max_steps=2",
                "train.eval_interval=2",
                "train.eval_iters=2",
                "train.sample_interval=0",
                "train.warmup_steps=1",
                "train.device=cpu",
            ]
        )
        .validate()
    )


def _reference(run_dir):
    """From config.json, tokenizer.json (read by HF alone) and the corpus: the validation split's
    tokens, characters and <unk> shares, through HF's own character offsets."""
    cfg = RunConfig.load(run_dir / "config.json")
    hf = HFTokenizer.from_file(str(run_dir / "tokenizer.json"))
    text = read_corpus(cfg.corpus.source)
    if cfg.tokenizer.kind == "word":  # HF keeps a Han run whole: hand it lmstudio's jieba words
        from lmstudio.engine.tokenizer import Tokenizer

        words = Tokenizer.load(run_dir / "tokenizer.json").words(text)
        starts = [0]
        for w in words:
            starts.append(starts[-1] + len(w))
        enc = hf.encode(words, is_pretokenized=True, add_special_tokens=False)
        n_train, n_val = split_sizes(len(enc.ids), cfg.corpus.val_fraction)
        val_start_char = starts[enc.word_ids[n_train]] + enc.offsets[n_train][0]
    else:
        enc = hf.encode(text, add_special_tokens=False)
        n_train, n_val = split_sizes(len(enc.ids), cfg.corpus.val_fraction)
        val_start_char = enc.offsets[n_train][0]
    val_chars = len(text) - val_start_char
    unk = hf.token_to_id("\ufffd")
    share = {
        "train": enc.ids[:n_train].count(unk) / n_train if unk is not None else 0.0,
        "val": enc.ids[n_train:].count(unk) / n_val if unk is not None else 0.0,
    }
    return cfg, text, val_start_char, n_val, val_chars, share


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_bits_per_char_and_unk_shares_agree_with_a_recomputation_from_the_run(kind, tmp_path):
    run_dir = tmp_path / "run"
    events = list(Trainer(_config(kind), run_dir, cache_dir=tmp_path / "cache").run())
    evals = [e for e in events if isinstance(e, EvalMetrics)]
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in logged if r.get("event") == "EvalMetrics"]
    assert evals and len(logged) == len(evals)
    _, _, _, n_val, val_chars, share = _reference(run_dir)
    for row in logged:
        expected_bpc = row["val_loss"] / math.log(2) / (val_chars / n_val)
        # a character cut between the splits counts on one side or the other: at most one character
        assert row["val_bpc"] == pytest.approx(expected_bpc, rel=2 / val_chars if kind != "word" else 2e-3)
        assert row["train_unk"] == pytest.approx(share["train"]) and row["val_unk"] == pytest.approx(
            share["val"]
        )
    notices = " ".join(e.message for e in events if isinstance(e, Notice))
    if kind == "word":  # 9% of tang300's validation tokens are unknown at 1,000 words
        assert share["val"] > 0.05 and "not comparable" in notices
    else:
        assert share["val"] == 0 and "not comparable" not in notices


@pytest.mark.parametrize(
    "kind,source", [("bpe", "tiny_shakespeare"), ("char", "tang300"), ("bpe", "tang300")]
)
def test_validation_snippet_is_validation_text(kind, source, tmp_path):
    run_dir = tmp_path / "run"
    list(Trainer(_config(kind, source), run_dir, cache_dir=tmp_path / "cache").run())
    cfg, text, val_start_char, *_ = _reference(run_dir)
    from lmstudio.engine.tokenizer import Tokenizer

    session = SimpleNamespace(config=cfg, tokenizer=Tokenizer.load(run_dir / "tokenizer.json"))
    val_text = text[val_start_char:]
    for offset in (0, 400, 10**9):
        snippet = lm_inspect.validation_text(session, 2000, offset, cache_dir=tmp_path / "cache")
        assert len(snippet) >= 1900 and "\ufffd" not in snippet
        assert snippet in val_text  # every character of it is held-out text
    # the old rule (90% of the characters) would have started inside the training text for BPE
    assert text[int(len(text) * 0.9) :] != val_text or kind == "char"
