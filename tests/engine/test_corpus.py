"""Corpora: built-ins and their stats, encodings, refusals with clear messages, streaming, length check."""

from __future__ import annotations

import os
import random
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from lmstudio.engine import corpus
from lmstudio.engine.corpus import (
    CorpusError,
    check_length,
    corpus_fingerprint,
    corpus_info,
    iter_corpus_chunks,
    min_tokens,
    read_corpus,
    split_sizes,
)
from lmstudio.errors import UserError
from lmstudio.resources import corpora_dir

TANG = (corpora_dir() / "tang300.txt").read_text(encoding="utf-8")
ENGLISH = (
    "The quick brown fox jumps over the lazy dog.\nIt was a dark and stormy night; "
    "the rain fell in torrents, except at occasional intervals.\n"
) * 20
LATIN = (
    "Le café était fermé, et la façade de l'hôtel semblait déserte. À côté, un garçon naïf lisait "
    "« Les Misérables » près de la fenêtre.\nÜber den Dächern von Köln schläft die Straße; große "
    "Bäume säumen den Fluß.\n"
) * 5


def _cjk_both(text: str) -> str:
    """Characters of ``text`` that both GBK and Big5 can encode, so one sample serves both tests."""

    def ok(c: str) -> bool:
        try:
            c.encode("gbk"), c.encode("big5")
        except UnicodeEncodeError:
            return False
        return True

    return "".join(c for c in text if ok(c))


CHINESE = _cjk_both(TANG[:3000])


# ---- built-ins --------------------------------------------------------------------------------


def test_builtins_are_listed_with_stats_that_match_the_text():
    infos = {i.name: i for i in corpus.builtin_corpora()}
    assert set(infos) == {"tiny_shakespeare", "tang_poems", "tang300"}
    for name, info in infos.items():
        text = read_corpus(name)
        path = corpora_dir() / f"{name}.txt"
        assert info.builtin and Path(info.path) == path.resolve()
        assert info.chars == len(text)
        assert info.distinct_chars == len(set(text))
        assert info.lines == text.count("\n") + (not text.endswith("\n"))
        assert info.bytes == path.stat().st_size
        assert info.encoding == "utf-8"
        assert info.preview and text.startswith(info.preview)
        assert info.title and "public domain" in info.source and "MIT" in info.source
    # the figures published in resources/corpora/SOURCES.md
    assert (infos["tiny_shakespeare"].chars, infos["tiny_shakespeare"].distinct_chars) == (1_115_394, 65)
    assert (infos["tang_poems"].chars, infos["tang_poems"].distinct_chars) == (1_000_036, 6_392)
    assert (infos["tang300"].chars, infos["tang300"].distinct_chars) == (31_164, 2_657)
    assert "char-rnn" in infos["tiny_shakespeare"].source
    assert "chinese-poetry" in infos["tang300"].source and "chinese-poetry" in infos["tang_poems"].source


def test_user_file_info(tmp_path):
    p = tmp_path / "poems.txt"
    p.write_bytes(CHINESE.encode("gbk"))
    info = corpus_info(p)
    assert not info.builtin and info.title == "poems.txt" and info.encoding == "gb18030"
    assert info.chars == len(CHINESE) and info.bytes == p.stat().st_size
    assert str(p) in info.source


# ---- encodings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "codec,text",
    [
        ("utf-8", CHINESE),
        ("utf-8-sig", CHINESE),
        ("utf-16", CHINESE),
        ("utf-16-le", CHINESE),
        ("utf-16-be", CHINESE),
        ("utf-16-le", ENGLISH),
        ("utf-16-be", ENGLISH),
        ("utf-16", ENGLISH),
        ("gbk", CHINESE),
        ("gb18030", CHINESE),
        ("big5", CHINESE),
        ("latin-1", LATIN),
        ("cp1252", LATIN),
        ("gbk", "你好，世界。今天天气很好。\n"),  # unrestricted detection calls this Korean
        ("utf-32", CHINESE),
        ("utf-8", "ID3 tags and GIF8 headers are words too.\n"),
    ],
)
def test_encodings_are_detected(tmp_path, codec, text):
    p = tmp_path / "t.txt"
    p.write_bytes(text.encode(codec))
    assert read_corpus(p) == text
    assert "".join(iter_corpus_chunks(p, chunk_chars=1000)) == text


def test_line_endings_become_lf(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"one\r\ntwo\rthree\n\r\nfour\r")
    assert read_corpus(p) == "one\ntwo\nthree\n\nfour\n"
    # a CRLF split across two reads of the stream still becomes one LF
    long = "a" * 4095 + "\r\n" + "b" * 5000 + "\r" + "c"
    p.write_bytes(long.encode("utf-8"))
    expected = "a" * 4095 + "\n" + "b" * 5000 + "\n" + "c"
    assert read_corpus(p) == expected
    assert "".join(iter_corpus_chunks(p, chunk_chars=4096)) == expected


def test_utf8_bom_is_dropped(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"\xef\xbb\xbfhello\r\n")
    assert read_corpus(p) == "hello\n"


