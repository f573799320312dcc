"""The window's frame: menus and shortcuts, status bar, About box, settings kept between launches."""

from __future__ import annotations

from PySide6.QtGui import QKeySequence

from lmstudio import __version__
from lmstudio.ui.about import AboutDialog
from lmstudio.ui.main_window import TAB_RUNS, MainWindow, open_settings
from tests.ui.conftest import set_field, tiny_config


def test_menus_have_the_documented_shortcuts(window):
    expected = {
        window.act_open_corpus: QKeySequence(QKeySequence.StandardKey.Open),
        window.act_open_run: QKeySequence("Ctrl+R"),
        window.act_start: QKeySequence("Ctrl+T"),
        window.act_stop: QKeySequence("Ctrl+."),
        window.act_quit: QKeySequence("Ctrl+Q"),
    }
    for action, keys in expected.items():
        assert action.shortcut() == keys, action.text()
    assert QKeySequence("Ctrl+O") == window.act_open_corpus.shortcut()


def test_tabs_in_learning_order_and_status_bar_shows_device(qtbot, window):
    names = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    assert names == ["Setup", "Training", "Runs", "Generate", "Inspect"]
    qtbot.waitUntil(lambda: window.device_label.text().startswith(("CPU", "CUDA", "Apple")), timeout=60_000)
    assert window.state_label.text() == "Idle"


def test_generate_and_inspect_tabs_host_the_session_panes_when_available(window):
    from lmstudio.ui.panes.generation import GenerationPane
    from lmstudio.ui.panes.inspector import InspectorPane

    assert isinstance(window.generate_pane, GenerationPane)
    assert isinstance(window.inspect_pane, InspectorPane)


def test_about_box_names_version_and_corpus_licences(qtbot, window, monkeypatch):
    shown = []
    monkeypatch.setattr(AboutDialog, "exec", lambda self: shown.append(self) or 0)
    window.act_about.trigger()
    assert len(shown) == 1
    dialog = shown[0]
    qtbot.addWidget(dialog)
    text = dialog.sources.toPlainText()
    assert __version__ in dialog.findChildren(type(dialog.layout().itemAt(0).widget()))[0].text()
    for needle in (
        "tiny_shakespeare",
        "tang300",
        "MIT",
        "public domain",
        "karpathy/char-rnn",
        "chinese-poetry",
    ):
        assert needle in text, needle


def test_layout_and_last_choices_persist_between_launches(qtbot, errors):
    first = MainWindow(warm_up=False)
    qtbot.addWidget(first)
    first.show()
    first.setup.set_config(tiny_config("gru", name="kept"))
    set_field(qtbot, first.setup.train.form, "lr", "0.0042")
    first.setup.steps.setCurrentRow(2)
    first.tabs.setCurrentIndex(TAB_RUNS)
    first.runs.x_axis.setCurrentIndex(1)
    first.close()
    saved = open_settings().value("window/geometry")
    assert "lmstudio-tests" in open_settings().fileName()  # the tests' own settings file, not the user's

    second = MainWindow(warm_up=False)
    qtbot.addWidget(second)
    cfg, problems = second.setup.config()
    assert cfg.name == "kept" and cfg.model.arch == "gru" and cfg.train.lr == 0.0042
    assert cfg.corpus.source == "tang300"
    assert second.setup.steps.currentRow() == 2 and second.tabs.currentIndex() == TAB_RUNS
    assert second.runs.x_axis.currentIndex() == 1
    assert bytes(saved) == bytes(first.saveGeometry())  # restored by restoreGeometry (the offscreen
    # platform clamps windows to its 800x600 screen, so sizes themselves cannot be compared here)
    qtbot.waitUntil(lambda: not second.setup.corpus.is_busy(), timeout=30_000)
    second.close()


def test_presets_load_into_the_forms(qtbot, window):
    names = [window.setup.model.presets.itemText(i) for i in range(window.setup.model.presets.count())]
    assert "tiny_tang" in names and "lstm_shakespeare" in names
    window.setup.model.presets.setCurrentText("lstm_shakespeare")
    window.setup.model.load_preset_btn.click()
    from lmstudio.config import load_preset

    expected = load_preset("lstm_shakespeare")
    cfg, _ = window.setup.config()
    assert cfg.model == expected.model and cfg.train == expected.train
    assert not window.setup.model.form.is_field_visible("n_head")  # an LSTM has no attention heads
    qtbot.waitUntil(lambda: window.setup.model.params_label.text() != "–", timeout=10_000)
    qtbot.waitUntil(lambda: not window.setup.corpus.is_busy(), timeout=30_000)
