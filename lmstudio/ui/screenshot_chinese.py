"""A screenshot of Chinese generation: ``python -m lmstudio.ui.screenshot OUT --chinese``.

Trains a small byte-level BPE Transformer on the 300 Tang Poems in the window (vocabulary 1,000: most
characters stay split into byte tokens, the case that used to fill the text with "�"), then generates
from a prompt typed in simplified characters, which the run fits to the corpus's traditional ones,
and saves ``generation_chinese.png``. Called by ``lmstudio.ui.screenshot`` under a real display; never
touches ~/.lmstudio.
"""

from __future__ import annotations

TANG_BPE = [
    "corpus.source=tang300",
    "tokenizer.kind=bpe",
    "tokenizer.vocab_size=1000",
    "model.arch=transformer",
    "model.n_layer=2",
    "model.n_head=4",
    "model.n_embd=64",
    "model.block_size=48",
    "train.batch_size=16",
    "train.eval_interval=100",
    "train.eval_iters=4",
    "train.log_interval=20",
    "train.warmup_steps=20",
    "train.lr=3e-3",
    "train.min_lr=3e-4",
    "train.sample_interval=0",
]


def shoot_chinese(win, wait, settle, grab, steps: int) -> str:
    """Train, then generate Chinese text in the Generate tab; returns the text generated."""
    from lmstudio import config
    from lmstudio.ui.main_window import TAB_GENERATE

    cfg = config.RunConfig(name="tang-bpe").override(TANG_BPE + [f"train.max_steps={steps}"])
    win.setup.set_config(cfg)
    wait(lambda: not win.setup.corpus.is_busy())
    win.start_training()
    wait(lambda: win.training.is_running())
    wait(lambda: not win.training.is_running(), timeout=900)
    sessions = win.session_controller
    wait(lambda: sessions.info is not None and sessions.info.get("step", 0) >= steps and not sessions.busy)

    gen = win.generate_pane
    win.tabs.setCurrentIndex(TAB_GENERATE)
    gen.prompt.setPlainText("床前明月光，")  # simplified 床: the corpus has 牀
    gen.temperature.setValue(0.9)
    gen.top_k.setValue(0)
    gen.top_p.setValue(1.0)
    gen.max_tokens.setValue(240)
    gen.seed.setValue(3)
    done = []
    sessions.generation_finished.connect(done.append)
    gen.start_generation()
    wait(lambda: bool(done))
    settle(600)
    grab("generation_chinese")
    text = "".join(s["text"] for s in gen.steps)
    print(f"generated {len(gen.steps)} tokens, {text.count(chr(0xFFFD))} U+FFFD; status: {gen.status.text()}")
    return text
