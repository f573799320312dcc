"""The five architectures behind one contract (see base.py), and how to size them before building."""

from __future__ import annotations

from lmstudio.engine.models.base import LanguageModel
from lmstudio.engine.models.build import build_model, check_model_config
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
