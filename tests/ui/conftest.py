"""Fixtures for the window tests: a main window on isolated settings, tiny fast configs, dialog recorders."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QCheckBox, QComboBox

from lmstudio import config as C
from lmstudio.ui import dialogs

# small enough that a run takes a few seconds on 2 CPU cores (tang300, char tokens: vocab ~2.7k)
TINY = [
    "corpus.source=tang300",
    "tokenizer.kind=char",
    "model.n_layer=1",
    "model.n_embd=32",
    "model.hidden_size=32",
    "model.n_head=2",
    "model.block_size=16",
    "train.batch_size=4",
    "train.max_steps=20",
    "train.eval_interval=10",
    "train.eval_iters=2",
    "train.log_interval=5",
    "train.warmup_steps=0",
    "train.sample_interval=10",
    "train.sample_tokens=16",
]


def tiny_config(arch: str = "lstm", name: str = "", extra: list[str] | None = None) -> C.RunConfig:
    return C.RunConfig(name=name or arch).override(TINY + [f"model.arch={arch}"] + (extra or []))


def set_field(qtbot, form, name: str, value) -> None:
    """Change one field of a generated form the way a person would."""
    editor = form.editor(name)
    if isinstance(editor, QCheckBox):
        editor.setChecked(bool(value))
    elif isinstance(editor, QComboBox):
        editor.setCurrentText(str(value))
    else:
        editor.selectAll()
        qtbot.keyClicks(editor, str(value))


class Recorder:
    """Stands in for a modal dialog: remembers what it was asked and answers as told."""

    def __init__(self, answer=None):
        self.calls: list[tuple] = []
        self.answer = answer

    def __call__(self, *args, **kwargs):
        self.calls.append(args)
        return self.answer

    @property
    def texts(self) -> list[str]:
        return [str(a[-1]) for a in self.calls]


@pytest.fixture
def errors(monkeypatch) -> Recorder:
    """Every error dialog the window would show, recorded instead of blocking."""
    rec = Recorder()
    monkeypatch.setattr(dialogs, "show_error", rec)
    return rec


@pytest.fixture
def window(qtbot, errors):
    from lmstudio.ui.main_window import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    yield win
    if win.training.is_running():  # a failing test must not leave training behind
        win.training.stop()
        qtbot.waitUntil(lambda: not win.training.is_running(), timeout=60_000)
    win.close()


def wait_finished(qtbot, win, timeout: int = 60_000) -> tuple[str, str]:
    """Wait for the current run to end; returns (run_dir, reason)."""
    with qtbot.waitSignal(win.training.run_finished, timeout=timeout) as blocker:
        pass
    qtbot.waitUntil(lambda: not win.training.is_running(), timeout=timeout)
    return tuple(blocker.args)
