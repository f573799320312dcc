"""Tokenizers: exact round trips, unseen text, the saved tokenizer.json read by HF alone, inspection helpers."""

from __future__ import annotations

import collections
import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer

from lmstudio.config import TokenizerConfig
from lmstudio.engine.corpus import read_corpus
from lmstudio.engine.token_text import UNK, safe_cut, safe_pieces
from lmstudio.engine.tokenizer import Tokenizer, TokenizerError, token_frequencies, train_tokenizer
from lmstudio.errors import UserError

TANG = read_corpus("tang300")
SHAKES = read_corpus("tiny_shakespeare")[:150_000]
POEMS = read_corpus("tang_poems")[:60_000]
KINDS = ("char", "word", "bpe")
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _cfg(kind: str, vocab_size: int = 1000, min_frequency: int = 1) -> TokenizerConfig:
    return TokenizerConfig(kind=kind, vocab_size=vocab_size, min_frequency=min_frequency)


@pytest.fixture(scope="module")
def toks() -> dict[tuple[str, str], Tokenizer]:
    """Each kind trained on tang300 and on a slice of Shakespeare (word level uncapped)."""
    out = {}
    for name, text in (("tang", TANG), ("shakes", SHAKES)):
        for kind in KINDS:
            out[name, kind] = train_tokenizer(_cfg(kind, 65536 if kind == "word" else 600), text)
    return out


# ---- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("text", [TANG, SHAKES, POEMS], ids=["tang300", "shakespeare", "tang_poems"])
def test_round_trip_on_the_corpora(kind, text):
    tok = train_tokenizer(_cfg(kind, 65536 if kind == "word" else 800), text)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert 0 not in ids or kind == "bpe"  # every character and word of the training text is known
    assert max(ids) < tok.vocab_size


def test_char_ids_match_a_plain_dictionary(toks):
    tok = toks["tang", "char"]
    alphabet = sorted(set(TANG))
    stoi = {c: i + 1 for i, c in enumerate(alphabet)}  # nanoGPT's vocabulary, shifted by the unknown id 0
    assert tok.vocab_size == len(alphabet) + 1
    assert tok.encode(TANG) == [stoi[c] for c in TANG]


@FAST
@given(data=st.data())
def test_char_round_trip_on_text_from_the_alphabet(toks, data):
    for name, text in (("tang", TANG), ("shakes", SHAKES)):
        sample = data.draw(st.text(alphabet=sorted(set(text)), max_size=200))
        tok = toks[name, "char"]
        assert tok.decode(tok.encode(sample)) == sample


