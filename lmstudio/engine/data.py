"""Token data: a corpus encoded once into a cached, memory-mapped id array; the split; random batches.

The cache lives in ``cache_dir`` (default ``$LMSTUDIO_CACHE`` or ``~/.lmstudio/cache``): for each
(corpus, tokenizer) pair a raw ``<key>.bin`` of uint16 ids (uint32 when the vocabulary has more than
65,536 tokens) and a ``<key>.json`` sidecar with its length, dtype, character count and the two hashes
it was built from. The sidecar is written last, so a cache without one was never finished; on load the
file size must match the sidecar, else the cache is rebuilt: a truncated or stale cache is never used.
Encoding streams the text in chunks cut where tokens are unaffected (see ``token_text.safe_cut``),
so memory is bounded by the chunk size, not the corpus size.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from lmstudio.engine.corpus import (
    CorpusError,
    check_length,
    corpus_bytes,
    corpus_fingerprint,
    iter_chunks_with_progress,
    iter_corpus_chunks,
    read_corpus,
    split_sizes,
)
from lmstudio.engine.script import convert as convert_script
from lmstudio.engine.token_text import safe_cut, safe_pieces
from lmstudio.engine.tokenizer import Tokenizer, train_tokenizer
from lmstudio.runfolder import default_cache_dir

if TYPE_CHECKING:
    from lmstudio.engine.split_stats import SplitStats

CACHE_VERSION = 1
CHUNK_CHARS = 1 << 20
STREAM_BYTES = 64 << 20  # corpora larger than this are streamed instead of read whole


class Cancelled(CorpusError):
    """Raised when the ``cancel`` event is set while data is being prepared; nothing is left behind."""

    def __init__(self, message: str = "Preparing the data was cancelled."):
        super().__init__(message)


def ids_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (ids 0..65535), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


# ---- the cache ----------------------------------------------------------------------------------


def encode_to_cache(
    text: str | None,
    tokenizer: Tokenizer,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
    *,
    source: str | None = None,
    chunk_chars: int = CHUNK_CHARS,
    script: str = "as-is",
) -> np.memmap:
    """The ids of ``text`` (or, with ``text=None``, of the corpus ``source`` streamed from disk) as a
    read-only memmap, encoded once and cached. The array has an ``n_chars`` attribute (characters encoded).

    ``progress(fraction)`` is called as chunks are written; when ``cancel`` is set, the partial file is
    removed and ``Cancelled`` is raised. ``script`` converts a streamed ``source`` chunk by chunk
    (``text`` is given already converted).
    """
    if (text is None) == (source is None):
        raise ValueError("give exactly one of text and source")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    corpus_hash = (
        hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        if text is not None
        else "file:" + corpus_fingerprint(cast(str, source)) + ("" if script == "as-is" else f":{script}")
    )
    token_hash = tokenizer.fingerprint()
    key = hashlib.sha256(f"{CACHE_VERSION}\0{corpus_hash}\0{token_hash}".encode()).hexdigest()[:24]
    bin_path, meta_path = cache / f"{key}.bin", cache / f"{key}.json"
    dtype = ids_dtype(tokenizer.vocab_size)
    expected = {"version": CACHE_VERSION, "corpus": corpus_hash, "tokenizer": token_hash, "dtype": dtype.name}

    cached = _open_cached(bin_path, meta_path, expected)
    if cached is not None:
        if progress:
            progress(1.0)
        return cached

    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CorpusError(
            f"Cannot create the data cache folder {cache}: {e.strerror or e}. "
            "Set LMSTUDIO_CACHE to a writable folder."
        ) from None
    chunks = (
        _text_chunks(text, chunk_chars)
        if text is not None
        else _rechunk(
            (
                (convert_script(c, script), f)
                for c, f in iter_chunks_with_progress(cast(str, source), chunk_chars)
            ),
            chunk_chars,
        )
    )
    tmp = cache / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    length = n_chars = 0
    try:
        with open(tmp, "wb") as f:
            for piece, fraction in chunks:
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                ids = tokenizer.encode_array(piece)
                f.write(ids.astype(dtype, copy=False).tobytes())
                length += len(ids)
                n_chars += len(piece)
                if progress:
                    progress(fraction)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, bin_path)
        meta = {**expected, "length": length, "chars": n_chars}
        meta_tmp = tmp.with_suffix(".json.tmp")
        meta_tmp.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(meta_tmp, meta_path)
    except OSError as e:
        raise CorpusError(
            f"Cannot write the data cache in {cache}: {e.strerror or e}. Free some disk space "
            "or set LMSTUDIO_CACHE to another folder."
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    cached = _open_cached(bin_path, meta_path, expected)
    if cached is None:  # only if someone removed it between our write and read
        raise CorpusError(f"The data cache in {cache} changed while it was being written. Try again.")
    if progress:
        progress(1.0)
    return cached


def _open_cached(bin_path: Path, meta_path: Path, expected: dict) -> np.memmap | None:
    """The cached ids if the sidecar matches and the file has exactly the recorded size, else None."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        size = bin_path.stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expected.items()):
        return None
    length, dtype = meta.get("length"), np.dtype(expected["dtype"])
    if not isinstance(length, int) or length <= 0 or size != length * dtype.itemsize:
        return None
    ids = np.memmap(bin_path, dtype=dtype, mode="r", shape=(length,))
    setattr(ids, "n_chars", int(meta.get("chars", length)))  # noqa: B010 - numpy declares no such field
    return ids


