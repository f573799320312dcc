"""The Setup tokenizer page on Chinese text: coverage, a suggested size, warnings, visible <unk>."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from lmstudio.engine.corpus import read_corpus
from lmstudio.ui.controller import Controller
from lmstudio.ui.panes.setup_tokenizer import TokenizerPage
from lmstudio.ui.widgets.token_text import UNK_MARK
from tests.ui.conftest import set_field


@pytest.fixture
def page(qtbot):
    p = TokenizerPage(Controller())
    qtbot.addWidget(p)
    p.resize(1000, 700)
    p.show()
    p.set_source("tang300")
    return p


def build(qtbot, page, **fields):
    for name, value in fields.items():
        set_field(qtbot, page.form, name, value)
    with qtbot.waitSignal(page.built, timeout=60_000) as done:
        qtbot.mouseClick(page.build_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=10_000)
    return done.args[0]


def test_bpe_too_small_for_chinese_warns_and_suggests_a_size(qtbot, page):
    result = build(qtbot, page, kind="bpe", vocab_size="1000")
    text = read_corpus("tang300")
    assert result["distinct_chars"] == len(set(text)) == 2657
    assert result["chars_per_token"] < 1.0  # more tokens than characters
    assert result["suggested_vocab"] == 5500  # twice the distinct characters, rounded up to 500
    assert page.warning.isVisible()
    assert "0.81 characters per token" in page.warning.text() and "5,500" in page.warning.text()
    assert "character tokenizer: 1.00" in page.status.text()
    # with the suggested size the text is fewer tokens than characters and the warning goes
    result = build(qtbot, page, kind="bpe", vocab_size="5500")
    assert result["chars_per_token"] > 1.0 and not page.warning.isVisible()


def test_word_tokenizer_reports_unknowns_and_the_preview_marks_them(qtbot, page):
    result = build(qtbot, page, kind="word", vocab_size="1000")
    assert result["unk_val"] > 0.01
    assert "validation tokens are <unk>" in page.warning.text() and "not comparable" in page.warning.text()
    assert "<unk>:" in page.status.text()
    page.preview.input.setPlainText("牀前明月光 🙂")
    qtbot.waitUntil(lambda: UNK_MARK in page.preview.output.toPlainText(), timeout=5_000)
    shown = page.preview.output.toPlainText()
    assert "🙂" not in shown  # the unknown character is not shown as if the model saw it
    assert "not in the vocabulary" in page.preview.summary.text()


def test_char_tokenizer_on_its_own_corpus_has_no_warning(qtbot, page):
    result = build(qtbot, page, kind="char")
    assert result["unk_train"] == 0 and result["unk_val"] == 0 and not page.warning.isVisible()
