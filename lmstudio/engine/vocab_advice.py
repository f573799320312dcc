"""Advice for the tokenizer form: a vocabulary size that fits the corpus, and warnings worth reading.

Byte-level BPE starts from 256 byte tokens. English needs few more to reach whole words, but a corpus
with thousands of distinct characters (Chinese: tang300 has 2,657) does not fit in 1,000 tokens: most
characters stay split into 2 or 3 byte tokens, and the text becomes *more* tokens than characters
(tang300 at 1,000: 0.81 characters per token, where the character tokenizer has exactly 1). So for such
text we suggest at least twice the distinct characters (room for every character and about as many
merges into words), rounded up to a multiple of 500; for text with at most 256 distinct characters the
default 1,000 is a fine start. A rule of thumb, not a measurement: the warnings below say what the
built tokenizer actually does.
"""

from __future__ import annotations

import math

from lmstudio.engine.split_stats import SplitStats, unk_warning

DEFAULT_BPE = 1000


def suggested_vocab_size(kind: str, distinct_chars: int, distinct_words: int | None = None) -> int | None:
    """A vocabulary size for ``kind`` on a corpus with ``distinct_chars`` characters (None: no advice)."""
    if kind == "bpe":
        if distinct_chars <= 256:
            return DEFAULT_BPE
        return max(DEFAULT_BPE, int(math.ceil(2 * distinct_chars / 500) * 500))
    if kind == "word" and distinct_words:
        return distinct_words + 1  # every word plus the unknown token: no <unk> in the corpus
    return None


def warnings(
    kind: str, vocab_size: int, chars_per_token: float, distinct_chars: int, stats: dict[str, SplitStats]
) -> list[str]:
    """Sentences for the user about the tokenizer just built (empty when all is well)."""
    out = []
    if kind == "bpe" and chars_per_token < 1.0:
        suggested = suggested_vocab_size(kind, distinct_chars)
        out.append(
            f"BPE with {vocab_size:,} tokens gives {chars_per_token:.2f} characters per token: more tokens "
            f"than the character tokenizer (1.00), because the corpus's {distinct_chars:,} distinct "
            "characters do not fit in the vocabulary and most are split into 2-3 byte tokens. "
            f"Try a vocabulary of about {suggested:,}, or the char tokenizer."
        )
    unk = unk_warning(stats)
    if unk:
        out.append(unk)
    return out
