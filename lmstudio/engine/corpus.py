"""Corpora: the built-in texts and a user's own files, read as one string (or streamed in chunks).

A corpus is named by a *source*: a built-in name (``tiny_shakespeare``, ``tang_poems``, ``tang300``),
a path to a text file, or a path to a folder whose ``.txt`` files (found recursively, sorted by
relative path, hidden ones skipped) are joined with a newline.

Encodings are detected, not assumed: strict UTF-8 is tried first (the common, fast case); otherwise
charset-normalizer picks among the encodings we support (UTF-8/16/32 with or without a BOM, GB18030
(a superset of GBK and GB2312), Big5, Latin-1/Windows-1252), looking at a bounded sample so a huge
file is never read twice into memory. Line endings become ``\\n``. Anything a person could get wrong
(empty file, an image renamed to .txt, a folder without text, a corpus too short for the context)
raises ``CorpusError`` whose message says what happened and what to do.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lmstudio.engine.errors import UserError
from lmstudio.resources import corpora_dir


class CorpusError(UserError):
    """The corpus cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class CorpusInfo:
    name: str              # built-in name, or the file/folder name
    path: str              # absolute path of the file or folder
    builtin: bool
    chars: int             # characters after decoding and newline normalisation
    distinct_chars: int
    lines: int             # a last line without a final newline counts too
    bytes: int             # size on disk (all files of a folder)
    encoding: str          # detected encoding ("utf-8", "gb18030", ...; "mixed" for a folder of several)
    preview: str           # the first few lines
    title: str
    source: str            # where the text comes from and under which licence


# name -> (file, title, source and licence); the facts come from resources/corpora/SOURCES.md
BUILTINS: dict[str, tuple[str, str, str]] = {
    "tiny_shakespeare": (
        "tiny_shakespeare.txt", "Tiny Shakespeare",
        "A subset of Shakespeare's plays, the classic character-level benchmark. Text from the char-rnn "
        "repository (karpathy/char-rnn, data/tinyshakespeare/input.txt, MIT licence); the plays are in "
        "the public domain."),
    "tang_poems": (
        "tang_poems.txt", "Tang poems (全唐诗)",
        "11,343 poems from the Complete Tang Poems, traditional characters; each poem is title, author, "
        "lines, then a blank line. Data from the chinese-poetry repository (chinese-poetry/chinese-poetry, "
        "MIT licence); the poems are in the public domain."),
    "tang300": (
        "tang300.txt", "300 Tang Poems (唐诗三百首)",
        "The 300 Tang Poems in the same layout as the Tang poems corpus: a tiny corpus that trains in "
        "seconds. Data from the chinese-poetry repository (MIT licence); the poems are in the public domain."),
}

TEXT_SUFFIXES = (".txt",)
SAMPLE_BYTES = 256 * 1024      # what charset-normalizer and the binary check look at
PREVIEW_CHARS = 600
# the encodings we promise to read; restricting charset-normalizer to them avoids wild guesses
# (unrestricted, it reads short GBK text as Korean cp949 and Latin-1 as Central European cp1250)
CANDIDATE_ENCODINGS = ["utf_8", "utf_16", "utf_16_le", "utf_16_be", "utf_32", "gb18030", "big5",
                       "cp950", "latin_1", "cp1252"]
