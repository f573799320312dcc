"""Text as tokenizers see it: where a text can be cut without changing its tokens, how a token reads on
screen, GPT-2's byte alphabet, and the characters HF cannot take.

Cutting matters because long texts are encoded in pieces (on both cores, in bounded memory): a cut is safe
only where encoding the two sides apart gives the same tokens as encoding the whole, for every kind.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache

UNK = "\ufffd"  # the unknown token of char and word tokenizers, id 0: the Unicode replacement character
PIECE_CHARS = 1 << 16  # texts are cut into pieces of about this size for parallel HF calls
_VISIBLE_SPECIAL = {"\n": "\\n", "\t": "\\t", "\r": "\\r", " ": "␣"}


@cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, as HF's ByteLevel uses it."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@cache
def unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_unicode().items()}


def display(piece: str) -> str:
    """How a token reads in the UI: newline as ``\\n``, space as ``␣``, other controls escaped."""
    out = []
    for c in piece:
        if c in _VISIBLE_SPECIAL:
            out.append(_VISIBLE_SPECIAL[c])
        elif c.isprintable():
            out.append(c)
        else:
            out.append(f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")
    return "".join(out)


def safe_cut(text: str, end: int) -> int:
    """The largest cut ``0 < i <= end`` at which encoding ``text[:i]`` and ``text[i:]`` separately gives
    the same tokens as encoding ``text`` whole, for every kind; 0 if there is none.

    Safe cuts: just after a single newline between two visible characters (``x\\n|y``), or else just
    before a single space between two visible characters (``x| y``). Both are boundaries of the
    word pattern and of GPT-2's pre-tokenizer regex whatever surrounds them; cutting inside a run of
    whitespace is not (``\\s+(?!\\S)`` matches differently at the end of a string).
    """
    end = min(end, len(text) - 1)
    for sep, offset in (("\n", 1), (" ", 0)):
        j = text.rfind(sep, 1, end + 1 - offset)
        while j > 0:
            if j + 1 < len(text) and not text[j - 1].isspace() and not text[j + 1].isspace():
                return j + offset
            j = text.rfind(sep, 1, j)
    return 0


def safe_pieces(text: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """``text`` in pieces of about ``size`` characters, cut only where tokens are unaffected."""
    start = 0
    while len(text) - start > size:
        cut = safe_cut(text[start : start + 4 * size], size)
        if cut == 0:  # no safe cut near: look further, up to 4 sizes, then give up on parallelism
            cut = safe_cut(text[start : start + 4 * size], 4 * size) or len(text) - start
        yield text[start : start + cut]
        start += cut
    if start < len(text):
        yield text[start:]


_SURROGATE = re.compile("[\ud800-\udfff]")


def scrub(text: str) -> str:
    """Lone surrogates cannot reach HF (not valid UTF-8); each becomes U+FFFD instead of raising."""
    return _SURROGATE.sub(UNK, text)
