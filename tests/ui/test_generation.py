"""The Generate tab driven like a person would: real widgets, a real run folder, the session thread."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt

from lmstudio.config import ModelConfig, RunConfig, SampleConfig, TokenizerConfig
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine import sampling
from lmstudio.engine.models import build_model
from lmstudio.engine.session import Session
from lmstudio.engine.tokenizer import train_tokenizer
from lmstudio.ui.panes.generation import GenerationPane
from lmstudio.ui.session_controller import SessionController
from lmstudio.ui.widgets.token_text import UNK_MARK, shade_color, strength_from_prob

TEXT = "the quick brown fox jumps over the lazy dog.\nso it goes, and on and on.\n"
WAIT = 15_000


def make_run(root, arch="transformer", step=5, seed=0, name=None, tokenizer=None, source=None):
    """A run folder as training leaves it: config.json, tokenizer.json, model.safetensors (random weights)."""
    run_dir = root / (name or f"run-{arch}")
    run_dir.mkdir(parents=True, exist_ok=True)
    tok = tokenizer or train_tokenizer(TokenizerConfig(kind="char"), TEXT)
    model_cfg = ModelConfig(
        arch=arch, n_layer=2, n_head=2, n_embd=16, hidden_size=16, block_size=24, vocab_size=tok.vocab_size
    )
    cfg = RunConfig(name=run_dir.name, model=model_cfg)
    cfg.corpus.source = str(root / "corpus.txt")
    (root / "corpus.txt").write_text(TEXT * 20, encoding="utf-8")
    if source:
        cfg.corpus.source = source
    (run_dir / ckpt.CONFIG_FILE).write_text(cfg.to_json(), encoding="utf-8")
    tok.save(run_dir / ckpt.TOKENIZER_FILE)
    torch.manual_seed(seed)
    ckpt.save_weights(build_model(model_cfg), run_dir / ckpt.LATEST_FILE, {"step": step})
    return run_dir


@pytest.fixture
def controller(qtbot):
    c = SessionController()
    yield c
    c.shutdown()


@pytest.fixture
def pane(qtbot, controller, tmp_path):
    run_dir = make_run(tmp_path)
    p = GenerationPane(controller)
    qtbot.addWidget(p)
    p.resize(1000, 700)
    p.show()
    qtbot.waitExposed(p)
    with qtbot.waitSignal(controller.session_loaded, timeout=WAIT):
        controller.set_run(str(run_dir))
    p.run_dir = run_dir
    return p


def generate(qtbot, pane, prompt="the ", max_tokens=30, seed=11):
    pane.prompt.setPlainText("")
    if prompt.isascii():
        qtbot.keyClicks(pane.prompt, prompt)
    else:  # QTest cannot type characters outside the keyboard layout (it aborts): paste them
        pane.prompt.setPlainText(prompt)
    pane.max_tokens.setValue(max_tokens)
    pane.seed.setValue(seed)
    with qtbot.waitSignal(pane.sessions.generation_finished, timeout=WAIT) as finished:
        qtbot.mouseClick(pane.generate_button, Qt.MouseButton.LeftButton)
    return finished.args[0]


def test_generated_text_streams_in_and_matches_the_engine(qtbot, pane):
    assert generate(qtbot, pane) == "completed"
    session = Session.load(pane.run_dir)
    cfg = SampleConfig(
        temperature=pane.temperature.value(),
        top_k=pane.top_k.value(),
        top_p=pane.top_p.value(),
        max_tokens=30,
        seed=11,
    )
    from lmstudio.ui.widgets.token_text import UNK_MARK

    # unknown tokens show as a mark (this random model draws one), the rest as their text
    expected = [UNK_MARK if s.unk else s.text for s in sampling.generate(session, "the ", cfg)]
    assert len(pane.steps) == 30 and len(pane.output.starts) == 30
    assert pane.output.toPlainText() == "the " + "".join(expected)
    # each token's background is shaded by its probability
    cursor = pane.output.textCursor()
    for i in (i for i in (0, 7, 29) if not pane.steps[i]["unk"]):
        cursor.setPosition(pane.output.starts[i] + 1)
        bg = cursor.charFormat().background().color()
        assert bg == shade_color(strength_from_prob(pane.steps[i]["prob"]))
    assert pane.generate_button.isEnabled() and not pane.stop_button.isEnabled()


def test_clicking_a_token_shows_its_candidates(qtbot, pane):
    generate(qtbot, pane, max_tokens=12)
    index = 5
    point = pane.output.token_rect_center(index)
    with qtbot.waitSignal(pane.output.token_clicked, timeout=WAIT) as clicked:
        qtbot.mouseClick(pane.output.viewport(), Qt.MouseButton.LeftButton, pos=point)
    assert clicked.args[0] == index
    step = pane.steps[index]
    n = len(step["top"])
    assert pane.chart.probs[:n] == pytest.approx([p for _, p in step["top"]])
    assert pane.chart.labels[:n] == [t for t, _ in step["top"]]
    assert pane.chart.labels[pane.chart.chosen] == step["label"]  # the chosen token is always a bar


def _filtered_reference(logits, temperature, top_k):
    """The sampler's distribution computed independently: float64, the k largest logits by argsort."""
    z = logits.double().numpy() / temperature
    keep = np.argsort(-z, kind="stable")[:top_k]
    p = np.zeros_like(z)
    p[keep] = np.exp(z[keep] - z[keep].max())
    return p / p.sum()


