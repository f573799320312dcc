"""Choosing the next token: the distribution the sampler draws from, and the draw.

``sampling_distribution`` applies the ``forbidden`` mask (byte-level BPE's UTF-8 guard), temperature, top-k
and top-p to the model's logits; ``pick`` draws from exactly that tensor (or takes a token a person chose) and
reads back, in one device-to-host copy, what the views show: the model's own probabilities and the sampled
ones. ``likeliest`` lists the model's top tokens for step mode.
"""

from __future__ import annotations

import torch

from lmstudio.config import SampleConfig
from lmstudio.errors import UserError


class SamplingError(UserError):
    pass


def filter_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Float32 (or float64) logits (..., V) shifted by their maximum and scaled by temperature, with the tokens outside
    top-k / the nucleus set to -inf. Temperature 0 keeps only the argmax (greedy)."""
    if logits.dtype != torch.float64:
        logits = logits.float()  # half-precision logits (autocast) would round the filtered mass
    if temperature <= 0:
        best = logits.argmax(dim=-1, keepdim=True)
        greedy = torch.full_like(logits, float("-inf"))
        return greedy.scatter(-1, best, 0.0)
    # shifted, the largest logit is 0 and every other one <= 0: dividing by a tiny temperature can
    # reach -inf but never inf - inf (NaN); below float32's smallest normal number the divisor would be 0
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / max(temperature, torch.finfo(logits.dtype).tiny)
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # mass strictly before each token: a token stays while the set before it has not reached p yet,
        # which keeps the smallest set whose total is >= p (the first token always stays)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        drop_sorted = before >= top_p
        drop_sorted[..., 0] = False  # a top_p that float32 rounds to 0 still keeps the likeliest token
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sampling_distribution(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    forbidden: torch.Tensor | None = None,
) -> torch.Tensor:
    """The distribution the sampler draws from: probabilities (..., V) after the ``forbidden`` mask (bool,
    e.g. byte-level BPE's UTF-8 guard), temperature, top-k and top-p, summing to 1, exactly 0 for every
    filtered token (one-hot at the argmax for temperature 0).

    The sampler draws from this very tensor, and the views show it, so what is shown is what was drawn from.
    """
    if forbidden is not None:
        logits = logits.float().masked_fill(forbidden, float("-inf"))
    return torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)


def draw(sampled: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    try:
        return torch.multinomial(sampled, 1, generator=gen)  # (1,)
    except RuntimeError as e:  # NaN or inf from the model: its weights are broken
        raise SamplingError(
            "The model's output is not a number (NaN or infinity): its weights are broken, most likely "
            "because training diverged. Load an earlier checkpoint or train again with a lower learning rate."
        ) from e


def pick(
    logits: torch.Tensor,
    cfg: SampleConfig,
    gen: torch.Generator,
    n_top: int,
    forbidden: torch.Tensor | None = None,
    chosen: int | None = None,
) -> tuple[int, float, float, list, float]:
    """Sample one token (or take ``chosen``), never one of ``forbidden`` (bool (V,)); return (id, model
    prob, sampled prob, [(id, prob, sampled prob)...], masked model prob) with a single device-to-host copy."""
    probs = torch.softmax(logits.float(), dim=-1)  # (V,)
    if forbidden is not None:
        masked = (probs * forbidden).sum().reshape(1)
    else:
        masked = torch.zeros(1, dtype=probs.dtype, device=probs.device)
    sampled = sampling_distribution(logits, cfg.temperature, cfg.top_k, cfg.top_p, forbidden)  # (V,)
    if chosen is not None:
        choice = torch.tensor([chosen], device=probs.device)
    elif cfg.temperature <= 0:
        choice = sampled.argmax().reshape(1)  # greedy: no random draw at all
    else:
        choice = draw(sampled, gen)
    top_p, top_i = torch.topk(probs, min(n_top, probs.numel()))
    packed = torch.cat(
        [
            choice.to(probs.dtype),
            probs[choice],
            sampled[choice],
            masked,
            top_p,
            sampled[top_i],
            top_i.to(probs.dtype),
        ]
    ).tolist()
    n = top_p.numel()
    token = int(packed[0])
    top = list(
        zip((int(i) for i in packed[4 + 2 * n :]), packed[4 : 4 + n], packed[4 + n : 4 + 2 * n], strict=True)
    )
    return token, packed[1], packed[2], top, packed[3]


def likeliest(
    logits: torch.Tensor, tokenizer, n_top: int, temperature: float = 1.0
) -> list[tuple[int, str, float]]:
    """The ``n_top`` likeliest tokens of next-token ``logits`` (V,) at ``temperature``: (id, display text, probability)."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (V,)
    p, i = torch.topk(probs, min(n_top, probs.numel()))
    return [
        (int(t), tokenizer.id_to_token(int(t)), float(q)) for t, q in zip(i.tolist(), p.tolist(), strict=True)
    ]
