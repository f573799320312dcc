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
            # charset-normalizer only accepts text that decodes strictly: UTF-16/32 with a lone
            # surrogate (half of an emoji, cut by an editor) is still UTF-16/32, its bad unit replaced
            damaged = _damaged_utf(trimmed)
            if damaged is not None:
                return damaged
            raise nul_error(path, trimmed.find(b"\x00"))
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


_BOMS = [  # longest first: the UTF-32 LE BOM starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]


def _damaged_utf(sample: bytes) -> str | None:
    """The UTF-16/32 codec of a sample that is that encoding apart from a few lone surrogates, else None."""
    for bom, codec in _BOMS:
        if sample.startswith(bom):
            candidates = [(codec, len(bom))]
            break
    else:
        candidates = [(c, 0) for c in ("utf-32-le", "utf-32-be", "utf-16-le", "utf-16-be")]
    best, best_ascii = None, 0
    for codec, skip in candidates:
        unit = 4 if "32" in codec else 2
        body = sample[skip:]
        body = body[: len(body) - len(body) % unit]  # a head sample (or a cut file) may end mid-unit
        try:
            text = body.decode(codec, errors="surrogatepass")  # fails on anything but a lone surrogate
        except UnicodeDecodeError:
            continue
        lone = sum(1 for c in text if "\ud800" <= c <= "\udfff")
        if not text or lone > max(1, len(text) // 1000) or _control_share(text) > 0.02:
            continue
        # both byte orders decode without error; the right one reads newlines and spaces as such (and
        # text in one byte with a stray NUL, read as UTF-16, has next to none: it stays a binary file)
        ascii_count = sum(1 for c in text if c < "\x80")
        if not skip and ascii_count < len(text) // 100:
            continue
        if best is None or ascii_count > best_ascii:
            best, best_ascii = codec, ascii_count
    return best


def nul_error(path: Path | str, offset: int | None) -> CorpusError:
    where = f" (the first at byte {offset:,})" if offset is not None and offset >= 0 else ""
    return CorpusError(
        f"{path} contains NUL characters{where}, so it looks like a binary file, not text. "
        "Choose a plain-text (.txt) file."
    )


# bytes a codec's decoder consumes as a byte-order mark before the first character
_BOM_BYTES = {"utf-8-sig": 3, "utf-16": 2, "utf-32": 4}
# codecs whose NUL character is not a single NUL byte; in the others (ASCII-compatible) it is exactly one
_WIDE = ("utf-16", "utf-32")


def _encoded_len(text: str, codec: str) -> int:
    """Bytes ``text`` took in a UTF-16/32 file (a U+FFFD that replaced a bad unit takes a unit too)."""
    plain = {"utf-16": "utf-16-le", "utf-32": "utf-32-le"}.get(codec, codec)
    step = 1 << 20  # slices keep the extra memory small on a huge text
    return sum(len(text[i : i + step].encode(plain, "surrogatepass")) for i in range(0, len(text), step))


def _nul_offset(raw: bytes, text: str, at: int, codec: str, text_start: int) -> int:
    """The byte offset in the file of the NUL character ``text[at]`` (``raw`` holds it, ``text`` began
    at byte ``text_start``)."""
    if codec.startswith(_WIDE):
        return text_start + _encoded_len(text[:at], codec)
    return raw.find(b"\x00")


def replaced_note(offset: int) -> str:
    return f" (some bytes replaced, the first at byte {offset:,})"


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def decode_file(path: Path) -> tuple[str, str]:
    """(text, codec) of one whole file, newlines normalised; refuses empty and binary files."""
    data = read_bytes(path)
    codec = detect_encoding(data[:SAMPLE_BYTES], path, complete=len(data) <= SAMPLE_BYTES)
    label = codec
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as e:
        # a later part (or a lone surrogate in UTF-16) does not decode: keep the text, mark the bad bytes
        text = data.decode(codec, errors="replace")
        label += replaced_note(e.start)
    at = text.find("\x00")  # the sample had none, but the binary check saw only the first 256 KB
    if at >= 0:
        raise nul_error(path, _nul_offset(data, text, at, codec, _BOM_BYTES.get(codec, 0)))
    text = normalize_newlines(text[1:] if text.startswith("\ufeff") else text)
    if not text.strip():
        what = "empty" if not text else "only whitespace"
        raise BlankTextError(
            f"{path} is {what}: there is no text to learn from. Choose a file with some text."
        )
    return text, label


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


def stream_file(
    path: Path, chunk_chars: int, blank_ok: bool = False, replaced: list[int] | None = None
) -> Iterator[tuple[str, int]]:
    """(text, bytes consumed) pieces of one file; a blank file yields nothing (``blank_ok``) or is refused.

    Each piece is checked as it is decoded: a NUL character anywhere is refused (naming its byte
    offset), bytes that do not decode become U+FFFD and the first one's offset goes into ``replaced``.
    """
    if blank_ok and file_size(path) == 0:
        return
    codec = detect_encoding(read_bytes(path, SAMPLE_BYTES), path, complete=file_size(path) <= SAMPLE_BYTES)
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    position = 0  # bytes read so far
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
            state = decoder.getstate()
            text_start = position - len(state[0]) + (_BOM_BYTES.get(codec, 0) if position == 0 else 0)
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:  # from here on, bad bytes become U+FFFD
                if replaced is not None:
                    replaced.append(position - len(state[0]) + e.start)
                decoder.setstate(state)
                decoder.errors = "replace"
                text = decoder.decode(raw, final=not raw)
            at = text.find("\x00")
            if at >= 0:
                raise nul_error(path, position + _nul_offset(raw, text, at, codec, text_start - position))
            position += len(raw)
            text = held_cr + text
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
