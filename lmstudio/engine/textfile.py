"""Reading one text file: encoding detection, binary refusal, newline normalisation, streaming.

Strict UTF-8 is tried first (the common, fast case); otherwise charset-normalizer picks among the
encodings we support, looking at a bounded sample so a huge file is never read twice into memory.
"""

from __future__ import annotations

import codecs
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from lmstudio.errors import UserError


class CorpusError(UserError):
    """The corpus cannot be used; the message says why and what to do."""


class BlankTextError(CorpusError):
    """The file is empty or holds only whitespace (a folder skips such files)."""


SAMPLE_BYTES = 256 * 1024  # what charset-normalizer and the binary check look at
# the encodings we promise to read; restricting charset-normalizer to them avoids wild guesses
# (unrestricted, it reads short GBK text as Korean cp949 and Latin-1 as Central European cp1250)
CANDIDATE_ENCODINGS = [
    "utf_8",
    "utf_16",
    "utf_16_le",
    "utf_16_be",
    "utf_32",
    "gb18030",
    "big5",
    "cp950",
    "latin_1",
    "cp1252",
]
_MAGIC: list[tuple[bytes, str]] = [
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"PK\x03\x04", "a zip archive (or a .docx/.xlsx/.epub, which are zips)"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"%PDF-", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"BZh91AY&SY", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"\x7fELF", "a program"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Microsoft Office document"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"OggS\x00", "an Ogg audio file"),
    (b"fLaC\x00", "a FLAC audio file"),
    (b"ID3\x02\x00", "an MP3 audio file"),
    (b"ID3\x03\x00", "an MP3 audio file"),
    (b"ID3\x04\x00", "an MP3 audio file"),
]  # signatures long enough (or with a NUL) that no real text starts with them
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v\x1b")


def _trim_sample(sample: bytes, complete: bool) -> bytes:
    """Cut a head sample at its last newline so no multi-byte character is split at the end."""
    if complete:
        return sample
    cut = sample.rfind(b"\n")
    if cut <= 0:
        return sample
    end = cut + 1
    if end < len(sample) and sample[end] == 0 and end % 2:  # UTF-16 LE newline is 0a 00
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
        raise CorpusError(
            f"{path} looks like a video or audio file, not text. Choose a plain-text (.txt) file."
        )
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
                raise CorpusError(
                    f"{path} contains many control characters, so it looks like a binary file, "
                    "not text. Choose a plain-text (.txt) file."
                )
            return "utf-8"
    from charset_normalizer import from_bytes  # imported here: it takes ~0.1 s and UTF-8 needs none of it

    best = from_bytes(trimmed, cp_isolation=CANDIDATE_ENCODINGS).best()
    encoding = best.encoding if best is not None else None
    if encoding is None or (b"\x00" in trimmed and not encoding.startswith(("utf_16", "utf_32"))):
        if b"\x00" in trimmed:
            raise CorpusError(
                f"{path} contains NUL bytes, so it looks like a binary file, not text. "
                "Choose a plain-text (.txt) file."
            )
        raise CorpusError(f"Cannot tell the text encoding of {path}. Save it as UTF-8 and try again.")
    codec = {
        "utf_8": "utf-8-sig" if best is not None and best.bom else "utf-8",
        "utf_16": "utf-16",
        "utf_32": "utf-32",
        "utf_16_le": "utf-16-le",
        "utf_16_be": "utf-16-be",
        "latin_1": "latin-1",
        "cp1252": "cp1252",
        "gb18030": "gb18030",
        "big5": "big5",
        "cp950": "cp950",
    }.get(encoding, encoding)
    if _control_share(trimmed.decode(codec, errors="replace")[:SAMPLE_BYTES]) > 0.02:
        raise CorpusError(
            f"{path} contains many control characters, so it looks like a binary file, "
            "not text. Choose a plain-text (.txt) file."
        )
    return codec


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def decode_file(path: Path) -> tuple[str, str]:
    """(text, codec) of one whole file, newlines normalised; refuses empty and binary files."""
    data = read_bytes(path)
    codec = detect_encoding(data[:SAMPLE_BYTES], path, complete=len(data) <= SAMPLE_BYTES)
    try:
        text = data.decode(codec)
    except UnicodeDecodeError:
        # the sample decoded but a later part does not: keep the text, mark the bad bytes
        text = data.decode(codec, errors="replace")
        codec += " (some bytes replaced)"
    text = normalize_newlines(text[1:] if text.startswith("\ufeff") else text)
    if not text.strip():
        what = "empty" if not text else "only whitespace"
        raise BlankTextError(
            f"{path} is {what}: there is no text to learn from. Choose a file with some text."
        )
    return text, codec


def _open(path: Path):
    try:
        return open(path, "rb")
    except PermissionError:
        raise CorpusError(
            f"Permission denied reading {path}. Check the file's permissions, "
            "or copy it somewhere you can read."
        ) from None
    except OSError as e:
        raise CorpusError(f"Cannot read {path}: {e.strerror or e}.") from None


def read_bytes(path: Path, limit: int | None = None) -> bytes:
    with _open(path) as f:
        try:
            return f.read() if limit is None else f.read(limit)
        except OSError as e:  # e.g. a folder named like a file, or a disk error
            raise CorpusError(f"Cannot read {path}: {e.strerror or e}.") from None


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as e:
        raise CorpusError(f"Cannot read {path}: {e.strerror or e}.") from None


def stream_file(path: Path, chunk_chars: int, blank_ok: bool = False) -> Iterator[tuple[str, int]]:
    """(text, bytes consumed) pieces of one file; a blank file yields nothing (``blank_ok``) or is refused."""
    if blank_ok and file_size(path) == 0:
        return
    codec = detect_encoding(read_bytes(path, SAMPLE_BYTES), path, complete=file_size(path) <= SAMPLE_BYTES)
    decoder = codecs.getincrementaldecoder(codec)(errors="replace")
    held_cr = ""  # a trailing "\r" may be the first half of "\r\n" split between reads
    at_start = True
    pending: list[str] | None = []  # leading whitespace, held until we know the file is not blank
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
        raise BlankTextError(
            f"{path} is {what}: there is no text to learn from. Choose a file with some text."
        )
