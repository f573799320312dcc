"""Byte-level BPE generation stays valid UTF-8; streamed pieces rebuild decode(ids), <unk> included."""

from __future__ import annotations

import codecs
import random
from functools import cache
from types import SimpleNamespace

import pytest
import torch

from lmstudio.config import ModelConfig, RunConfig, SampleConfig, TokenizerConfig
from lmstudio.engine import sampling
from lmstudio.engine.corpus import read_corpus
from lmstudio.engine.models import build_model
from lmstudio.engine.tokenizer import train_tokenizer
from lmstudio.engine.utf8_mask import Utf8Guard, is_valid_prefix


@cache
def _prefixes() -> frozenset[bytes]:
    """Every proper prefix of the UTF-8 encoding of every scalar value (the reference)."""
    out = set()
    for c in range(0x80, 0x110000):
        if 0xD800 <= c < 0xE000:
            continue
        b = chr(c).encode("utf-8")
        out.update(b[:k] for k in range(1, len(b)))
    return frozenset(out)


def _reference_valid_prefix(data: bytes) -> bool:
    for k in range(4):  # an incomplete character of k bytes at the end
        head, tail = data[: len(data) - k], data[len(data) - k :]
        if k and tail not in _prefixes():
            continue
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            continue
        return True
    return False


def test_valid_prefix_agrees_with_the_reference_on_all_short_and_random_byte_strings():
    rng = random.Random(0)
    cases = [bytes([a]) for a in range(256)] + [bytes([a, b]) for a in range(0xC0, 0x100) for b in range(256)]
    cases += [
        bytes(rng.choice([rng.randrange(256), rng.randrange(0x80, 0xC0)]) for _ in range(rng.randrange(1, 9)))
        for _ in range(20000)
    ]
    cases += [("中文" * 3).encode()[:k] + bytes([b]) for k in range(7) for b in range(256)]
    wrong = [c for c in cases if is_valid_prefix(c) != _reference_valid_prefix(c)]
    assert wrong == []


@cache
def _tang_bpe(vocab: int):
    return train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=vocab), read_corpus("tang300"))


def _session(tok, seed=0, arch="gru"):
    mcfg = ModelConfig(
        arch=arch, n_layer=1, n_head=2, n_embd=16, hidden_size=16, block_size=32, vocab_size=tok.vocab_size
    )
    torch.manual_seed(seed)
    model = build_model(mcfg).eval()
    # an untrained model spreads its probability over every token: the hardest case for the mask
    return SimpleNamespace(config=RunConfig(model=mcfg), tokenizer=tok, model=model)


def _strictly_decodable_prefix(tok, ids) -> str:
    """The text of ``ids``, strictly decoded; a character left incomplete by the token limit is left out."""
    data = b"".join(tok.token_bytes(i) for i in ids)
    return codecs.getincrementaldecoder("utf-8")("strict").decode(data, final=False)


@pytest.mark.parametrize("vocab", [300, 1000, 4000])
def test_ten_thousand_sampled_bpe_tokens_on_tang300_are_valid_utf8(vocab):
    tok = _tang_bpe(vocab)
    assert "\ufffd" not in read_corpus("tang300")
    settings = [(0, 0.8), (1, 1.0), (2, 1.5), (3, 1.2), (4, 1.5)]
    total = masked_steps = 0
    for seed, temperature in settings:
        s = _session(tok, seed)
        cfg = SampleConfig(max_tokens=2000, seed=seed, temperature=temperature)
        steps = list(sampling.generate(s, "春眠", cfg, n_top=0))
        ids = [st.token_id for st in steps]
        text = _strictly_decodable_prefix(tok, ids)  # raises on invalid UTF-8
        assert "\ufffd" not in text and "\ufffd" not in tok.decode(ids).rstrip("\ufffd")
        joined = "".join(st.text for st in steps)
        assert joined == text and "\ufffd" not in joined
        total += len(ids)
        masked_steps += sum(st.masked > 0 for st in steps)
    assert total == 10000
    assert masked_steps > 100  # the mask really did work (an untrained model wants invalid bytes often)


def test_without_the_mask_the_same_model_writes_replacement_characters():
    """The control: the test above would fail if the guard did nothing."""
    tok = _tang_bpe(1000)
    s = _session(tok, 0)
    cfg = SampleConfig(max_tokens=2000, seed=0, temperature=1.0)
    original = sampling.guard_for
    sampling.guard_for = lambda *a, **k: None
    try:
        ids = [st.token_id for st in sampling.generate(s, "春眠", cfg, n_top=0)]
    finally:
        sampling.guard_for = original
    assert tok.decode(ids).count("\ufffd") > 50


def test_guard_masks_exactly_the_tokens_that_break_the_prefix():
    tok = _tang_bpe(300)
    guard = Utf8Guard(tok)
    lead = tok.encode("春")[0]  # at vocabulary 300 a Chinese character is split into bytes
    assert len(tok.token_bytes(lead)) < 3
    for context in ([], [lead]):
        g = Utf8Guard(tok, context)
        bad = g.forbidden()
        pending = b"".join(tok.token_bytes(i) for i in context)
        for i in range(tok.vocab_size):
            assert bool(bad[i]) == (not _reference_valid_prefix(pending + tok.token_bytes(i)))
    assert guard.pending == b""


def test_stepper_sample_is_masked_too():
    tok = _tang_bpe(300)
    st = sampling.Stepper(_session(tok, 3), "春", SampleConfig(seed=1, temperature=1.5))
    for _ in range(300):
        st.sample()
    ids = st.ids[len(sampling.prompt_ids(st.session, "春")) :]
    assert st.text == _strictly_decodable_prefix(tok, ids)


@pytest.mark.parametrize("kind", ["char", "word"])
def test_unknown_tokens_stream_at_once_and_none_is_dropped(kind):
    text = read_corpus("tang300")[:3000]
    tok = train_tokenizer(TokenizerConfig(kind=kind, vocab_size=300), text)
    s = _session(tok, 0)
    st = sampling.Stepper(s, "", SampleConfig(seed=0))
    forced = [3, 1, 0, 0, 0, 0, 0, 0]
    pieces = [st.append(i).text for i in forced]
    assert pieces[2:] == ["\ufffd"] * 6  # each unknown token shows at once, none held back
    assert "".join(pieces) == tok.decode(forced)
    assert [x.unk for x in st.steps] == [False, False] + [True] * 6


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_streamed_pieces_concatenate_to_decode_with_unknowns(kind):
    text = read_corpus("tang300")[:3000]
    tok = train_tokenizer(TokenizerConfig(kind=kind, vocab_size=300), text)
    s = _session(tok, 5)
    for seed in range(3):
        steps = list(sampling.generate(s, "床前", SampleConfig(max_tokens=200, seed=seed, temperature=1.5)))
        ids = [x.token_id for x in steps]
        joined = "".join(x.text for x in steps)
        if kind == "bpe":
            assert joined == _strictly_decodable_prefix(tok, ids)
        else:
            assert joined == tok.decode(ids)


def test_prompts_are_normalised_like_corpora():
    tok = train_tokenizer(TokenizerConfig(kind="char"), "ab\ncd\n")
    s = _session(tok)
    assert sampling.prompt_ids(s, "ab\r\ncd\r") == tok.encode("ab\ncd\n")
    assert 0 not in sampling.prompt_ids(s, "ab\r\ncd\r")
