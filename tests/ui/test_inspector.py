"""The Inspect tab: attention grid and single head, recurrent gates, per-token loss, export, long inputs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QHelpEvent, QImage
from PySide6.QtWidgets import QToolTip
from test_generation import WAIT, make_run

from lmstudio.engine import inspect as lm_inspect
from lmstudio.engine.session import Session
from lmstudio.ui.panes.inspector import (
    ACTIVATIONS,
    ALL_HEADS,
    ATTENTION,
    EMBEDDINGS,
    LENS,
    LOSS,
    InspectorPane,
)
from lmstudio.ui.session_controller import SessionController


@pytest.fixture
def controller(qtbot):
    c = SessionController()
    yield c
    c.shutdown()


def open_pane(qtbot, controller, run_dir):
    pane = InspectorPane(controller)
    qtbot.addWidget(pane)
    pane.resize(1000, 750)
    pane.show()
    qtbot.waitExposed(pane)
    with qtbot.waitSignal(controller.session_loaded, timeout=WAIT):
        controller.set_run(str(run_dir))
    pane.run_dir = run_dir
    return pane


def inspect(qtbot, pane, text, view, signal):
    pane.view_combo.setCurrentText(view)
    pane.text.setPlainText("")
    qtbot.keyClicks(pane.text, text)
    with qtbot.waitSignal(signal, timeout=WAIT):
        qtbot.mouseClick(pane.inspect_button, Qt.MouseButton.LeftButton)


def test_attention_grid_single_head_hover_and_export(qtbot, controller, tmp_path):
    pane = open_pane(qtbot, controller, make_run(tmp_path, "transformer"))
    assert [pane.view_combo.itemText(i) for i in range(pane.view_combo.count())] == [
        ATTENTION,
        ACTIVATIONS,
        LOSS,
        LENS,
        EMBEDDINGS,
    ]
    text = "the lazy fox"
    inspect(qtbot, pane, text, ATTENTION, controller.attention_ready)
    tokens, ref = lm_inspect.attention(Session.load(pane.run_dir), text)
    T = len(text)
    # all heads of layer 1 in a grid, the future masked (NaN: drawn transparent over grey)
    assert pane.head_combo.currentText() == ALL_HEADS and len(pane.heatmap.images) == 2
    for h, m in enumerate(pane.heatmap.matrices):
        assert np.isnan(m[np.triu_indices(T, 1)]).all()
        np.testing.assert_allclose(m[np.tril_indices(T)], ref[0, h][np.tril_indices(T)], atol=1e-6)
    assert "query token (row)" in pane.heatmap.caption.text()
    ticks = pane.heatmap.plots[0].getAxis("left")._tickLevels[0]
    assert [label for _, label in ticks] == tokens
    # one head of layer 2
    pane.layer_combo.setCurrentIndex(1)
    pane.head_combo.setCurrentText("2")
    assert len(pane.heatmap.images) == 1
    np.testing.assert_allclose(np.nan_to_num(pane.heatmap.matrices[0]), ref[1, 1], atol=1e-6)
    # hover read-out: move over the cell (row 5, column 2)
    plot = pane.heatmap.plots[0]
    scene_pt = plot.getViewBox().mapViewToScene(QPointF(2.5, 5.5))
    with qtbot.waitSignal(pane.heatmap.hovered, timeout=WAIT) as hovered:
        qtbot.mouseMove(pane.heatmap.view.viewport(), pane.heatmap.view.mapFromScene(scene_pt))
    assert f"{ref[1, 1, 5, 2]:.4g}" in hovered.args[0] and "query" in hovered.args[0]
    # export what is shown
    png, csv_path = tmp_path / "att.png", tmp_path / "att.csv"
    pane.ask_save_path = lambda caption, filt: str(png if "PNG" in filt else csv_path)
    qtbot.mouseClick(pane.png_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(pane.csv_button, Qt.MouseButton.LeftButton)
    assert not QImage(str(png)).isNull()
    rows = list(csv.reader(csv_path.open(encoding="utf-8")))
    assert rows[0][1:] == tokens and [r[0] for r in rows[1:]] == tokens
    values = np.array([[float(v) if v else np.nan for v in r[1:]] for r in rows[1:]])
    np.testing.assert_allclose(np.nan_to_num(values), ref[1, 1], atol=1e-5)


def test_lstm_hidden_states_and_gates_over_time(qtbot, controller, tmp_path):
    pane = open_pane(qtbot, controller, make_run(tmp_path, "lstm"))
    assert ATTENTION not in [pane.view_combo.itemText(i) for i in range(pane.view_combo.count())]
    text = "on and on"
    inspect(qtbot, pane, text, ACTIVATIONS, controller.activations_ready)
    names = [pane.signal_combo.itemText(i) for i in range(pane.signal_combo.count())]
    assert {"hidden", "gate.input", "gate.forget", "gate.output"} <= set(names)
    _, ref = lm_inspect.activations(Session.load(pane.run_dir), text)
    pane.signal_combo.setCurrentText("gate.forget")
    pane.layer_combo.setCurrentIndex(1)
    m = pane.heatmap.matrices[0]
    assert m.shape == (16, len(text))  # units x time
    np.testing.assert_allclose(m, ref["gate.forget"][1].T, atol=1e-6)
    assert "forget" in pane.heatmap.caption.text()
    ticks = pane.heatmap.plots[0].getAxis("bottom")._tickLevels[0]
    assert len(ticks) == len(text)


def test_per_token_loss_on_a_validation_snippet_with_tooltips(qtbot, controller, tmp_path):
    pane = open_pane(qtbot, controller, make_run(tmp_path, "gru"))
    with qtbot.waitSignal(controller.snippet_ready, timeout=WAIT):
        qtbot.mouseClick(pane.snippet_button, Qt.MouseButton.LeftButton)
    snippet = pane.text.toPlainText()
    assert snippet and snippet in (tmp_path / "corpus.txt").read_text(encoding="utf-8") * 2
    pane.view_combo.setCurrentText(LOSS)
    with qtbot.waitSignal(controller.losses_ready, timeout=WAIT):
        qtbot.mouseClick(pane.inspect_button, Qt.MouseButton.LeftButton)
    rows = pane.losses["rows"]
    assert len(rows) == 24 and len(pane.loss_text.starts) == 24  # context 24: 25 tokens shown
    assert pane.loss_text.toPlainText() == snippet[:25]
    assert "Showing the first 25" in pane.note.text()
    ref = lm_inspect.token_losses(Session.load(pane.run_dir), snippet, 5)
    assert [r["loss"] for r in rows] == pytest.approx([r.loss for r in ref])
    # hovering a token shows its probability and the alternatives
    point = pane.loss_text.token_rect_center(3)
    shown = []
    original = QToolTip.showText
    QToolTip.showText = staticmethod(lambda pos, text, *a: shown.append(text))
    try:
        event = QHelpEvent(QEvent.Type.ToolTip, point, pane.loss_text.viewport().mapToGlobal(point))
        pane.loss_text.eventFilter(pane.loss_text.viewport(), event)
    finally:
        QToolTip.showText = original
    assert shown and f"p = {rows[3]['prob']:.3f}" in shown[0] and "likeliest" in shown[0]


def test_long_text_is_cut_to_the_context_and_the_pane_says_why(qtbot, controller, tmp_path):
    pane = open_pane(qtbot, controller, make_run(tmp_path, "transformer"))
    long_text = "the quick brown fox " * 5
    inspect(qtbot, pane, long_text, ATTENTION, controller.attention_ready)
    assert pane.heatmap.matrices[0].shape == (24, 24)
    assert "Showing the first 24 of 100 tokens" in pane.note.text() and "context length" in pane.note.text()


def test_convolutional_activations_gates_and_reach(qtbot, controller, tmp_path):
    pane = open_pane(qtbot, controller, make_run(tmp_path, "conv"))
    assert ATTENTION not in [pane.view_combo.itemText(i) for i in range(pane.view_combo.count())]
    text = "to be or not"
    inspect(qtbot, pane, text, ACTIVATIONS, controller.activations_ready)
    names = [pane.signal_combo.itemText(i) for i in range(pane.signal_combo.count())]
    assert {"hidden", "gate.glu", "reach"} <= set(names)
    _, ref = lm_inspect.activations(Session.load(pane.run_dir), text)
    pane.signal_combo.setCurrentText("gate.glu")
    m = pane.heatmap.matrices[0]
    assert m.shape == (16, len(text))  # channels x time
    np.testing.assert_allclose(m, ref["gate.glu"][0].T, atol=1e-6)
    # reach: position (row) by input token (column); layer 2 with kernel 3 and dilations 1, 2 sees 7 tokens
    pane.signal_combo.setCurrentText("reach")
    pane.layer_combo.setCurrentIndex(1)
    m = pane.heatmap.matrices[0]
    assert m.shape == (len(text), len(text))
    assert m.sum(axis=1).tolist() == [min(t + 1, 7) for t in range(len(text))]
    assert "receptive" in pane.heatmap.caption.text()
