"""Text generation from a loaded session: temperature / top-k / top-p, streamed one token at a time.

Each new token costs one ``model.step`` (KV cache for the Transformer, carried hidden state for the
recurrent models). The generator yields a :class:`TokenStep` per token with plain Python values, so
the UI and the CLI never see tensors.

Choices worth knowing (see docs/generation-and-inspection.md):

* The prompt is cropped to its last ``block_size`` tokens (for every architecture, so a recurrent
  model sees the same amount of text it was trained on).
* An empty prompt starts from a newline when the vocabulary has one, else from token id 0.
* A Transformer's cache holds at most ``block_size`` positions (learned position tables end there).
  When it is full the cache is rebuilt from the last ``block_size // 2`` tokens: one forward pass over
  half a context every ``block_size // 2`` tokens, so the amortised cost stays about two token-steps per
  token, while the model always sees between half and a whole context. Recurrent models carry their
  state on without limit.
* ``TokenStep.prob`` and ``TokenStep.top`` are the model's own probabilities (softmax of the logits at
  temperature 1, before top-k/top-p), i.e. how likely the model found each token.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from lmstudio.config import SampleConfig

# an incomplete byte sequence (byte-level BPE mid-character) decodes to this; hold it until complete
_REPLACEMENT = "\ufffd"
# most tokens a character can be split into by a byte-level tokenizer
_MAX_PENDING = 4


@dataclass(frozen=True)
class TokenStep:
    token_id: int
    text: str  # the text this token added ("" while a multi-byte character is incomplete)
    prob: float  # the model's probability of this token (temperature 1, unfiltered)
    top: list[tuple[str, float]] = field(
        default_factory=list
    )  # likeliest tokens at this position, best first


# ---- the distribution ------------------------------------------------------------------------------


def filter_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Logits (..., V) scaled by temperature with the tokens outside top-k / the nucleus set to -inf."""
    logits = logits / temperature
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
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _seed_generator(seed: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed >= 0 else random.SystemRandom().randrange(1 << 63))
    return gen


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---- prompts and context ---------------------------------------------------------------------------


def start_ids(tokenizer) -> list[int]:
    """Where an empty prompt starts: a newline if the vocabulary has one, else token id 0."""
    ids = tokenizer.encode("\n")
    if len(ids) == 1 and tokenizer.decode(ids) == "\n":
        return ids
    return [0]


def prompt_ids(session, prompt: str) -> list[int]:
    """The prompt's token ids, cropped to the last ``block_size`` (unseen characters: the tokenizer's unk rule)."""
    ids = session.tokenizer.encode(prompt) if prompt else []
    if not ids:
        ids = start_ids(session.tokenizer)
    return ids[-session.model.block_size :]


def _capacity(session) -> int | None:
    """How many positions the model's incremental state holds (None: unlimited, recurrent)."""
    return getattr(session.model, "state_capacity", session.model.block_size)


class _Decoder:
    """Turns token ids into text pieces one at a time, keeping spaces a word decoder inserts between
    tokens and holding back incomplete UTF-8 characters of a byte-level tokenizer."""

    def __init__(self, tokenizer, anchor: list[int]):
        self.tok = tokenizer
        self.anchor = anchor[-1:]
        self.pending: list[int] = []

    def push(self, token_id: int) -> str:
        self.pending.append(token_id)
        before = self.tok.decode(self.anchor) if self.anchor else ""
        after = self.tok.decode(self.anchor + self.pending)
        if after.endswith(_REPLACEMENT) and len(self.pending) < _MAX_PENDING:
            return ""
        piece = after[len(before) :] if after.startswith(before) else self.tok.decode(self.pending)
        self.anchor, self.pending = self.pending[-1:], []
        return piece


# ---- the incremental model runner ------------------------------------------------------------------


