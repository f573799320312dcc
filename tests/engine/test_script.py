"""Simplified and traditional Chinese: corpora converted with OpenCC, prompts fitted to the run."""

from __future__ import annotations

from types import SimpleNamespace

import opencc
import pytest
import torch

from lmstudio.config import ModelConfig, RunConfig, TokenizerConfig
from lmstudio.engine import inspect as lm_inspect
from lmstudio.engine import sampling
from lmstudio.engine.corpus import read_corpus
from lmstudio.engine.data import encode_to_cache, prepare_data
from lmstudio.engine.models import build_model
from lmstudio.engine.script import fit_text, script_of
from lmstudio.engine.tokenizer import train_tokenizer

SIMPLIFIED = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"


def _session(kind: str, script: str = "as-is"):
    cfg = RunConfig()
    cfg.corpus.source = "tang300"
    cfg.tokenizer = TokenizerConfig(kind=kind, vocab_size=1000, script=script)
    text = read_corpus("tang300")
    if script != "as-is":
        text = opencc.OpenCC({"simplified": "t2s", "traditional": "s2t"}[script]).convert(text)
    tok = train_tokenizer(cfg.tokenizer, text)
    cfg.model = ModelConfig(
        arch="gru", n_layer=1, n_embd=16, hidden_size=16, block_size=64, vocab_size=tok.vocab_size
    )
    torch.manual_seed(0)
    return SimpleNamespace(config=cfg, tokenizer=tok, model=build_model(cfg.model).eval()), text


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_a_simplified_prompt_on_the_traditional_corpus_is_converted(kind):
    s, text = _session(kind)
    corpus_chars = set(text)
    assert "床" not in corpus_chars and "牀" in corpus_chars  # the corpus is traditional
    fitted = sampling.fit_prompt(s, SIMPLIFIED)
    assert fitted.text == "牀前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。"
    assert set(fitted.text) <= corpus_chars
    assert "床→牀" in fitted.note and "举→舉" in fitted.note
    ids = sampling.prompt_ids(s, SIMPLIFIED)
    if kind != "bpe":
        assert 0 not in ids  # no <unk> for characters the corpus has
        assert 0 in s.tokenizer.encode(SIMPLIFIED)  # without the conversion: unknown characters
    assert s.tokenizer.decode(ids) == fitted.text
    # the Inspect tab fits its text the same way and says so
    fit = lm_inspect.fit_to_context(s, SIMPLIFIED)
    assert "".join(fit.pieces) == fitted.text and "床→牀" in fit.note
    # generation runs from the converted prompt
    steps = list(sampling.generate(s, SIMPLIFIED, sampling.SampleConfig(max_tokens=5, seed=0)))
    assert len(steps) == 5


def test_text_the_run_knows_is_left_alone():
    s, text = _session("char")
    assert sampling.fit_prompt(s, "牀前明月光").note == ""
    known = set(text)
    assert "云" in known and "雲" in known  # 云 (to say) is a character of its own in classical Chinese
    assert fit_text("子云", "traditional", known).text == "子云"  # s2t alone would write 雲
    assert fit_text("hello\n", "traditional", known).text == "hello\n"
    assert sampling.prompt_ids(s, "ab\r\n") == s.tokenizer.encode("ab\n")


def test_script_of_a_vocabulary():
    assert script_of(set(read_corpus("tang300"))) == "traditional"
    assert script_of(set(opencc.OpenCC("t2s").convert(read_corpus("tang300")))) == "simplified"
    assert script_of(set("hello")) == "as-is"


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_the_tang_corpus_trains_in_simplified_characters(kind, tmp_path):
    cfg = RunConfig()
    cfg.corpus.source = "tang300"
    cfg.tokenizer = TokenizerConfig(kind=kind, vocab_size=1000, script="simplified")
    tok, data = prepare_data(cfg, cache_dir=tmp_path)
    reference = opencc.OpenCC("t2s").convert(read_corpus("tang300"))  # OpenCC directly
    assert tok.decode(data.ids.tolist()) == reference
    if kind == "char":
        vocab = {t for t, _ in tok.vocab()}
        assert "床" in vocab and "牀" not in vocab
    # a traditional prompt on the simplified run is converted the other way
    s = SimpleNamespace(config=cfg, tokenizer=tok, model=None)
    assert sampling.fit_prompt(s, "牀前明月光").text == "床前明月光"
    # and the same corpus as it is gets its own cache entry
    cfg.tokenizer.script = "as-is"
    _, plain = prepare_data(cfg, tokenizer=tok, cache_dir=tmp_path)
    assert plain.ids.tolist() != data.ids.tolist()


def test_a_streamed_corpus_is_converted_chunk_by_chunk_like_the_whole(tmp_path):
    path = tmp_path / "poems.txt"
    path.write_text(read_corpus("tang300"), encoding="utf-8")
    tok = train_tokenizer(TokenizerConfig(kind="char"), opencc.OpenCC("t2s").convert(read_corpus("tang300")))
    whole = encode_to_cache(opencc.OpenCC("t2s").convert(read_corpus("tang300")), tok, tmp_path / "a")
    streamed = encode_to_cache(
        None, tok, tmp_path / "b", source=str(path), script="simplified", chunk_chars=4096
    )
    plain = encode_to_cache(None, tok, tmp_path / "b", source=str(path), chunk_chars=4096)
    assert streamed.tolist() == whole.tolist()
    assert plain.tolist() != streamed.tolist()  # a different cache entry, not the converted one


def test_inspector_labels_mark_unknown_tokens():
    s, _ = _session("char")
    labels, _ = lm_inspect.activations(s, "明月🙂光")
    assert labels == ["明", "月", "<unk>", "光"]  # not the typed 🙂: the model saw only "unknown"
    rows = lm_inspect.token_losses(s, "明月🙂光")
    assert [r.token for r in rows] == ["月", "🙂", "光"] and rows[1].token_id == 0
