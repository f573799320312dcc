"""Setup steps 3 and 4: the model's shape and the training settings, as forms generated from config.py.

The model page shows the parameter count and a memory estimate as the user types (the controller
caches them per config; a short timer coalesces keystrokes).
"""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from lmstudio.ui.controller import Controller
from lmstudio.ui.widgets.config_form import ConfigForm


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def human_count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} B"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k"
    return str(n)


def scrolled(widget: QWidget) -> QScrollArea:
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setWidget(widget)
    return area


class ModelPage(QWidget):
    preset_requested = Signal(str)

    def __init__(self, controller: Controller, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        intro = QLabel(
            "Choose the network that learns to predict the next token. <b>RNN/LSTM/GRU</b> read the "
            "text one token at a time; the <b>convolutional</b> model looks at a fixed window of recent "
            "tokens through stacked, dilated convolutions; the <b>Transformer</b> looks at the whole "
            "context at once."
        )
        intro.setWordWrap(True)
        self.presets = QComboBox()
        self.presets.setObjectName("presetCombo")
        self.load_preset_btn = QPushButton("Load preset")
        self.load_preset_btn.clicked.connect(lambda: self.preset_requested.emit(self.presets.currentText()))
        preset_row = QHBoxLayout()
        preset_row.addWidget(QLabel("Preset:"))
        preset_row.addWidget(self.presets, 1)
        preset_row.addWidget(self.load_preset_btn)
        self.preset_about = QLabel("")
        self.preset_about.setObjectName("presetAbout")
        self.preset_about.setWordWrap(True)
        self.presets.currentTextChanged.connect(self._describe_preset)
        self.presets.setPlaceholderText("choose a preset…")
        self.form = ConfigForm("model", exclude=("vocab_size",))
        self.params_label = QLabel("–")
        self.params_label.setObjectName("paramCount")
        self.memory_label = QLabel("–")
        self.memory_label.setObjectName("memoryEstimate")
        self.memory_label.setWordWrap(True)
        size_box = QGroupBox("Size")
        size_form = QFormLayout(size_box)
        size_form.addRow("Parameters", self.params_label)
        size_form.addRow("Memory to train", self.memory_label)
        self.reach_label = QLabel("–")
        self.reach_label.setObjectName("receptiveField")
        self.reach_label.setWordWrap(True)
        size_form.addRow("Receptive field", self.reach_label)
        self.tie_label = QLabel("")
        self.tie_label.setObjectName("tieNote")
        self.tie_label.setWordWrap(True)
        size_form.addRow("Tied embeddings", self.tie_label)
        self._size_form = size_form
        body = QWidget()
        body_layout = QVBoxLayout(body)
        body_layout.addWidget(self.form)
        body_layout.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(preset_row)
        layout.addWidget(self.preset_about)
        layout.addWidget(scrolled(body), 1)
        layout.addWidget(size_box)
        self.form.changed.connect(self._sync_arch)

    def set_presets(self, names: list[str]) -> None:
        self.presets.blockSignals(True)
        self.presets.clear()
        self.presets.addItems(names)
        self.presets.setCurrentIndex(-1)  # none chosen until a config says which (show_preset)
        self.presets.blockSignals(False)
        self.load_preset_btn.setEnabled(bool(names))
        self._describe_preset(self.presets.currentText())

    def show_preset(self, name: str) -> None:
        """Select ``name`` when the settings shown are that preset's, else no preset (placeholder)."""
        self.presets.setCurrentIndex(self.presets.findText(name) if name else -1)
        self._describe_preset(self.presets.currentText())

    def _describe_preset(self, name: str) -> None:
        about = self.controller.preset_description(name) if name else ""
        self.preset_about.setText(f"<i>{about}</i>" if about else "")
        self.presets.setToolTip(about)

    def show_tying(self, arch: str, tie: bool, n_embd: int, hidden: int) -> None:
        """Say whether tying applies: a recurrent model ties only when its hidden size is the embedding size."""
        recurrent = arch in ("rnn", "lstm", "gru")
        self._size_form.setRowVisible(self.tie_label, tie and recurrent)
        if tie and recurrent and hidden != n_embd:
            self.tie_label.setText(
                f"<span style='color:#b35900'>not applied: the {arch.upper()}'s output (hidden size {hidden}) "
                f"must be as wide as the embedding ({n_embd}) to share its matrix; set them equal to tie. "
                "The parameter count is for untied weights.</span>"
            )
        elif tie and recurrent:
            self.tie_label.setText("applied: input and output share one matrix (counted once)")

    def _sync_arch(self) -> None:
        values, _ = self.form.raw_values()
        self.form.set_arch(values.get("arch", "transformer"))

    def show_reach(self, tokens: int | None, context: int = 0) -> None:
        """How far back the convolutional model sees; the row is hidden for the other architectures."""
        self._size_form.setRowVisible(self.reach_label, tokens is not None)
        if tokens is None:
            return
        if context > tokens:
            beyond = (
                f"; shorter than the context ({context}): no prediction uses more than {tokens} of its window"
            )
        elif tokens > context:
            beyond = (
                f"; longer than the context ({context}): training windows never fill it, generation (which "
                "carries on past the context) does"
            )
        else:
            beyond = ", the whole context"
        self.reach_label.setText(f"each prediction sees the last {tokens} tokens{beyond}")

    def show_size(
        self, n_params: int | None, memory: dict | None, vocab_note: str = "", error: str = ""
    ) -> None:
        if error:
            self.params_label.setText("–")
            self.memory_label.setText(error)
            return
        self.params_label.setText(f"{human_count(n_params)} ({n_params:,}){vocab_note}")
        memory = dict(memory or {})
        memory.pop("n_params", None)
        total = memory.pop("total", None)
        parts = [
            f"{k.replace('_', ' ')} {human_bytes(v) if isinstance(v, (int, float)) else v}"
            for k, v in memory.items()
        ]
        head = f"about {human_bytes(total)}" if isinstance(total, (int, float)) else ""
        self.memory_label.setText(f"{head} ({', '.join(parts)})" if head else ", ".join(parts) or "–")


class TrainPage(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        intro = QLabel(
            "How long and how fast to learn. A few hundred steps on the 300 Tang Poems take seconds; "
            "the <i>learning rate</i> is how big each correction is."
        )
        intro.setWordWrap(True)
        self.name = QLineEdit(placeholderText="a name for the run (optional)")
        self.name.setObjectName("runName")
        name_row = QHBoxLayout()
        name_row.addWidget(QLabel("Run name:"))
        name_row.addWidget(self.name, 1)
        self.form = ConfigForm("train")
        self.sample_form = ConfigForm("sample", exclude=("stop",))
        samples = QGroupBox("Samples shown while training")
        QVBoxLayout(samples).addWidget(self.sample_form)
        body = QWidget()
        body_layout = QVBoxLayout(body)
        body_layout.addWidget(self.form)
        body_layout.addWidget(samples)
        body_layout.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(name_row)
        layout.addWidget(scrolled(body), 1)


class Debouncer(QTimer):
    """A single-shot timer restarted on every poke: runs its slot once typing pauses."""

    def __init__(self, ms: int, slot, parent=None):
        super().__init__(parent)
        self.setSingleShot(True)
        self.setInterval(ms)
        self.timeout.connect(slot)

    def poke(self) -> None:
        self.start()