def test_folder_is_sorted_and_joined(tmp_path):
    (tmp_path / "b.txt").write_text("B\n", encoding="utf-8")
    (tmp_path / "a.txt").write_bytes("甲".encode("utf-16"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.TXT").write_text("C", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "blank.txt").write_text(" \n\n", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.txt").write_text("hidden", encoding="utf-8")
    assert read_corpus(tmp_path) == "甲\nB\n\nC"
    assert "".join(iter_corpus_chunks(tmp_path)) == "甲\nB\n\nC"
    assert corpus_info(tmp_path).encoding == "mixed"


# ---- refusals -------------------------------------------------------------------------------------


def _refused(source, *words):
    with pytest.raises(CorpusError) as e:
        read_corpus(source)
    message = str(e.value)
    assert isinstance(e.value, UserError)
    for w in words:
        assert w.lower() in message.lower(), message
    with pytest.raises(CorpusError):  # the stream refuses too, before yielding anything
        list(iter_corpus_chunks(source))
    return message


def test_empty_and_blank_files_are_refused(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_bytes(b"")
    _refused(p, "empty", str(p))
    p.write_bytes(b" \n\t\r\n  \n")
    _refused(p, "whitespace")
    p.write_bytes(" \n".encode("utf-16"))
    _refused(p, "whitespace")


def test_binary_files_are_refused(tmp_path):
    png = tmp_path / "photo.txt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    _refused(png, "PNG image", "plain-text")
    z = tmp_path / "archive.txt"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("inside.txt", ENGLISH)
    _refused(z, "zip")
    noise = tmp_path / "noise.txt"
    noise.write_bytes(random.Random(0).randbytes(20000))
    _refused(noise, "binary")
    controls = tmp_path / "controls.txt"
    controls.write_bytes(b"abc\x01\x02\x03\x04def\x05\x06\x07\x08" * 100)
    _refused(controls, "control characters")


def test_missing_source_is_refused(tmp_path):
    _refused(tmp_path / "nope.txt", "does not exist")
    _refused("no_such_builtin", "does not exist", "tang300")
    _refused("", "no corpus")


def test_folder_without_text_is_refused(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    _refused(tmp_path, "no .txt files")
    (tmp_path / "a.txt").write_text("", encoding="utf-8")
    (tmp_path / "b.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(CorpusError, match="empty"):
        read_corpus(tmp_path)
    with pytest.raises(CorpusError, match="empty"):
        list(iter_corpus_chunks(tmp_path))


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read files whatever their permissions"
)
def test_unreadable_file_is_refused(tmp_path):
    p = tmp_path / "secret.txt"
    p.write_text("text", encoding="utf-8")
    p.chmod(0)
    try:
        _refused(p, "permission")
    finally:
        p.chmod(0o644)


def test_permission_error_becomes_a_corpus_error(tmp_path, monkeypatch):
    p = tmp_path / "secret.txt"
    p.write_text("text", encoding="utf-8")
    real_open = open

    def deny(file, *args, **kwargs):
        if Path(file) == p:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    _refused(p, "permission denied", str(p))


# ---- streaming ------------------------------------------------------------------------------------


def test_chunks_join_to_the_whole_text():
    text = read_corpus("tang300")
    chunks = list(iter_corpus_chunks("tang300", chunk_chars=5000))
    assert len(chunks) > 3 and "".join(chunks) == text
    assert max(map(len, chunks)) <= 5000


def _peak_streaming(path: Path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        n = sum(len(c) for c in iter_corpus_chunks(path, chunk_chars=1 << 16))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return n, peak


def test_streaming_memory_does_not_grow_with_the_file(tmp_path):
    line = "All the world's a stage, and all the men and women merely players 床前明月光\n"
    peaks = []
    for copies in (30_000, 120_000):  # about 2.6 MB and 10 MB
        p = tmp_path / f"big{copies}.txt"
        p.write_text(line * copies, encoding="utf-8")
        n, peak = _peak_streaming(p)
        assert n == copies * len(line)
        peaks.append(peak)
    # a fixed cost (the encoding-detection sample, one chunk), not a share of the file
    assert peaks[1] < 1.3 * peaks[0] and peaks[1] < p.stat().st_size / 5, peaks


# ---- fingerprint ----------------------------------------------------------------------------------


def test_fingerprint_follows_changes(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("first version", encoding="utf-8")
    a = corpus_fingerprint(p)
    assert corpus_fingerprint(p) == a
    p.write_text("second version, longer", encoding="utf-8")
    assert corpus_fingerprint(p) != a
    assert corpus_fingerprint("tang300") == corpus_fingerprint("tang300") != corpus_fingerprint("tang_poems")


# ---- length ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size,val_fraction", [(64, 0.1), (8, 0.5), (256, 0.05), (2, 0.3), (100, 0.25)])
def test_min_tokens_is_the_least_length_with_a_window_in_each_split(block_size, val_fraction):
    need = min_tokens(block_size, val_fraction)

    def fits(n):
        return all(part >= block_size + 1 for part in split_sizes(n, val_fraction))

    assert fits(need) and not fits(need - 1)
    check_length(need, block_size, val_fraction)
    with pytest.raises(CorpusError) as e:
        check_length(need - 1, block_size, val_fraction)
    assert f"{need:,}" in str(e.value) and str(block_size) in str(e.value)


def test_split_sizes_hold_out_the_last_share():
    assert split_sizes(1000, 0.1) == (900, 100)
    assert sum(split_sizes(12345, 0.17)) == 12345