def test_the_chart_shows_the_distribution_the_sampler_drew_from(qtbot, pane):
    pane.temperature.setValue(0.3)
    pane.top_k.setValue(5)
    generate(qtbot, pane, prompt="on ", max_tokens=15, seed=4)
    session = Session.load(pane.run_dir)
    ids = sampling.prompt_ids(session, "on ")
    for index, step in enumerate(pane.steps):
        point = pane.output.token_rect_center(index)
        with qtbot.waitSignal(pane.output.token_clicked, timeout=WAIT):
            qtbot.mouseClick(pane.output.viewport(), Qt.MouseButton.LeftButton, pos=point)
        chart = pane.chart
        sampled = np.array(chart.sampled)
        assert (sampled > 0).sum() <= 5 and sampled.sum() == pytest.approx(1.0, abs=1e-5)
        with torch.no_grad():
            logits = session.model(torch.tensor([ids]))[0][0, -1]
        ref = _filtered_reference(logits, 0.3, 5)
        raw = torch.softmax(logits.double(), -1).numpy()
        cand_ids = [c[0] for c in step["candidates"]]
        np.testing.assert_allclose(sampled, ref[cand_ids], atol=1e-5)
        np.testing.assert_allclose(chart.probs, raw[cand_ids], atol=1e-5)
        # the chosen token is always a bar, outlined, and was drawable
        assert cand_ids[chart.chosen] == step["token_id"] and chart.sampled[chart.chosen] > 0
        shown = pane.output.tooltips[index].split("in the distribution sampled: ")[1].split(")")[0]
        assert float(shown) == pytest.approx(ref[step["token_id"]], abs=6e-4)
        assert chart.filtered == [q == 0 for q in ref[cand_ids]] and sum(chart.filtered) >= 5
        ids.append(step["token_id"])


def test_temperature_zero_is_greedy_and_a_new_generation_clears_the_chart(qtbot, pane):
    pane.temperature.clear()
    qtbot.keyClicks(pane.temperature, "0")
    qtbot.keyClick(pane.temperature, Qt.Key.Key_Tab)
    assert pane.temperature.value() == 0.0  # typing 0 no longer reverts to the old value
    pane.temperature.setValue(0.0)
    assert pane.temperature.text() == "0 (greedy)"
    generate(qtbot, pane, prompt="so ", max_tokens=12, seed=-1)
    session = Session.load(pane.run_dir)
    ids = sampling.prompt_ids(session, "so ")
    for step in pane.steps:
        with torch.no_grad():
            expected = int(session.model(torch.tensor([ids]))[0][0, -1].argmax())
        assert step["token_id"] == expected and step["sampled_prob"] == 1.0
        ids.append(expected)
    pane.show_token(3)
    assert pane.chart.labels and pane.chart.sampled[pane.chart.chosen] == 1.0
    assert sum(q > 0 for q in pane.chart.sampled) == 1
    pane.max_tokens.setValue(5)
    with qtbot.waitSignal(pane.sessions.generation_finished, timeout=WAIT):
        qtbot.mouseClick(pane.generate_button, Qt.MouseButton.LeftButton)
        assert pane.chart.labels == []  # cleared the moment the new generation starts
    assert pane.chart.labels == [] and len(pane.steps) == 5


