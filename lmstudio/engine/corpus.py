"""Corpora: the built-in texts and a user's own files, read as one string (or streamed in chunks).

A corpus is named by a *source*: a built-in name (``tiny_shakespeare``, ``tang_poems``, ``tang300``),
a path to a text file, or a path to a folder whose ``.txt`` files (found recursively, sorted by
relative path, hidden ones skipped) are joined with a newline.

Encodings are detected, not assumed: strict UTF-8 is tried first (the common, fast case); otherwise
charset-normalizer picks among the encodings we support (UTF-8/16/32 with or without a BOM, GB18030
(a superset of GBK and GB2312), Big5, Latin-1/Windows-1252), looking at a bounded sample so a huge
file is never read twice into memory (see textfile.py). Line endings become ``\\n``. Anything a person could get wrong
(empty file, an image renamed to .txt, a folder without text, a corpus too short for the context)
raises ``CorpusError`` whose message says what happened and what to do.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lmstudio.engine.textfile import (
    SAMPLE_BYTES,
    BlankTextError,
    CorpusError,
    decode_file,
    detect_encoding,
    file_size,
    read_bytes,
    replaced_note,
    stream_file,
)
from lmstudio.resources import corpora_dir

__all__ = [
    "CorpusError",
    "CorpusInfo",
    "builtin_corpora",
    "corpus_info",
    "read_corpus",
    "iter_corpus_chunks",
    "corpus_fingerprint",
    "corpus_bytes",
    "check_length",
    "min_tokens",
    "split_sizes",
    "detect_encoding",
]


@dataclass(frozen=True)
class CorpusInfo:
    name: str  # built-in name, or the file/folder name
    path: str  # absolute path of the file or folder
    builtin: bool
    chars: int  # characters after decoding and newline normalisation
    distinct_chars: int
    lines: int  # a last line without a final newline counts too
    bytes: int  # size on disk (all files of a folder)
    encoding: str  # detected encoding ("utf-8", "gb18030", ...; "mixed" for a folder of several)
    preview: str  # the first few lines
    title: str
    source: str  # where the text comes from and under which licence


# name -> (file, title, source and licence); the facts come from resources/corpora/SOURCES.md
BUILTINS: dict[str, tuple[str, str, str]] = {
    "tiny_shakespeare": (
        "tiny_shakespeare.txt",
        "Tiny Shakespeare",
        "A subset of Shakespeare's plays, the classic character-level benchmark. Text from the char-rnn "
        "repository (karpathy/char-rnn, data/tinyshakespeare/input.txt, MIT licence); the plays are in "
        "the public domain.",
    ),
    "tang_poems": (
        "tang_poems.txt",
        "Tang poems (全唐诗)",
        "11,343 poems from the Complete Tang Poems, traditional characters; each poem is title, author, "
        "lines, then a blank line. Data from the chinese-poetry repository (chinese-poetry/chinese-poetry, "
        "MIT licence); the poems are in the public domain.",
    ),
    "tang300": (
        "tang300.txt",
        "300 Tang Poems (唐诗三百首)",
        "The 300 Tang Poems in the same layout as the Tang poems corpus: a tiny corpus that trains in "
        "seconds. Data from the chinese-poetry repository (MIT licence); the poems are in the public domain.",
    ),
}

TEXT_SUFFIXES = (".txt",)
PREVIEW_CHARS = 600


# ---- finding a source -------------------------------------------------------------------------


def builtin_path(name: str) -> Path:
    return corpora_dir() / BUILTINS[name][0]


def _resolve(source: str | os.PathLike) -> tuple[Path, bool]:
    """(path, is_builtin) for a source; raises CorpusError when it names nothing readable."""
    text = os.fspath(source)
    if text in BUILTINS:
        return builtin_path(text), True
    if not text.strip():
        raise CorpusError("No corpus chosen. Pick a built-in corpus or a text file.")
    path = Path(text).expanduser()
    if not path.exists():
        hint = f" Built-in corpora: {', '.join(BUILTINS)}." if os.sep not in text and "." not in text else ""
        raise CorpusError(
            f"The corpus {text!r} does not exist. Check the path, or choose another file.{hint}"
        )
    return path.resolve(), False


def _text_files(folder: Path) -> list[Path]:
    try:
        found = [
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in TEXT_SUFFIXES
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        ]
    except OSError as e:
        raise CorpusError(
            f"Cannot read the folder {folder}: {e.strerror or e}. Check its permissions."
        ) from None
    if not found:
        raise CorpusError(
            f"The folder {folder} contains no .txt files. Put plain-text files (.txt) in it, "
            "or choose a single file."
        )
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _files(source: str | os.PathLike) -> tuple[Path, bool, list[Path]]:
    path, builtin = _resolve(source)
    if path.is_dir():
        return path, builtin, _text_files(path)
    if not path.is_file():
        raise CorpusError(f"{path} is not a regular file. Choose a text file or a folder of them.")
    return path, builtin, [path]


# ---- reading --------------------------------------------------------------------------------


def read_corpus(source: str | os.PathLike) -> str:
    """The whole text of a built-in name, a file, or a folder of .txt files (joined with a newline)."""
    _, _, files = _files(source)
    return "\n".join(text for text, _ in _decode_all(files))


def _decode_all(files: list[Path]) -> list[tuple[str, str]]:
    if len(files) == 1:
        return [decode_file(files[0])]
    parts = []
    for f in files:
        try:
            parts.append(decode_file(f))
        except BlankTextError:  # an empty file among many adds nothing; skip it
            continue
    if not parts:
        raise CorpusError(f"All the .txt files in {files[0].parent} are empty. Add some text.")
    return parts


def iter_corpus_chunks(source: str | os.PathLike, chunk_chars: int = 1 << 20) -> Iterator[str]:
    """Stream the corpus's text (exactly ``read_corpus(source)``) in pieces of about ``chunk_chars``.

    Memory stays bounded by the chunk size whatever the file size. The encoding is detected from the
    first bytes of each file; bytes that later fail to decode become U+FFFD.
    """
    for chunk, _ in iter_chunks_with_progress(source, chunk_chars):
        yield chunk


def iter_chunks_with_progress(
    source: str | os.PathLike,
    chunk_chars: int = 1 << 20,
    replaced: list[tuple[Path, int]] | None = None,
) -> Iterator[tuple[str, float]]:
    """Like iter_corpus_chunks, each chunk with the share of the corpus's bytes read so far.

    ``replaced`` collects (file, byte offset) of the first bytes of each file that did not decode.
    """
    _, _, files = _files(source)
    total = max(1, sum(file_size(f) for f in files))
    done = 0
    first = True
    for path in files:
        produced = False
        bad: list[int] = []
        # like read_corpus, a folder skips its blank files; a single file is refused
        for piece, nbytes in stream_file(path, max(1, chunk_chars), len(files) > 1, bad):
            if not produced and not first:
                piece = "\n" + piece  # the separator read_corpus puts between files
            produced = True
            done += nbytes
            yield piece, min(1.0, done / total)
        if bad and replaced is not None:
            replaced.append((path, bad[0]))
        first = first and not produced
    if first:
        raise CorpusError(f"All the .txt files in {files[0].parent} are empty. Add some text.")


# ---- facts about a corpus -------------------------------------------------------------------


def corpus_info(source: str | os.PathLike) -> CorpusInfo:
    """Statistics, title, source and a preview (streams big files, so it is safe on any size)."""
    path, builtin, files = _files(source)
    return _info_cached(str(path), builtin, _stamp(files))


@cache
def _info_cached(path_text: str, builtin: bool, stamp: tuple) -> CorpusInfo:
    path = Path(path_text)
    files = [Path(p) for p, _, _ in stamp]
    chars = lines = 0
    distinct: set[str] = set()
    preview = ""
    last = ""
    replaced: list[tuple[Path, int]] = []
    for chunk, _ in iter_chunks_with_progress(path, replaced=replaced):
        chars += len(chunk)
        lines += chunk.count("\n")
        distinct.update(chunk)
        if len(preview) < PREVIEW_CHARS:
            preview += chunk[:PREVIEW_CHARS]
        if chunk:
            last = chunk[-1]
    if last and last != "\n":
        lines += 1
    if len(preview) > PREVIEW_CHARS:
        cut = preview.rfind("\n", 0, PREVIEW_CHARS)
        preview = preview[:cut] if cut > PREVIEW_CHARS // 2 else preview[:PREVIEW_CHARS]
    encodings = {
        detect_encoding(read_bytes(f, SAMPLE_BYTES), f, complete=file_size(f) <= SAMPLE_BYTES)
        for f in files
        if file_size(f)
    }
    encoding = encodings.pop() if len(encodings) == 1 else "mixed"
    if replaced:  # the warning a user sees: the text is used, with U+FFFD where bytes did not decode
        first_file, offset = replaced[0]
        encoding += (
            replaced_note(offset) if len(files) == 1 else f" (some bytes replaced in {first_file.name})"
        )
    if builtin:
        name = next(n for n, (file, _, _) in BUILTINS.items() if file == path.name)
        title, source_text = BUILTINS[name][1], BUILTINS[name][2]
    else:
        name = title = path.name
        source_text = f"Your {'folder' if path.is_dir() else 'file'} {path}"
    return CorpusInfo(
        name=name,
        path=str(path),
        builtin=builtin,
        chars=chars,
        distinct_chars=len(distinct),
        lines=lines,
        bytes=sum(s for _, s, _ in stamp),
        encoding=encoding,
        preview=preview,
        title=title,
        source=source_text,
    )


def builtin_corpora() -> list[CorpusInfo]:
    return [corpus_info(name) for name in BUILTINS]


def _stamp(files: list[Path]) -> tuple:
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError as e:
            raise CorpusError(f"Cannot read {f}: {e.strerror or e}.") from None
        out.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(out)


def corpus_fingerprint(source: str | os.PathLike) -> str:
    """A cheap key that changes when the corpus changes: paths, sizes and modification times for
    user files; a content hash for built-ins (their mtimes differ between installs)."""
    path, builtin, files = _files(source)
    h = hashlib.sha256()
    if builtin:
        h.update(_content_hash(*_stamp(files)[0]).encode())
    else:
        for p, size, mtime in _stamp(files):
            h.update(f"{p}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()[:32]


@cache
def _content_hash(path: str, size: int, mtime: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def corpus_bytes(source: str | os.PathLike) -> int:
    """Size on disk of the corpus's files (to choose between reading whole and streaming)."""
    _, _, files = _files(source)
    return sum(file_size(f) for f in files)


