"""The embedding map: PCA against an independent eigen-decomposition, cosine neighbours against a full
similarity matrix, token kinds, tied and untied models, and the CSV/PNG export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_sampling import make_session

from lmstudio.config import TokenizerConfig
from lmstudio.engine import embeddings as emb
from lmstudio.engine import export_views
from lmstudio.engine.tokenizer import train_tokenizer
from lmstudio.matrix_export import KIND_RGB


def _pca_by_covariance(x):
    """Independent of numpy's SVD: the top eigenvectors of the covariance matrix (float64)."""
    x = np.asarray(x, np.float64)
    centred = x - x.mean(0)
    vals, vecs = np.linalg.eigh(centred.T @ centred / len(x))
    top = vecs[:, np.argsort(vals)[::-1][:2]]
    return centred @ top, vals[np.argsort(vals)[::-1][:2]] / vals.sum()


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_coordinates_equal_an_independent_pca_up_to_sign(arch):
    s = make_session(arch, seed=2)
    m = emb.embedding_map(s, "input")
    ref, share = _pca_by_covariance(s.model.wte.weight.detach().numpy())
    for j in range(2):
        sign = np.sign(ref[:, j] @ m.coords[:, j])
        np.testing.assert_allclose(m.coords[:, j], sign * ref[:, j], atol=1e-5)
    np.testing.assert_allclose(m.explained, share, atol=1e-6)
    assert (
        m.coords.shape == (s.tokenizer.vocab_size, 2) and len(m.labels) == len(m.kinds) == m.coords.shape[0]
    )


def test_the_sign_is_fixed_so_maps_do_not_flip():
    x = np.random.default_rng(0).normal(size=(50, 8))
    a, _ = emb.pca_2d(x)
    b, _ = emb.pca_2d(x * 1.0)
    c, _ = emb.pca_2d(-x)  # the same cloud mirrored: the rule picks the same orientation of the axes
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(np.abs(a), np.abs(c), atol=1e-9)


def test_neighbours_are_the_most_cosine_similar_tokens():
    x = np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32)
    idx, sim = emb.nearest_by_cosine(x, k=4, chunk=64)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    full = unit @ unit.T
    np.fill_diagonal(full, -np.inf)
    ref = np.argsort(-full, axis=1)[:, :4]
    assert (idx == ref).all()
    np.testing.assert_allclose(sim, np.take_along_axis(full, ref, 1), atol=1e-6)


def test_tied_and_untied_models():
    s = make_session("transformer")  # ModelConfig ties by default
    tied = emb.embedding_map(s, "input")
    assert tied.tied and "one matrix" in tied.note
    s.model.lm_head.weight = torch.nn.Parameter(torch.randn_like(s.model.lm_head.weight))
    inp, out = emb.embedding_map(s, "input"), emb.embedding_map(s, "output")
    assert not inp.tied and not np.allclose(inp.coords, out.coords)
    ref, _ = _pca_by_covariance(s.model.lm_head.weight.detach().numpy())
    assert np.allclose(np.abs(out.coords), np.abs(ref), atol=1e-5)


def test_token_kinds():
    text = "Hello world 42, 你好。\n"
    char = train_tokenizer(TokenizerConfig(kind="char"), text * 3)
    kinds = {char.id_to_token(i): emb.token_kind(char, i) for i in range(char.vocab_size)}
    assert kinds["<unk>"] == "unknown" and kinds["H"] == "letter" and kinds["4"] == "digit"
    assert kinds["␣"] == "space" and kinds["\\n"] == "space" and kinds[","] == "punctuation"
    assert kinds["你"] == "CJK" and kinds["。"] == "punctuation"
    bpe = train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=280), text * 20)
    bk = [emb.token_kind(bpe, i) for i in range(bpe.vocab_size)]
    assert "byte" in bk and "letter" in bk and "unknown" not in bk


def test_embeddings_csv_and_png(tmp_path):
    s = make_session("gru")
    m = emb.embedding_map(s, "input", n_neighbours=3, counts=np.arange(s.tokenizer.vocab_size))
    lines = export_views.save_embeddings_csv(m, tmp_path / "e.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id,token,kind,count,pc1,pc2,neighbours" and len(lines) == 1 + s.tokenizer.vocab_size
    with Image.open(export_views.save_embeddings_png(m, tmp_path / "e.png", size=320)) as picture:
        assert picture.format == "PNG" and picture.mode == "RGB" and picture.width > 320
        assert json.loads(picture.text["labels"]) == m.labels
        colours = {tuple(c) for c in np.asarray(picture).reshape(-1, 3).tolist()}
    assert all(KIND_RGB[kind] in colours for kind in set(m.kinds))  # a dot (and a legend entry) per kind
