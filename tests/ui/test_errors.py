"""Each bad input reaches the user as a readable message, and the window stays usable afterwards."""

from __future__ import annotations

from PySide6.QtCore import Qt

from lmstudio.ui import dialogs, workers
from tests.ui.conftest import Recorder, set_field, tiny_config

TIMEOUT = 60_000


def open_corpus(qtbot, win, monkeypatch, path, folder=False) -> str:
    """Choose ``path`` through the (replaced) file dialog; returns the error shown, or ''."""
    monkeypatch.setattr(dialogs, "open_folder" if folder else "open_file", Recorder(answer=str(path)))
    page = win.setup.corpus
    with qtbot.waitSignal(page.error_shown, timeout=TIMEOUT, raising=False) as blocker:
        (win.act_open_folder if folder else win.act_open_corpus).trigger()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=TIMEOUT)
    return blocker.args[0] if blocker.signal_triggered else ""


def test_bad_corpus_files_show_a_message_and_the_app_stays_usable(qtbot, window, monkeypatch, tmp_path):
    win, page = window, window.setup.corpus
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 64)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    no_txt = tmp_path / "folder"
    no_txt.mkdir()
    (no_txt / "image.png").write_bytes(b"\x89PNG\r\n")
    cases = [(binary, False), (empty, False), (tmp_path / "missing.txt", False), (no_txt, True)]
    for path, folder in cases:
        message = open_corpus(qtbot, win, monkeypatch, path, folder)
        assert message, f"no message for {path}"
        assert "Traceback" not in message and "bug" not in message.lower(), message
        assert page.error_label.isVisible() and page.error_label.text() == message.split("\n\n")[0]
    # still usable: a good file loads and clears the error
    good = tmp_path / "poem.txt"
    good.write_text("床前明月光\n疑是地上霜\n" * 50, encoding="utf-8")
    monkeypatch.setattr(dialogs, "open_file", Recorder(answer=str(good)))
    with qtbot.waitSignal(page.corpus_changed, timeout=TIMEOUT):
        win.act_open_corpus.trigger()
    assert not page.error_label.isVisible()
    assert page.stats["chars"].text() == f"{len(good.read_text(encoding='utf-8')):,}"
    assert page.source == str(good)


def test_invalid_settings_block_start_and_say_why(qtbot, window, errors):
    win = window
    win.setup.set_config(tiny_config("transformer"))
    qtbot.waitUntil(lambda: not win.setup.corpus.is_busy(), timeout=TIMEOUT)
    assert win.setup.start_btn.isEnabled()
    set_field(qtbot, win.setup.model.form, "n_head", 3)  # 3 heads do not divide 32
    qtbot.waitUntil(lambda: not win.setup.start_btn.isEnabled(), timeout=2000)
    assert "do not divide" in win.setup.model.form.error_text("n_head")
    set_field(qtbot, win.setup.train.form, "lr", "fast")
    qtbot.waitUntil(lambda: win.setup.train.form.error_text("lr") != "", timeout=2000)
    win.act_start.trigger()  # Ctrl+T anyway
    # no training thread (the Setup page's time probe may be timing a few steps meanwhile)
    assert not win.training.is_running()
    assert not [t for t in workers.live_threads() if t.objectName() == "TrainWorker"]
    assert len(errors.calls) == 1
    assert "model.n_head" in errors.texts[0] and "train.lr" in errors.texts[0]
    # fixing the fields clears the reasons and enables Start again
    set_field(qtbot, win.setup.model.form, "n_head", 2)
    set_field(qtbot, win.setup.train.form, "lr", "0.001")
    qtbot.waitUntil(lambda: win.setup.start_btn.isEnabled(), timeout=2000)
    assert win.setup.model.form.error_text("n_head") == "" and win.setup.train.form.error_text("lr") == ""


def test_bad_tokenizer_settings_do_not_start_a_build(qtbot, window):
    page = window.setup.tokenizer
    set_field(qtbot, page.form, "kind", "bpe")
    set_field(qtbot, page.form, "vocab_size", 10)
    qtbot.mouseClick(page.build_btn, Qt.MouseButton.LeftButton)
    assert not page.is_busy()
    assert page.form.error_text("vocab_size") == "must be at least 64"


def test_bad_learning_rate_while_training_is_a_message(qtbot, window, errors):
    pane = window.training
    for text in ("abc", "-1", "0"):
        pane.lr_edit.setText(text)
        qtbot.mouseClick(
            pane.lr_btn, Qt.MouseButton.LeftButton
        ) if pane.lr_btn.isEnabled() else pane.apply_lr()
    assert len(errors.calls) == 3
    assert "not a number" in errors.texts[0] and "out of range" in errors.texts[1]


def test_opening_a_folder_that_is_not_a_run_is_a_message(qtbot, window, errors, monkeypatch, tmp_path):
    monkeypatch.setattr(dialogs, "open_folder", Recorder(answer=str(tmp_path)))
    window.act_open_run.trigger()
    assert len(errors.calls) == 1 and "not a run folder" in errors.texts[0]
    assert "Traceback" not in errors.texts[0]


def test_a_failing_run_is_reported_and_training_can_start_again(qtbot, window, errors):
    win = window
    # a context longer than the 300 Tang Poems' validation split cannot be trained
    win.setup.set_config(tiny_config("lstm", extra=["model.block_size=8000"]))
    qtbot.waitUntil(lambda: not win.setup.corpus.is_busy(), timeout=TIMEOUT)
    with qtbot.waitSignal(win.training.run_finished, timeout=TIMEOUT) as finished:
        win.start_training()
    assert finished.args[1] == "failed"
    qtbot.waitUntil(lambda: not win.training.is_running(), timeout=TIMEOUT)
    assert len(errors.calls) == 1 and "Traceback" not in errors.texts[0]
    assert "8000" in errors.texts[0] or "context" in errors.texts[0].lower(), errors.texts[0]
    assert win.state_label.text() == "Failed"
    assert win.training.start_btn.isEnabled() and win.setup.start_btn.isEnabled()