# ---- length check ---------------------------------------------------------------------------


def split_sizes(n_tokens: int, val_fraction: float) -> tuple[int, int]:
    """(train, validation) token counts: the last ``val_fraction`` of the tokens is held out."""
    n_train = int(n_tokens * (1.0 - val_fraction))
    return n_train, n_tokens - n_train


def min_tokens(block_size: int, val_fraction: float) -> int:
    """The fewest tokens for which both splits hold one window of ``block_size + 1`` tokens."""
    window = block_size + 1
    # both split sizes grow with n (by 0 or 1 per token), so the least n is found by bisection
    lo, hi = 2 * window, 2 * window
    while min(split_sizes(hi, val_fraction)) < window:
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if min(split_sizes(mid, val_fraction)) >= window:
            hi = mid
        else:
            lo = mid + 1
    return lo


def check_length(n_tokens: int, block_size: int, val_fraction: float) -> None:
    """Raise CorpusError unless the corpus is long enough for the context and the validation share."""
    need = min_tokens(block_size, val_fraction)
    if n_tokens < need:
        # enough text for two windows: it is the validation share that is too small to hold one
        fix = (
            "a larger validation share (corpus.val_fraction) or a shorter context (model.block_size)"
            if n_tokens >= 2 * (block_size + 1)
            else "a longer text or a shorter context (model.block_size)"
        )
        raise CorpusError(
            f"The corpus is too short: it has {n_tokens:,} tokens, but a context of {block_size} tokens with "
            f"{val_fraction * 100:g}% held out for validation needs at least {need:,}. Use {fix}."
        )
