"""Keep CPython's cyclic garbage collector off the per-message path.

The daemon's heap is mostly long-lived state (triage incidents, the dedup window, open deliveries)
and the hot path makes no reference cycles. Left alone, the collector walks that state again and
again: with 600,000 tracked objects a full collection stalled the loop for 170-250 ms several times
a minute, which was the whole of the added p99 latency in bench/gateway.py. So:

* young objects are collected every `YOUNG_THRESHOLD` allocations instead of 700 (in-flight
  signals are mostly gone by then, so fewer are promoted);
* every `FREEZE_INTERVAL_S` the youngest generation is collected and what survived is frozen
  (`gc.freeze`), so the older generations stay nearly empty: walking the state made since the
  last freeze cost 17-28 ms twice a second as middle-generation collections, and 122 ms as one
  collection every 10 s (`MIDDLE_THRESHOLD` keeps them from running on their own schedule);
* every `FULL_INTERVAL_S` everything is unfrozen and collected once, so cyclic garbage that was
  frozen while still reachable (an exception's traceback kept for a while, say) is reclaimed
  rather than kept for the life of the process. That one pause is logged with its length.

Freezing does not stop reference counting: frozen objects are freed as soon as nothing refers to
them, like any other.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

__all__ = [
    "FREEZE_INTERVAL_S",
    "FULL_INTERVAL_S",
    "MIDDLE_THRESHOLD",
    "YOUNG_THRESHOLD",
    "keep_frozen",
    "settle",
]

log = logging.getLogger("ecallgw.heap")

YOUNG_THRESHOLD = 10_000
"""Allocations between collections of the youngest generation (CPython's default: 700).

bench/gateway.py at 2,000 msg/s: 700 gave an added p99 of ~100 ms, 50,000 20-27 ms (pauses of
~14 ms each), 10,000 12-14 ms, at the same throughput."""

MIDDLE_THRESHOLD = 1_000
"""Young collections between collections of the middle generation (default 10): in practice
`keep_frozen` collects and freezes it first."""

FREEZE_INTERVAL_S = 1.0
FULL_INTERVAL_S = 3600.0


def settle() -> None:
    """After start-up (imports, journal replay): collect, freeze what is left, raise the threshold."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, gc.get_threshold()[2])


async def keep_frozen(
    freeze_interval_s: float = FREEZE_INTERVAL_S, full_interval_s: float = FULL_INTERVAL_S
) -> None:
    """Freeze survivors every ``freeze_interval_s`` and collect everything every ``full_interval_s``.

    Runs until cancelled (one task in the gateway's TaskGroup).
    """
    last_full = time.monotonic()
    while True:
        await asyncio.sleep(freeze_interval_s)
        if time.monotonic() - last_full >= full_interval_s:
            last_full = time.monotonic()
            t0 = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            gc.freeze()
            log.info(
                "full garbage collection",
                extra={
                    "pause_ms": round((time.perf_counter() - t0) * 1000.0, 1),
                    "unreachable": found,
                    "frozen": gc.get_freeze_count(),
                },
            )
        else:
            gc.collect(0)  # the youngest cycles go now (a few ms); survivors are frozen below
            gc.freeze()
