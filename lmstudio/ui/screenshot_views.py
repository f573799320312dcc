"""Screenshots of the prediction views from a real run: ``python -m lmstudio.ui.screenshot OUT --views``.

Trains a small character-level Transformer (3 layers, 64 wide, context 32) on tiny Shakespeare in the
window (a few minutes on two busy cores), then drives the Generate tab (temperature 0.7, top-k 5, a token clicked: both
distributions) and the Inspect tab (the logit lens of a line of Hamlet, the embedding map with a token
found), saving ``generation.png``, ``lens.png`` and ``embeddings.png``. Called by
``lmstudio.ui.screenshot`` under a real display; never touches ~/.lmstudio.
"""

from __future__ import annotations

VIEW_SHOTS = ("generation", "lens", "embeddings")

SHAKESPEARE = [
    "corpus.source=tiny_shakespeare",
    "tokenizer.kind=char",
    "model.arch=transformer",
    "model.n_layer=3",
    "model.n_head=4",
    "model.n_embd=64",
    "model.block_size=32",
    "train.batch_size=16",
    "train.eval_interval=100",
    "train.eval_iters=4",
    "train.log_interval=20",
    "train.warmup_steps=20",
    "train.lr=3e-3",
    "train.min_lr=3e-4",
    "train.sample_interval=0",
]


def shoot_views(win, wait, settle, grab, steps: int) -> list[str]:
    """Train, then drive Generate and Inspect; ``wait``/``settle``/``grab`` come from screenshot.py."""
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    from lmstudio import config as C
    from lmstudio.ui.main_window import TAB_GENERATE, TAB_INSPECT
    from lmstudio.ui.panes.inspector import EMBEDDINGS, LENS

    cfg = C.RunConfig(name="shakespeare-gpt").override(SHAKESPEARE + [f"train.max_steps={steps}"])
    win.setup.set_config(cfg)
    wait(lambda: not win.setup.corpus.is_busy())
    win.start_training()
    wait(lambda: win.training.is_running())
    wait(lambda: not win.training.is_running(), timeout=900)
    sessions = win.session_controller
    wait(lambda: sessions.info is not None and sessions.info.get("step", 0) >= steps and not sessions.busy)

    gen = win.generate_pane
    win.tabs.setCurrentIndex(TAB_GENERATE)
    gen.prompt.setPlainText("ROMEO:\n")
    gen.temperature.setValue(0.7)
    gen.top_k.setValue(5)
    gen.top_p.setValue(1.0)
    gen.max_tokens.setValue(220)
    gen.seed.setValue(7)
    done = []
    sessions.generation_finished.connect(done.append)
    gen.start_generation()
    wait(lambda: bool(done))
    # a token where the model hesitated: the chart then shows the filtering at work
    index = max(range(len(gen.steps)), key=lambda i: 1.0 - gen.steps[i]["prob"])
    QTest.mouseClick(
        gen.output.viewport(), Qt.MouseButton.LeftButton, pos=gen.output.token_rect_center(index)
    )
    wait(lambda: bool(gen.chart.labels))
    grab("generation")

    pane = win.inspect_pane
    win.tabs.setCurrentIndex(TAB_INSPECT)
    pane.view_combo.setCurrentText(LENS)
    pane.text.setPlainText("To be, or not to be, that is the question:")
    got = []
    sessions.lens_ready.connect(got.append)
    pane.inspect()
    wait(lambda: bool(got) and not sessions.busy)
    grab("lens")

    maps = []
    sessions.embeddings_ready.connect(maps.append)
    pane.view_combo.setCurrentText(EMBEDDINGS)
    wait(lambda: bool(maps) and not sessions.busy)
    pane.embedding_map.search.setText("e")
    settle()
    grab("embeddings")
    return list(VIEW_SHOTS)
