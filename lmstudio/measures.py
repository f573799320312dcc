"""Numbers as a person reads them: a loss as perplexity and bits per character, a duration on a clock.

The shared layer (no torch, no Qt): the trainer, ``lmstudio eval``, the model cards and the app's panes all
use these, so a figure is worked out one way wherever it is shown.
"""

from __future__ import annotations

import math

# exp() of more than this overflows a float; a loss that high is an untrained or broken model anyway
_MAX_EXPONENT = 700.0


def perplexity(loss: float) -> float:
    """``exp(loss)`` of a mean cross-entropy in nats, capped where a float would overflow."""
    return math.exp(min(loss, _MAX_EXPONENT))


def bits_per_char(loss: float, chars_per_token: float) -> float:
    """A loss in nats per token as bits per character (divided by ln 2 and by the characters per token)."""
    return loss / math.log(2) / max(chars_per_token, 1e-9)


def clock(seconds: object) -> str:
    """``h:mm:ss``, or ``m:ss`` under an hour; "–" when the duration is not known (not a finite number >= 0)."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        return "–"
    whole = int(round(seconds))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
