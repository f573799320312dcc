"""The Setup tab: four steps (corpus, tokenizer, model, training) on the left, the chosen one on the right.

It owns the run configuration being edited: ``config()`` assembles it from the pages, every edit
re-validates it (``RunConfig.errors()``) and shows each reason next to its field, and the Start button
is enabled only when the whole configuration is valid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from lmstudio.config import ConfigError, RunConfig
from lmstudio.ui.controller import Controller
from lmstudio.ui.panes.setup_corpus import CorpusPage
from lmstudio.ui.panes.setup_model import Debouncer, ModelPage, TrainPage
from lmstudio.ui.panes.setup_tokenizer import TokenizerPage
from lmstudio.ui.workers import TaskWorker, start_worker

LONG_RUN_S = 15 * 60  # warn above this: a class demo should not wait longer


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


STEPS = ("1  Corpus", "2  Tokenizer", "3  Model", "4  Training")


class SetupPane(QWidget):
    start_requested = Signal()
    error_shown = Signal(str)  # a message the window should also show as a dialog

    def __init__(self, controller: Controller, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        self._base = RunConfig()  # values of fields no form shows (e.g. sample.stop)
        self.corpus = CorpusPage(controller)
        self.tokenizer = TokenizerPage(controller)
        self.model = ModelPage(controller)
        self.train = TrainPage()
        self.steps = QListWidget()
        self.steps.setObjectName("stepList")
        self.steps.addItems(STEPS)
        self.steps.setFixedWidth(150)
        self.stack = QStackedWidget()
        for page in (self.corpus, self.tokenizer, self.model, self.train):
            self.stack.addWidget(page)
        self.steps.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.steps.setCurrentRow(0)

        self.summary = QLabel()
        self.summary.setObjectName("configSummary")
        self.summary.setWordWrap(True)
        self.start_btn = QPushButton("Start training ▶")
        self.start_btn.setObjectName("startTraining")
        self.start_btn.clicked.connect(self.start_requested)
        self.time_label = QLabel("")
        self.time_label.setObjectName("timeEstimate")
        self.time_label.setWordWrap(True)
        bottom = QHBoxLayout()
        summary_box = QVBoxLayout()
        summary_box.addWidget(self.summary)
        summary_box.addWidget(self.time_label)
        bottom.addLayout(summary_box, 1)
        bottom.addWidget(self.start_btn)
        right = QVBoxLayout()
        right.addWidget(self.stack, 1)
        right.addLayout(bottom)
        layout = QHBoxLayout(self)
        layout.addWidget(self.steps)
        layout.addLayout(right, 1)

        self._estimate = Debouncer(120, self._update_size, self)
        self._timer = Debouncer(700, self._probe_time, self)  # typing pauses, then a short real probe
        self._probe: TaskWorker | None = None
        self._probe_key: tuple = ()
        self.time_estimate: dict = {}  # the last estimate shown (seconds, tokens_per_s, device, ...)
        # the window says when the machine is busy training: a probe then would slow the run down
        self.probe_blocked: Callable[[], bool] = lambda: False
        self._closed = False
        for form in self.forms():
            form.changed.connect(self.revalidate)
        self.train.name.textEdited.connect(self.revalidate)
        self.corpus.corpus_changed.connect(self._on_corpus_changed)
        self.tokenizer.built.connect(lambda _: self._estimate.poke())
        self.model.preset_requested.connect(self.load_preset)
        for page in (self.corpus, self.tokenizer):
            page.error_shown.connect(self.error_shown)

    def forms(self):
        return (self.tokenizer.form, self.model.form, self.train.form, self.train.sample_form)

    # ---- the configuration ------------------------------------------------------------------
    def config(self) -> tuple[RunConfig, dict[str, str]]:
        """The configuration the pages show, and every problem with it (dotted field -> reason)."""
        parse_errors: dict[str, str] = {}
        sections = {}
        for form in self.forms():
            obj, errs = form.apply_to(getattr(self._base, form.section))
            sections[form.section] = obj
            parse_errors.update(errs)
        corpus = dataclasses.replace(self._base.corpus, source=self.corpus.source or self._base.corpus.source)
        cfg = dataclasses.replace(self._base, name=self.train.name.text().strip(), corpus=corpus, **sections)
        errors = {**cfg.errors(), **parse_errors}
        errors.pop("model.vocab_size", None)  # filled from the tokenizer when training starts
        return cfg, errors

    def set_config(self, cfg: RunConfig) -> None:
        """Show a whole configuration (a preset, an earlier run, the last session's choices)."""
        self._base = cfg
        for form in self.forms():
            form.set_values(getattr(cfg, form.section))
        self.model.form.set_arch(cfg.model.arch)
        self.model.show_preset(cfg.name if cfg.name in self.controller.presets() else "")
        self.train.name.setText(cfg.name)
        if cfg.corpus.source and cfg.corpus.source != self.corpus.source:
            self.corpus.load(cfg.corpus.source)
            self.tokenizer.set_source(cfg.corpus.source)
        self.revalidate()

    # ---- settings kept between launches ---------------------------------------------------
    def restore_settings(self, s) -> None:
        """The last session's configuration and step (a QSettings), or the default preset."""
        cfg = None
        cfg_json = s.value("setup/config")
        if cfg_json:
            try:
                cfg = RunConfig.from_json(str(cfg_json))
            except ConfigError:
                cfg = None  # settings from another version: start from the defaults
        self.set_config(cfg or self.default_config())
        self.steps.setCurrentRow(int(s.value("setup/step", 0)))

    def save_settings(self, s) -> None:
        s.setValue("setup/step", self.steps.currentRow())
        s.setValue("setup/config", self.config()[0].to_json())

    def default_config(self) -> RunConfig:
        if "tiny_tang" in self.controller.presets():
            try:
                return self.controller.load_preset("tiny_tang")
            except Exception:
                pass
        return RunConfig()

    def load_preset(self, name: str) -> None:
        try:
            cfg = self.controller.load_preset(name)
        except Exception as exc:  # a broken preset file must not take the window down
            from lmstudio.ui.workers import describe_error

            self.error_shown.emit(describe_error(exc))
            return
        self.set_config(cfg)

    def revalidate(self) -> dict[str, str]:
        cfg, errors = self.config()
        for form in self.forms():
            form.show_errors(errors)
        if not self.corpus.source:
            errors.setdefault("corpus.source", "choose a corpus (step 1)")
        self.start_btn.setEnabled(not errors)
        if errors:
            first = next(iter(errors.items()))
            self.summary.setText(
                f"<span style='color:#b00020'>{len(errors)} setting(s) need attention — "
                f"{first[0]}: {first[1]}</span>"
            )
        else:
            m = cfg.model
            self.summary.setText(
                f"{m.arch} · {m.n_layer} layers · {m.n_embd} wide · context {m.block_size} · "
                f"{cfg.train.max_steps:,} steps on <b>{cfg.corpus.source}</b> "
                f"({cfg.tokenizer.kind} tokens)"
            )
        self._estimate.poke()
        return errors

    # ---- reactions --------------------------------------------------------------------------
    def _on_corpus_changed(self, source: str) -> None:
        self.tokenizer.set_source(source)
        self.revalidate()

    def _vocab_size(self, cfg: RunConfig) -> tuple[int, str]:
        """The vocabulary size for the estimate: exact once the tokenizer is built, a guess before."""
        built = self.tokenizer.result
        key = self.controller.tokenizer_key()
        if built and key == (cfg.corpus.source, dataclasses.astuple(cfg.tokenizer)):
            return built["vocab_size"], ""
        if cfg.tokenizer.kind == "char" and self.corpus.info:
            return self.corpus.info.get(
                "distinct_chars", 256
            ) + 1, " · vocabulary estimated, build the tokenizer"
        return cfg.tokenizer.vocab_size, " · vocabulary estimated, build the tokenizer"

    def _update_size(self) -> None:
        cfg, errors = self.config()
        reach = None
        if (
            cfg.model.arch == "conv"
            and self.controller.ready
            and not any(k.startswith("model.") for k in errors)
        ):
            reach = self.controller.receptive_field(cfg.model)
        self.model.show_reach(reach, cfg.model.block_size)
        if any(k.startswith(("model.", "train.")) for k in errors):
            self.model.show_size(None, None, error="fix the settings to see the size")
            return
        if not self.controller.ready:
            self.model.show_size(None, None, error="loading the engine…")
            return
        vocab, note = self._vocab_size(cfg)
        model_cfg = dataclasses.replace(cfg.model, vocab_size=vocab)
        try:
            n, mem = self.controller.estimate(model_cfg, cfg.train)
        except Exception as exc:  # the estimate is advice; a failure must not block editing
            self.model.show_size(None, None, error=f"size unknown ({exc})")
            return
        self.model.show_size(n, mem, note)
        m = cfg.model
        self.model.show_tying(m.arch, m.tie_weights, m.n_embd, m.hidden_size)
        self._timer.poke()

    # ---- the time estimate ------------------------------------------------------------------
    def _probe_config(self):
        cfg, errors = self.config()
        if errors or not self.controller.ready:
            return None
        vocab, _ = self._vocab_size(cfg)
        return dataclasses.replace(cfg.model, vocab_size=vocab), cfg.train

    def _probe_time(self) -> None:
        """Time a few real training steps of the current settings (in a worker), then show the estimate."""
        if self._closed:
            return
        configs = self._probe_config()
        if configs is None:
            self.time_label.setText("")
            return
        key = (dataclasses.astuple(configs[0]), dataclasses.astuple(configs[1]))
        if key == self._probe_key and self.time_estimate:
            return
        if self.probe_blocked():
            self.time_label.setText("The training time is estimated when no run is training.")
            self._probe_key = ()
            return
        if self._probe is not None:
            self._timer.poke()  # one probe at a time: try again when this one is done
            return
        self._probe_key = key
        model_cfg, train_cfg = configs
        worker = TaskWorker(
            lambda progress, cancel: self.controller.estimate_time(model_cfg, train_cfg, progress, cancel)
        )
        worker.done.connect(self._on_time)
        worker.failed.connect(self._on_time_failed)
        worker.finished.connect(self._on_probe_finished)
        self._probe = worker
        self.time_label.setText("Estimating the training time (timing a few steps)…")
        start_worker(worker)

    def _on_time(self, result: dict) -> None:
        configs = self._probe_config()
        current = configs and (dataclasses.astuple(configs[0]), dataclasses.astuple(configs[1]))
        if not result or current != self._probe_key:
            return  # cancelled, or the settings changed meanwhile (a new probe follows)
        self.time_estimate = result
        seconds = result["seconds"]
        text = (
            f"Estimated training time here: about {format_duration(seconds)} on {result['device']} "
            f"({result['tokens_per_s']:,.0f} tokens/s, from {result['steps_timed']} timed steps; "
            "an estimate: evaluations guessed, other load not counted)."
        )
        if seconds > LONG_RUN_S:
            text = (
                f"<span style='color:#b00020'><b>This run would take about {format_duration(seconds)}</b> "
                f"on {result['device']}: fewer steps, a smaller model or another preset (baby_shakespeare on "
                f"a CPU) finish sooner.</span> ({result['tokens_per_s']:,.0f} tokens/s measured; an estimate)"
            )
        self.time_label.setText(text)

    def _on_time_failed(self, message: str) -> None:
        self.time_label.setText(
            f"No time estimate: {message.splitlines()[0] if message else 'unknown error'}"
        )

    def cancel_probe(self) -> None:
        """Stop timing (training is about to start and needs the machine)."""
        if self._probe is not None:
            self._probe.cancel()
        self._timer.stop()

    def shutdown(self) -> None:
        """The window is closing: no new probe may start (a queued timer event would start one)."""
        self._closed = True
        self.cancel_probe()

    def _on_probe_finished(self) -> None:
        self._probe = None