def _text_chunks(text: str, chunk_chars: int) -> Iterator[tuple[str, float]]:
    done = 0
    for piece in safe_pieces(text, chunk_chars):
        done += len(piece)
        yield piece, done / max(1, len(text))


def _rechunk(stream: Iterator[tuple[str, float]], chunk_chars: int) -> Iterator[tuple[str, float]]:
    """Re-cut streamed text at safe cuts so chunked encoding equals encoding the whole text.

    Text with no safe cut in 8 chunks (one enormous line of dense text) is cut anyway; tokens may then
    differ from a whole-text encoding right at that cut.
    """
    carry = ""
    fraction = 0.0
    for chunk, fraction in stream:
        buf = carry + chunk
        cut = safe_cut(buf, len(buf))
        if cut == 0:
            if len(buf) < 8 * chunk_chars:
                carry = buf
                continue
            cut = len(buf)
        carry = buf[cut:]
        yield buf[:cut], fraction
    if carry:
        yield carry, fraction


# ---- split and batches ----------------------------------------------------------------------------


class TokenData:
    """Ids split into training (the first part) and validation (the last ``val_fraction``, as nanoGPT)."""

    def __init__(
        self, ids: np.ndarray, val_fraction: float = 0.1, n_chars: int | None = None, tokenizer=None
    ):
        self.ids = ids
        self.tokenizer = tokenizer
        self.val_fraction = val_fraction
        n_train, _ = split_sizes(len(ids), val_fraction)
        self.train = ids[:n_train]
        self.val = ids[n_train:]
        # characters per token, for bits per character; without a count we assume one (char level)
        self.n_chars = n_chars if n_chars is not None else getattr(ids, "n_chars", len(ids))
        self.chars_per_token = self.n_chars / max(1, len(ids))
        self._stats: dict[str, SplitStats] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def stats(self):
        """{"train", "val"}: :class:`~lmstudio.engine.split_stats.SplitStats` (tokens, ``<unk>``, characters),
        counted once; None without a tokenizer."""
        if self._stats is None and self.tokenizer is not None:
            from lmstudio.engine.split_stats import split_stats

            self._stats = split_stats(self.tokenizer, self.train, self.val, self.n_chars)
        return self._stats

    @property
    def val_chars_per_token(self) -> float:
        """Characters per token of the validation split (what bits per character divide by)."""
        return self.stats["val"].chars_per_token if self.stats else self.chars_per_token


