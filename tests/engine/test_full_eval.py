"""The whole-split score against an independent recomputation, token by token, and ``eval --full``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lmstudio.cli import main
from lmstudio.config import ModelConfig
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine import full_eval
from lmstudio.engine.models import build_model
from lmstudio.engine.trainer import Trainer
from tests.engine.test_trainer import run_all, tiny_config


def reference_loss(model, ids: np.ndarray, T: int) -> tuple[float, float, int]:
    """Each token after the first, one by one: -log softmax of the logits its own window gives it."""
    total, right, count = 0.0, 0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(ids) - 1, T):
            x = ids[start : start + T]
            y = ids[start + 1 : start + T + 1]
            x = x[: len(y)]  # the last window is as long as the targets left
            logits, _ = model(torch.tensor(np.asarray(x, dtype=np.int64))[None])  # (1, n, V)
            for pos, target in enumerate(y.tolist()):
                row = logits[0, pos].double()
                log_probs = row - torch.logsumexp(row, dim=0)
                total -= float(log_probs[target])
                right += int(int(row.argmax()) == target)
                count += 1
    return total / count, right / count, count


@pytest.mark.parametrize("arch", ["transformer", "lstm", "conv"])
@pytest.mark.parametrize("n", [200, 161])  # 199 targets: a partial last window; 160: windows fit exactly
def test_the_split_score_equals_a_token_by_token_recomputation(arch, n):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, n_layer=2, n_embd=24, n_head=2, hidden_size=24, block_size=16, vocab_size=11)
    model = build_model(cfg)
    ids = np.random.default_rng(1).integers(0, 11, n).astype(np.uint16)
    got = full_eval.full_split_loss(model, ids, 16, chars_per_token=2.0)
    want_loss, want_acc, count = reference_loss(model, ids, 16)
    assert got.tokens == count == n - 1
    assert got.windows == math.ceil((n - 1) / 16)
    assert got.val_loss == pytest.approx(want_loss, rel=1e-5)
    assert got.val_acc == pytest.approx(want_acc)
    assert got.val_ppl == pytest.approx(math.exp(want_loss), rel=1e-5)
    assert got.val_bpc == pytest.approx(want_loss / math.log(2) / 2.0, rel=1e-5)


def test_windows_cover_every_target_exactly_once():
    wins = full_eval.windows_of(np.zeros(50), 16)
    assert wins == [(0, 16), (16, 16), (32, 16), (48, 1)]
    covered = [s + 1 + i for s, n in wins for i in range(n)]
    assert covered == list(range(1, 50))


def test_a_batch_split_the_batching_does_not_change_the_score(monkeypatch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=1, n_embd=16, n_head=2, block_size=8, vocab_size=7))
    ids = np.random.default_rng(2).integers(0, 7, 300).astype(np.uint16)
    whole = full_eval.full_split_loss(model, ids, 8).val_loss
    monkeypatch.setattr(full_eval, "TOKENS_PER_BATCH", 8)  # one window per forward pass
    assert full_eval.full_split_loss(model, ids, 8).val_loss == pytest.approx(whole, rel=1e-6)


def test_eval_full_scores_the_run_and_the_runs_list_shows_it(tmp_path, capsys):
    cfg = tiny_config("train.max_steps=12", "train.full_eval=false")
    run = tmp_path / "runs" / "r"
    run_all(Trainer(cfg, run))
    assert ckpt.list_runs(tmp_path / "runs")[0].full_val_loss is None  # not scored yet
    assert main(["eval", str(run), "--full", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # an independent recomputation from the saved files: weights, tokenizer and the corpus's last tenth
    from lmstudio.engine.corpus import read_corpus
    from lmstudio.engine.session import Session

    session = Session.load(run)
    text = read_corpus("tang300")
    ids = np.array(session.tokenizer.encode(text), dtype=np.int64)
    from lmstudio.engine.corpus import split_sizes

    n_train, _ = split_sizes(len(ids), 0.1)
    val = ids[n_train:]
    want, _, count = reference_loss(session.model, val, cfg.model.block_size)
    assert out["tokens"] == count and out["step"] == 12
    assert out["val_loss"] == pytest.approx(want, rel=1e-5)
    assert ckpt.list_runs(tmp_path / "runs")[0].full_val_loss == pytest.approx(want, rel=1e-5)
    # the text form says how windows are treated
    assert main(["eval", str(run), "--full"]) == 0
    text_out = capsys.readouterr().out
    assert "non-overlapping windows of 16" in text_out and "starts afresh" in text_out


def test_a_score_of_older_weights_is_not_shown_as_the_current_one(tmp_path):
    result = full_eval.FullEval(1.5, math.exp(1.5), 0.4, 2.0, 100, 7, 16, 0.1)
    full_eval.record(tmp_path, "latest", 10, result)
    assert full_eval.known_loss(tmp_path, "latest", 10) == 1.5
    assert full_eval.known_loss(tmp_path, "latest", 20) is None
    assert full_eval.known_loss(tmp_path, "best", 10) is None
    (tmp_path / full_eval.FULL_EVAL_FILE).write_text("{not json", encoding="utf-8")
    assert full_eval.known_loss(tmp_path, "latest", 10) is None