def test_stop_ends_a_long_generation(qtbot, pane):
    pane.max_tokens.setValue(100000)
    with qtbot.waitSignal(pane.sessions.tokens_generated, timeout=WAIT):
        qtbot.mouseClick(pane.generate_button, Qt.MouseButton.LeftButton)
    assert pane.stop_button.isEnabled()
    with qtbot.waitSignal(pane.sessions.generation_finished, timeout=WAIT) as finished:
        qtbot.mouseClick(pane.stop_button, Qt.MouseButton.LeftButton)
    assert finished.args[0] == "stopped"
    assert 0 < len(pane.steps) < 100000


def test_step_mode_appends_the_token_a_person_picks(qtbot, pane):
    ready = pane.sessions.step_ready
    with qtbot.waitSignal(ready, timeout=WAIT):
        qtbot.mouseClick(pane.step_button, Qt.MouseButton.LeftButton)
    assert pane.choice_list.count() == 10 and len(pane.chart.probs) == 10
    # both distributions in step mode: the sampler's (this pane's settings) sums to 1 over what it keeps
    stepper = sampling.Stepper(Session.load(pane.run_dir), "", _sample_cfg(pane), n_top=10)
    ref = [(c.token_id, c.prob, c.sampled_prob) for c in stepper.candidates()]
    assert [c[0] for c in pane.choices] == [r[0] for r in ref]
    assert pane.chart.sampled == pytest.approx([r[2] for r in ref], abs=1e-6)
    wanted = pane.choices[2][0]
    with qtbot.waitSignal(ready, timeout=WAIT):
        qtbot.mouseClick(pane.chart.viewport(), Qt.MouseButton.LeftButton, pos=pane.chart.bar_center(2))
    assert pane.steps[-1]["token_id"] == wanted
    item = pane.choice_list.item(4)
    wanted = pane.choices[4][0]
    with qtbot.waitSignal(ready, timeout=WAIT):
        qtbot.mouseClick(
            pane.choice_list.viewport(),
            Qt.MouseButton.LeftButton,
            pos=pane.choice_list.visualItemRect(item).center(),
        )
    assert pane.steps[-1]["token_id"] == wanted
    with qtbot.waitSignal(ready, timeout=WAIT):
        qtbot.mouseClick(pane.sample_button, Qt.MouseButton.LeftButton)
    assert len(pane.steps) == 3 and len(pane.output.starts) == 3
    # a picked <unk> shows as its mark, never as its (replacement-character) text
    shown = "".join(UNK_MARK if s.get("unk") else s["text"] for s in pane.steps)
    assert pane.output.toPlainText().endswith(shown)


def _sample_cfg(pane):
    return SampleConfig(
        **{k: v for k, v in pane.settings().items() if k in SampleConfig.__dataclass_fields__}
    )


def test_step_mode_marks_the_tokens_the_settings_filter_out(qtbot, pane):
    pane.top_k.setValue(3)
    ready = pane.sessions.step_ready
    with qtbot.waitSignal(ready, timeout=WAIT):
        qtbot.mouseClick(pane.step_button, Qt.MouseButton.LeftButton)
    assert pane.chart.filtered == [False] * 3 + [True] * 7
    assert sum(pane.chart.sampled) == pytest.approx(1.0, abs=1e-5)
    assert "filtered" in pane.choice_list.item(5).text() and "sampler" in pane.choice_list.item(0).text()
    filtered_id = pane.choices[6][0]
    with qtbot.waitSignal(ready, timeout=WAIT):  # a person may still pick a filtered token
        qtbot.mouseClick(pane.chart.viewport(), Qt.MouseButton.LeftButton, pos=pane.chart.bar_center(6))
    step = pane.steps[-1]
    assert step["token_id"] == filtered_id and step["sampled_prob"] == 0.0
    for _ in range(4):
        with qtbot.waitSignal(ready, timeout=WAIT):
            qtbot.mouseClick(pane.sample_button, Qt.MouseButton.LeftButton)
        assert pane.steps[-1]["sampled_prob"] > 0  # the sampler only ever draws kept tokens


