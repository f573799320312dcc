"""The Inspect tab: attention heatmaps (one head or all heads of a layer), recurrent hidden states and
gates over time, a per-token loss view of a text, the logit lens / layer readout grid and the embedding
map; PNG/CSV export of what is shown.

Engine work runs in the SessionController's thread; results arrive as numpy arrays and plain lists.
"""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from lmstudio.ui.panes.inspect_views import (
    ACTIVATIONS,
    ALL_HEADS,
    ATTENTION,
    LOSS,
    ViewChoice,
    attention_matrices,
    loss_page,
    save_losses_csv,
    save_matrices_csv,
    set_items,
    show_attention,
    show_signal,
    show_token_losses,
    signal_matrix,
)
from lmstudio.ui.run_follower import RunFollower, RunHeader
from lmstudio.ui.session_controller import SessionController
from lmstudio.ui.widgets.embedding_map import EmbeddingMap
from lmstudio.ui.widgets.heatmap import Heatmap
from lmstudio.ui.widgets.lens_grid import LensGrid
from lmstudio.ui.widgets.token_text import TokenText

# the logit lens (Transformer, convolutional: a residual stream) or layer readout (recurrent); the embedding map
LENS, READOUT, EMBEDDINGS = "Logit lens", "Layer readout", "Embedding map"
LENS_VIEWS = (LENS, READOUT)
# the stack's pages by view
_PAGE = {LOSS: 1, LENS: 2, READOUT: 2, EMBEDDINGS: 3}


