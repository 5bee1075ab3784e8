"""Small helpers of the gateway tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ecallgw.model import IncidentSnapshot, Position, Reason, Severity


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0, interval_s: float = 0.01) -> None:
    """Wait until ``predicate()`` is true, failing the test after ``timeout_s``.

    Polling is deliberate: the state watched belongs to real brokers, servers and subprocesses,
    which offer no event to wait on.
    """
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(interval_s)


def make_snapshot(
    incident_id: str = "inc-1", revision: int = 1, at: float = 1000.0, status: str = "open"
) -> IncidentSnapshot:
    """An incident revision without an MSD (store and forwarder tests need no codec)."""
    return IncidentSnapshot(
        incident_id=incident_id,
        revision=revision,
        status=status,  # type: ignore[arg-type]
        severity=Severity(
            level="high", score=70, reasons=(Reason(code="automatic", text="automatic trigger"),)
        ),
        tps="acme",
        vehicle="v1",
        call_id="c1",
        automatic=True,
        test=False,
        received_at=at,
        updated_at=at + revision,
        position=Position(lat=48.1, lon=11.5, trusted=True, source="nmea", at=at, quality="gps"),
        callback="+4912345",
        reasons=(Reason(code="new", text="new incident"),),
    )
