"""Tokenizers: character, word and byte-level BPE behind one interface, saved as HF ``tokenizer.json``.

Every kind is an HF ``tokenizers.Tokenizer`` underneath, so ``tokenizers.Tokenizer.from_file`` alone
loads what we save and gives the same ids. The kinds:

* ``char``: one token per Unicode code point. Stored as a WordLevel model over single characters
  with a pre-tokenizer that isolates every character (``[\\s\\S]``: Oniguruma has no ``(?s)``) and a
  Fuse decoder. Encoding does not go through HF: a numpy lookup table over code points gives the
  same ids some 20x faster.
* ``word``: a WordLevel model over "words": runs of letters, digits and marks; Chinese words as jieba
  segments them (:mod:`lmstudio.engine.segment`; a word outside the vocabulary falls back to its
  characters); each kana on its own; each punctuation mark or symbol on its own; each run of
  whitespace as one token. Whitespace is kept, so ``decode(encode(t)) == t`` whenever every word (or,
  for Chinese, every character of an unknown word) is in the vocabulary. HF's pre-tokenizer keeps a
  run of Han characters whole; lmstudio cuts it into words first, so a program reading our
  ``tokenizer.json`` with HF alone gets the same ids for text without Chinese only. Word tokenizers
  saved before segmentation (one token per Han character) load and work as they did.
* ``bpe``: byte-level BPE (GPT-2 style) trained to a chosen vocabulary size. Every byte is in the
  vocabulary, so any text round-trips exactly.

Unseen text: id 0 of ``char`` and ``word`` is U+FFFD, the Unicode replacement character, used as the
unknown token. A character (or word) never seen in training encodes to 0 and decodes to U+FFFD, so a
prompt with new characters never raises; the replacement character itself also maps to 0. BPE has no
unknown token. Ids outside the vocabulary decode to U+FFFD.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from lmstudio import safe_read
from lmstudio.engine.segment import has_han, is_han_run
from lmstudio.engine.segment import pieces as segment_pieces
from lmstudio.engine.token_text import PIECE_CHARS, UNK, display, safe_pieces, scrub, unicode_to_byte
from lmstudio.errors import UserError

CHAR_PATTERN = r"[\s\S]"
# a CJK ideograph or kana alone | a run of other non-space, non-punctuation characters (letters,
# digits, marks) | a run of whitespace | one punctuation mark or symbol
WORD_PATTERN_PER_CHAR = (
    r"\p{Han}|[\p{Hiragana}\p{Katakana}]|[^\s\p{P}\p{S}\p{Han}\p{Hiragana}\p{Katakana}]+"
    r"|\s+|[\p{P}\p{S}]"
)
# the same with a run of Han kept whole: lmstudio hands HF one jieba word at a time
WORD_PATTERN = (
    r"\p{Han}+|[\p{Hiragana}\p{Katakana}]|[^\s\p{P}\p{S}\p{Han}\p{Hiragana}\p{Katakana}]+"
    r"|\s+|[\p{P}\p{S}]"
)


class TokenizerError(UserError):
    """A tokenizer cannot be trained or loaded; the message says why and what to do."""


class Tokenizer:
    """One tokenizer of any kind; see the module docstring for what each kind does."""

    def __init__(self, hf: HFTokenizer, kind: str, segmented: bool = False):
        self._hf = hf
        self.kind = kind
        self.segmented = kind == "word" and segmented  # Chinese cut into words by jieba first
        vocab = hf.get_vocab(with_added_tokens=True)
        self._vocab = vocab
        self._tokens: list[str] = [""] * (max(vocab.values(), default=-1) + 1)
        for token, i in vocab.items():
            self._tokens[i] = token
        if kind == "bpe":
            to_byte = unicode_to_byte()
            try:
                self._bytes = [bytes(to_byte[c] for c in t) for t in self._tokens]
            except KeyError:
                raise TokenizerError(
                    "This BPE tokenizer is not byte-level (its tokens are not GPT-2 byte "
                    "symbols); lmstudio reads the byte-level BPE it trains."
                ) from None
            self._text = [b.decode("utf-8", "replace") for b in self._bytes]
        else:
            self._bytes = [t.encode("utf-8") for t in self._tokens]
            self._text = list(self._tokens)
        if kind == "char":
            # code point -> id; the last entry catches every code point beyond the table (unknown)
            top = max((ord(t) for t in self._tokens if len(t) == 1), default=0)
            self._lut = np.zeros(top + 2, dtype=np.int64)
            for i, t in enumerate(self._tokens):
                if len(t) == 1:
                    self._lut[ord(t)] = i

    # ---- the interface --------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def unk_id(self) -> int | None:
        """The unknown token's id (0 for char and word), or None for BPE, which has none."""
        return None if self.kind == "bpe" else 0

    def is_unk(self, token_id: int) -> bool:
        return self.kind != "bpe" and token_id == 0

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Token ids as an int64 array (the fast path data preparation uses)."""
        if self.kind == "char":
            points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
            return self._lut[np.minimum(points, len(self._lut) - 1)]
        if self.segmented and has_han(text):
            text = scrub(text)
            encodings = self._hf.encode_batch(
                [self.words(p) for p in safe_pieces(text)], is_pretokenized=True, add_special_tokens=False
            )
            return np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings])
        try:
            if len(text) <= PIECE_CHARS:
                return np.asarray(self._hf.encode(text, add_special_tokens=False).ids, dtype=np.int64)
            # encode_batch_fast (tokenizers >= 0.20) skips offsets: ~20% faster, same ids
            batch = getattr(self._hf, "encode_batch_fast", self._hf.encode_batch)
            encodings = batch(list(safe_pieces(text)), add_special_tokens=False)
        except (UnicodeEncodeError, TypeError):
            if isinstance(text, str) and scrub(text) != text:
                return self.encode_array(scrub(text))
            raise
        if not encodings:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings])

    def words(self, text: str) -> list[str]:
        """``text`` cut into jieba words (a Chinese word outside the vocabulary: its characters) and the
        runs between them, for HF's pre-tokenizer to split further; concatenating to ``text``."""
        out: list[str] = []
        for piece in segment_pieces(text):
            if len(piece) > 1 and piece not in self._vocab and is_han_run(piece):
                out.extend(piece)
            else:
                out.append(piece)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        n = len(self._tokens)
        if self.kind == "bpe":
            return b"".join(self._bytes[i] if 0 <= i < n else UNK.encode() for i in map(int, ids)).decode(
                "utf-8", "replace"
            )
        return "".join(self._tokens[i] if 0 <= i < n else UNK for i in map(int, ids))

    def token_bytes(self, i: int) -> bytes:
        """The UTF-8 bytes token ``i`` stands for (for BPE possibly part of a character)."""
        return self._bytes[i] if 0 <= i < len(self._bytes) else UNK.encode()

    def id_to_token(self, i: int) -> str:
        """Display form: ``<unk>`` for the unknown token, whitespace made visible, BPE bytes as text
        (a token holding part of a multi-byte character shows its bytes as ``\\xe5``)."""
        if not 0 <= i < len(self._tokens):
            return "<out of range>"
        if self.kind != "bpe" and i == 0:
            return "<unk>"
        if self.kind == "bpe":
            try:
                return display(self._bytes[i].decode("utf-8"))
            except UnicodeDecodeError:
                return display(self._bytes[i].decode("utf-8", "backslashreplace"))
        return display(self._tokens[i])

    def vocab(self) -> list[tuple[str, int]]:
        return [(self.id_to_token(i), i) for i in range(len(self._tokens))]

    def split(self, text: str) -> list[tuple[str, int]]:
        """(piece, id) pairs whose pieces concatenate to ``text``.

        Unknown characters or words keep their own text as the piece (with id 0). For BPE, a character
        whose bytes span several tokens belongs to the token that completes it; the tokens before it
        get an empty piece.
        """
        if self.kind == "char":
            return list(zip(text, self.encode_array(text).tolist(), strict=True))
        if self.kind == "word" and self.segmented and has_han(text):
            words = self.words(scrub(text))
            enc = self._hf.encode(words, is_pretokenized=True, add_special_tokens=False)
            pieces = [
                (words[w][s:e] if w is not None else "", i)
                for (s, e), i, w in zip(enc.offsets, enc.ids, enc.word_ids, strict=True)
            ]
            if "".join(p for p, _ in pieces) == text:
                return pieces
        elif self.kind == "word":
            enc = self._hf.encode(scrub(text), add_special_tokens=False)
            pieces = [(text[s:e], i) for (s, e), i in zip(enc.offsets, enc.ids, strict=True)]
            if "".join(p for p, _ in pieces) == text:
                return pieces
        import codecs

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        ids = self.encode(text)
        pieces = [(decoder.decode(self._bytes[i]), i) for i in ids]
        tail = decoder.decode(b"", final=True)
        if tail and pieces:
            pieces[-1] = (pieces[-1][0] + tail, pieces[-1][1])
        return pieces

    # ---- files ----------------------------------------------------------------------------
    def to_str(self) -> str:
        return self._hf.to_str()

    def save(self, path: str | os.PathLike) -> None:
        """Write HF ``tokenizer.json`` (atomically: a temporary file renamed into place)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(self._hf.to_str(pretty=True), encoding="utf-8")
            os.replace(tmp, path)
        except BaseException:  # a full disk mid-write: leave no half file behind
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        try:
            text = safe_read.read_text(path, safe_read.MAX_TOKENIZER_BYTES)
        except (OSError, safe_read.FileRefused) as e:
            raise TokenizerError(
                f"Cannot read the tokenizer file {path}: {e}. The run folder may be incomplete; train again."
            ) from None
        return cls.from_str(text, str(path))

    @classmethod
    def from_str(cls, text: str, where: str = "the tokenizer") -> Tokenizer:
        try:
            spec = safe_read.loads_json(text, safe_read.MAX_TOKENIZER_DEPTH, where)
            if not isinstance(spec, dict) or not isinstance(spec.get("model") or {}, dict):
                raise TokenizerError(f"{where} is not a valid tokenizer.json (not an object with a model).")
            _check_ids(spec, where)  # before HF allocates tables sized by the largest id
            hf = HFTokenizer.from_str(text)
        except TokenizerError:
            raise
        except Exception as e:  # HF raises plain Exception for malformed JSON
            raise TokenizerError(f"{where} is not a valid tokenizer.json ({e}).") from None
        model = (spec.get("model") or {}).get("type")
        if model == "BPE":
            return cls(hf, "bpe")
        if model == "WordLevel":
            pattern = ((spec.get("pre_tokenizer") or {}).get("pattern") or {}).get("Regex")
            if pattern == CHAR_PATTERN:
                return cls(hf, "char")
            return cls(hf, "word", segmented=pattern == WORD_PATTERN)
        raise TokenizerError(f"{where} uses a {model} model; lmstudio reads char, word and BPE tokenizers.")

    def fingerprint(self) -> str:
        """Stable hash of the tokenizer's JSON: equal fingerprints, equal ids."""
        return hashlib.sha256(self._hf.to_str().encode("utf-8")).hexdigest()[:32]

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


