"""Property tests (hypothesis): the config parser, the corpus reader and the tokenizers on arbitrary input.

* config: any text for any field through ``override`` and any JSON value through ``from_dict`` is either
  accepted or refused with a ``ConfigError`` naming that field, never another exception;
* corpus: any bytes in a file are either read as text (whole and streamed alike) or refused with a CorpusError;
* tokenizers: any text encodes without raising; BPE decodes back exactly; char/word map unseen text to the
  unknown id 0 and decode it as U+FFFD.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmstudio import config as C
from lmstudio.engine.corpus import CorpusError, iter_corpus_chunks, read_corpus
from lmstudio.engine.tokenizer import train_tokenizer

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = [f"{section}.{f.name}" for section, cls in C.SECTIONS.items() for f in dataclasses.fields(cls)]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@FAST
@given(key=st.sampled_from(KEYS), raw=st.text(max_size=30))
def test_any_text_for_any_setting_is_accepted_or_refused_naming_it(key, raw):
    try:
        cfg = C.RunConfig().override([f"{key}={raw}"])
    except C.ConfigError as e:
        assert set(e.errors) == {key} or set(e.errors) == {f"{key}={raw}"}, e.errors
        return
    errors = cfg.errors()
    assert set(errors) <= {key, "train.min_lr", "model.n_head"}, errors  # the field, or the pair it breaks


@FAST
@given(key=st.sampled_from(KEYS), value=JSON_VALUES)
def test_any_json_value_in_a_config_file_is_accepted_or_refused_naming_it(key, value):
    section, name = key.split(".")
    data = C.RunConfig().to_dict()
    data[section][name] = value
    try:
        cfg = C.RunConfig.from_json(__import__("json").dumps(data, allow_nan=True)).validate()
    except C.ConfigError as e:
        assert (
            key in e.errors
            or any(k.endswith(key) for k in e.errors)
            or set(e.errors) <= {"train.min_lr", "model.n_head"}
        ), e.errors
        return
    assert getattr(getattr(cfg, section), name) == value or value != value  # accepted as given (nan != nan)


@FAST
@given(data=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4))
def test_any_json_object_as_a_config_is_accepted_or_a_config_error(data):
    try:
        C.RunConfig.from_dict(data)
    except C.ConfigError as e:
        assert e.errors and all(isinstance(v, str) and v for v in e.errors.values())


@pytest.fixture
def corpus_file(tmp_path):
    return tmp_path / "fuzz.txt"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.binary(max_size=3000)
    | st.text(max_size=800).map(lambda t: t.encode("utf-8", "surrogatepass"))
    | st.text(max_size=400).map(lambda t: t.encode("utf-16", "surrogatepass"))
)
def test_any_bytes_read_as_text_or_a_corpus_error(corpus_file, raw):
    corpus_file.write_bytes(raw)
    try:
        text = read_corpus(str(corpus_file))
    except CorpusError as e:
        assert corpus_file.name in str(e) or "corpus" in str(e).lower()
        with pytest.raises(CorpusError):
            "".join(iter_corpus_chunks(str(corpus_file), chunk_chars=97))
        return
    assert isinstance(text, str) and text.strip()
    assert "".join(iter_corpus_chunks(str(corpus_file), chunk_chars=97)) == text


TRAIN_TEXT = "床前明月光，疑是地上霜。\nThe quick brown fox, 1234!\n" * 30


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200))
def test_bpe_round_trips_any_text(text):
    tok = _tokenizers()["bpe"]
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == _scrubbed(text)  # exact, except lone surrogates: U+FFFD by contract


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200), kind=st.sampled_from(["char", "word"]))
def test_char_and_word_encode_any_text_and_map_unseen_to_unknown(text, kind):
    tok = _tokenizers()[kind]
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    decoded = tok.decode(ids)
    assert isinstance(decoded, str)
    if kind == "char":
        seen = set(TRAIN_TEXT)
        assert len(ids) == len(text)
        expected = [0 if ch not in seen else tok.encode(ch)[0] for ch in text]
        assert ids == expected
        assert decoded == "".join(ch if ch in seen else "\ufffd" for ch in text)


def test_unseen_words_and_characters_are_the_unknown_token():
    for kind in ("char", "word"):
        tok = _tokenizers()[kind]
        ids = tok.encode("zebra ✈")
        assert 0 in ids and "\ufffd" in tok.decode(ids), (kind, ids)


def _scrubbed(text: str) -> str:
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


_CACHE: dict = {}


def _tokenizers():
    if not _CACHE:
        _CACHE.update(
            {
                kind: train_tokenizer(C.TokenizerConfig(kind=kind, vocab_size=300), TRAIN_TEXT)
                for kind in ("char", "word", "bpe")
            }
        )
    return _CACHE
