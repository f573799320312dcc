"""Setup step 2: how text becomes token ids. Build the tokenizer, browse its vocabulary, try a split."""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from lmstudio import config
from lmstudio.ui.controller import Controller
from lmstudio.ui.widgets.config_form import ConfigForm
from lmstudio.ui.widgets.token_preview import TokenPreview
from lmstudio.ui.widgets.vocab_table import VocabBrowser
from lmstudio.ui.workers import TaskWorker, start_worker


class TokenizerPage(QWidget):
    """``built(result)`` carries the controller's plain summary (kind, vocab arrays, counts)."""

    built = Signal(dict)
    error_shown = Signal(str)

    def __init__(self, controller: Controller, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        self.source = ""
        self.result: dict = {}
        self.built_for: tuple = ()  # (corpus, tokenizer settings) the shown result was built for
        self._building_for: tuple = ()
        self._summary = ""
        self._worker: TaskWorker | None = None

        intro = QLabel(
            "The model reads numbers, not letters. A <b>tokenizer</b> cuts text into pieces "
            "(characters, words or frequent byte sequences) and gives each piece an id."
        )
        intro.setWordWrap(True)
        self.form = ConfigForm("tokenizer")
        self.build_btn = QPushButton("Build tokenizer")
        self.build_btn.setObjectName("buildTokenizer")
        self.build_btn.clicked.connect(self.build)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("%p%")
        self.status = QLabel("Not built yet.")
        self.status.setWordWrap(True)
        self.warning = QLabel("")  # what the built tokenizer does badly, and what to try
        self.warning.setObjectName("tokenizerWarning")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #a05a00;")
        self.warning.hide()
        row = QHBoxLayout()
        row.addWidget(self.build_btn)
        row.addWidget(self.cancel_btn)
        row.addWidget(self.progress, 1)

        self.vocab = VocabBrowser()
        self.preview = TokenPreview(self.controller.split, is_unk=self.controller.is_unk)
        self.preview.input.setPlainText(
            "床前明月光，疑是地上霜。\nTo be, or not to be: that is the question."
        )
        vocab_box, preview_box = QGroupBox("Vocabulary"), QGroupBox("Try it: how text splits into tokens")
        QVBoxLayout(vocab_box).addWidget(self.vocab)
        QVBoxLayout(preview_box).addWidget(self.preview)
        split = QSplitter()
        split.addWidget(vocab_box)
        split.addWidget(preview_box)
        split.setSizes([300, 400])

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.form)
        layout.addLayout(row)
        layout.addWidget(self.status)
        layout.addWidget(self.warning)
        layout.addWidget(split, 1)
        self.form.changed.connect(self.mark_if_stale)

    def set_source(self, source: str) -> None:
        self.source = source
        self.mark_if_stale()

    def _key(self) -> tuple:
        cfg, _ = self.tokenizer_config()
        return (self.source, dataclasses.astuple(cfg))

    def is_stale(self) -> bool:
        """A result is shown, but for another corpus or other tokenizer settings than those chosen now."""
        return bool(self.result) and self._key() != self.built_for

    def mark_if_stale(self) -> None:
        """Say plainly when the vocabulary and split shown no longer match the chosen settings."""
        if not self.result or self.is_busy():
            return
        stale = self.is_stale()
        self.status.setStyleSheet("color: #b00020;" if stale else "")
        if stale:
            source, kind = self.built_for[0], self.result.get("kind", "?")
            self.status.setText(
                f"Out of date: the vocabulary below is the {kind} tokenizer built for {source}, and the "
                "corpus or tokenizer settings have changed since. Press Build tokenizer to rebuild it "
                "(training builds the right one anyway)."
            )
        else:
            self.status.setText(self._summary)
        for box in (self.vocab, self.preview):
            box.setEnabled(not stale)

    def tokenizer_config(self) -> tuple[config.TokenizerConfig, dict[str, str]]:
        return self.form.apply_to(config.TokenizerConfig())

    def is_busy(self) -> bool:
        return self._worker is not None

    def build(self) -> None:
        cfg, errors = self.tokenizer_config()
        errors.update(config.section_errors("tokenizer", cfg) if not errors else {})
        self.form.show_errors(errors)
        if errors:
            self.status.setText("Fix the highlighted settings first.")
            return
        if not self.source:
            self._fail("Choose a corpus first (step 1).")
            return
        source = self.source
        key = self._key()  # what this build is for, kept while the settings may change meanwhile
        worker = TaskWorker(
            lambda progress, cancel: self.controller.build_tokenizer(source, cfg, progress, cancel)
        )
        worker.progress.connect(self._on_progress)
        self._building_for = key
        worker.done.connect(self._on_built)  # a slot of this (GUI-thread) object, never a lambda
        worker.failed.connect(self._fail)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.build_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.progress.setValue(0)
        self.status.setStyleSheet("")
        self.status.setText(f"Building a {cfg.kind} tokenizer on {source}…")
        start_worker(worker)

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self.status.setText("Cancelling…")

    def _on_progress(self, fraction: float) -> None:
        self.progress.setValue(int(fraction * 1000))

    def _on_built(self, result: dict) -> None:
        key = self._building_for
        if not result:
            self.status.setText("Cancelled.")
            return
        self.result, self.built_for = result, key
        self.vocab.set_vocab(result["tokens"], result["ids"], result["freq"])
        self._summary = (
            f"{result['kind']} tokenizer for {key[0] if key else self.source}: {result['vocab_size']:,} "
            f"tokens in the vocabulary; the corpus is {result['n_tokens']:,} tokens "
            f"({result['chars_per_token']:.2f} characters per token; the character tokenizer: 1.00)."
            + self._coverage(result)
        )
        self.status.setText(self._summary)
        self.warning.setText("\n".join(result.get("warnings", [])))
        self.warning.setVisible(bool(result.get("warnings")))
        self.preview.refresh()
        self.built.emit(result)

    @staticmethod
    def _coverage(result: dict) -> str:
        out = ""
        if result["kind"] != "bpe":
            out += (
                f" <unk>: {result.get('unk_train', 0):.1%} of the training and "
                f"{result.get('unk_val', 0):.1%} of the validation tokens."
            )
        if result.get("suggested_vocab"):
            out += (
                f" Suggested vocabulary for this corpus ({result['distinct_chars']:,} distinct characters): "
                f"{result['suggested_vocab']:,}."
            )
        return out

    def _fail(self, message: str) -> None:
        self.status.setText(message.split("\n\n", 1)[0])
        self.error_shown.emit(message)

    def _on_finished(self) -> None:
        self._worker = None
        self.build_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        self.mark_if_stale()  # the settings may have changed while it was building
