"""The five architectures behind one contract (see base.py), and how to size them before building."""

from __future__ import annotations

from lmstudio.config import ConfigError, ModelConfig, section_errors
from lmstudio.engine.models.base import LanguageModel
from lmstudio.engine.models.conv import ConvLM, ConvState, receptive_field
from lmstudio.engine.models.recurrent import RecurrentLM, RecurrentState
from lmstudio.engine.models.sizing import memory_estimate, param_count
from lmstudio.engine.models.transformer import GPT, KVCache

__all__ = [
    "GPT",
    "ConvLM",
    "ConvState",
    "KVCache",
    "LanguageModel",
    "RecurrentLM",
    "RecurrentState",
    "build_model",
    "check_model_config",
    "memory_estimate",
    "param_count",
    "receptive_field",
]


def check_model_config(cfg: ModelConfig) -> None:
    """Raise ConfigError naming every model setting that cannot be built."""
    errs = section_errors("model", cfg)
    if cfg.vocab_size < 1 and "model.vocab_size" not in errs:
        errs["model.vocab_size"] = "unknown: train or load a tokenizer first, it sets the vocabulary size"
    if (
        cfg.arch == "transformer"
        and "model.n_head" not in errs
        and "model.n_embd" not in errs
        and cfg.n_embd % cfg.n_head
    ):
        errs["model.n_head"] = f"{cfg.n_head} heads do not divide the embedding width {cfg.n_embd}"
    if errs:
        raise ConfigError(errs)


def build_model(cfg: ModelConfig) -> LanguageModel:
    """A freshly initialised model on the current default device (wrap in ``torch.device(...)`` to choose)."""
    check_model_config(cfg)
    if cfg.arch == "transformer":
        return GPT(cfg)
    if cfg.arch == "conv":
        return ConvLM(cfg)
    return RecurrentLM(cfg)
