"""A counting semaphore for the hot path of one event loop.

`asyncio.Semaphore.acquire` in CPython 3.11 calls ``locked()``, which scans every waiter, and wakes
waiters through a second pass; on the per-message path (in-flight MQTT messages, uncommitted units)
that showed up as ~4 % of the gateway's CPU. `Slots` hands a released slot straight to the oldest
waiter (first come, first served) and offers a non-waiting `try_acquire`.
"""

from __future__ import annotations

import asyncio
import collections

__all__ = ["Slots"]


class Slots:
    """``limit`` slots; `acquire` waits for one, `release` gives one back.

    Args:
        limit: the number of slots (at least 1).
    """

    __slots__ = ("_waiters", "free")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.free = limit
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits for one (never jumps the queue)."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting in arrival order while none is free."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot, then cancelled before using it: pass it on
            elif fut in self._waiters:  # a release may have dropped it already
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest waiter, else to the free count."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1