@FAST
@given(sample=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_bpe_round_trips_any_text(toks, sample):
    for name in ("tang", "shakes"):
        tok = toks[name, "bpe"]
        assert tok.decode(tok.encode(sample)) == sample


@functools.cache
def _words_and_separators(tok: Tokenizer) -> tuple[list[str], list[str]]:
    vocab = [t for t, i in tok._hf.get_vocab().items() if i]
    return sorted(w for w in vocab if w.isalnum()), sorted(
        w for w in vocab if len(w) == 1 and not w.isalnum()
    )


@FAST
@given(data=st.data())
def test_word_round_trip_on_words_from_the_vocabulary(toks, data):
    # words alternate with single separators, so no two words merge into an unseen one
    tok = toks["shakes", "word"]
    words, seps = _words_and_separators(tok)
    n = data.draw(st.integers(0, 30))
    parts = []
    for _ in range(n):
        parts += [data.draw(st.sampled_from(words)), data.draw(st.sampled_from(seps))]
    sample = "".join(parts)
    assert tok.decode(tok.encode(sample)) == sample


@FAST
@given(data=st.data())
def test_word_round_trip_on_chinese(toks, data):
    # every ideograph is its own word, so any text over tang300's ideographs and marks is known
    tok = toks["tang", "word"]
    alphabet = sorted(c for c in set(TANG) if not c.isspace())
    sample = data.draw(st.lists(st.text(alphabet=alphabet, min_size=1, max_size=12), max_size=10))
    text = "\n".join(sample)
    assert tok.decode(tok.encode(text)) == text
    assert 0 not in tok.encode(text)


def test_chinese_is_cut_into_real_words(toks):
    tok = toks["tang", "word"]
    words = {w for w, _ in tok.vocab()}
    # names, places and phrases of the poems, in the corpus's traditional characters
    assert {"李白", "杜甫", "長安", "明月", "萬里", "故人"} <= words
    assert sum(1 for w in words if len(w) > 1 and "\\" not in w) > 500
    pieces = [p for p, _ in tok.split("牀前明月光，疑是地上霜。\n")]
    assert "".join(pieces) == "牀前明月光，疑是地上霜。\n" and any(len(p) > 1 and p != "\n" for p in pieces)
    assert 0 not in tok.encode("牀前明月光，疑是地上霜。\n")  # 牀: the corpus has no 床
    # other scripts: spaces and punctuation as before; Chinese words in mixed text
    tok = train_tokenizer(_cfg("word", 1000), "Hello,  world!\n\nhello world 你好 x2")
    assert [p for p, _ in tok.split("Hello,  world!\n\n你好")] == [
        "Hello",
        ",",
        "  ",
        "world",
        "!",
        "\n\n",
        "你好",
    ]


def test_a_chinese_word_outside_the_vocabulary_falls_back_to_its_characters(toks):
    tok = train_tokenizer(_cfg("word", 1000), "明天 明月 天上\n")
    assert "明月" in {w for w, _ in tok.vocab()}
    # 月明 is a word to jieba but not in this vocabulary: its characters are
    ids = tok.encode("天明月明")
    assert 0 not in ids and tok.decode(ids) == "天明月明"


def test_word_tokenizers_saved_before_segmentation_load_and_work_as_before():
    import json

    from lmstudio.engine.tokenizer import WORD_PATTERN, WORD_PATTERN_PER_CHAR

    tok = train_tokenizer(_cfg("word", 1000), "春眠不覺曉，處處聞啼鳥。\n")
    spec = json.loads(tok.to_str())
    assert spec["pre_tokenizer"]["pattern"]["Regex"] == WORD_PATTERN
    spec["pre_tokenizer"]["pattern"]["Regex"] = WORD_PATTERN_PER_CHAR
    old = Tokenizer.from_str(json.dumps(spec))
    assert old.kind == "word" and not old.segmented
    assert [p for p, _ in old.split("春眠不覺曉")] == list("春眠不覺曉")


# ---- unseen text ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["char", "word"])
def test_unseen_characters_become_the_unknown_token(toks, kind):
    tok = toks["shakes", kind]
    ids = tok.encode("the 床 the")
    assert 0 in ids
    assert tok.decode(ids) == "the " + UNK + " the"
    assert tok.id_to_token(0) == "<unk>"
    assert tok.decode([tok.vocab_size + 5, -1]) == UNK * 2  # ids from a larger model never raise
    assert tok.encode("\ud800 x")[0] == 0  # a lone surrogate neither


def test_bpe_encodes_unseen_characters_as_bytes(toks):
    tok = toks["shakes", "bpe"]
    text = "Ωmega 🙂 床"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("a\ud800b")) == "a" + UNK + "b"


# ---- tokenizer.json ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_saved_file_loads_in_hf_alone_with_the_same_ids(toks, tmp_path, kind):
    tok = toks["tang", kind]
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    text = TANG[:3000] + " unseen: Ωmega 🙂\n\n\n end"
    hf = HFTokenizer.from_file(str(path))
    if kind == "word":
        # HF keeps a Han run whole; given lmstudio's jieba words it gives the same ids, and on text
        # without Chinese it needs nothing else
        assert hf.encode(tok.words(text), is_pretokenized=True).ids == tok.encode(text)
        plain = SHAKES[:3000]
        assert hf.encode(plain).ids == tok.encode(plain)
    else:
        assert hf.encode(text).ids == tok.encode(text)
    assert hf.get_vocab_size() == tok.vocab_size
    again = Tokenizer.load(path)
    assert again.kind == kind and again.fingerprint() == tok.fingerprint()
    assert again.encode(text) == tok.encode(text)


def test_fingerprint_is_stable_and_discriminating():
    prints = {}
    for kind in KINDS:
        a, b = train_tokenizer(_cfg(kind, 500), TANG), train_tokenizer(_cfg(kind, 500), TANG)
        assert a.fingerprint() == b.fingerprint()
        prints[kind] = a.fingerprint()
    assert len(set(prints.values())) == 3
    assert train_tokenizer(_cfg("bpe", 400), TANG).fingerprint() != prints["bpe"]