_MAGIC: list[tuple[bytes, str]] = [
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"), (b"PK\x03\x04", "a zip archive (or a .docx/.xlsx/.epub, which are zips)"),
    (b"PK\x05\x06", "an empty zip archive"), (b"%PDF-", "a PDF document"), (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"), (b"Rar!\x1a\x07", "a RAR archive"),
    (b"BZh91AY&SY", "a bzip2 archive"), (b"\xfd7zXZ\x00", "an xz archive"), (b"\x7fELF", "a program"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Microsoft Office document"),
    (b"SQLite format 3\x00", "an SQLite database"), (b"OggS\x00", "an Ogg audio file"),
    (b"fLaC\x00", "a FLAC audio file"), (b"ID3\x02\x00", "an MP3 audio file"),
    (b"ID3\x03\x00", "an MP3 audio file"), (b"ID3\x04\x00", "an MP3 audio file"),
]  # signatures long enough (or with a NUL) that no real text starts with them
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v\x1b")


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
        raise CorpusError(f"The corpus {text!r} does not exist. Check the path, or choose another file.{hint}")
    return path.resolve(), False


def _text_files(folder: Path) -> list[Path]:
    try:
        found = [p for p in folder.rglob("*")
                 if p.suffix.lower() in TEXT_SUFFIXES and p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    except OSError as e:
        raise CorpusError(f"Cannot read the folder {folder}: {e.strerror or e}. Check its permissions.") from None
    if not found:
        raise CorpusError(f"The folder {folder} contains no .txt files. Put plain-text files (.txt) in it, "
                          "or choose a single file.")
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _files(source: str | os.PathLike) -> tuple[Path, bool, list[Path]]:
    path, builtin = _resolve(source)
    if path.is_dir():
        return path, builtin, _text_files(path)
    if not path.is_file():
        raise CorpusError(f"{path} is not a regular file. Choose a text file or a folder of them.")
    return path, builtin, [path]


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    with _open(path) as f:
        try:
            return f.read() if limit is None else f.read(limit)
        except OSError as e:   # e.g. a folder named like a file, or a disk error
            raise CorpusError(f"Cannot read {path}: {e.strerror or e}.") from None


# ---- encoding detection ---------------------------------------------------------------------

def _trim_sample(sample: bytes, complete: bool) -> bytes:
    """Cut a head sample at its last newline so no multi-byte character is split at the end."""
    if complete:
        return sample
    cut = sample.rfind(b"\n")
    if cut <= 0:
        return sample
    end = cut + 1
    if end < len(sample) and sample[end] == 0 and end % 2:   # UTF-16 LE newline is 0a 00
        end += 1
    return sample[:end]


def _control_share(text: str) -> float:
    if not text:
        return 0.0
    bad = sum(1 for c in text if c not in _ALLOWED_CONTROLS and unicodedata.category(c) == "Cc")
    return bad / len(text)


def detect_encoding(sample: bytes, path: Path | str = "the file", complete: bool = True) -> str:
    """The Python codec for a file whose first bytes are ``sample`` (``complete``: the whole file).

    Raises CorpusError for binary data (known file signatures, NUL bytes that are not UTF-16/32,
    many control characters) and for text no candidate encoding decodes.
    """
    for magic, what in _MAGIC:
        if sample.startswith(magic):
            raise CorpusError(f"{path} looks like {what}, not text. Choose a plain-text (.txt) file.")
    if sample[4:8] == b"ftyp":
        raise CorpusError(f"{path} looks like a video or audio file, not text. Choose a plain-text (.txt) file.")
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    trimmed = _trim_sample(sample, complete)
    if b"\x00" not in trimmed:
        try:
            text = trimmed.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if _control_share(text[:SAMPLE_BYTES]) > 0.02:
                raise CorpusError(f"{path} contains many control characters, so it looks like a binary file, "
                                  "not text. Choose a plain-text (.txt) file.")
            return "utf-8"
    from charset_normalizer import from_bytes  # imported here: it takes ~0.1 s and UTF-8 needs none of it

    best = from_bytes(trimmed, cp_isolation=CANDIDATE_ENCODINGS).best()
    encoding = best.encoding if best is not None else None
    if encoding is None or (b"\x00" in trimmed and not encoding.startswith(("utf_16", "utf_32"))):
        if b"\x00" in trimmed:
            raise CorpusError(f"{path} contains NUL bytes, so it looks like a binary file, not text. "
                              "Choose a plain-text (.txt) file.")
        raise CorpusError(f"Cannot tell the text encoding of {path}. Save it as UTF-8 and try again.")
    codec = {"utf_8": "utf-8-sig" if best.bom else "utf-8", "utf_16": "utf-16", "utf_32": "utf-32",
             "utf_16_le": "utf-16-le", "utf_16_be": "utf-16-be", "latin_1": "latin-1",
             "cp1252": "cp1252", "gb18030": "gb18030", "big5": "big5", "cp950": "cp950"}.get(encoding, encoding)
    if _control_share(trimmed.decode(codec, errors="replace")[:SAMPLE_BYTES]) > 0.02:
        raise CorpusError(f"{path} contains many control characters, so it looks like a binary file, "
                          "not text. Choose a plain-text (.txt) file.")
    return codec


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _decode_file(path: Path) -> tuple[str, str]:
    """(text, codec) of one whole file, newlines normalised; refuses empty and binary files."""
    data = _read_bytes(path)
    codec = detect_encoding(data[:SAMPLE_BYTES], path, complete=len(data) <= SAMPLE_BYTES)
    try:
        text = data.decode(codec)
    except UnicodeDecodeError:
        # the sample decoded but a later part does not: keep the text, mark the bad bytes
        text = data.decode(codec, errors="replace")
        codec += " (some bytes replaced)"
    text = normalize_newlines(text.lstrip("\ufeff") if text.startswith("\ufeff") else text)
    if not text.strip():
        what = "empty" if not text else "only whitespace"
        raise CorpusError(f"{path} is {what}: there is no text to learn from. Choose a file with some text.")
    return text, codec


# ---- reading --------------------------------------------------------------------------------

def read_corpus(source: str | os.PathLike) -> str:
    """The whole text of a built-in name, a file, or a folder of .txt files (joined with a newline)."""
    _, _, files = _files(source)
    return "\n".join(text for text, _ in _decode_all(files))


def _decode_all(files: list[Path]) -> list[tuple[str, str]]:
    if len(files) == 1:
        return [_decode_file(files[0])]
    parts = []
    for f in files:
        try:
            parts.append(_decode_file(f))
        except CorpusError as e:
            if "there is no text" in str(e):   # an empty file among many adds nothing; skip it
                continue
            raise
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


def iter_chunks_with_progress(source: str | os.PathLike, chunk_chars: int = 1 << 20
                              ) -> Iterator[tuple[str, float]]:
    """Like iter_corpus_chunks, each chunk with the share of the corpus's bytes read so far."""
    _, _, files = _files(source)
    total = max(1, sum(_size(f) for f in files))
    done = 0
    first = True
    for path in files:
        produced = False
        # like read_corpus, a folder skips its blank files; a single file is refused
        for piece, nbytes in _stream_file(path, max(1, chunk_chars), blank_ok=len(files) > 1):
            if not produced and not first:
                piece = "\n" + piece     # the separator read_corpus puts between files
            produced = True
            done += nbytes
            yield piece, min(1.0, done / total)
        first = first and not produced
    if first:
        raise CorpusError(f"All the .txt files in {files[0].parent} are empty. Add some text.")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as e:
        raise CorpusError(f"Cannot read {path}: {e.strerror or e}.") from None


def _stream_file(path: Path, chunk_chars: int, blank_ok: bool = False) -> Iterator[tuple[str, int]]:
    """(text, bytes consumed) pieces of one file; a blank file yields nothing (``blank_ok``) or is refused."""
    if blank_ok and _size(path) == 0:
        return
    codec = detect_encoding(_read_bytes(path, SAMPLE_BYTES), path, complete=_size(path) <= SAMPLE_BYTES)
    decoder = codecs.getincrementaldecoder(codec)(errors="replace")
    held_cr = ""        # a trailing "\r" may be the first half of "\r\n" split between reads
    at_start = True
    pending: list[str] = []   # leading whitespace, held until we know the file is not blank
    pending_bytes = 0
    seen_any = False
    with _open(path) as f:
        while True:
            try:
                # a character takes 1-4 bytes, so chunk_chars bytes decode to at most chunk_chars characters
                raw = f.read(max(4096, chunk_chars))
            except OSError as e:
                raise CorpusError(f"Cannot read {path}: {e.strerror or e}.") from None
            text = held_cr + decoder.decode(raw, final=not raw)
            held_cr = ""
            if raw and text.endswith("\r"):
                text, held_cr = text[:-1], "\r"
            if at_start and text:
                text = text[1:] if text.startswith("\ufeff") else text
                at_start = False
            text = normalize_newlines(text)
            seen_any = seen_any or bool(text)
            if pending is not None:
                pending.append(text)
                pending_bytes += len(raw)
                if text.strip():
                    text, nbytes, pending = "".join(pending), pending_bytes, None
                    yield text, nbytes
            elif text or raw:
                yield text, len(raw)
            if not raw:
                break
    if pending is not None and not blank_ok:
        what = "only whitespace" if seen_any else "empty"
        raise CorpusError(f"{path} is {what}: there is no text to learn from. Choose a file with some text.")


def _open(path: Path):
    try:
        return open(path, "rb")
    except PermissionError:
        raise CorpusError(f"Permission denied reading {path}. Check the file's permissions, "
                          "or copy it somewhere you can read.") from None
    except OSError as e:
        raise CorpusError(f"Cannot read {path}: {e.strerror or e}.") from None


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
    for chunk in iter_corpus_chunks(path):
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
    encodings = {detect_encoding(_read_bytes(f, SAMPLE_BYTES), f, complete=_size(f) <= SAMPLE_BYTES)
                 for f in files if _size(f)}
    encoding = encodings.pop() if len(encodings) == 1 else "mixed"
    if builtin:
        name = next(n for n, (file, _, _) in BUILTINS.items() if file == path.name)
        title, source_text = BUILTINS[name][1], BUILTINS[name][2]
    else:
        name = title = path.name
        source_text = f"Your {'folder' if path.is_dir() else 'file'} {path}"
    return CorpusInfo(name=name, path=str(path), builtin=builtin, chars=chars, distinct_chars=len(distinct),
                      lines=lines, bytes=sum(s for _, s, _ in stamp), encoding=encoding, preview=preview,
                      title=title, source=source_text)


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
    return sum(_size(f) for f in files)


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
        raise CorpusError(
            f"The corpus is too short: it has {n_tokens:,} tokens, but a context of {block_size} tokens with "
            f"{val_fraction:.0%} held out for validation needs at least {need:,}. Use a longer text or a "
            "shorter context (model.block_size).")