def _check_ids(spec: dict, where: str) -> None:
    """Every token id a whole number below the vocabulary's size, none used twice: a single id of
    500,000,000 in a 34 KB file would otherwise make HF (and the model) allocate tables that large."""
    vocab = (spec.get("model") or {}).get("vocab")
    added = spec.get("added_tokens") or []
    if not isinstance(vocab, dict) or not isinstance(added, list):
        raise TokenizerError(f"{where} is not a valid tokenizer.json (its vocabulary is not a table).")
    ids = list(vocab.values()) + [t.get("id") if isinstance(t, dict) else None for t in added]
    size = len(vocab) + sum(1 for t in added if isinstance(t, dict) and t.get("content") not in vocab)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < max(size, 1):
            raise TokenizerError(
                f"{where} has a token id {str(i)[:40]} outside its vocabulary of {size} tokens; "
                "the file is damaged or not from lmstudio."
            )
    if len(set(vocab.values())) != len(vocab):
        raise TokenizerError(f"{where} gives two tokens the same id; the file is damaged.")


# ---- training ---------------------------------------------------------------------------------


def _word_level(vocab: dict[str, int], pattern: str) -> HFTokenizer:
    hf = HFTokenizer(models.WordLevel(vocab, unk_token=UNK))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    hf.decoder = decoders.Fuse()
    return hf


