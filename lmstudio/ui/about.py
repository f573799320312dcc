"""The About box: the version, what the app is, and where the built-in corpora come from (and their licences)."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QTextBrowser, QVBoxLayout, QWidget


class AboutDialog(QDialog):
    def __init__(self, version: str, sources_markdown: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("About lmstudio")
        self.resize(720, 520)
        head = QLabel(
            f"<h2>lmstudio {version}</h2>"
            "<p>A desktop playground for training and exploring small language models: "
            "RNN, LSTM, GRU and GPT-style Transformers, on your CPU or GPU.</p>"
            "<p>Built with PyTorch, Hugging Face tokenizers, PySide6 (Qt) and pyqtgraph. MIT licence.</p>"
        )
        head.setWordWrap(True)
        self.sources = QTextBrowser()
        self.sources.setObjectName("aboutSources")
        self.sources.setOpenExternalLinks(True)
        self.sources.setMarkdown(sources_markdown or "The built-in corpora's SOURCES.md is missing.")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(head)
        layout.addWidget(QLabel("<b>Built-in corpora: sources and licences</b>"))
        layout.addWidget(self.sources, 1)
        layout.addWidget(buttons)