class InspectorPane(QWidget):
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
        self.info: dict | None = None
        self.attention: dict | None = None
        self.activations: dict | None = None
        self.losses: dict | None = None
        self.lens: dict | None = None
        self.embeddings: dict | None = None
        self.embeddings_stale = False  # a newer checkpoint than the map shows
        self._snippet_offset = 0
        # replaced in tests: (caption, filter) -> chosen path or ""
        self.ask_save_path = lambda caption, filt: QFileDialog.getSaveFileName(self, caption, "", filt)[0]

        self.status = QLabel("No run loaded: open a run or start training.")
        self.status.setWordWrap(True)
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText("Text to inspect, or press 'Validation snippet'")
        self.text.setMaximumHeight(80)
        self.snippet_button = QPushButton("Validation snippet")
        self.inspect_button = QPushButton("Inspect")
        self.choice = ViewChoice()
        c = self.choice
        self.view_combo, self.layer_combo, self.head_combo, self.signal_combo = c.combos()
        self.png_button = QPushButton("Export PNG")
        self.csv_button = QPushButton("Export CSV")
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.heatmap = Heatmap()
        self.loss_text = TokenText()
        self.loss_summary = QLabel("")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.heatmap)
        self.stack.addWidget(loss_page(self.loss_text, self.loss_summary))
        self.lens_grid = LensGrid()
        self.embedding_map = EmbeddingMap()
        self.stack.addWidget(self.lens_grid)
        self.stack.addWidget(self.embedding_map)

        top = QHBoxLayout()
        top.addWidget(self.text, 1)
        buttons = QVBoxLayout()
        buttons.addWidget(self.snippet_button)
        buttons.addWidget(self.inspect_button)
        top.addLayout(buttons)
        selectors = c.row
        selectors.addWidget(self.png_button)
        selectors.addWidget(self.csv_button)
        layout = QVBoxLayout(self)
        if self.header is not None:
            layout.addWidget(self.header)
        layout.addWidget(self.status)
        layout.addLayout(top)
        layout.addLayout(selectors)
        layout.addWidget(self.note)
        layout.addWidget(self.stack, 1)

        self.snippet_button.clicked.connect(self.request_snippet)
        self.inspect_button.clicked.connect(self.inspect)
        self.view_combo.currentTextChanged.connect(self._on_view_changed)
        for combo in (self.layer_combo, self.head_combo, self.signal_combo):
            combo.currentIndexChanged.connect(self.render)
        self.png_button.clicked.connect(self.export_png)
        self.csv_button.clicked.connect(self.export_csv)
        s = self.sessions
        s.session_loaded.connect(self._on_loaded)
        s.session_cleared.connect(self._on_cleared)
        s.error.connect(self._on_error)
        s.attention_ready.connect(self._on_attention)
        s.activations_ready.connect(self._on_activations)
        s.losses_ready.connect(self._on_losses)
        s.lens_ready.connect(self._on_lens)
        s.embeddings_ready.connect(self._on_embeddings)
        self.embedding_map.which.currentTextChanged.connect(self._request_embeddings)
        s.snippet_ready.connect(self.text.setPlainText)
        self._set_enabled(False)
        if s.info:
            self._on_loaded(s.info)

    def _set_enabled(self, ready: bool) -> None:
        for w in (self.snippet_button, self.inspect_button, self.view_combo):
            w.setEnabled(ready)
        shown = (
            self.current_matrix() is not None or self.losses is not None or self._page_result() is not None
        )
        self.png_button.setEnabled(ready and shown)
        self.csv_button.setEnabled(ready and shown)

    # ---- session ---------------------------------------------------------------------------------------
    @Slot(dict)
    def _on_loaded(self, info: dict) -> None:
        same_shape = self.info is not None and all(
            self.info.get(k) == info.get(k) for k in ("arch", "n_layer", "n_head")
        )
        self.info = info
        self.status.setStyleSheet("")
        self.status.setText(
            f"Run {info['name']}: {info['arch']}, checkpoint at step {info['step']}. "
            f"The model reads at most {info['block_size']} tokens, so longer texts are cut there."
        )
        if same_shape:
            self._follow_checkpoint()
            # the text views were computed on the old weights: recompute the one shown (the others'
            # results are dropped and recomputed when shown)
            view = self.view_combo.currentText()
            had = view != EMBEDDINGS and self._result(view) is not None
            self.attention = self.activations = self.losses = self.lens = None
            if had and self.text.toPlainText():
                self.inspect()
            return
        lens = LENS if info["arch"] in ("transformer", "conv") else READOUT
        views = ([ATTENTION] if info["arch"] == "transformer" else []) + [ACTIVATIONS, LOSS, lens, EMBEDDINGS]
        set_items(self.view_combo, views, keep=False)
        set_items(self.layer_combo, [f"{i + 1}" for i in range(info["n_layer"])], keep=False)
        set_items(
            self.head_combo, [ALL_HEADS] + [f"{h + 1}" for h in range(info.get("n_head", 0))], keep=False
        )
        self.attention = self.activations = self.losses = self.lens = self.embeddings = None
        self.heatmap.clear()
        self.lens_grid.clear()
        self.embedding_map.clear()
        self._on_view_changed(self.view_combo.currentText())
        self._set_enabled(True)

    @Slot()
    def _on_cleared(self) -> None:
        self.info = None
        self.attention = self.activations = self.losses = self.lens = self.embeddings = None
        self.heatmap.clear()
        self.lens_grid.clear()
        self.embedding_map.clear()
        self.loss_text.clear_tokens("")
        self.loss_summary.setText("")
        self.note.setText("")
        self.status.setStyleSheet("")
        self.status.setText("No run loaded yet.")
        self._set_enabled(False)

    def _result(self, view: str):
        """What a text view last computed (None: nothing yet, or dropped after a new checkpoint)."""
        if view in LENS_VIEWS:
            return self.lens
        return {ATTENTION: self.attention, ACTIVATIONS: self.activations, LOSS: self.losses}.get(view)

    @Slot(str)
    def _on_error(self, message: str) -> None:
        self.status.setStyleSheet("color: #b00020;")
        self.status.setText(message)

    @Slot()
    def request_snippet(self) -> None:
        self.sessions.validation_snippet(400, self._snippet_offset)
        self._snippet_offset += 400

    @Slot()
    def inspect(self) -> None:
        text = self.text.toPlainText()
        view = self.view_combo.currentText()
        if view in LENS_VIEWS:
            self.sessions.inspect_lens(text, 5)
        elif view == EMBEDDINGS:
            self._request_embeddings()
        elif view == ATTENTION:
            self.sessions.inspect_attention(text)
        elif view == ACTIVATIONS:
            self.sessions.inspect_activations(text)
        else:
            self.sessions.inspect_losses(text, 5)

    @Slot(str)
    def _on_view_changed(self, view: str) -> None:
        self.choice.enable_for(view)
        self.stack.setCurrentIndex(_PAGE.get(view, 0))
        if (
            view == EMBEDDINGS
            and self.info is not None
            and (self.embeddings is None or self.embeddings_stale)
        ):
            self._request_embeddings()  # needs no text: shown as soon as it is chosen
        self.render()
        # a text view with nothing computed yet computes itself, rather than showing a blank
        if (
            view != EMBEDDINGS
            and self.info is not None
            and self._result(view) is None
            and self.text.toPlainText()
        ):
            self.inspect()

    # ---- results ---------------------------------------------------------------------------------------
    @Slot(dict)
    def _on_attention(self, result: dict) -> None:
        self.attention = result
        self._select_view(ATTENTION)

    @Slot(dict)
    def _on_activations(self, result: dict) -> None:
        self.activations = result
        set_items(self.signal_combo, list(result["maps"]))
        self._select_view(ACTIVATIONS)

    @Slot(dict)
    def _on_losses(self, result: dict) -> None:
        self.losses = result
        self.loss_summary.setText(show_token_losses(self.loss_text, result["first"], result["rows"]))
        self._select_view(LOSS)

    @Slot(dict)
    def _on_lens(self, result: dict) -> None:
        self.lens = result
        self.lens_grid.set_lens(result)
        self._select_view(READOUT if result["kind"] == "layer readout" else LENS)

    @Slot(dict)
    def _on_embeddings(self, result: dict) -> None:
        self.embeddings = result
        self.embedding_map.set_map(result)
        self._select_view(EMBEDDINGS)

    @Slot()
    def _request_embeddings(self, *_) -> None:
        self.embeddings_stale = False
        self.sessions.inspect_embeddings(self.embedding_map.which.currentText() or "input")

    def _follow_checkpoint(self) -> None:
        """A newer checkpoint of the same run was loaded: the map follows it (recomputed in the session
        thread), at once when it is on screen, else the next time it is shown."""
        if self.embeddings is None:
            return
        if self.view_combo.currentText() == EMBEDDINGS:
            self._request_embeddings()
        else:
            self.embeddings_stale = True

    def _page_result(self) -> dict | None:
        view = self.view_combo.currentText()
        return self.lens if view in LENS_VIEWS else self.embeddings if view == EMBEDDINGS else None

    def _select_view(self, view: str) -> None:
        if self.view_combo.currentText() != view:
            self.view_combo.setCurrentText(view)  # renders through _on_view_changed
        else:
            self.render()
        self._set_enabled(True)

    def current_matrix(self):
        """What the heatmap shows as (matrices, row labels, column labels), or None."""
        view = self.view_combo.currentText()
        layer = max(0, self.layer_combo.currentIndex())
        if view == ATTENTION and self.attention is not None:
            tokens = self.attention["tokens"]
            return (
                attention_matrices(self.attention["weights"], layer, self.head_combo.currentText()),
                tokens,
                tokens,
            )
        if view == ACTIVATIONS and self.activations is not None:
            name = self.signal_combo.currentText() or "hidden"
            shown = signal_matrix(self.activations["maps"], name, layer, self.activations["tokens"])
            return None if shown is None else ([shown[0]], shown[1], shown[2])
        return None

    @Slot()
    def render(self) -> None:
        view = self.view_combo.currentText()
        current = self.current_matrix()
        if view == LOSS:
            self.note.setText(self.losses["note"] if self.losses else "")
            return
        if view in LENS_VIEWS or view == EMBEDDINGS:
            result = self._page_result()
            self.note.setText(result["note"] if result and view in LENS_VIEWS else "")
            return
        if current is None:
            self.heatmap.clear()
            self.note.setText("")
            return
        matrices, rows, cols = current
        layer = max(0, self.layer_combo.currentIndex())
        if view == ATTENTION:
            show_attention(self.heatmap, matrices, rows, self.head_combo.currentText(), layer)
            self.note.setText(self.attention["note"])
        else:
            name = self.signal_combo.currentText() or "hidden"
            show_signal(
                self.heatmap, (matrices[0], rows, cols), name, layer, self.activations.get("arch", "")
            )
            self.note.setText(self.activations["note"])

    # ---- export ------------------------------------------------------------------------------------------
    @Slot()
    def export_png(self) -> None:
        path = self.ask_save_path("Export the picture as PNG", "PNG images (*.png)")
        if not path:
            return
        view = self.view_combo.currentText()
        widget = {LOSS: self.loss_text, LENS: self.lens_grid, READOUT: self.lens_grid}.get(view, self.heatmap)
        if view == EMBEDDINGS:
            widget = self.embedding_map
        if not widget.grab().save(path, "PNG"):
            self._on_error(f"Could not write {path}: check the folder exists and is writable.")

    @Slot()
    def export_csv(self) -> None:
        path = self.ask_save_path("Export the numbers as CSV", "CSV files (*.csv)")
        if not path:
            return
        try:
            view = self.view_combo.currentText()
            if view in LENS_VIEWS or view == EMBEDDINGS:
                page = self.lens_grid if view in LENS_VIEWS else self.embedding_map
                page.save_csv(path)
                return
            if view == LOSS and self.losses:
                save_losses_csv(self.losses["rows"], path)
            elif (current := self.current_matrix()) is not None:
                save_matrices_csv(*current, path)
        except OSError as e:
            self._on_error(f"Could not write {path} ({e.strerror}): choose another folder.")