class _Runner:
    """Feeds tokens to ``model.step`` and hands back next-token logits (V,), rebuilding a full
    Transformer cache from the last half context."""

    def __init__(self, session, ids: list[int], use_cache: bool = True):
        self.model = session.model
        self.block_size = session.model.block_size
        self.capacity = _capacity(session)
        self.use_cache = use_cache
        self.device = _device_of(self.model)
        self.ids = list(ids)  # every token so far (prompt and generated)
        self.rebuilds = 0
        self.logits = self._restart(self.ids[-self.block_size :])

    def _tensor(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], dtype=torch.long, device=self.device)  # (1, T)

    def _restart(self, window: list[int]) -> torch.Tensor:
        if not self.use_cache:
            logits, _ = self.model(self._tensor(window))
            return logits[0, -1]
        self.state = self.model.init_state(1)
        logits, self.state = self.model.step(self._tensor(window), self.state)  # (1, T, V)
        self.n_cached = len(window)
        return logits[0, -1]

    def push(self, token_id: int) -> torch.Tensor:
        self.ids.append(token_id)
        if not self.use_cache:
            self.logits = self._restart(self.ids[-self.block_size :])
        elif self.capacity is not None and self.n_cached >= self.capacity:
            self.rebuilds += 1
            self.logits = self._restart(self.ids[-max(1, self.capacity // 2) :])
        else:
            logits, self.state = self.model.step(self._tensor([token_id]), self.state)  # (1, 1, V)
            self.n_cached += 1
            self.logits = logits[0, -1]
        return self.logits


def _pick(
    logits: torch.Tensor, cfg: SampleConfig, gen: torch.Generator, n_top: int
) -> tuple[int, float, list]:
    """Sample one token; return (id, model prob, [(id, prob)...]) with a single device-to-host copy."""
    probs = torch.softmax(logits.float(), dim=-1)  # (V,)
    filtered = filter_logits(logits.float(), cfg.temperature, cfg.top_k, cfg.top_p)
    choice = torch.multinomial(torch.softmax(filtered, dim=-1), 1, generator=gen)  # (1,)
    top_p, top_i = torch.topk(probs, min(n_top, probs.numel()))
    packed = torch.cat([choice.to(probs.dtype), probs[choice], top_p, top_i.to(probs.dtype)]).tolist()
    n = top_p.numel()
    token = int(packed[0])
    return token, packed[1], list(zip((int(i) for i in packed[2 + n :]), packed[2 : 2 + n], strict=True))


def _step(tokenizer, token: int, prob: float, top: list, piece: str) -> TokenStep:
    return TokenStep(token, piece, prob, [(tokenizer.id_to_token(i), p) for i, p in top])


@torch.inference_mode()
def generate(
    session,
    prompt: str,
    cfg: SampleConfig,
    cancel: threading.Event | None = None,
    n_top: int = 10,
    use_cache: bool = True,
) -> Iterator[TokenStep]:
    """Stream up to ``cfg.max_tokens`` tokens after ``prompt``; stops early on a stop string or ``cancel``.

    The same ``cfg.seed`` (>= 0) gives the same text; -1 draws a fresh seed. ``use_cache=False``
    recomputes the whole (cropped) context each step: the slow reference, kept for tests and benchmarks.
    """
    ids = prompt_ids(session, prompt)
    runner = _Runner(session, ids, use_cache=use_cache)
    gen = _seed_generator(cfg.seed, runner.device)
    decoder = _Decoder(session.tokenizer, ids)
    stops = [s for s in cfg.stop if s]
    longest_stop = max((len(s) for s in stops), default=0)
    tail = ""  # the end of the generated text, long enough to contain a stop string
    token = -1
    for i in range(cfg.max_tokens):
        if cancel is not None and cancel.is_set():
            return
        if i:
            runner.push(token)  # fed only when another token is wanted: no wasted step at the end
        token, prob, top = _pick(runner.logits, cfg, gen, n_top)
        piece = decoder.push(token)
        yield _step(session.tokenizer, token, prob, top, piece)
        if stops:
            tail = (tail + piece)[-(longest_stop + len(piece)) :]
            if any(s in tail for s in stops):
                return


# ---- step mode (teaching) --------------------------------------------------------------------------


@torch.inference_mode()
def next_distribution(
    session, context_ids: list[int], n_top: int, temperature: float = 1.0
) -> list[tuple[int, str, float]]:
    """The ``n_top`` likeliest next tokens after ``context_ids`` as (id, display text, probability)."""
    ids = list(context_ids) or start_ids(session.tokenizer)
    ids = ids[-session.model.block_size :]
    idx = torch.tensor([ids], dtype=torch.long, device=_device_of(session.model))  # (1, T)
    logits, _ = session.model(idx)
    probs = torch.softmax(logits[0, -1].float() / temperature, dim=-1)
    p, i = torch.topk(probs, min(n_top, probs.numel()))
    return [
        (int(t), session.tokenizer.id_to_token(int(t)), float(q))
        for t, q in zip(i.tolist(), p.tolist(), strict=True)
    ]


class Stepper:
    """Generation one token at a time, where a person may choose each token (step mode).

    ``distribution(n_top)`` shows the choices, ``append(token_id)`` takes one, ``sample()`` lets the
    sampler take one with the settings of ``cfg``. Uses the same incremental state as ``generate``.
    """

    def __init__(self, session, prompt: str, cfg: SampleConfig, n_top: int = 10):
        self.session = session
        self.cfg = cfg
        self.n_top = n_top
        with torch.inference_mode():
            self.runner = _Runner(session, prompt_ids(session, prompt))
        self.gen = _seed_generator(cfg.seed, self.runner.device)
        self.decoder = _Decoder(session.tokenizer, self.runner.ids)
        self.steps: list[TokenStep] = []

    @property
    def ids(self) -> list[int]:
        return list(self.runner.ids)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)

    @torch.inference_mode()
    def distribution(
        self, n_top: int | None = None, temperature: float = 1.0
    ) -> list[tuple[int, str, float]]:
        probs = torch.softmax(self.runner.logits.float() / temperature, dim=-1)
        p, i = torch.topk(probs, min(n_top or self.n_top, probs.numel()))
        tok = self.session.tokenizer
        return [
            (int(t), tok.id_to_token(int(t)), float(q)) for t, q in zip(i.tolist(), p.tolist(), strict=True)
        ]

    @torch.inference_mode()
    def append(self, token_id: int) -> TokenStep:
        probs = torch.softmax(self.runner.logits.float(), dim=-1)
        top_p, top_i = torch.topk(probs, min(self.n_top, probs.numel()))
        top = list(zip(top_i.tolist(), top_p.tolist(), strict=True))
        step = _step(
            self.session.tokenizer,
            int(token_id),
            float(probs[int(token_id)]),
            top,
            self.decoder.push(int(token_id)),
        )
        self.runner.push(int(token_id))
        self.steps.append(step)
        return step

    @torch.inference_mode()
    def sample(self) -> TokenStep:
        token, _, _ = _pick(self.runner.logits, self.cfg, self.gen, 1)
        return self.append(token)
