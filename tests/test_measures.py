"""measures: a loss as perplexity and bits per character, a duration on a clock."""

from __future__ import annotations

import math

import pytest

from lmstudio import measures


def test_perplexity_of_a_uniform_guess_is_the_number_of_choices():
    # a model that spreads its bet evenly over V tokens has cross-entropy ln V, and perplexity V
    for v in (2, 65, 4096):
        assert measures.perplexity(math.log(v)) == pytest.approx(v)


def test_perplexity_does_not_overflow():
    assert math.isfinite(measures.perplexity(1e6))


def test_bits_per_character():
    # uniform over 4 characters, one character per token: 2 bits each
    assert measures.bits_per_char(math.log(4), 1.0) == pytest.approx(2.0)
    # the same loss spread over tokens of 2.5 characters each
    assert measures.bits_per_char(math.log(4), 2.5) == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0:00"), (59.4, "0:59"), (65, "1:05"), (3725, "1:02:05"), (36000, "10:00:00")],
)
def test_clock(seconds, shown):
    assert measures.clock(seconds) == shown


@pytest.mark.parametrize("unknown", [float("nan"), float("inf"), -1, None, "12"])
def test_a_duration_not_known_is_a_dash(unknown):
    assert measures.clock(unknown) == "–"
