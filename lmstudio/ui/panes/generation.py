"""The Generate tab: prompt, sampling settings, streamed text shaded by probability, top-k bars, step mode.

All engine work goes through a SessionController (its own thread); this pane only sees plain data.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from lmstudio.ui.run_follower import RunFollower, RunHeader
from lmstudio.ui.session_controller import SessionController
from lmstudio.ui.widgets.distribution_chart import FILTERED_MARK, DistributionChart
from lmstudio.ui.widgets.distribution_chart import legend as chart_legend
from lmstudio.ui.widgets.token_text import UNK_MARK, TokenText, legend, strength_from_prob


def _show(label: str) -> str:
    """Labels arrive in the tokenizer's display form already; only an empty one needs a sign."""
    return label or "\u2205"


class GenerationPane(QWidget):
    def __init__(
        self,
        session_controller: SessionController,
        parent: QWidget | None = None,
        *,
        follower: RunFollower | None = None,
    ):
        """``follower``: which run to show (the window's); the header line then says which and why."""
        super().__init__(parent)
        self.sessions = session_controller
        self.header = RunHeader(follower) if follower is not None else None
        self.steps: list[dict] = []  # every shown token: {token_id, text, prob, top}
        self.choices: list[tuple] = []  # step mode: (id, text, prob) on offer
        self.stepping = False
        self.generating = False
        self.chart_shows_choices = False
        self._defaults_set = False
        self.run_text = ""
        self.output_from = ""  # "<run> at step N": the checkpoint that wrote the text shown

        self.status = QLabel("No run loaded: open a run or start training.")
        self.status.setWordWrap(True)
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Prompt (empty: start from a new line)")
        self.prompt.setMaximumHeight(90)
        self.temperature = QDoubleSpinBox(minimum=0.0, maximum=5.0, singleStep=0.05, value=0.8, decimals=2)
        self.temperature.setSpecialValueText("0 (greedy)")  # 0: always the likeliest token
        self.temperature.setToolTip(
            "Below 1 sharpens the distribution, above 1 flattens it; 0 is greedy decoding (always the "
            "likeliest token)."
        )
        self.top_k = QSpinBox(minimum=0, maximum=100000, value=0)
        self.top_k.setSpecialValueText("off")
        self.top_p = QDoubleSpinBox(minimum=0.01, maximum=1.0, singleStep=0.05, value=1.0, decimals=2)
        self.max_tokens = QSpinBox(minimum=1, maximum=100000, value=300)
        self.seed = QSpinBox(minimum=-1, maximum=2**31 - 1, value=-1)
        self.seed.setSpecialValueText("random")
        form = QFormLayout()
        form.addRow("Temperature (0 = greedy)", self.temperature)
        form.addRow("Top-k (0 = off)", self.top_k)
        form.addRow("Top-p (1 = off)", self.top_p)
        form.addRow("Max tokens", self.max_tokens)
        form.addRow("Seed (-1 = random)", self.seed)
        self.generate_button = QPushButton("Generate")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.stop_button)

        step_box = QGroupBox("Step mode: pick each token yourself")
        self.step_button = QPushButton("Start step mode")
        self.sample_button = QPushButton("Let the sampler pick")
        self.sample_button.setEnabled(False)
        self.choice_list = QListWidget()
        step_layout = QVBoxLayout(step_box)
        step_layout.addWidget(QLabel("Click a bar or a list entry to append that token."))
        row = QHBoxLayout()
        row.addWidget(self.step_button)
        row.addWidget(self.sample_button)
        step_layout.addLayout(row)
        step_layout.addWidget(self.choice_list)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(QLabel("Prompt"))
        left_layout.addWidget(self.prompt)
        left_layout.addLayout(form)
        left_layout.addLayout(buttons)
        left_layout.addWidget(step_box, 1)

        self.output = TokenText()
        self.chart = DistributionChart()
        self.chart_hint = QLabel(
            "Click a generated token to see the candidates there: what the model believed and what the "
            "sampler could actually draw."
        )
        self.chart_hint.setWordWrap(True)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.addWidget(self.output, 3)
        right_layout.addWidget(legend())
        right_layout.addWidget(self.chart_hint)
        right_layout.addWidget(self.chart, 2)
        right_layout.addWidget(chart_legend())

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        if self.header is not None:
            layout.addWidget(self.header)
        layout.addWidget(self.status)
        layout.addWidget(split, 1)

        self.generate_button.clicked.connect(self.start_generation)
        self.stop_button.clicked.connect(self.sessions.stop)
        self.step_button.clicked.connect(self.start_step_mode)
        self.sample_button.clicked.connect(self.sessions.step_sample)
        self.choice_list.itemClicked.connect(self._on_choice_item)
        self.chart.bar_clicked.connect(self._on_bar)
        self.output.token_clicked.connect(self.show_token)
        s = self.sessions
        s.session_loaded.connect(self._on_loaded)
        s.session_cleared.connect(self._on_cleared)
        s.error.connect(self._on_error)
        s.tokens_generated.connect(self._on_tokens)
        s.prompt_note.connect(self._on_prompt_note)
        s.generation_finished.connect(self._on_finished)
        s.step_ready.connect(self._on_step)
        self._set_enabled(s.info is not None)
        if s.info:
            self._on_loaded(s.info)

    # ---- settings -------------------------------------------------------------------------------------
    def settings(self) -> dict:
        return {
            "temperature": self.temperature.value(),
            "top_k": self.top_k.value(),
            "top_p": self.top_p.value(),
            "max_tokens": self.max_tokens.value(),
            "seed": self.seed.value(),
            "n_top": 10,
        }

    def _set_enabled(self, ready: bool) -> None:
        self.generate_button.setEnabled(ready and not self.generating)
        self.step_button.setEnabled(ready and not self.generating)
        self.stop_button.setEnabled(self.generating)
        self.sample_button.setEnabled(ready and self.stepping and not self.generating)

    @Slot(dict)
    def _on_loaded(self, info: dict) -> None:
        self.status.setStyleSheet("")
        self.run_text = (
            f"Run {info['name']}: {info['arch']}, checkpoint at step {info['step']}, "
            f"context {info['block_size']} tokens, vocabulary {info['vocab_size']}."
        )
        here = f"{info['name']} at step {info['step']:,}"
        if self.output_from and self.output_from != here:
            self.status.setText(f"{self.run_text} The text below came from {self.output_from}.")
        else:
            self.status.setText(self.run_text)
        if not self._defaults_set and info.get("sample"):
            sample = info["sample"]
            self.temperature.setValue(sample.get("temperature", 0.8))
            self.top_k.setValue(min(sample.get("top_k", 0), self.top_k.maximum()))
            self.top_p.setValue(sample.get("top_p", 1.0))
            self._defaults_set = True
        self._set_enabled(True)

    @Slot()
    def _on_cleared(self) -> None:
        self.stepping = False
        self.choice_list.clear()
        self.chart.clear_chart()
        note = f" The text below came from {self.output_from}." if self.output_from else ""
        self.status.setStyleSheet("")
        self.status.setText("No run loaded yet." + note)
        self._set_enabled(False)

    def _mark_output(self) -> None:
        info = self.sessions.info or {}
        self.output_from = f"{info.get('name', '?')} at step {info.get('step', 0):,}"

    @Slot(str)
    def _on_error(self, message: str) -> None:
        self.status.setStyleSheet("color: #b00020;")
        self.status.setText(message)
        if self.generating:
            self._on_finished("failed")

    # ---- free generation --------------------------------------------------------------------------------
    @Slot()
    def start_generation(self) -> None:
        self.stepping = False
        self.prompt_converted = ""  # the note on how the last prompt was fitted to the run
        self.generating = True
        self.steps = []
        self.choice_list.clear()
        self.chart.clear_chart("generating: click a token to see its candidates")
        self.output.clear_tokens(self.prompt.toPlainText())
        self._mark_output()
        self._set_enabled(True)
        self.sessions.generate(self.prompt.toPlainText(), self.settings())

    def _append(self, step: dict) -> None:
        self.steps.append(step)
        sampled = step.get("sampled_prob", float("nan"))
        drawn = f" (in the distribution sampled: {sampled:.3f})" if sampled == sampled else ""
        tip = f"p = {step['prob']:.3f}{drawn}\n" + "\n".join(
            f"{_show(t)}  {p:.3f}" for t, p in step["top"][:5]
        )
        if step.get("masked", 0.0) > 0:
            tip += f"\n(UTF-8 mask removed p = {step['masked']:.3f} of invalid byte tokens)"
        self.output.append_token(
            step["text"], strength_from_prob(step["prob"]), tip, unk=step.get("unk", False)
        )

    @Slot(str)
    def _on_prompt_note(self, note: str) -> None:
        self.prompt_converted = note

    @Slot(list)
    def _on_tokens(self, batch: list) -> None:
        for step in batch:
            self._append(step)
        self.output.ensureCursorVisible()

    @Slot(str)
    def _on_finished(self, reason: str) -> None:
        self.generating = False
        self._set_enabled(self.sessions.info is not None)
        if reason != "failed" and self.sessions.info is not None:
            self.status.setStyleSheet("")
            self.status.setText(
                f"{self.run_text} Generated {len(self.steps)} tokens ({reason}).{self.notes()}"
            )

    def notes(self) -> str:
        """What the user should know about the text just generated: masked bytes, unknown tokens."""
        out = f" {self.prompt_converted}" if getattr(self, "prompt_converted", "") else ""
        masked = [s["masked"] for s in self.steps if s.get("masked", 0.0) > 0]
        if masked:
            out += (
                f" UTF-8 mask: at {len(masked)} of {len(self.steps)} tokens, byte tokens that would have "
                f"broken a character were masked out before sampling (on average "
                f"p = {sum(masked) / len(masked):.3f} of the model's probability)."
            )
        unks = sum(1 for s in self.steps if s.get("unk"))
        if unks:
            out += f" {unks} tokens are {UNK_MARK} (unknown: no text of their own)."
        return out

    @Slot(int)
    def show_token(self, index: int) -> None:
        step = self.steps[index]
        cands = step.get("candidates") or [(-1, t, p, float("nan")) for t, p in step["top"]]
        chosen = next((i for i, c in enumerate(cands) if c[0] == step["token_id"]), -1)
        if chosen < 0:  # steps without candidates (n_top 0): match by label as before
            chosen = next((i for i, c in enumerate(cands) if c[1] == step["label"]), -1)
        self.chart_shows_choices = False
        sampled = step.get("sampled_prob", float("nan"))
        self.chart.set_candidates(
            [c[1] for c in cands],
            [c[2] for c in cands],
            [c[3] for c in cands],
            chosen,
            f"token {index} {step['label']!r}: model p = {step['prob']:.3f}, "
            f"sampler p = {sampled:.3f} (red outline)",
        )

    # ---- step mode -----------------------------------------------------------------------------------
    @Slot()
    def start_step_mode(self) -> None:
        self.stepping = True
        self.steps = []
        self.chart.clear_chart()
        self.output.clear_tokens(self.prompt.toPlainText())
        self._mark_output()
        self._set_enabled(True)
        self.sessions.step_start(self.prompt.toPlainText(), self.settings())

    @Slot(dict)
    def _on_step(self, result: dict) -> None:
        if result["step"] is not None:
            self._append(result["step"])
        self.choices = list(result["choices"])
        self.choice_list.clear()
        for token_id, text, prob, sampled in self.choices:
            mark = f"  {FILTERED_MARK} filtered" if sampled == 0 else f"  sampler {sampled:.3f}"
            item = QListWidgetItem(f"{_show(text)}    model {prob:.3f}{mark}")
            item.setData(Qt.ItemDataRole.UserRole, token_id)
            self.choice_list.addItem(item)
        self.chart_shows_choices = True
        self.chart.set_candidates(
            [c[1] for c in self.choices],
            [c[2] for c in self.choices],
            [c[3] for c in self.choices],
            title="next token: click a bar to choose it",
        )
        self._set_enabled(True)

    @Slot(QListWidgetItem)
    def _on_choice_item(self, item: QListWidgetItem) -> None:
        if self.stepping:
            self.sessions.step_choose(int(item.data(Qt.ItemDataRole.UserRole)))

    @Slot(int)
    def _on_bar(self, index: int) -> None:
        if self.stepping and self.chart_shows_choices and index < len(self.choices):
            self.sessions.step_choose(self.choices[index][0])
