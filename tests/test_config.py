import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmstudio.config import ConfigError, RunConfig


def test_defaults_are_valid():
    assert RunConfig().errors() == {}


def test_json_and_toml_round_trip_losslessly():
    cfg = RunConfig(name="x").override(["train.lr=3e-4", "model.arch=lstm", "sample.stop=\\n\\n,END"])
    assert RunConfig.from_json(cfg.to_json()) == cfg
    assert RunConfig.from_toml(cfg.to_toml()) == cfg


def test_override_parses_types():
    cfg = RunConfig().override(["train.max_steps=500", "model.tie_weights=false", "train.lr=1e-2"])
    assert cfg.train.max_steps == 500 and cfg.model.tie_weights is False and cfg.train.lr == 0.01


@pytest.mark.parametrize(
    "assignment, field",
    [
        ("train.lr=abc", "train.lr"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.batch_size=-3", "train.batch_size"),
        ("train.batch_size=1e12", "train.batch_size"),
        ("train.batch_size=2.5", "train.batch_size"),
        ("model.arch=cnn", "model.arch"),
        ("model.n_head=3", "model.n_head"),  # 3 does not divide 128
        ("nosuch.field=1", "nosuch.field"),
        ("train.nosuch=1", "train.nosuch"),
        ("model.dropout=nan", "model.dropout"),
    ],
)
def test_bad_values_name_the_field(assignment, field):
    with pytest.raises(ConfigError) as exc:
        RunConfig().override([assignment]).validate()
    assert field in exc.value.errors
    assert exc.value.errors[field]


def test_wrong_types_and_future_versions_are_refused():
    data = RunConfig().to_dict()
    data["train"]["lr"] = "fast"
    with pytest.raises(ConfigError) as exc:
        RunConfig.from_dict(data)
    assert "train.lr" in exc.value.errors
    data = RunConfig().to_dict()
    data["version"] = 99
    with pytest.raises(ConfigError, match="newer"):
        RunConfig.from_dict(data)
    with pytest.raises(ConfigError, match="JSON"):
        RunConfig.from_json("{not json")


def test_config_imports_neither_torch_nor_qt():
    import subprocess
    import sys

    code = "import sys, lmstudio.config; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch','PySide6'))))"
    out = subprocess.run(
        [sys.executable, "-c", "import json;" + code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


@given(st.text(max_size=30), st.sampled_from(["train.lr", "train.batch_size", "model.arch", "model.bias"]))
def test_override_never_crashes_on_arbitrary_text(value, key):
    try:
        cfg = RunConfig().override([f"{key}={value}"])
    except ConfigError as e:
        assert key in e.errors
        return
    errs = cfg.errors()
    assert not errs or key in errs


def test_bpe_vocabulary_below_the_byte_alphabet_is_refused():
    errs = RunConfig().override(["tokenizer.kind=bpe", "tokenizer.vocab_size=100"]).errors()
    assert "256" in errs["tokenizer.vocab_size"]
    assert RunConfig().override(["tokenizer.kind=word", "tokenizer.vocab_size=100"]).errors() == {}
