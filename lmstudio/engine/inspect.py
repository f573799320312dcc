"""What a model does with a given text: attention maps, recurrent activations, per-token surprise.

Import as ``from lmstudio.engine import inspect as lm_inspect`` (the name shadows the standard library
module only inside this package). Everything returned is numpy or plain Python.

Texts longer than the context are cut to their first ``block_size`` tokens (``block_size + 1`` for
``token_losses``, whose targets are shifted by one); :func:`fit_to_context` says whether that happened
and how many tokens were left out, for the UI and the CLI to show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lmstudio.errors import UserError


class InspectError(UserError):
    pass


def display(piece: str) -> str:
    """A token as a label: the tokenizer's display form (whitespace made visible); an empty piece
    (the first bytes of a character a byte-level tokenizer splits) as an empty-set sign."""
    from lmstudio.engine.token_text import display as tokenizer_display

    return tokenizer_display(piece) if piece else "\u2205"


def labels(tokenizer, fitted) -> list[str]:
    """Labels for the tokens of ``fitted``: each piece's display form, and ``<unk>`` for the unknown
    token (the typed text would hide that the model saw nothing of it)."""
    is_unk = getattr(tokenizer, "is_unk", lambda _i: False)
    return ["<unk>" if is_unk(i) else display(p) for p, i in zip(fitted.pieces, fitted.ids, strict=True)]


@dataclass(frozen=True)
class Fitted:
    ids: list[int]  # token ids that will be shown (at most the context length)
    pieces: list[str]  # their text, concatenating back to the shown part of the input
    total: int  # tokens in the whole input
    limit: int  # the model's context length
    converted: str = ""  # what fitting the text to the run's characters changed (a sentence), or ''

    @property
    def dropped(self) -> int:
        return self.total - len(self.ids)

    @property
    def note(self) -> str:
        """A sentence for the user when the input was cut or converted, else ''."""
        if not self.dropped:
            return self.converted
        return (self.converted + " " if self.converted else "") + (
            f"Showing the first {len(self.ids)} of {self.total} tokens: the model reads at most "
            f"{self.limit} tokens at once (its context length), so {self.dropped} were left out."
        )


@dataclass(frozen=True)
class TokenLoss:
    token: str  # the actual next token's text (raw, so the pieces rebuild the input)
    loss: float  # cross-entropy in nats: -ln p(token)
    prob: float  # the model's probability of the actual token
    top: list[tuple[str, float]] = field(default_factory=list)  # likeliest tokens instead (display form)
    token_id: int = -1


def _pieces(tokenizer, text: str) -> tuple[list[int], list[str]]:
    split = getattr(tokenizer, "split", None)
    if split is not None:
        pairs = split(text)
        return [i for _, i in pairs], [p for p, _ in pairs]
    ids = tokenizer.encode(text)
    return ids, [tokenizer.decode([i]) for i in ids]


def fit_to_context(session, text: str, extra: int = 0) -> Fitted:
    """The text's tokens cut to the first ``block_size + extra``; ``extra=1`` leaves room for a target."""
    if not text:
        raise InspectError("The text is empty: type some text or pick a validation snippet to inspect.")
    from lmstudio.engine.sampling import fit_prompt

    fitted = fit_prompt(session, text)
    ids, pieces = _pieces(session.tokenizer, fitted.text)
    limit = session.model.block_size + extra
    return Fitted(ids[:limit], pieces[:limit], len(ids), session.model.block_size, fitted.note)


def _idx(session, ids: list[int]) -> torch.Tensor:
    device = next(session.model.parameters()).device
    return torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)


def _arch(session) -> str:
    return getattr(getattr(getattr(session, "config", None), "model", None), "arch", "")


@torch.inference_mode()
def attention(session, text: str) -> tuple[list[str], np.ndarray]:
    """Token labels and attention weights (layer, head, query, key) of a Transformer on ``text``."""
    fitted = fit_to_context(session, text)
    maps = session.model.introspect(_idx(session, fitted.ids))
    if "attention" not in maps:
        raise InspectError(
            f"This run's model ({_arch(session) or 'recurrent'}) has no attention; "
            "look at its hidden states and gates instead."
        )
    return labels(session.tokenizer, fitted), maps["attention"].float().cpu().numpy()