def test_step_mode_shows_the_unknown_token_as_a_mark(qtbot, pane):
    from lmstudio.ui.widgets.token_text import UNK_MARK

    ready = pane.sessions.step_ready
    with qtbot.waitSignal(ready, timeout=WAIT):
        qtbot.mouseClick(pane.step_button, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(ready, timeout=WAIT):
        pane.sessions.step_choose(0)
    assert pane.steps[-1]["unk"] is True and pane.steps[-1]["text"] == "\ufffd"
    assert pane.output.toPlainText().endswith(UNK_MARK) and "\ufffd" not in pane.output.toPlainText()
    assert "unknown token" in pane.output.tooltips[-1]


def test_bpe_on_chinese_generates_no_replacement_characters_and_says_it_masked(qtbot, controller, tmp_path):
    from lmstudio.engine.corpus import read_corpus

    tok = train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=300), read_corpus("tang300"))
    run_dir = make_run(tmp_path, arch="gru", name="bpe", tokenizer=tok, source="tang300")
    p = GenerationPane(controller)
    qtbot.addWidget(p)
    with qtbot.waitSignal(controller.session_loaded, timeout=WAIT):
        controller.set_run(str(run_dir))
    p.temperature.setValue(1.5)
    assert generate(qtbot, p, prompt="床前", max_tokens=200, seed=2) == "completed"
    assert "\ufffd" not in p.output.toPlainText()
    assert any(s["masked"] > 0 for s in p.steps)
    assert "UTF-8 mask" in p.status.text()
    # the simplified prompt was fitted to the traditional corpus, and the pane says so
    assert "床→牀" in p.status.text()


def _save_new_checkpoint(run_dir, step):
    model_cfg = RunConfig.load(run_dir / ckpt.CONFIG_FILE).model
    torch.manual_seed(step)
    ckpt.save_weights(build_model(model_cfg), run_dir / ckpt.LATEST_FILE, {"step": step})


def test_a_new_checkpoint_is_loaded_at_once_when_idle(qtbot, pane):
    _save_new_checkpoint(pane.run_dir, 42)
    with qtbot.waitSignal(pane.sessions.session_loaded, timeout=WAIT) as loaded:
        pane.sessions.checkpoint_written(str(pane.run_dir / ckpt.LATEST_FILE))
    assert loaded.args[0]["step"] == 42 and "step 42" in pane.status.text()
    assert generate(qtbot, pane, max_tokens=5) == "completed"
    expected = sampling.generate(
        Session.load(pane.run_dir),
        "the ",
        SampleConfig(temperature=pane.temperature.value(), max_tokens=5, seed=11),
    )
    assert pane.output.toPlainText() == "the " + "".join(s.text for s in expected)


def test_a_checkpoint_written_during_generation_is_loaded_before_the_next(qtbot, pane):
    pane.max_tokens.setValue(100000)
    with qtbot.waitSignal(pane.sessions.tokens_generated, timeout=WAIT):
        qtbot.mouseClick(pane.generate_button, Qt.MouseButton.LeftButton)
    _save_new_checkpoint(pane.run_dir, 43)
    pane.sessions.checkpoint_written(str(pane.run_dir))
    with qtbot.waitSignal(pane.sessions.generation_finished, timeout=WAIT):
        qtbot.mouseClick(pane.stop_button, Qt.MouseButton.LeftButton)
    assert "step 5" in pane.status.text()
    with qtbot.waitSignal(pane.sessions.session_loaded, timeout=WAIT) as loaded:
        generate(qtbot, pane, max_tokens=5)
    assert loaded.args[0]["step"] == 43


def test_a_folder_that_is_not_a_run_shows_an_error(qtbot, controller, tmp_path):
    pane = GenerationPane(controller)
    qtbot.addWidget(pane)
    with qtbot.waitSignal(controller.error, timeout=WAIT) as err:
        controller.set_run(str(tmp_path / "nope"))
    assert "not a run folder" in err.args[0] and err.args[0] in pane.status.text()
    assert not pane.generate_button.isEnabled()
    # training's first checkpoint loads the run when none is loaded yet
    run_dir = make_run(tmp_path, "rnn")
    with qtbot.waitSignal(controller.session_loaded, timeout=WAIT):
        controller.checkpoint_written(str(run_dir))
    assert pane.generate_button.isEnabled() and "rnn" in pane.status.text()


def test_shading_follows_surprise_in_bits():
    assert shade_color(strength_from_prob(1.0)).name() == "#ffffff"
    assert strength_from_prob(0.5) == pytest.approx(0.1) and strength_from_prob(1e-6) == 1.0
    assert shade_color(strength_from_prob(1e-4)).getRgb()[:3] == (230, 70, 40)
