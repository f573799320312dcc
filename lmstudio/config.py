"""Run configuration: plain dataclasses, validated with messages that name the field.

No torch and no Qt here: the UI builds its settings form from these dataclasses (each field's
``metadata`` carries its help text, choices and bounds), the CLI applies dotted overrides
(``train.lr=3e-4``) and a run folder stores the whole thing as ``config.json``. How one field is declared,
parsed and checked is ``config_fields``; ``field_type``, ``parse_value`` and ``section_errors``, which the
settings here use, are importable from this module too.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lmstudio import safe_read
from lmstudio.config_fields import (
    field_error,
    field_type,
    is_type_ok,
    parse_value,
    section_errors,
    setting,
    split_assignment,
)
from lmstudio.errors import ConfigError

CONFIG_VERSION = 1

ARCHS = ("rnn", "lstm", "gru", "conv", "transformer")
TOKENIZER_KINDS = ("char", "word", "bpe")


@dataclass
class CorpusConfig:
    # a built-in name (tiny_shakespeare, tang_poems, tang300) or a path to a text file or folder
    source: str = setting("tang300", "Built-in corpus name, or a path to a .txt file or a folder of them")
    # share of the text, taken from the end, held out for validation (nanoGPT uses 0.1)
    val_fraction: float = setting(
        0.1, "Share of the text held out for validation", lo=0.0, hi=0.5, lo_open=True
    )


@dataclass
class TokenizerConfig:
    # char: one token per character; word: whitespace/punctuation words (one per CJK character);
    # bpe: byte-level BPE trained on the corpus
    kind: str = setting("char", "How text is split into tokens", choices=TOKENIZER_KINDS)
    # target vocabulary size for BPE (the word tokenizer uses it as a cap)
    vocab_size: int = setting(1000, "Vocabulary size for BPE (a cap for word level)", lo=64, hi=65536)
    # words seen fewer times than this map to the unknown token (word level)
    min_frequency: int = setting(1, "Least count for a word to get its own token", lo=1, hi=1000)
    # Chinese script the text is converted to before tokenizing (OpenCC t2s / s2t): the corpus, and
    # prompts and inspector text too (a normaliser, so a tokenizer and its data always agree)
    script: str = setting(
        "as-is",
        "Convert Chinese text to simplified or traditional characters first",
        choices=("as-is", "simplified", "traditional"),
    )


@dataclass
class ModelConfig:
    # which family: Elman RNN, LSTM, GRU, a causal convolutional LM or a GPT-style decoder-only Transformer
    arch: str = setting("transformer", "Architecture", choices=ARCHS)
    # number of stacked layers (recurrent layers, convolutional blocks or Transformer blocks)
    n_layer: int = setting(4, "Layers", lo=1, hi=48)
    # embedding width (and the Transformer's residual width)
    n_embd: int = setting(128, "Embedding width", lo=4, hi=8192)
    # attention heads per block; must divide n_embd
    n_head: int = setting(
        4, "Attention heads (must divide the embedding width)", lo=1, hi=128, only=("transformer",)
    )
    # recurrent hidden-state size
    hidden_size: int = setting(
        256, "Hidden units per recurrent layer", lo=4, hi=8192, only=("rnn", "lstm", "gru")
    )
    # context length: the longest stretch of tokens the model sees at once
    block_size: int = setting(64, "Context length (tokens)", lo=2, hi=8192)
    # dropout probability during training
    dropout: float = setting(0.0, "Dropout", lo=0.0, hi=0.9)
    # biases in linear layers and LayerNorms
    bias: bool = setting(True, "Biases in linear layers")
    # share the input embedding with the output projection (recurrent: needs hidden_size == n_embd)
    tie_weights: bool = setting(True, "Tie input and output embeddings")
    # how the Transformer knows positions: learned table or fixed sinusoids (added to the embeddings)
    pos_encoding: str = setting(
        "learned", "Position encoding", choices=("learned", "sinusoidal"), only=("transformer",)
    )
    # taps of each causal convolution (the convolutional model); with the dilations it sets how far back it sees
    kernel_size: int = setting(3, "Convolution width (taps per layer)", lo=2, hi=64, only=("conv",))
    # dilations double from 1 over this many layers, then start again at 1 (WaveNet's cycle)
    dilation_cycle: int = setting(
        6, "Layers per dilation cycle (dilations 1, 2, 4, ... then again)", lo=1, hi=16, only=("conv",)
    )
    # filled from the tokenizer when the model is built; 0 means "not known yet"
    vocab_size: int = setting(0, "Vocabulary size (set from the tokenizer)", lo=0, hi=1 << 20)


def heads_error(m: ModelConfig) -> str | None:
    """Why a Transformer cannot split its width among its heads (each head gets n_embd / n_head), or None."""
    if m.arch == "transformer" and m.n_head >= 1 and m.n_embd % m.n_head:
        return f"{m.n_head} heads do not divide the embedding width {m.n_embd}"
    return None


@dataclass
class TrainConfig:
    # optimizer steps to run (each step may accumulate several micro-batches)
    max_steps: int = setting(2000, "Training steps", lo=1, hi=10_000_000)
    # sequences per micro-batch
    batch_size: int = setting(12, "Batch size", lo=1, hi=4096)
    # a wall-clock budget: stop after this many seconds of training (pauses excluded; 0 = none). The run ends at
    # whichever of max_steps and max_time comes first, and the learning-rate decay follows the time spent
    max_time: float = setting(
        0.0, "Time budget in seconds (0 = none; ends at steps or time, whichever is first)", lo=0.0, hi=1e8
    )
    # micro-batches per optimizer step
    grad_accum: int = setting(1, "Gradient accumulation steps", lo=1, hi=1024)
    optimizer: str = setting("adamw", "Optimizer", choices=("adamw", "sgd"))
    # peak learning rate (after warmup)
    lr: float = setting(1e-3, "Learning rate", lo=0.0, hi=10.0, lo_open=True)
    # floor the cosine schedule decays to
    min_lr: float = setting(1e-4, "Lowest learning rate at the end of the schedule", lo=0.0, hi=10.0)
    # linear warmup from 0 to lr over this many steps
    warmup_steps: int = setting(100, "Warmup steps", lo=0, hi=10_000_000)
    schedule: str = setting("cosine", "Learning-rate schedule after warmup", choices=("cosine", "constant"))
    # AdamW decoupled weight decay, applied to matrices only (not biases, norms)
    weight_decay: float = setting(0.1, "Weight decay", lo=0.0, hi=10.0)
    beta1: float = setting(0.9, "Adam beta1 / SGD momentum", lo=0.0, hi=0.99999)
    beta2: float = setting(0.99, "Adam beta2", lo=0.0, hi=0.99999)
    # clip the global gradient norm to this value (0 disables)
    grad_clip: float = setting(1.0, "Gradient clipping norm (0 = off)", lo=0.0, hi=1e6)
    # run a validation pass every this many steps
    eval_interval: int = setting(250, "Evaluate every N steps", lo=1, hi=10_000_000)
    # batches averaged for each loss estimate
    eval_iters: int = setting(20, "Batches per evaluation", lo=1, hi=10_000)
    # report step metrics every this many steps
    log_interval: int = setting(10, "Report every N steps", lo=1, hi=1_000_000)
    # generate a sample every this many steps (0 = never)
    sample_interval: int = setting(500, "Sample text every N steps (0 = never)", lo=0, hi=10_000_000)
    sample_tokens: int = setting(200, "Tokens per training sample", lo=1, hi=100_000)
    # save a checkpoint every this many steps (0 = at each evaluation)
    checkpoint_interval: int = setting(
        0, "Checkpoint every N steps (0 = at each evaluation)", lo=0, hi=10_000_000
    )
    device: str = setting("auto", "Device", choices=("auto", "cpu", "cuda", "mps"))
    # auto: bf16 autocast on CUDA where supported (fp16 otherwise), fp32 on CPU
    precision: str = setting("auto", "Numeric precision", choices=("auto", "fp32", "bf16", "fp16"))
    # torch.compile the model (auto: on for CUDA, off for CPU where it brought no gain)
    compile: str = setting("auto", "Compile the model with torch.compile", choices=("auto", "on", "off"))
    # torch's CPU threads for this run (0 = torch's default, one per core), set in the thread that trains and put
    # back when the run ends (engine/device.cpu_threads)
    threads: int = setting(0, "CPU threads (0 = torch's default)", lo=0, hi=1024)
    seed: int = setting(1337, "Random seed", lo=0, hi=2**63 - 1)
    # when the run ends, score the whole validation split (engine/full_eval.py), not just eval_iters batches
    full_eval: bool = setting(True, "Score the whole validation split when the run ends")


@dataclass
class SampleConfig:
    max_tokens: int = setting(200, "Tokens to generate", lo=1, hi=100_000)
    # <1 sharpens, >1 flattens the distribution; 0 is greedy (always the likeliest token)
    temperature: float = setting(0.8, "Temperature (0 = greedy)", lo=0.0, hi=100.0)
    # keep only the k likeliest tokens (0 = all)
    top_k: int = setting(0, "Top-k (0 = off)", lo=0, hi=1 << 20)
    # keep the smallest set of tokens whose probability adds up to p (1 = off)
    top_p: float = setting(1.0, "Top-p / nucleus (1 = off)", lo=0.0, hi=1.0, lo_open=True)
    # -1: a fresh random seed each time
    seed: int = setting(-1, "Seed (-1 = random)", lo=-1, hi=2**63 - 1)
    # generation stops after any of these strings appears
    stop: list = setting([], "Stop strings")


SECTIONS: dict[str, type] = {
    "corpus": CorpusConfig,
    "tokenizer": TokenizerConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "sample": SampleConfig,
}


@dataclass
class RunConfig:
    name: str = ""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    # ---- validation -------------------------------------------------------------------------
    def errors(self) -> dict[str, str]:
        """Every problem, keyed by dotted field name; empty when the config is valid."""
        errs: dict[str, str] = {}
        for section in SECTIONS:
            errs.update(section_errors(section, getattr(self, section)))
        m, t = self.model, self.train
        if heads := heads_error(m):
            errs.setdefault("model.n_head", heads)
        tok = self.tokenizer
        if tok.kind == "bpe" and isinstance(tok.vocab_size, int) and 64 <= tok.vocab_size < 256:
            errs.setdefault("tokenizer.vocab_size", "byte-level BPE needs at least 256 tokens (one per byte)")
        if t.min_lr > t.lr:
            errs.setdefault("train.min_lr", f"the floor {t.min_lr:g} is above the learning rate {t.lr:g}")
        return errs

    def validate(self) -> RunConfig:
        errs = self.errors()
        if errs:
            raise ConfigError(errs)
        return self

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"version": CONFIG_VERSION, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, *, strict: bool = True) -> RunConfig:
        """Build from plain data; unknown or wrong-typed fields raise ConfigError naming them."""
        if not isinstance(data, dict):
            raise ConfigError({"config": f"expected a table of settings, got {type(data).__name__}"})
        version = data.get("version", CONFIG_VERSION)
        if not isinstance(version, int) or version > CONFIG_VERSION:
            raise ConfigError(
                {
                    "version": f"written by a newer lmstudio (version {version!r}); "
                    f"this one reads up to {CONFIG_VERSION}"
                }
            )
        errs: dict[str, str] = {}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "version":
                continue
            if key == "name":
                if not isinstance(value, str):
                    errs["name"] = "must be text"
                else:
                    kwargs["name"] = value
            elif key in SECTIONS:
                try:
                    kwargs[key] = section_from_dict(key, value)
                except ConfigError as e:
                    errs.update(e.errors)
            elif strict:
                errs[key] = "unknown setting"
        if errs:
            raise ConfigError(errs)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        if safe_read.json_depth(text) > safe_read.MAX_CONFIG_DEPTH:
            raise ConfigError(
                {
                    "config": f"nested more than {safe_read.MAX_CONFIG_DEPTH} levels deep: not an lmstudio config"
                }
            )
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError({"config": f"not valid JSON ({e.msg} at line {e.lineno})"}) from None
        except (ValueError, RecursionError) as e:  # e.g. a number of thousands of digits
            raise ConfigError({"config": f"cannot be read as JSON ({str(e)[:120]})"}) from None
        return cls.from_dict(data)

    @classmethod
    def from_toml(cls, text: str) -> RunConfig:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError({"config": f"not valid TOML ({e})"}) from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            text = safe_read.read_text(path, safe_read.MAX_CONFIG_BYTES)
        except (OSError, safe_read.FileRefused) as e:
            raise ConfigError({str(path.name): f"cannot read {path}: {e}"}) from None
        try:
            return cls.from_toml(text) if path.suffix == ".toml" else cls.from_json(text)
        except ConfigError as e:
            raise ConfigError({f"{path.name}: {k}": v for k, v in e.errors.items()}) from None

    # ---- overrides --------------------------------------------------------------------------
    def override(self, assignments: list[str] | dict[str, Any]) -> RunConfig:
        """A copy with dotted overrides applied: ``["train.lr=3e-4", "model.arch=lstm"]``."""
        items = assignments.items() if isinstance(assignments, dict) else map(split_assignment, assignments)
        data = self.to_dict()
        errs: dict[str, str] = {}
        for key, raw in items:
            section, _, name = key.partition(".")
            if key == "name":
                data["name"] = str(raw)
                continue
            if section not in SECTIONS or not name:
                errs[key] = f"unknown setting (use section.field, sections: {', '.join(SECTIONS)})"
                continue
            spec = {f.name: f for f in fields(SECTIONS[section])}.get(name)
            if spec is None:
                errs[key] = (
                    f"unknown field; {section} has: {', '.join(f.name for f in fields(SECTIONS[section]))}"
                )
                continue
            try:
                data[section][name] = parse_value(spec, raw) if isinstance(raw, str) else raw
            except ValueError as e:
                errs[key] = str(e)
        if errs:
            raise ConfigError(errs)
        return RunConfig.from_dict(data)


def section_from_dict(section: str, data: Any) -> Any:
    cls = SECTIONS[section]
    if not isinstance(data, dict):
        raise ConfigError({section: "expected a table of settings"})
    known = {f.name: f for f in fields(cls)}
    errs = {f"{section}.{k}": "unknown field" for k in data if k not in known}
    values = {}
    for name, value in data.items():
        if name not in known:
            continue
        kind = field_type(known[name])
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # JSON/TOML write 1.0 as 1 sometimes
        msg = field_error(known[name], value) if kind in (bool, int, float, str, list) else None
        # only type errors here; range errors are reported by validate() so a loaded run can show them
        if msg and msg.startswith("must be") and not is_type_ok(kind, value):
            errs[f"{section}.{name}"] = msg
        values[name] = value
    if errs:
        raise ConfigError(errs)
    return cls(**values)


def load_preset(name_or_path: str) -> RunConfig:
    """A preset from resources/presets by name (``baby_shakespeare``) or a path to a TOML/JSON file."""
    from lmstudio.resources import preset_path

    path = Path(name_or_path)
    if not path.suffix:
        path = preset_path(name_or_path)
    cfg = RunConfig.load(path)
    if not cfg.name:
        cfg.name = path.stem
    return cfg