@torch.inference_mode()
def activations(session, text: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """Token labels and activations, each (layer, time, unit): ``hidden`` for every model (the residual
    stream after each block for a Transformer), plus ``gate.*`` (and the LSTM's memory ``cell``) for
    recurrent models."""
    fitted = fit_to_context(session, text)
    maps = session.model.introspect(_idx(session, fitted.ids))
    out = {k: v.float().cpu().numpy() for k, v in maps.items() if k not in ("attention", "logits")}
    if not out:
        raise InspectError("This run's model records no activations; look at its attention instead.")
    return labels(session.tokenizer, fitted), out


@torch.inference_mode()
def token_losses(session, text: str, n_top: int = 5) -> list[TokenLoss]:
    """How surprised the model is by each token of ``text`` given the tokens before it.

    One entry per token after the first (the first has nothing to be predicted from).
    """
    fitted = fit_to_context(session, text, extra=1)
    if len(fitted.ids) < 2:
        raise InspectError("The text is a single token: per-token loss needs at least two tokens.")
    ids = fitted.ids
    logits, _ = session.model(_idx(session, ids[:-1]))  # (1, T, V)
    logits = logits[0].float()  # (T, V)
    targets = torch.tensor(ids[1:], device=logits.device)
    losses = F.cross_entropy(logits, targets, reduction="none")  # (T,)
    probs = torch.softmax(logits, dim=-1)
    top_p, top_i = torch.topk(probs, min(n_top, probs.size(-1)), dim=-1)  # (T, n_top)
    tok = session.tokenizer
    names: dict[int, str] = {}

    def name(i: int) -> str:
        if i not in names:
            names[i] = tok.id_to_token(i)
        return names[i]

    out = []
    for t, (loss, tp, ti) in enumerate(zip(losses.tolist(), top_p.tolist(), top_i.tolist(), strict=True)):
        out.append(
            TokenLoss(
                fitted.pieces[t + 1],
                loss,
                float(np.exp(-loss)),
                [(name(i), p) for i, p in zip(ti, tp, strict=True)],
                ids[t + 1],
            )
        )
    return out


def validation_text(session, n_chars: int = 2000, offset: int = 0, cache_dir=None) -> str:
    """About ``n_chars`` characters of the run's validation tokens (the last ``val_fraction`` of the
    tokens, exactly the text training held out), decoded.

    ``offset`` counts characters (approximately: through the split's characters per token) from the
    start of the validation tokens and wraps around. A byte-level character cut at the window's edges
    is left out, so the snippet has no replacement characters the text does not have.
    """
    import codecs
    import math

    from lmstudio.engine.checkpoint import default_cache_dir
    from lmstudio.engine.data import prepare_data

    tok = session.tokenizer
    _, data = prepare_data(
        session.config, tokenizer=tok, cache_dir=cache_dir if cache_dir is not None else default_cache_dir()
    )
    val = data.val
    if len(val) == 0:
        raise InspectError("This run's corpus has no validation text; type a text to inspect instead.")
    per = max(data.val_chars_per_token, 1e-3)
    n_tokens = min(len(val), math.ceil(n_chars / per) + 8)
    start = int(offset / per) % len(val)
    if start + n_tokens > len(val):
        start = 0 if offset else max(0, len(val) - n_tokens)
    ids = np.asarray(val[start : start + n_tokens]).tolist()
    if tok.kind == "bpe":
        data_bytes = b"".join(tok.token_bytes(i) for i in ids)
        skip = 0
        while skip < min(3, len(data_bytes)) and (data_bytes[skip] & 0xC0) == 0x80:
            skip += 1  # continuation bytes of a character that began before the window
        text = codecs.getincrementaldecoder("utf-8")("replace").decode(data_bytes[skip:], final=False)
    else:
        text = tok.decode(ids)
    return text[:n_chars]
