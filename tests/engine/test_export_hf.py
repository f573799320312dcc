"""Hugging Face export: transformers loads the folder with no lmstudio code and computes what we compute.

The reference side is transformers itself (``GPT2LMHeadModel``, ``AutoTokenizer``, ``generate``) or the
plain-PyTorch lines the model card prints, loaded from the exported folder alone.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from contextlib import contextmanager

import pytest

pytest.importorskip("transformers")
os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may reach the hub; everything loads from the folder

import torch  # noqa: E402

from lmstudio.cli import main  # noqa: E402
from lmstudio.engine.export_hf import export_hf  # noqa: E402
from lmstudio.engine.session import Session  # noqa: E402

TINY = {
    "model.n_layer": 2,
    "model.n_embd": 32,
    "model.n_head": 2,
    "model.block_size": 24,
    "model.hidden_size": 24,
    "train.batch_size": 8,
    "train.max_steps": 40,
    "train.eval_interval": 20,
    "train.eval_iters": 2,
    "train.log_interval": 20,
    "train.sample_interval": 0,
}
MIXED = "To be, or not to be: 床前明月光, ünïcödé \U0001f642\n\tQ? x  y\r\n123 \ufffd 𝔘"


@contextmanager
def cache_in(root):
    """Module-scoped runs keep their encoded corpora in their own folder (the per-test one is gone)."""
    old = os.environ.get("LMSTUDIO_CACHE")
    os.environ["LMSTUDIO_CACHE"] = str(root / "cache")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LMSTUDIO_CACHE", None)
        else:
            os.environ["LMSTUDIO_CACHE"] = old


def train(root, name: str, corpus: str = "tang300", **sets) -> str:
    settings = TINY | sets
    argv = [
        "train",
        "--preset",
        "tiny_tang",
        "--corpus",
        corpus,
        "--out",
        str(root / name),
        "--device",
        "cpu",
    ]
    for k, v in settings.items():
        argv += ["--set", f"{k}={v}"]
    assert main(argv) == 0
    return str(root / name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    with cache_in(root):
        yield {
            # the defaults: learned positions, biases, tied output matrix, char tokens
            "gpt": train(root, "gpt"),
            # everything GPT-2 cannot say in its config, with a byte-level BPE
            "gpt_odd": train(
                root,
                "gpt_odd",
                corpus="tiny_shakespeare",
                **{
                    "model.pos_encoding": "sinusoidal",
                    "model.bias": "false",
                    "model.tie_weights": "false",
                    "model.dropout": 0.1,
                    "tokenizer.kind": "bpe",
                    "tokenizer.vocab_size": 300,
                    "train.max_steps": 20,
                },
            ),
            "lstm": train(root, "lstm", **{"model.arch": "lstm", "train.max_steps": 10}),
            "gru": train(
                root, "gru", **{"model.arch": "gru", "train.max_steps": 10, "model.tie_weights": "false"}
            ),
            "rnn": train(root, "rnn", **{"model.arch": "rnn", "train.max_steps": 10, "model.bias": "false"}),
        }


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    return {name: export_hf(run, out / f"{name}-hf").path for name, run in runs.items()}


@pytest.mark.parametrize("name", ["gpt", "gpt_odd"])
def test_gpt2_logits_equal_ours(runs, exported, name):
    from transformers import GPT2LMHeadModel

    session = Session.load(runs[name])
    hf = GPT2LMHeadModel.from_pretrained(exported[name], local_files_only=True).eval()
    assert hf.config.activation_function == "gelu" and hf.config.n_positions == 24
    cfg = session.config.model
    gen = torch.Generator().manual_seed(1)
    texts = ["To be, or not", "春眠不覺曉，處處聞啼鳥。", "\n"]
    seqs = [torch.tensor([session.tokenizer.encode(t)[:24]]) for t in texts]
    seqs += [torch.randint(0, cfg.vocab_size, (3, n), generator=gen) for n in (1, 7, 24)]
    with torch.no_grad():
        for idx in seqs:
            ours, theirs = session.model(idx)[0], hf(idx).logits
            assert theirs.shape == ours.shape
            assert torch.allclose(theirs, ours, atol=1e-4, rtol=0), (idx.shape, (theirs - ours).abs().max())
    if name == "gpt_odd":  # no bias: zeros; sinusoids: the fixed table; untied: two matrices
        assert float(hf.transformer.h[0].attn.c_attn.bias.detach().abs().max()) == 0.0
        assert torch.equal(hf.transformer.wpe.weight, session.model.pe)
        assert hf.lm_head.weight.data_ptr() != hf.transformer.wte.weight.data_ptr()
        assert not torch.equal(hf.lm_head.weight, hf.transformer.wte.weight)
    else:
        assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()


def test_greedy_generate_equals_lmstudio_generate_top_k_1(runs, exported, capsys):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    folder = exported["gpt"]
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    hf = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True).eval()
    for prompt in ("春眠", "白日依山盡，"):
        n = 24 - len(prompt)  # the whole context: GPT-2 cannot go past n_positions
        assert (
            main(["generate", runs["gpt"], "--prompt", prompt, "--top-k", "1", "--max-tokens", str(n)]) == 0
        )
        ours = capsys.readouterr().out.rstrip("\n")
        ids = tok(prompt, return_tensors="pt").input_ids
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
        assert out.shape[1] == ids.shape[1] + n
        assert tok.decode(out[0]) == ours


@pytest.mark.parametrize("name", ["gpt", "gpt_odd", "lstm"])
def test_auto_tokenizer_gives_our_ids(runs, exported, name):
    from transformers import AutoTokenizer

    session = Session.load(runs[name])
    tok = AutoTokenizer.from_pretrained(exported[name], local_files_only=True)
    corpus_text = "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。\n" if name != "gpt_odd" else ""
    for text in (MIXED, corpus_text, MIXED * 3 + corpus_text):
        assert tok(text, add_special_tokens=False)["input_ids"] == session.tokenizer.encode(text)
        assert tok.decode(session.tokenizer.encode(text)) == session.tokenizer.decode(
            session.tokenizer.encode(text)
        )


def test_word_tokenizer_converts_too(tmp_path):
    """The word kind (regex pre-tokenizer, unknown id 0) through the same conversion."""
    from transformers import AutoTokenizer

    from lmstudio.config import TokenizerConfig
    from lmstudio.engine.export_hf import _write_tokenizer
    from lmstudio.engine.tokenizer import train_tokenizer

    ours = train_tokenizer(
        TokenizerConfig(kind="word", vocab_size=200), "the cat sat on the mat. 床前明月光\n" * 5
    )
    _write_tokenizer(ours, 32, tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = MIXED + " the dog sat, the cat ran"
    assert 0 in ours.encode(text)  # unseen words are in the test
    # Chinese goes through lmstudio's jieba step first (the model card says so); other text as it is
    words = ours.words(text)
    assert tok(words, is_split_into_words=True, add_special_tokens=False)["input_ids"] == ours.encode(text)
    plain = "the dog sat, the cat ran on the mat.\n"
    assert tok(plain, add_special_tokens=False)["input_ids"] == ours.encode(plain)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_recurrent_folder_loads_with_the_model_cards_code(runs, exported, name, monkeypatch, capsys):
    folder = exported[name]
    card = (folder / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert "lmstudio" not in code  # no lmstudio code needed
    monkeypatch.chdir(folder.parent)  # the card names the folder relative to where it sits
    monkeypatch.delitem(sys.modules, "lmstudio.engine.models", raising=False)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert capsys.readouterr().out  # the card's example printed its prediction
    session = Session.load(runs[name])
    idx = torch.randint(0, session.config.model.vocab_size, (2, 40))  # longer than the context: state carries
    with torch.no_grad():
        theirs = namespace["model"](idx)[0]
        assert torch.allclose(theirs, session.model(idx)[0], atol=1e-4, rtol=0)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "lmstudio-recurrent" and config["arch"] == name


def test_the_best_checkpoint_exports_with_its_own_loss(runs, tmp_path):
    from lmstudio.engine import checkpoint as ckpt

    seen = []
    folder = export_hf(runs["gpt"], tmp_path / "best-hf", which="best", progress=seen.append).path
    assert seen == sorted(seen) and seen[-1] == 1.0  # progress only goes forward, to the end
    card = (folder / "README.md").read_text(encoding="utf-8")
    best = min(r["val_loss"] for r in ckpt.read_metrics(runs["gpt"]) if "val_loss" in r)
    assert "the best checkpoint" in card and f"validation loss {best:.4f}" in card


def test_model_card_names_corpus_licence_settings_loss_and_date(runs, exported):
    from lmstudio.engine import checkpoint as ckpt

    card = (exported["gpt"] / "README.md").read_text(encoding="utf-8")
    assert "300 Tang Poems" in card and "MIT licence" in card and "public domain" in card
    last_eval = [r for r in ckpt.read_metrics(runs["gpt"]) if "val_loss" in r][-1]
    assert f"validation loss {last_eval['val_loss']:.4f}" in card
    assert f"perplexity {math.exp(last_eval['val_loss']):.2f}" in card
    assert re.search(r"exported on \d{4}-\d\d-\d\d \d\d:\d\d UTC", card)
    assert '"max_steps": 40' in card and '"lr":' in card
    from lmstudio.run_history import read_full_evals

    full = read_full_evals(runs["gpt"])["latest"]  # a completed run scores the whole split at its end
    assert f"over the whole validation split: loss {full['val_loss']:.4f}" in card
    odd = (exported["gpt_odd"] / "README.md").read_text(encoding="utf-8")
    assert "Tiny Shakespeare" in odd and "sinusoidal" in odd and "zeros" in odd and "not tied" in odd


def test_an_existing_folder_is_kept_unless_it_is_an_earlier_export(runs, exported, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["export", runs["lstm"], "--format", "hf", "--out", str(mine)]) == 1
    assert "other files" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    again = str(exported["lstm"])
    assert main(["export", runs["lstm"], "--format", "hf", "--out", again]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["export", runs["lstm"], "--format", "hf", "--out", again, "--force"]) == 0
    assert "match lmstudio's" in capsys.readouterr().out
    assert not [p for p in exported["lstm"].parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_a_jieba_word_tokenizer_run_exports_and_its_card_says_how_to_segment(tmp_path):
    from transformers import AutoTokenizer

    with cache_in(tmp_path):
        run = train(tmp_path, "word", **{"tokenizer.kind": "word", "train.max_steps": 2})
    session = Session.load(run)
    assert session.tokenizer.segmented
    folder = export_hf(run, tmp_path / "word-hf").path
    assert "is_split_into_words" in (folder / "README.md").read_text(encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    text = "春眠不覺曉，處處聞啼鳥。夜來風雨聲"
    words = session.tokenizer.words(text)
    ids = tok(words, is_split_into_words=True, add_special_tokens=False)["input_ids"]
    assert ids == session.tokenizer.encode(text)


def test_the_convolutional_model_is_refused_with_the_reason(tmp_path, capsys):
    run = train(tmp_path, "conv", **{"model.arch": "conv", "train.max_steps": 2})
    capsys.readouterr()
    assert main(["export", run, "--format", "hf", "--out", str(tmp_path / "conv-hf")]) == 1
    err = capsys.readouterr().err
    assert "no class in Hugging Face Transformers" in err and "--format onnx" in err
    assert not (tmp_path / "conv-hf").exists()


def test_missing_transformers_is_one_line_that_says_how_to_install(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    assert main(["export", runs["gpt"], "--format", "hf", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install" in err and ".[export]" in err
    assert not (tmp_path / "x").exists()
