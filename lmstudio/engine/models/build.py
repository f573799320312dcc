"""Building a model from its settings: the checks first, then the architecture's class.

Its own module, apart from the package's ``__init__`` (which re-exports it), so that ``sizing`` can build
models on the meta device without importing the package that imports it.
"""

from __future__ import annotations

from lmstudio.config import ConfigError, ModelConfig, heads_error
from lmstudio.config_fields import section_errors
from lmstudio.engine.models.base import LanguageModel
from lmstudio.engine.models.conv import ConvLM
from lmstudio.engine.models.recurrent import RecurrentLM
from lmstudio.engine.models.transformer import GPT


def check_model_config(cfg: ModelConfig) -> None:
    """Raise ConfigError naming every model setting that cannot be built."""
    errs = section_errors("model", cfg)
    if cfg.vocab_size < 1 and "model.vocab_size" not in errs:
        errs["model.vocab_size"] = "unknown: train or load a tokenizer first, it sets the vocabulary size"
    if "model.n_head" not in errs and "model.n_embd" not in errs and (heads := heads_error(cfg)):
        errs["model.n_head"] = heads
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