def _chunks(text: str | Iterable[str]) -> Iterator[str]:
    """Text (or a stream of text) in safe pieces, so HF can count them on both cores."""
    for chunk in [text] if isinstance(text, str) else text:
        yield from safe_pieces(scrub(chunk))


def _segmented_chunks(text: str | Iterable[str]) -> Iterator[str]:
    """The chunks for the word trainer, each Chinese word a string of its own (HF's pattern keeps a
    Han run whole, so a word stays one token). The characters of a longer word are counted as well,
    so that a word left out of the vocabulary can fall back to characters that are in it."""
    for chunk in _chunks(text):
        if has_han(chunk):
            for piece in segment_pieces(chunk):
                yield piece
                if len(piece) > 1 and is_han_run(piece):
                    yield from piece
        else:
            yield chunk


def train_tokenizer(cfg, text: str | Iterable[str]) -> Tokenizer:
    """Train the tokenizer ``cfg`` (a TokenizerConfig) describes on ``text`` (a string or an iterable of
    strings, e.g. ``corpus.iter_corpus_chunks``, for corpora too big to hold)."""
    kind = cfg.kind
    if kind == "char":
        alphabet: set[str] = set()
        for chunk in [text] if isinstance(text, str) else text:
            alphabet.update(scrub(chunk))
        alphabet.discard(UNK)
        if not alphabet:
            raise TokenizerError(
                "There is no text to build a vocabulary from. Choose a corpus with some text."
            )
        vocab = {UNK: 0} | {c: i for i, c in enumerate(sorted(alphabet), start=1)}
        return Tokenizer(_word_level(vocab, CHAR_PATTERN), "char")
    if kind == "word":
        counter = _word_level({UNK: 0}, WORD_PATTERN)
        trainer: trainers.Trainer = trainers.WordLevelTrainer(
            vocab_size=max(1, cfg.vocab_size - 1),
            min_frequency=cfg.min_frequency,
            show_progress=False,
            special_tokens=[],
        )
        counter.train_from_iterator(_segmented_chunks(text), trainer)
        # the trainer orders words by frequency; keep that order after the unknown token
        words = [w for w, _ in sorted(counter.get_vocab().items(), key=lambda kv: kv[1]) if w != UNK]
        if not words:
            raise TokenizerError(
                "No word occurs often enough to enter the vocabulary. Choose a longer corpus "
                "or lower tokenizer.min_frequency."
            )
        vocab = {UNK: 0} | {w: i for i, w in enumerate(words, start=1)}
        return Tokenizer(_word_level(vocab, WORD_PATTERN), "word", segmented=True)
    if kind == "bpe":
        if cfg.vocab_size < 256:
            raise TokenizerError(
                f"A byte-level BPE vocabulary needs at least 256 tokens (one per byte); "
                f"{cfg.vocab_size} was asked. Raise tokenizer.vocab_size, or use the char tokenizer."
            )
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            show_progress=False,
            special_tokens=[],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        hf.train_from_iterator(_chunks(text), trainer)
        return Tokenizer(hf, "bpe")
    raise TokenizerError(f"Unknown tokenizer kind {kind!r}; choose char, word or bpe.")


def token_frequencies(tokenizer: Tokenizer, ids: np.ndarray) -> np.ndarray:
    """How often each id occurs in ``ids``: an int64 array of length ``vocab_size``."""
    counts = np.bincount(np.asarray(ids).ravel(), minlength=tokenizer.vocab_size)
    return counts[: tokenizer.vocab_size].astype(np.int64, copy=False)
