"""The open-loop drivers: sends keep to the schedule, in-flight sends stay bounded, the run ends."""

from __future__ import annotations

import asyncio
import time

import pytest

from ecallgw.simulators.drivers import Outgoing, SendLog, drive_mqtt, open_loop


def _schedule(n: int, start: float, gap_s: float) -> list[Outgoing]:
    return [
        Outgoing(
            at=start + i * gap_s,
            scenario=f"s{i}",
            tps="t",
            vehicle=f"v{i}",
            kind="msd",
            call_id="c",
            payload=b"",
        )
        for i in range(n)
    ]


async def test_open_loop_bounds_what_is_in_flight_and_shows_the_lag() -> None:
    outgoing = _schedule(60, time.time() + 0.05, 0.002)
    log = SendLog(len(outgoing))
    in_flight = peak = 0

    async def send(i: int, item: Outgoing) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.03)  # a slow receiver
        in_flight -= 1
        log.acked[i] = time.time()

    async with asyncio.timeout(10):
        await open_loop(outgoing, log, send, max_outstanding=4, on_progress=None)
    assert peak == 4 and in_flight == 0  # bounded, and nothing left running when it returns
    assert log.sent == log.acknowledged == len(outgoing)
    # Never early: each send starts at or after its scheduled time...
    assert all(s >= o.at - 0.001 for o, s in zip(outgoing, log.started, strict=True))
    # ...and with 4 in flight at 30 ms each the driver falls behind the 2 ms schedule: the lag shows
    # in the send log (and from there in the latency, measured from the schedule), it is not hidden.
    assert log.started[-1] - outgoing[-1].at > 0.2


async def test_mqtt_driver_refuses_more_outstanding_publishes_than_packet_ids() -> None:
    # paho's packet ids wrap past 65,535 unacknowledged QoS 1 publishes; the driver refuses before
    # it connects anywhere.
    with pytest.raises(ValueError, match="65535"):
        await drive_mqtt([], host="127.0.0.1", port=9, max_outstanding=65_536)
