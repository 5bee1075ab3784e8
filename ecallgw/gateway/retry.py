"""Retry schedules: capped exponential backoff with full jitter, and Retry-After parsing (pure)."""

from __future__ import annotations

import email.utils
import math
import random

__all__ = ["backoff_s", "parse_retry_after"]


def backoff_s(attempt: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """The delay before retry number ``attempt`` (1 = first retry), with full jitter.

    Full jitter (a uniform draw below the capped exponential) spreads the retries of many clients
    that failed together, so a receiver coming back is not hit by one synchronised burst.

    Args:
        attempt: 1 for the first retry, 2 for the second, ...
        base_s: the ceiling of the first delay.
        cap_s: the largest ceiling.
        rng: the random source (seeded in tests).

    Returns:
        A delay in seconds in ``[0, min(cap_s, base_s * 2 ** (attempt - 1))]``.

    >>> backoff_s(3, base_s=1.0, cap_s=60.0, rng=random.Random(1)) <= 4.0
    True
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    exponent = min(attempt - 1, 62)  # 2**62 s is already far past any cap; avoid float overflow
    ceiling = min(cap_s, base_s * math.ldexp(1.0, exponent))
    return rng.uniform(0.0, ceiling)


def parse_retry_after(value: str | None, *, now: float, limit_s: float = 3600.0) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as a delay in seconds, or None.

    Args:
        value: the header value.
        now: the current time (epoch seconds), for the HTTP-date form.
        limit_s: longer delays are cut to this (a receiver must not park us for a day).

    Returns:
        The delay (>= 0), or None when absent or unparsable.

    >>> parse_retry_after("7", now=0.0)
    7.0
    >>> parse_retry_after("Thu, 01 Jan 1970 00:00:30 GMT", now=10.0)
    20.0
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return min(float(value), limit_s)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - now), limit_s)
