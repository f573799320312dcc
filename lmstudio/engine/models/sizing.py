"""How big a model will be, before building it: parameter count and a training-memory estimate.

The UI calls these on every keystroke, so the count builds the model on the ``meta`` device (shapes
only, no memory, no initialisation work) and is cached by configuration.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import torch

from lmstudio.config import ModelConfig, TrainConfig
from lmstudio.engine.models.build import build_model

# elements each layer keeps for the backward pass, per token, in units of its width
# Transformer block: ln_1 in/out, q k v, attention out, its contiguous copy, ln_2 in/out, MLP 4C in and out of GELU
_TRANSFORMER_PER_LAYER = 1 + 1 + 3 + 1 + 1 + 1 + 1 + 4 + 4
# recurrent layer: its output h plus what the gates leave behind (LSTM i f g o, c, tanh c; GRU r z n, W_hn h)
_RECURRENT_PER_LAYER = {"rnn": 2, "lstm": 7, "gru": 5}
# convolutional block: LayerNorm in/out, its zero-padded copy, conv out (2C), sigmoid gate, GLU out, projection
_CONV_PER_LAYER = 1 + 1 + 1 + 2 + 1 + 1 + 1


def param_count(cfg: ModelConfig) -> int:
    """Trainable parameters, a tied matrix counted once; raises ConfigError for a config that cannot be built."""
    return _param_count(dataclasses.astuple(cfg))


@lru_cache(maxsize=512)
def _param_count(key: tuple) -> int:
    with torch.device("meta"):
        return build_model(ModelConfig(*key)).num_params()


def _activation_bytes(m: ModelConfig, t: TrainConfig) -> int:
    """A rough count of what one micro-batch keeps alive between the forward and the backward pass."""
    width = 2 if t.precision in ("bf16", "fp16") else 4
    tokens = t.batch_size * m.block_size
    if m.arch == "transformer":
        per_token = m.n_embd * (_TRANSFORMER_PER_LAYER * m.n_layer + 3)  # + embedding sum, ln_f in/out
        masks = tokens * m.n_embd * (2 * m.n_layer + 1) if m.dropout > 0 else 0  # one byte each
    elif m.arch == "conv":
        per_token = m.n_embd * (_CONV_PER_LAYER * m.n_layer + 3)  # + embedding, ln_f in/out
        masks = tokens * m.n_embd * (m.n_layer + 1) if m.dropout > 0 else 0
    else:
        per_token = m.n_embd + m.hidden_size * (_RECURRENT_PER_LAYER[m.arch] * m.n_layer + 1)  # + head input
        masks = tokens * m.hidden_size * m.n_layer if m.dropout > 0 else 0
    # logits in the compute precision plus cross-entropy's float32 log-softmax
    logits = tokens * m.vocab_size * (width + 4)
    return tokens * per_token * width + masks + logits


def memory_estimate(model_cfg: ModelConfig, train_cfg: TrainConfig) -> dict[str, int]:
    """Bytes needed to train: params, grads, optimizer state, activations of one micro-batch, total.

    Weights, gradients and optimizer state are float32 (mixed precision keeps float32 master weights):
    4 bytes each per parameter; AdamW keeps two moments (8 bytes), SGD with momentum one (4 bytes).
    Activations use 2 bytes per value under bf16/fp16 and 4 otherwise ("auto" counts as float32, the
    larger). Fused attention keeps no (T, T) matrix, so it is not counted.
    """
    n = param_count(model_cfg)
    if train_cfg.optimizer == "adamw":
        optimizer = 8 * n
    else:
        optimizer = 4 * n if train_cfg.beta1 > 0 else 0
    est = {
        "n_params": n,
        "params": 4 * n,
        "grads": 4 * n,
        "optimizer": optimizer,
        "activations": _activation_bytes(model_cfg, train_cfg),
    }
    est["total"] = est["params"] + est["grads"] + est["optimizer"] + est["activations"]
    return est
