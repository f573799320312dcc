"""What each split of the token data holds: tokens, unknown tokens, characters.

Bits per character divide the validation loss by the validation split's own characters per token (a
split's text can be denser or sparser than the corpus as a whole, and the ratio enters the figure
directly), and the
share of ``<unk>`` tokens says whether a loss can be compared with a run that has none: an unknown
token lumps every rare character or word into one easy prediction.

Characters are counted from the ids, without the text: a char token is one character (the unknown
token too: it stands for one unseen character), a byte-level BPE token holds as many characters as it
has bytes that start one (a character split across tokens counts where its first byte is), a word
token as many as the word. The one count the ids cannot give is the length of the unknown *words*
of a word tokenizer: those are estimated from the corpus's total (characters encoded minus characters
of known tokens, shared out evenly over the unknown tokens), and :attr:`SplitStats.chars_estimated`
says so. Counting runs in chunks, so a memory-mapped split of any size needs little memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNK_WARN_SHARE = 0.01  # above this share of <unk> tokens, losses are not comparable with a run without
_CHUNK = 1 << 24


@dataclass(frozen=True)
class SplitStats:
    tokens: int
    unk: int  # tokens that are the unknown token (0 for BPE, which has none)
    chars: float  # characters of the split's text
    chars_estimated: bool  # True when unknown words of a word tokenizer made ``chars`` an estimate

    @property
    def unk_share(self) -> float:
        return self.unk / self.tokens if self.tokens else 0.0

    @property
    def chars_per_token(self) -> float:
        return self.chars / self.tokens if self.tokens else 1.0


def char_lengths(tokenizer) -> np.ndarray:
    """Characters each token id stands for (float64, one per id); the unknown token of a word
    tokenizer gets 0 here (its length is not known from the id)."""
    kind = tokenizer.kind
    n = tokenizer.vocab_size
    if kind == "char":
        return np.ones(n)
    if kind == "bpe":
        # bytes that are not UTF-8 continuation bytes (10xxxxxx) start a character
        return np.array([sum((b & 0xC0) != 0x80 for b in tokenizer.token_bytes(i)) for i in range(n)], float)
    lengths = np.array([len(tokenizer.decode([i])) for i in range(n)], float)
    if tokenizer.unk_id is not None:
        lengths[tokenizer.unk_id] = 0.0
    return lengths


def _counts(ids: np.ndarray, n: int) -> np.ndarray:
    counts = np.zeros(n, dtype=np.int64)
    for start in range(0, len(ids), _CHUNK):
        chunk = np.asarray(ids[start : start + _CHUNK])
        counts += np.bincount(chunk, minlength=n)[:n]
    return counts


def split_stats(tokenizer, train: np.ndarray, val: np.ndarray, total_chars: int) -> dict[str, SplitStats]:
    """Stats of the ``train`` and ``val`` id arrays; ``total_chars`` is the characters of both together
    (the encoded corpus), used only for the length of a word tokenizer's unknown words."""
    n = tokenizer.vocab_size
    lengths = char_lengths(tokenizer)
    counts = {"train": _counts(train, n), "val": _counts(val, n)}
    unk = tokenizer.unk_id
    n_unk = {k: int(c[unk]) if unk is not None else 0 for k, c in counts.items()}
    known = {k: float(c @ lengths) for k, c in counts.items()}
    per_unk = 0.0
    estimated = tokenizer.kind == "word" and sum(n_unk.values()) > 0
    if estimated:
        per_unk = max(0.0, total_chars - sum(known.values())) / sum(n_unk.values())
    return {
        k: SplitStats(
            tokens=int(counts[k].sum()),
            unk=n_unk[k],
            chars=known[k] + n_unk[k] * per_unk,
            chars_estimated=estimated and n_unk[k] > 0,
        )
        for k in counts
    }


def unk_warning(stats: dict[str, SplitStats]) -> str:
    """A sentence for the user when more than 1% of a split's tokens are unknown, else ''."""
    share = max(s.unk_share for s in stats.values())
    if share <= UNK_WARN_SHARE:
        return ""
    return (
        f"{stats['train'].unk_share:.1%} of the training and {stats['val'].unk_share:.1%} of the "
        "validation tokens are <unk> (characters or words outside the vocabulary): loss, perplexity "
        "and bits per character are not comparable with a run without unknown tokens. Raise the "
        "vocabulary size or use BPE, which has no unknown token."
    )
