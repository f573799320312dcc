"""Bad input: odd corpora, every setting at zero / negative / huge / not a number, odd prompts.

Each case either works (checked against an independent expectation) or is refused with a ``UserError``
whose message names the file or field; nothing else may escape.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lmstudio import config as C
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine import inspect as insp
from lmstudio.engine import sampling
from lmstudio.engine.corpus import CorpusError, iter_corpus_chunks, read_corpus
from lmstudio.engine.models import build_model
from lmstudio.engine.session import Session
from lmstudio.engine.tokenizer import train_tokenizer
from lmstudio.engine.trainer import Trainer
from lmstudio.errors import UserError
from lmstudio.events import Failed, Finished
from tests.reliability.conftest import run_all, tiny_config

ZH = "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。\n" * 40
EN = "To be, or not to be, that is the question.\n" * 40


# ---- corpora ------------------------------------------------------------------------------------------
GOOD_CORPORA = {  # name: (bytes on disk, the text the app must read)
    "gbk": (
        ZH.replace("舉", "举").replace("鄉", "乡").encode("gbk"),
        ZH.replace("舉", "举").replace("鄉", "乡"),
    ),
    "big5": (ZH.encode("big5"), ZH),
    "utf-16-bom": (ZH.encode("utf-16"), ZH),
    "utf-16-le-no-bom": (ZH.encode("utf-16-le"), ZH),
    "utf-16-be-no-bom": (ZH.encode("utf-16-be"), ZH),
    "utf-16-le-english": (EN.encode("utf-16-le"), EN),
    "utf-8-bom": (b"\xef\xbb\xbf" + EN.encode(), EN),
    "mixed-line-endings": (b"one\r\ntwo\rthree\nfour\r\n" * 30, "one\ntwo\nthree\nfour\n" * 30),
    "one-very-long-line": (("abcdefghij" * 300_000).encode(), "abcdefghij" * 300_000),
    "emoji-and-astral": (("🙂 𝄞 a\n" * 200).encode(), "🙂 𝄞 a\n" * 200),
}
BAD_CORPORA = {  # name: (bytes, words the message must contain)
    "empty": (b"", "empty"),
    "whitespace-only": (b"  \n\t\r\n   \n", "whitespace"),
    "binary": (bytes(range(256)) * 50, "binary"),
    "nul-inside-text": (EN.encode() + b"\x00" + EN.encode(), "binary"),
}


@pytest.mark.parametrize("name", GOOD_CORPORA)
def test_odd_but_valid_corpora_read_exactly_whole_and_streamed(tmp_path, name):
    raw, expected = GOOD_CORPORA[name]
    path = tmp_path / f"{name}.txt"
    path.write_bytes(raw)
    assert read_corpus(str(path)) == expected
    # streaming in small, odd-sized pieces cuts multi-byte characters and CR LF pairs: same text
    assert "".join(iter_corpus_chunks(str(path), chunk_chars=4099)) == expected


@pytest.mark.parametrize("name", BAD_CORPORA)
def test_unusable_corpora_are_refused_with_the_file_named(tmp_path, name):
    raw, words = BAD_CORPORA[name]
    path = tmp_path / f"{name}.txt"
    path.write_bytes(raw)
    for read in (read_corpus, lambda p: "".join(iter_corpus_chunks(p))):
        with pytest.raises(CorpusError) as exc:
            read(str(path))
        assert path.name in str(exc.value) and words in str(exc.value)
    # training on it is a data failure with the same message, not a crash
    events = run_all(Trainer(tiny_config("lstm", f"corpus.source={path}"), tmp_path / "run"))
    assert isinstance(events[-1], Failed) and events[-1].kind == "data" and path.name in events[-1].message


@pytest.mark.parametrize("encoding, text", [("utf-8", EN), ("utf-16", EN), ("gb18030", ZH)])
def test_a_nul_far_past_the_detection_sample_is_refused_with_its_offset(tmp_path, encoding, text):
    """The binary check reads the first 256 KB only; the rest is checked as it is decoded (whole or streamed),
    so a corpus is never read twice into memory. **Fixed**: a NUL after 256 KB was accepted."""
    head = (text * 200).encode(encoding)  # 350-700 KB, a BOM first where the codec writes one
    rest = "utf-16-le" if encoding == "utf-16" else encoding  # no second BOM
    raw, offset = head + "\x00".encode(rest) + text.encode(rest), len(head)
    assert offset > 256 * 1024
    path = tmp_path / "late-nul.txt"
    path.write_bytes(raw)
    for read in (read_corpus, lambda p: "".join(iter_corpus_chunks(p, chunk_chars=4099))):
        with pytest.raises(CorpusError) as exc:
            read(str(path))
        message = str(exc.value)
        assert str(path) in message and "NUL" in message and "binary" in message, message
        assert f"byte {offset:,}" in message, message  # where it is, so the user can look


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
@pytest.mark.parametrize("text", [ZH, EN], ids=["chinese", "english"])
def test_utf16_with_a_lone_surrogate_is_read_with_it_replaced_and_says_so(tmp_path, encoding, text):
    """Half of an emoji (a lone surrogate, as an editor that cut a string leaves it) is one bad code unit, not
    a binary file: the text is read with U+FFFD in its place (like any bytes that do not decode), and the
    encoding the app and `lmstudio corpus` show says where. **Fixed**: "contains NUL bytes"."""
    from lmstudio.engine.corpus import corpus_info

    damaged = text[:100] + "\ud83d" + text[100:]
    path = tmp_path / f"{encoding}.txt"
    path.write_bytes(damaged.encode(encoding, "surrogatepass"))
    expected = text[:100] + "\ufffd" + text[100:]
    assert read_corpus(str(path)) == expected
    assert "".join(iter_corpus_chunks(str(path), chunk_chars=97)) == expected
    unit = 4 if "32" in encoding else 2
    bom = unit if encoding in ("utf-16", "utf-32") else 0
    shown = corpus_info(str(path)).encoding
    assert shown == f"{encoding} (some bytes replaced, the first at byte {bom + 100 * unit:,})", shown


def test_a_lone_surrogate_past_the_sample_is_replaced_and_reported_too(tmp_path):
    from lmstudio.engine.corpus import corpus_info

    text = EN * 200  # 352 KB of UTF-16: the bad unit is beyond what the detection looks at
    path = tmp_path / "late.txt"
    path.write_bytes((text + "\udc00" + EN).encode("utf-16-le", "surrogatepass"))
    expected = text + "\ufffd" + EN
    assert read_corpus(str(path)) == expected == "".join(iter_corpus_chunks(str(path), chunk_chars=4099))
    assert (
        corpus_info(str(path)).encoding
        == f"utf-16-le (some bytes replaced, the first at byte {2 * len(text):,})"
    )


@pytest.mark.parametrize("text, block", [("a", 8), ("短", 8), ("abc\n" * 3, 8), (EN, 4096)])
def test_a_corpus_shorter_than_the_context_says_how_much_is_needed(tmp_path, text, block):
    path = tmp_path / "short.txt"
    path.write_text(text, encoding="utf-8")
    events = run_all(
        Trainer(tiny_config("gru", f"corpus.source={path}", f"model.block_size={block}"), tmp_path / "run")
    )
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "data", failed
    assert "tokens" in failed.message and ("context" in failed.message or "block" in failed.message)


def test_a_single_line_corpus_trains(tmp_path):
    path = tmp_path / "line.txt"
    path.write_text("the cat sat on the mat " * 200, encoding="utf-8")
    events = run_all(
        Trainer(tiny_config("transformer", f"corpus.source={path}", "train.max_steps=3"), tmp_path / "run")
    )
    assert isinstance(events[-1], Finished), events[-1]


# ---- settings -----------------------------------------------------------------------------------------
def _numeric_fields():
    for section, cls in C.SECTIONS.items():
        for f in dataclasses.fields(cls):
            if C.field_type(f) in (int, float):
                yield f"{section}.{f.name}", f


NUMERIC = dict(_numeric_fields())
BAD_TEXT = ["abc", "", "1e3x", "nan", "inf", "-inf", "0x10", "½"]


@pytest.mark.parametrize("key", NUMERIC)
def test_every_numeric_setting_at_zero_negative_huge_and_not_a_number(key):
    spec = NUMERIC[key]
    lo, hi, lo_open = spec.metadata["lo"], spec.metadata["hi"], spec.metadata["lo_open"]
    is_int = C.field_type(spec) is int
    for raw in ("0", "-1", "-1e9", "1e30", "12345678901234567890123", "2.5"):
        value = float(raw)
        in_range = (value > lo if lo_open else value >= lo) and value <= hi
        whole = value == int(value)
        try:
            cfg = C.RunConfig().override([f"{key}={raw}"])
        except C.ConfigError as e:
            assert key in e.errors and e.errors[key], (key, raw)
            assert is_int and not whole, f"{key}={raw} refused while parsing: {e}"
            continue
        errors = cfg.errors()
        if in_range and (whole or not is_int):
            # in range: accepted, unless another field makes it wrong (min_lr above lr), which says so
            assert not errors.get(key, "").startswith("must"), (
                f"{key}={raw} in range but refused: {errors[key]}"
            )
        else:
            assert key in errors and errors[key].startswith("must"), f"{key}={raw} accepted: {errors}"
    for raw in BAD_TEXT:
        with pytest.raises(C.ConfigError) as exc:
            C.RunConfig().override([f"{key}={raw}"]).validate()
        assert key in exc.value.errors and key in str(exc.value), (key, raw, str(exc.value))
    # the same values from a hand-written config file: refused with the field named, never a TypeError
    section, name = key.split(".")
    for value in ("12", None, [1], {"a": 1}, True, float("nan")):
        data = C.RunConfig().to_dict()
        data[section][name] = value
        try:
            C.RunConfig.from_dict(data).validate()
        except C.ConfigError as e:
            assert key in e.errors, (key, value, e.errors)
        else:
            raise AssertionError(f"{key}={value!r} from a file was accepted")


def _lowest(spec):
    lo, lo_open = spec.metadata["lo"], spec.metadata["lo_open"]
    if C.field_type(spec) is int:
        return int(lo) + (1 if lo_open else 0)
    return lo + 1e-6 if lo_open else lo


@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_every_setting_at_its_lowest_accepted_value_trains_or_says_why(tmp_path, arch):
    """All numeric settings at once at the smallest value validation accepts (zero where zero is allowed)."""
    overrides = []
    for key, spec in NUMERIC.items():
        if key in ("model.vocab_size", "sample.seed", "train.seed", "corpus.val_fraction"):
            continue
        overrides.append(f"{key}={_lowest(spec)}")
    cfg = tiny_config(
        arch, *overrides, "model.n_embd=4", "model.hidden_size=4", "model.n_head=1", "train.max_steps=3"
    )
    assert cfg.errors() == {}
    events = run_all(Trainer(cfg, tmp_path / "run"))
    assert isinstance(events[-1], Finished), events[-1]
    # and the lowest sampling settings (temperature and top-p a hair above 0) generate
    session = Session.load(tmp_path / "run")
    steps = list(sampling.generate(session, "床", cfg.sample))
    assert len(steps) == cfg.sample.max_tokens and all(math.isfinite(s.prob) for s in steps)
    # the validation share at its lowest cannot hold a window: refused, naming the setting to change
    tiny_val = f"corpus.val_fraction={_lowest(NUMERIC['corpus.val_fraction'])}"
    events = run_all(Trainer(tiny_config(arch, tiny_val), tmp_path / "run2"))
    assert isinstance(events[-1], Failed) and events[-1].kind == "data", events[-1]
    assert "corpus.val_fraction" in events[-1].message


def test_every_setting_that_allows_zero_trains_at_zero(tmp_path):
    zeros = [
        f"{key}=0"
        for key, spec in NUMERIC.items()
        if spec.metadata["lo"] == 0 and not spec.metadata["lo_open"] and not key.startswith("sample.")
    ]
    assert "train.warmup_steps=0" in zeros and "train.grad_clip=0" in zeros and "model.dropout=0" in zeros
    cfg = tiny_config("lstm", *zeros, "train.max_steps=3", "model.n_embd=16", "model.hidden_size=16")
    events = run_all(Trainer(cfg, tmp_path / "run"))
    assert isinstance(events[-1], Finished), events[-1]
    assert all(math.isfinite(p) for e in events if hasattr(e, "loss") for p in [e.loss])


def test_heads_that_do_not_divide_the_width_are_refused_everywhere(tmp_path):
    cfg = C.RunConfig().override(["model.n_embd=30", "model.n_head=4"])
    assert "model.n_head" in cfg.errors()
    with pytest.raises(C.ConfigError, match="model.n_head"):
        build_model(dataclasses.replace(cfg.model, vocab_size=10))
    events = run_all(Trainer(dataclasses.replace(cfg, train=C.TrainConfig(device="cpu")), tmp_path / "r"))
    assert (
        isinstance(events[-1], Failed)
        and events[-1].kind == "config"
        and "model.n_head" in events[-1].message
    )


def test_a_bpe_vocabulary_larger_than_the_corpus_can_give(tmp_path):
    events = run_all(
        Trainer(
            tiny_config(
                "transformer", "tokenizer.kind=bpe", "tokenizer.vocab_size=60000", "train.max_steps=2"
            ),
            tmp_path / "run",
        )
    )
    last = events[-1]
    if isinstance(last, Failed):  # a refusal is fine if it says what to do
        assert last.kind in ("data", "config") and "vocab" in last.message.lower(), last
    else:
        assert isinstance(last, Finished)
        session = Session.load(tmp_path / "run")
        assert session.tokenizer.vocab_size < 60000  # the tokenizer took what the corpus had
        assert session.tokenizer.decode(session.tokenizer.encode("床前明月光")) == "床前明月光"


def test_a_context_longer_than_the_corpus_is_a_data_failure(tmp_path):
    events = run_all(Trainer(tiny_config("lstm", "model.block_size=8192"), tmp_path / "run"))
    assert isinstance(events[-1], Failed) and events[-1].kind == "data" and "tokens" in events[-1].message


# ---- prompts and inspector text -----------------------------------------------------------------------
PROMPTS = {
    "empty": "",
    "unseen": "€ß∑",
    "emoji": "🙂👍🏽",
    "longer-than-context": "床前明月光，疑是地上霜。" * 5,
    "only-newlines": "\n\n\n",
    "lone-surrogate": "a\ud800b",
    "nul": "a\x00b",
    "rtl": "שלום",
}


def _random_run(root, arch):
    """A run folder with untrained weights: the shapes are all that matters here (context 8)."""
    run = root / arch
    run.mkdir(parents=True)
    tok = train_tokenizer(C.TokenizerConfig(kind="char"), ZH)
    cfg = tiny_config(arch)
    cfg.model.vocab_size = tok.vocab_size
    (run / ckpt.CONFIG_FILE).write_text(cfg.to_json(), encoding="utf-8")
    tok.save(run / ckpt.TOKENIZER_FILE)
    torch.manual_seed(0)
    ckpt.save_weights(build_model(cfg.model), run / ckpt.LATEST_FILE, {"step": 1})
    return Session.load(run)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompt-runs")
    return {arch: _random_run(root, arch) for arch in ("rnn", "lstm", "gru", "transformer")}


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru", "transformer"])
@pytest.mark.parametrize("name", PROMPTS)
def test_odd_prompts_generate_and_inspect(sessions, arch, name):
    session, prompt = sessions[arch], PROMPTS[name]
    cfg = C.SampleConfig(max_tokens=12, seed=1)
    steps = list(sampling.generate(session, prompt, cfg))
    assert len(steps) == 12 and all(0 <= s.token_id < session.tokenizer.vocab_size for s in steps)
    assert all(math.isfinite(s.prob) and 0 <= s.prob <= 1 for s in steps)
    for inspect_call in (
        insp.activations,
        lambda s, t: insp.token_losses(s, t, 3),
        *((insp.attention,) if arch == "transformer" else ()),
    ):
        try:
            result = inspect_call(session, prompt)
        except UserError as e:  # an empty or one-token text cannot be inspected: say so
            assert name in ("empty",) or len(session.tokenizer.encode(prompt)) < 2, (name, str(e))
            assert str(e) and "Traceback" not in str(e)
            continue
        tokens = result[0] if isinstance(result, tuple) else result
        assert 0 < len(tokens) <= session.model.block_size + 1
    if arch != "transformer":
        with pytest.raises(UserError, match="attention"):
            insp.attention(session, "床前")