class Batcher:
    """Random windows of ``block_size + 1`` tokens: x is the first ``block_size``, y the same shifted by one.

    Each split draws offsets from its own seeded ``torch.Generator``, so evaluation never shifts the
    training batches, and ``state_dict()`` / ``load_state_dict()`` make a resumed run draw the very
    batches the uninterrupted run would have drawn.

    With ``world_size`` > 1 (one process of a distributed run, ``distributed.py``) every rank draws the
    same ``batch_size`` offsets and keeps rows ``rank * b`` to ``(rank + 1) * b`` (``b = batch_size /
    world_size``): the ranks together see exactly the batch one process would, and the generator state
    is the same on every rank, so it resumes on any number of ranks.
    """

    def __init__(
        self,
        data: TokenData,
        batch_size: int,
        block_size: int,
        seed: int = 1337,
        *,
        rank: int = 0,
        world_size: int = 1,
    ):
        check_length(len(data), block_size, data.val_fraction)
        for name, arr in (("training", data.train), ("validation", data.val)):
            if len(arr) < block_size + 1:
                raise CorpusError(
                    f"The {name} part has {len(arr)} tokens, fewer than a context of {block_size} "
                    "plus one. Use a longer text or a shorter context."
                )
        if batch_size % world_size:
            raise ValueError(f"a batch of {batch_size} does not split over {world_size} ranks")
        self.data, self.batch_size, self.block_size, self.seed = data, batch_size, block_size, seed
        per_rank = batch_size // world_size
        self._rows = slice(rank * per_rank, (rank + 1) * per_rank) if world_size > 1 else slice(None)
        self._gens = {
            "train": torch.Generator().manual_seed(seed),
            "val": torch.Generator().manual_seed(seed + 1),
        }
        self._offsets = np.arange(block_size + 1)

    def get(
        self, split: str = "train", device: str | torch.device = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), each int64 (B, T) on ``device``; y[:, t] is the token after x[:, t]."""
        arr = self.data.train if split == "train" else self.data.val
        ix = torch.randint(len(arr) - self.block_size, (self.batch_size,), generator=self._gens[split])
        ix = ix[self._rows]  # this rank's rows of the global batch (all of them in one process)
        # one fancy-indexed gather from the memmap instead of B slices
        window = torch.from_numpy(
            np.asarray(arr[ix.numpy()[:, None] + self._offsets]).astype(np.int64)
        )  # (B, T+1)
        x, y = window[:, :-1].contiguous(), window[:, 1:].contiguous()  # (B, T), (B, T)
        device = torch.device(device)
        if device.type == "cuda":
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.to(device), y.to(device)

    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "train": self._gens["train"].get_state(),
            "val": self._gens["val"].get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for split in ("train", "val"):
            self._gens[split].set_state(state[split])


# ---- all of it ---------------------------------------------------------------------------------


def prepare_data(
    cfg,
    tokenizer: Tokenizer | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[Tokenizer, TokenData]:
    """Read the corpus of ``cfg`` (a RunConfig), train its tokenizer unless one is given, encode through
    the cache, check the length against the context and split. Corpora above ``STREAM_BYTES`` on disk
    are streamed, never held whole in memory."""
    source = cfg.corpus.source
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    script = getattr(cfg.tokenizer, "script", "as-is")
    if corpus_bytes(source) > STREAM_BYTES:
        if tokenizer is None:
            chunks = _until((convert_script(c, script) for c in iter_corpus_chunks(source)), cancel)
            tokenizer = _interruptible(lambda: train_tokenizer(cfg.tokenizer, chunks), cancel)
        text = None
    else:
        text = convert_script(read_corpus(source), script)
        if tokenizer is None:
            tokenizer = _interruptible(lambda: train_tokenizer(cfg.tokenizer, text), cancel)
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    ids = encode_to_cache(
        text,
        tokenizer,
        cache_dir,
        progress,
        cancel,
        source=None if text is not None else source,
        script=script,
    )
    check_length(len(ids), cfg.model.block_size, cfg.corpus.val_fraction)
    return tokenizer, TokenData(ids, cfg.corpus.val_fraction, tokenizer=tokenizer)


def _interruptible(work: Callable[[], Tokenizer], cancel: threading.Event | None) -> Tokenizer:
    """Run ``work`` (HF tokenizer training: minutes of native code on a big corpus, which never looks at a
    flag) on a helper thread and wait in short slices, so a stop (Ctrl-C, the Stop button) is honoured
    within a tenth of a second. HF releases the GIL while it trains, so the waiting thread does run; the
    abandoned training finishes on its own daemon thread and its result is dropped."""
    if cancel is None:
        return work()
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = e

    helper = threading.Thread(target=run, name="lmstudio-tokenizer-training", daemon=True)
    helper.start()
    while helper.is_alive():
        helper.join(0.1)
        if cancel.is_set():
            raise Cancelled()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _until(chunks: Iterator[str], cancel: threading.Event | None) -> Iterator[str]:
    for chunk in chunks:
        if cancel is not None and cancel.is_set():
            return
        yield chunk
