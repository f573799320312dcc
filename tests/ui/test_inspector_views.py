"""The Inspect tab's prediction views: the logit lens / layer readout grid and the embedding map, driven
through real widgets, checked against the engine and an independent PCA."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication
from test_generation import WAIT, make_run
from test_inspector import inspect, open_pane

from lmstudio.cli import main
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine.models import build_model
from lmstudio.engine.session import Session
from lmstudio.ui.panes.inspector import EMBEDDINGS, LENS, READOUT
from lmstudio.ui.session_controller import SessionController


@pytest.fixture
def controller(qtbot):
    c = SessionController()
    yield c
    c.shutdown()


def test_lens_grid_last_row_is_the_models_argmax_with_hover_and_export(qtbot, controller, tmp_path):
    pane = open_pane(qtbot, controller, make_run(tmp_path, "transformer"))
    text = "the lazy fox"
    inspect(qtbot, pane, text, LENS, controller.lens_ready)
    assert pane.stack.currentWidget() is pane.lens_grid
    grid = pane.lens_grid
    session = Session.load(pane.run_dir)
    ids = session.tokenizer.encode(text)
    with torch.no_grad():
        logits, _ = session.model(torch.tensor([ids]))
    res = grid.result
    # displayed row 0 is the model's output: its top predictions are the model's argmax
    assert res["rows"][grid.order[0]] == "block 2" and res["rows"][grid.order[-1]] == "embedding"
    np.testing.assert_array_equal(res["top_ids"][grid.order[0], :, 0], logits[0].argmax(-1).numpy())
    shown = grid.image.image  # (rows, positions) as drawn
    np.testing.assert_allclose(shown[0], torch.softmax(logits[0], -1).max(-1).values.numpy(), atol=1e-6)
    assert shown.shape == (3, len(ids)) and len(grid.texts) == 3 * len(ids)
    assert grid.texts[0].toPlainText() == session.tokenizer.id_to_token(int(logits[0, 0].argmax()))
    # the true next token is marked where the top prediction is right, and named on the top axis
    top_ticks = [lab for _, lab in grid.plot.getAxis("top")._tickLevels[0]]
    assert top_ticks[0] == "\u2192" + session.tokenizer.id_to_token(ids[1]) and top_ticks[-1] == "\u2192?"
    assert (res["correct"] == (res["top_ids"][:, :, 0] == np.array(ids[1:] + [-1]))).all()
    # hover: the five likeliest tokens of a cell and the actual next token's probability
    with qtbot.waitSignal(grid.hovered, timeout=WAIT) as hovered:
        qtbot.mouseMove(grid.view.viewport(), grid.cell_center(0, 2))
    p_next = float(torch.softmax(logits[0, 2], -1)[ids[3]])
    assert hovered.args[0].startswith("block 2, after") and f"p = {p_next:.3f}" in hovered.args[0]
    assert hovered.args[0].count("0.") >= 5
    # export: the same CSV as the command line's
    png, csv_path, cli_csv = tmp_path / "lens.png", tmp_path / "lens.csv", tmp_path / "cli.csv"
    pane.ask_save_path = lambda caption, filt: str(png if "PNG" in filt else csv_path)
    qtbot.mouseClick(pane.png_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(pane.csv_button, Qt.MouseButton.LeftButton)
    assert not QImage(str(png)).isNull()
    assert main(["inspect", str(pane.run_dir), "--what", "lens", "--text", text, "--out", str(cli_csv)]) == 0
    assert csv_path.read_text(encoding="utf-8") == cli_csv.read_text(encoding="utf-8")


def test_recurrent_models_get_a_layer_readout(qtbot, controller, tmp_path):
    pane = open_pane(qtbot, controller, make_run(tmp_path, "gru"))
    views = [pane.view_combo.itemText(i) for i in range(pane.view_combo.count())]
    assert READOUT in views and LENS not in views
    inspect(qtbot, pane, "on and on", READOUT, controller.lens_ready)
    assert pane.lens_grid.result["rows"] == ["embedding", "layer 1", "layer 2"]
    assert "Layer readout" in pane.lens_grid.caption.text()
    assert not pane.layer_combo.isEnabled() and not pane.head_combo.isEnabled()


def _independent_pca(w):
    centred = w - w.mean(0)
    vals, vecs = np.linalg.eigh(np.cov(centred, rowvar=False, bias=True))
    return centred @ vecs[:, np.argsort(vals)[::-1][:2]]


def test_embedding_map_equals_an_independent_pca_searches_hovers_and_follows_the_run(
    qtbot, controller, tmp_path
):
    pane = open_pane(qtbot, controller, make_run(tmp_path, "lstm"))
    with qtbot.waitSignal(controller.embeddings_ready, timeout=WAIT):
        pane.view_combo.setCurrentText(EMBEDDINGS)  # no text needed: the map comes at once
    emap = pane.embedding_map
    session = Session.load(pane.run_dir)
    w = session.model.wte.weight.detach().double().numpy()
    ref = _independent_pca(w)
    xs, ys = emap.scatter.getData()
    for got, want in ((xs, ref[:, 0]), (ys, ref[:, 1])):
        np.testing.assert_allclose(got, np.sign(got @ want) * want, atol=1e-5)
    assert len(xs) == session.tokenizer.vocab_size
    labels = emap.result["labels"]
    assert labels[0] == "<unk>" and "\u2423" in labels and "\\n" in labels  # shown as such
    assert emap.result["kinds"][labels.index("\u2423")] == "space" and emap.result["kinds"][0] == "unknown"
    # a tied recurrent model (n_embd == hidden_size): one matrix, the choice of matrix is off
    assert emap.result["tied"] and not emap.which.isEnabled() and "one matrix" in emap.caption.text()
    # frequencies come from the run's corpus: colour by frequency is offered
    counts = emap.result["counts"]
    text = (tmp_path / "corpus.txt").read_text(encoding="utf-8")
    assert counts[labels.index("o")] == text.count("o")
    emap.colour_by.setCurrentText("frequency")
    assert "how often" in emap.legend.text()
    # search rings the token and names its nearest neighbours by cosine similarity
    qtbot.keyClicks(emap.search, "q")
    hit = labels.index("q")
    assert emap.found == hit and list(emap.ring.getData()[0]) == [pytest.approx(xs[hit])]
    unit = w / np.linalg.norm(w, axis=1, keepdims=True)
    sims = unit @ unit[hit]
    sims[hit] = -np.inf
    nearest = labels[int(np.argmax(sims))]
    assert f"nearest by cosine: {nearest!r}" in emap.readout.text()
    emap.search.clear()
    qtbot.keyClicks(emap.search, "no such token")
    assert emap.found == -1 and "No token" in emap.readout.text()
    # hover a point
    target = labels.index("a")
    QApplication.processEvents()  # let the layout settle before taking the point's position
    with qtbot.waitSignal(emap.hovered, timeout=WAIT) as hovered:
        qtbot.mouseMove(emap.plot.viewport(), emap.point_position(target))
    assert "nearest by cosine" in hovered.args[0]
    # a new checkpoint of the run: the map is recomputed from it
    cfg = session.config.model
    torch.manual_seed(99)
    ckpt.save_weights(build_model(cfg), pane.run_dir / ckpt.LATEST_FILE, {"step": 50})
    with qtbot.waitSignal(controller.embeddings_ready, timeout=WAIT) as ready:
        controller.checkpoint_written(str(pane.run_dir))
    assert ready.args[0]["step"] == 50
    w2 = Session.load(pane.run_dir).model.wte.weight.detach().double().numpy()
    ref2 = _independent_pca(w2)
    xs2, _ = emap.scatter.getData()
    np.testing.assert_allclose(np.abs(xs2), np.abs(ref2[:, 0]), atol=1e-5)
    # export the numbers
    out = tmp_path / "emb.csv"
    pane.ask_save_path = lambda caption, filt: str(out)
    qtbot.mouseClick(pane.csv_button, Qt.MouseButton.LeftButton)
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == len(labels) and float(rows[5]["pc1"]) == pytest.approx(xs2[5], abs=1e-5)


def test_an_untied_model_offers_both_matrices(qtbot, controller, tmp_path):
    run_dir = make_run(tmp_path, "transformer")
    cfg = Session.load(run_dir).config
    cfg.model.tie_weights = False
    (run_dir / ckpt.CONFIG_FILE).write_text(cfg.to_json(), encoding="utf-8")
    ckpt.save_weights(build_model(cfg.model), run_dir / ckpt.LATEST_FILE, {"step": 5})
    pane = open_pane(qtbot, controller, run_dir)
    with qtbot.waitSignal(controller.embeddings_ready, timeout=WAIT):
        pane.view_combo.setCurrentText(EMBEDDINGS)
    emap = pane.embedding_map
    assert not emap.result["tied"] and emap.which.isEnabled() and emap.result["which"] == "input"
    with qtbot.waitSignal(controller.embeddings_ready, timeout=WAIT) as ready:
        emap.which.setCurrentText("output")
    assert ready.args[0]["which"] == "output"
    head = Session.load(run_dir).model.lm_head.weight.detach().double().numpy()
    xs, _ = emap.scatter.getData()
    np.testing.assert_allclose(np.abs(xs), np.abs(_independent_pca(head)[:, 0]), atol=1e-5)
    assert "Output head" in emap.result["note"]