def test_load_refuses_bad_files(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError):
        Tokenizer.load(bad)
    with pytest.raises(TokenizerError, match="Cannot read"):
        Tokenizer.load(tmp_path / "missing.json")
    from tokenizers import models

    foreign = HFTokenizer(models.BPE(vocab={"▁the": 0, "a": 1}, merges=[]))
    with pytest.raises(TokenizerError, match="not byte-level"):
        Tokenizer.from_str(foreign.to_str())


# ---- training options -----------------------------------------------------------------------------


def test_bpe_reaches_the_vocabulary_size():
    tok = train_tokenizer(_cfg("bpe", 700), SHAKES)
    assert tok.vocab_size == 700
    assert len(tok.encode(SHAKES)) < len(SHAKES) / 2
    with pytest.raises(TokenizerError, match="at least 256"):
        train_tokenizer(_cfg("bpe", 100), SHAKES)


def test_word_vocabulary_cap_and_min_frequency():
    counts = collections.Counter(p for p, _ in train_tokenizer(_cfg("word", 65536), SHAKES).split(SHAKES))
    capped = train_tokenizer(_cfg("word", 50), SHAKES)
    assert capped.vocab_size == 50
    top = {w for w, _ in counts.most_common(49)}
    assert {t for t, i in capped._hf.get_vocab().items() if i} == top
    rare = train_tokenizer(_cfg("word", 65536, min_frequency=5), SHAKES)
    kept = {t for t, i in rare._hf.get_vocab().items() if i}
    assert kept == {w for w, c in counts.items() if c >= 5}


def test_empty_text_is_refused():
    for kind in ("char", "word"):
        with pytest.raises(UserError):
            train_tokenizer(_cfg(kind), "")


# ---- inspection -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_split_pieces_concatenate_to_the_text(toks, kind):
    for name in ("tang", "shakes"):
        tok = toks[name, kind]
        text = "Hello there,\n  床前明月光 🙂 world!\n"
        pieces = tok.split(text)
        assert "".join(p for p, _ in pieces) == text
        assert [i for _, i in pieces] == tok.encode(text)


def test_bpe_split_gives_a_character_to_the_token_that_completes_it(toks):
    tok = toks["shakes", "bpe"]  # trained on English: Chinese characters are split into bytes
    pieces = tok.split("床")
    assert len(pieces) > 1 and [p for p, _ in pieces] == [""] * (len(pieces) - 1) + ["床"]


def test_display_forms(toks):
    char = toks["shakes", "char"]
    shown = dict(char.vocab())
    assert "\\n" in shown and "␣" in shown and "\n" not in shown
    bpe = toks["shakes", "bpe"]
    displays = [t for t, _ in bpe.vocab()]
    assert not any("Ġ" in t for t in displays)
    the = bpe.encode(" the")
    assert len(the) == 1 and bpe.id_to_token(the[0]) == "␣the"
    partial = toks["shakes", "bpe"].encode("床")[0]
    assert bpe.id_to_token(partial).startswith("\\x")


def test_token_frequencies_count_ids(toks):
    tok = toks["shakes", "word"]
    ids = np.asarray(tok.encode(SHAKES[:20000]), dtype=np.uint16)
    freq = token_frequencies(tok, ids)
    assert freq.shape == (tok.vocab_size,) and freq.sum() == len(ids)
    for i, c in collections.Counter(ids.tolist()).items():
        assert freq[i] == c


# ---- chunking ---------------------------------------------------------------------------------------


@FAST
@given(start=st.integers(0, len(SHAKES) - 3000), size=st.integers(20, 400))
def test_encoding_safe_pieces_equals_encoding_the_whole(toks, start, size):
    text = SHAKES[start : start + 3000] + "\n\n  x \n y  \n"
    for kind in ("word", "bpe"):
        tok = toks["shakes", kind]
        pieces = list(safe_pieces(text, size))
        assert "".join(pieces) == text
        assert sum((tok._hf.encode(p).ids for p in pieces), []) == tok._hf.encode(text).ids


def test_safe_cut_avoids_whitespace_runs():
    assert safe_cut("ab\ncd", 10) == 3
    assert safe_cut("ab \ncd", 10) == 0  # the newline ends a run of whitespace
    assert safe_cut("ab cd", 10) == 2
    assert safe_cut("abcd", 10) == 0
