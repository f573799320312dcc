"""Token data: the on-disk cache (reuse, rebuild, dtype, cancel), the split, batches, prepare_data."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from lmstudio.config import RunConfig, TokenizerConfig
from lmstudio.engine import data as data_mod
from lmstudio.engine.corpus import CorpusError, min_tokens, read_corpus
from lmstudio.engine.data import Batcher, Cancelled, TokenData, encode_to_cache, prepare_data
from lmstudio.engine.tokenizer import train_tokenizer

TANG = read_corpus("tang300")
SHAKES = read_corpus("tiny_shakespeare")[:200_000]


@pytest.fixture(scope="module")
def char_tok():
    return train_tokenizer(TokenizerConfig(kind="char"), TANG)


@pytest.fixture(scope="module")
def bpe_tok():
    return train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=600), SHAKES)


# ---- the cache --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_cache_holds_exactly_the_encoded_ids(tmp_path, kind):
    tok = train_tokenizer(TokenizerConfig(kind=kind, vocab_size=700), SHAKES)
    ids = encode_to_cache(SHAKES, tok, tmp_path, chunk_chars=3000)  # many chunks
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint16
    assert np.array_equal(ids, tok.encode(SHAKES))
    assert ids.n_chars == len(SHAKES)
    (meta,) = tmp_path.glob("*.json")
    sidecar = json.loads(meta.read_text())
    assert sidecar["length"] == len(ids) and sidecar["dtype"] == "uint16"
    assert sidecar["tokenizer"] == tok.fingerprint()
    assert not list(tmp_path.glob(".*tmp"))


def test_cache_is_reused(tmp_path, char_tok, monkeypatch):
    first = encode_to_cache(TANG, char_tok, tmp_path)
    monkeypatch.setattr(type(char_tok), "encode_array", lambda *a: pytest.fail("encoded again"))
    fractions = []
    again = encode_to_cache(TANG, char_tok, tmp_path, progress=fractions.append)
    assert np.array_equal(first, again) and fractions == [1.0]


def test_cache_keys_on_corpus_and_tokenizer(tmp_path, char_tok, bpe_tok):
    encode_to_cache(TANG, char_tok, tmp_path)
    encode_to_cache(TANG[:-1], char_tok, tmp_path)
    encode_to_cache(TANG, bpe_tok, tmp_path)
    assert len(list(tmp_path.glob("*.bin"))) == 3


@pytest.mark.parametrize("damage", ["truncate", "extend", "sidecar", "no_sidecar", "wrong_length"])
def test_damaged_cache_is_rebuilt(tmp_path, char_tok, damage):
    good = np.array(encode_to_cache(TANG, char_tok, tmp_path))
    (bin_path,) = tmp_path.glob("*.bin")
    meta = bin_path.with_suffix(".json")
    if damage == "truncate":
        bin_path.write_bytes(bin_path.read_bytes()[:1000])
    elif damage == "extend":
        bin_path.write_bytes(bin_path.read_bytes() + b"\0\0")
    elif damage == "sidecar":
        meta.write_text("{half a sidecar", encoding="utf-8")
    elif damage == "no_sidecar":
        meta.unlink()
    else:
        sidecar = json.loads(meta.read_text())
        meta.write_text(json.dumps({**sidecar, "length": sidecar["length"] - 5}), encoding="utf-8")
    rebuilt = encode_to_cache(TANG, char_tok, tmp_path)
    assert np.array_equal(rebuilt, good)
    assert bin_path.stat().st_size == len(good) * 2


def test_large_vocabulary_uses_uint32(tmp_path):
    # 70,000 distinct characters from the supplementary planes: ids above 65,535
    text = "".join(chr(0x10000 + i) for i in range(70_000)) * 2
    tok = train_tokenizer(TokenizerConfig(kind="char"), text)
    assert tok.vocab_size == 70_001
    ids = encode_to_cache(text, tok, tmp_path)
    assert ids.dtype == np.uint32 and int(ids.max()) == 70_000
    assert np.array_equal(ids, tok.encode_array(text))
    small = encode_to_cache(TANG, train_tokenizer(TokenizerConfig(kind="char"), TANG), tmp_path)
    assert small.dtype == np.uint16
    assert data_mod.ids_dtype(65_536) == np.uint16 and data_mod.ids_dtype(65_537) == np.uint32


def test_progress_rises_to_one(tmp_path, char_tok):
    fractions = []
    encode_to_cache(TANG, char_tok, tmp_path, progress=fractions.append, chunk_chars=2000)
    assert len(fractions) > 5 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(0 < f <= 1 for f in fractions)


def test_cancel_leaves_nothing(tmp_path, char_tok):
    cancel = threading.Event()

    def progress(fraction):
        if fraction > 0.3:
            cancel.set()

    with pytest.raises(Cancelled) as e:
        encode_to_cache(TANG, char_tok, tmp_path, progress=progress, cancel=cancel, chunk_chars=2000)
    assert isinstance(e.value, CorpusError)
    assert list(tmp_path.iterdir()) == []


def test_streamed_source_equals_encoding_the_text(tmp_path, bpe_tok):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_bytes(SHAKES[:60_000].replace("\n", "\r\n").encode("utf-16"))
    (folder / "b.txt").write_text(SHAKES[60_000:120_000], encoding="utf-8")
    text = read_corpus(folder)
    streamed = encode_to_cache(None, bpe_tok, tmp_path / "cache", source=str(folder), chunk_chars=5000)
    assert np.array_equal(streamed, bpe_tok.encode(text)) and streamed.n_chars == len(text)


# ---- split and batches ------------------------------------------------------------------------------


def test_token_data_holds_out_the_last_share(tmp_path, bpe_tok):
    ids = encode_to_cache(SHAKES, bpe_tok, tmp_path)
    data = TokenData(ids, 0.1)
    n_train = int(len(ids) * 0.9)
    assert np.array_equal(data.train, ids[:n_train]) and np.array_equal(data.val, ids[n_train:])
    assert data.chars_per_token == pytest.approx(len(SHAKES) / len(ids))
    assert data.chars_per_token > 2  # BPE tokens span several characters


def _counting_data(n: int = 5000) -> TokenData:
    return TokenData(np.arange(n, dtype=np.uint16), 0.2)


def test_batches_are_windows_shifted_by_one():
    data = _counting_data()
    batcher = Batcher(data, batch_size=8, block_size=16, seed=0)
    for split, arr in (("train", data.train), ("val", data.val)):
        x, y = batcher.get(split)
        assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
        # the data counts up, so a window is consecutive numbers and its target is the next one
        assert torch.equal(y, x + 1)
        assert torch.equal(x[:, 1:] - x[:, :1], torch.arange(1, 16).expand(8, -1))
        assert int(x.min()) >= int(arr[0]) and int(y.max()) <= int(arr[-1])


def test_batches_cover_the_ends_of_the_split():
    data = _counting_data(200)
    batcher = Batcher(data, batch_size=64, block_size=20, seed=3)
    firsts, lasts = set(), set()
    for _ in range(50):
        x, y = batcher.get("train")
        firsts.update(x[:, 0].tolist())
        lasts.update(y[:, -1].tolist())
    assert 0 in firsts and len(data.train) - 1 in lasts


def test_batches_are_reproducible_and_resumable():
    data = _counting_data()
    a, b = Batcher(data, 4, 8, seed=7), Batcher(data, 4, 8, seed=7)
    assert all(torch.equal(a.get()[0], b.get()[0]) for _ in range(5))
    assert not torch.equal(Batcher(data, 4, 8, seed=8).get()[0], Batcher(data, 4, 8, seed=7).get()[0])
    state = a.state_dict()
    expected = [a.get()[0] for _ in range(5)]
    resumed = Batcher(data, 4, 8, seed=0)
    resumed.load_state_dict(state)
    assert all(torch.equal(resumed.get()[0], e) for e in expected)


def test_evaluation_does_not_shift_training_batches():
    data = _counting_data()
    a, b = Batcher(data, 4, 8, seed=1), Batcher(data, 4, 8, seed=1)
    for _ in range(3):
        b.get("val")
    assert torch.equal(a.get("train")[0], b.get("train")[0])


def test_state_survives_a_weights_only_save(tmp_path):
    batcher = Batcher(_counting_data(), 4, 8, seed=2)
    batcher.get()
    torch.save(batcher.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    other = Batcher(_counting_data(), 4, 8, seed=9)
    other.load_state_dict(state)
    assert torch.equal(other.get()[0], batcher.get()[0])


def test_batcher_refuses_too_little_data():
    with pytest.raises(CorpusError, match="too short"):
        Batcher(_counting_data(100), 4, 64, seed=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_reach_the_gpu():
    x, y = Batcher(_counting_data(), 4, 8, seed=0).get("train", "cuda")
    assert x.is_cuda and torch.equal(y, x + 1)


# ---- prepare_data -------------------------------------------------------------------------------------


def _cfg(kind="char", block_size=64, source="tang300") -> RunConfig:
    cfg = RunConfig()
    cfg.corpus.source, cfg.tokenizer.kind, cfg.model.block_size = source, kind, block_size
    return cfg


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_prepare_data_end_to_end(tmp_path, kind):
    tok, data = prepare_data(_cfg(kind), cache_dir=tmp_path)
    assert tok.kind == kind
    assert np.array_equal(data.ids, tok.encode(TANG))
    assert len(data.val) == len(data.ids) - int(len(data.ids) * 0.9)
    assert data.chars_per_token == pytest.approx(len(TANG) / len(data.ids))
    x, y = Batcher(data, 2, 64, seed=0).get("val")
    assert torch.equal(x[:, 1:], y[:, :-1])
    again_tok, again = prepare_data(_cfg(kind), tokenizer=tok, cache_dir=tmp_path)
    assert again_tok is tok and np.array_equal(again.ids, data.ids)
    assert len(list(tmp_path.glob("*.bin"))) == 1


def test_prepare_data_refuses_a_context_longer_than_the_corpus(tmp_path):
    with pytest.raises(CorpusError) as e:
        prepare_data(_cfg("char", block_size=8000), cache_dir=tmp_path)
    assert f"{min_tokens(8000, 0.1):,}" in str(e.value)


def test_prepare_data_streams_big_corpora(tmp_path, monkeypatch):
    whole_tok, whole = prepare_data(_cfg("word"), cache_dir=tmp_path / "a")
    monkeypatch.setattr(data_mod, "STREAM_BYTES", 1000)
    monkeypatch.setattr(data_mod, "read_corpus", lambda *a: pytest.fail("read whole"))
    tok, streamed = prepare_data(_cfg("word"), cache_dir=tmp_path / "b")
    assert tok.fingerprint() == whole_tok.fingerprint()
    assert np.array_equal(streamed.ids, whole.ids)
    assert streamed.chars_per_token == pytest.approx(whole.chars_per_token)


def test_prepare_data_honours_cancel(tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        prepare_data(_cfg(), cache_dir=tmp_path, cancel=cancel)


def test_importing_the_data_modules_loads_no_qt():
    code = (
        "import sys, lmstudio.engine.corpus, lmstudio.engine.tokenizer, lmstudio.engine.data; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
