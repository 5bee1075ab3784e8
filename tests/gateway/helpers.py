"""Small helpers of the gateway tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0, interval_s: float = 0.01) -> None:
    """Wait until ``predicate()`` is true, failing the test after ``timeout_s``.

    Polling is deliberate: the state watched belongs to real brokers, servers and subprocesses,
    which offer no event to wait on.
    """
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(interval_s)
