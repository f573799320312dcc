"""A 2-D map of a model's token embeddings: PCA coordinates, token kinds, frequencies, cosine neighbours.

PCA is numpy's SVD of the centred embedding matrix (no extra dependency). Each component's sign is fixed
(its loading's largest entry is positive), so maps of successive checkpoints do not flip at random.
Tied models (the Transformer's ``tie_weights``, a recurrent model whose sizes allow it) have one matrix
for input and output; untied ones offer the input embedding (``wte``) and the output head's rows.
Everything returned is numpy or plain Python.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np
import torch

from lmstudio.engine.inspect import InspectError

KINDS = ("letter", "digit", "space", "punctuation", "CJK", "byte", "unknown", "mixed")
WHICH = ("input", "output")


@dataclass(frozen=True)
class EmbeddingMap:
    which: str  # "input" or "output"
    tied: bool  # input and output embeddings are one matrix
    labels: list[str]  # display label of every token id
    kinds: list[str]  # one of KINDS per token id
    coords: np.ndarray  # (V, 2) float64: the first two principal components
    explained: np.ndarray  # (2,) share of the variance each component carries
    neighbours: np.ndarray  # (V, k) int64: nearest tokens by cosine similarity, closest first
    similarity: np.ndarray  # (V, k) float32: their cosine similarities
    counts: np.ndarray | None  # (V,) int64 occurrences in the run's corpus, None when it cannot be read

    @property
    def note(self) -> str:
        if self.tied:
            return "This model is tied: its input embedding and its output head are one matrix."
        if self.which == "input":
            return "Input embedding (what each token is turned into); the output head is a separate matrix."
        return "Output head (each token's row of the final projection); the input embedding is separate."


def pca_2d(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) rows -> (N, 2) coordinates on the first two principal axes and their variance shares.

    A component a matrix does not have (D or N below 2, or no variance) comes out as zeros."""
    x = np.asarray(matrix, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    coords = np.zeros((x.shape[0], 2))
    explained = np.zeros(2)
    total = float((s**2).sum())
    for j in range(min(2, s.size)):
        sign = 1.0 if vt[j, np.argmax(np.abs(vt[j]))] >= 0 else -1.0
        coords[:, j] = u[:, j] * s[j] * sign
        explained[j] = s[j] ** 2 / total if total > 0 else 0.0
    return coords, explained


def nearest_by_cosine(matrix: np.ndarray, k: int = 5, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For every row its ``k`` most cosine-similar other rows (closest first) and their similarities,
    computed in chunks so a large vocabulary never needs a V x V matrix at once."""
    x = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms > 0, norms, 1.0)
    n = x.shape[0]
    k = max(0, min(k, n - 1))
    idx = np.zeros((n, k), np.int64)
    sim = np.zeros((n, k), np.float32)
    if k == 0:
        return idx, sim
    for start in range(0, n, chunk):
        block = unit[start : start + chunk] @ unit.T  # (c, N)
        block[np.arange(block.shape[0]), np.arange(start, start + block.shape[0])] = -np.inf  # not itself
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        idx[start : start + chunk] = np.take_along_axis(part, order, axis=1)
        sim[start : start + chunk] = np.take_along_axis(vals, order, axis=1)
    return idx, sim


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (
        0x4E00 <= o <= 0x9FFF  # unified ideographs
        or 0x3400 <= o <= 0x4DBF  # extension A
        or 0x20000 <= o <= 0x3FFFF  # extensions B and later
        or 0xF900 <= o <= 0xFAFF  # compatibility ideographs
        or 0x3040 <= o <= 0x30FF  # hiragana, katakana
        or 0xAC00 <= o <= 0xD7AF  # hangul syllables
    )


def _kind_of_char(ch: str) -> str:
    if _is_cjk(ch):
        return "CJK"
    if ch.isspace():
        return "space"
    if ch.isdigit():
        return "digit"
    if ch.isalpha():
        return "letter"
    if unicodedata.category(ch)[0] in "PS":
        return "punctuation"
    return "mixed"


def token_kind(tokenizer, token_id: int) -> str:
    """letter / digit / space / punctuation / CJK for tokens made of one kind of character (a word
    tokenizer's or BPE's leading space ignored), byte for a BPE token holding part of a character,
    unknown for the unknown token, mixed otherwise."""
    if tokenizer.kind != "bpe" and token_id == 0:
        return "unknown"
    try:
        text = tokenizer.token_bytes(token_id).decode("utf-8")
    except UnicodeDecodeError:
        return "byte"
    core = text.strip() or text
    kinds = {_kind_of_char(c) for c in core}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def embedding_matrices(model) -> tuple[dict[str, torch.Tensor], bool]:
    """{"input": (V, E), "output": (V, H)} weight tensors of a model, and whether they are one tensor."""
    out_w = (getattr(model, "lm_head", None) or model.head).weight
    in_w = model.wte.weight
    tied = in_w is out_w or in_w.data_ptr() == out_w.data_ptr()
    return {"input": in_w, "output": out_w}, tied


def token_counts(session) -> np.ndarray | None:
    """How often each token occurs in the run's corpus (through the encoded-corpus cache), or None when
    the corpus cannot be read any more (moved or deleted)."""
    from lmstudio.engine.checkpoint import default_cache_dir
    from lmstudio.engine.data import prepare_data
    from lmstudio.engine.tokenizer import token_frequencies
    from lmstudio.errors import UserError

    try:
        _, data = prepare_data(session.config, tokenizer=session.tokenizer, cache_dir=default_cache_dir())
    except (UserError, OSError):
        return None
    return token_frequencies(session.tokenizer, data.ids)


@torch.inference_mode()
def embedding_map(
    session, which: str = "input", n_neighbours: int = 5, counts: np.ndarray | None = None
) -> EmbeddingMap:
    """The 2-D PCA map of the ``which`` embedding ("input" or "output") of ``session``'s model."""
    if which not in WHICH:
        raise InspectError(f"Unknown embedding {which!r}: choose input or output.")
    matrices, tied = embedding_matrices(session.model)
    w = matrices[which].detach().float().cpu().numpy()  # (V, D)
    coords, explained = pca_2d(w)
    neighbours, similarity = nearest_by_cosine(w, n_neighbours)
    tok = session.tokenizer
    n = w.shape[0]
    return EmbeddingMap(
        which=which,
        tied=tied,
        labels=[tok.id_to_token(i) for i in range(n)],
        kinds=[token_kind(tok, i) for i in range(n)],
        coords=coords,
        explained=explained,
        neighbours=neighbours,
        similarity=similarity,
        counts=None if counts is None else np.asarray(counts, dtype=np.int64)[:n],
    )
