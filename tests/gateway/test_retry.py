"""Backoff schedule and Retry-After parsing (pure)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecallgw.gateway.retry import backoff_s, parse_retry_after


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0.001, max_value=10.0),
    cap=st.floats(min_value=0.001, max_value=3600.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_is_jittered_below_the_capped_exponential(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    delay = backoff_s(attempt, base_s=base, cap_s=cap, rng=random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2 ** min(attempt - 1, 62))


def test_backoff_grows_and_spreads() -> None:
    rng = random.Random(3)
    firsts = [backoff_s(1, base_s=1.0, cap_s=60.0, rng=rng) for _ in range(500)]
    sixths = [backoff_s(6, base_s=1.0, cap_s=60.0, rng=rng) for _ in range(500)]
    assert max(firsts) <= 1.0 < max(sixths) <= 32.0
    assert len({round(d, 3) for d in sixths}) > 400  # jitter: clients that failed together spread out
    with pytest.raises(ValueError):
        backoff_s(0, base_s=1.0, cap_s=1.0, rng=rng)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),  # absent
        ("", None),  # empty
        ("7", 7.0),  # delta-seconds
        (" 12 ", 12.0),  # whitespace tolerated
        ("99999", 3600.0),  # a receiver must not park us for a day
        ("Thu, 01 Jan 1970 00:01:40 GMT", 90.0),  # HTTP date, 100 s epoch, now = 10
        ("Thu, 01 Jan 1970 00:00:01 GMT", 0.0),  # a date in the past: go now
        ("soon", None),  # garbage
        ("-5", None),  # negative is not delta-seconds
    ],
    ids=["absent", "empty", "seconds", "spaces", "capped", "date", "past-date", "garbage", "negative"],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=10.0) == expected
