"""Fault tests: kill -9 of ``ecallgw serve`` mid-stream, broker restart, receiver outage, 429.

The bar: no signal lost, every incident delivered to every receiver it was routed to; duplicates only
ever under the same idempotency key (the receiver counts distinct keys). Each test runs on both store
backends (``store_backend``: SQLite, then a fresh database on the session's PostgreSQL server, where
the gateway is one replica that sequences its own journal). Shared pieces: ``faultkit.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.gateway import harness
from tests.gateway.broker import Mosquitto, free_port
from tests.gateway.faultkit import (
    StoreSpec,
    assert_nothing_lost,
    expected_deliveries,
    followups,
    publish_all,
    scrape,
    serve,
    settle,
    stream,
    until_count,
    write_config,
)
from tests.gateway.harness import gateway_config, running_gateway
from tests.gateway.helpers import make_msd, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("store_backend")]


@pytest.fixture
def store_spec(store_backend: str, tmp_path: Path) -> StoreSpec:
    """The store of an ``ecallgw serve`` subprocess: the backend ``store_backend`` chose."""
    if store_backend == "sqlite":
        return StoreSpec("sqlite", sqlite_path=tmp_path / "store" / "gw.sqlite3")
    override = harness.STORE_OVERRIDE
    assert override is not None
    return StoreSpec("postgresql", dsn=str(override["dsn"]), lease_s=2.0, outbox_lease_s=3.0)


async def test_kill_9_mid_stream_then_restart_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto, store_spec: StoreSpec
) -> None:
    n = 3000
    recv = Receiver()
    await recv.start()
    http_port = free_port()
    config = write_config(tmp_path / "gw.toml", mosquitto, recv, http_port, store_spec)
    log = tmp_path / "serve.log"
    items = stream(n) + followups(n)
    store = store_spec.inspector()
    try:
        async with serve(config, http_port, log) as proc:
            publisher = asyncio.create_task(publish_all(mosquitto, items))
            # Mid-stream: a quarter stored (on PostgreSQL intake runs well ahead of deliveries).
            await until_count(store.signals, n // 4, timeout_s=60)
            os.kill(proc.pid, signal.SIGKILL)  # mid-stream: no drain, no goodbye
            await proc.wait()
            killed_at = len(recv.keys)
            stored_at_kill = await store.signals()  # what the crash left: stored, not yet delivered
            pending_at_kill = await store.pending()
            async with asyncio.timeout(60):
                await publisher
        assert killed_at < expected_deliveries(n) and stored_at_kill < len(items), (
            "the stream was over before the kill"
        )
        async with serve(config, http_port, log):
            await settle(lambda: len(recv.keys), expected_deliveries(n), stall_s=10, timeout_s=120)
            await asyncio.sleep(0.3)  # anything wrongly delivered twice would show up now
            redelivered = await scrape(http_port, "ecallgw_signals_redelivered_total")
        # The kill hit work in flight: deliveries the outbox still owed, or signals the broker had to
        # deliver again because their acknowledgement never left.
        assert pending_at_kill > 0 or redelivered > 0, (pending_at_kill, redelivered)
        await assert_nothing_lost(store, recv, n=n, signals=len(items))
    finally:
        await store.close()
        await recv.stop()


async def test_broker_restart_mid_stream(tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver) -> None:
    n = 600
    items = stream(n, prefix="b")
    cfg = gateway_config(tmp_path, broker=mosquitto, psap_url=receiver.url, client_id="gw-broker-restart")
    async with running_gateway(cfg) as gw:
        await publish_all(mosquitto, items[: n // 2])
        await until(lambda: gw.processed >= n // 4, timeout_s=30)
        await gw.settled()
        mosquitto.restart()
        await publish_all(mosquitto, items[n // 2 :])
        await until(lambda: len(receiver.keys) == n, timeout_s=60, interval_s=0.05)
        assert gw.mqtt is not None and gw.mqtt.connections >= 2
        counts = await gw.store.counts()
        storms = [r for r in await gw.store.list_incidents(limit=1000) if r.incident_id.startswith("storm-")]
    # One incident per vehicle, and the aggregate of the provider storm such a burst is (issue 12).
    assert counts["journal"] == n and counts["incidents"] == n + len(storms) == n + 1
    assert counts["outbox_pending"] == 0


async def test_receiver_down_for_a_while_then_back_and_429_retry_after(tmp_path: Path) -> None:
    now = time.time()
    # Down (port closed) first; once up, it answers the first two requests 429 Retry-After: 1.
    recv = Receiver(script=lambda k: (429, {"Retry-After": "1"}) if k < 2 else (200, {}))
    cfg = gateway_config(tmp_path, broker=None, psap_url=recv.url)
    # Retry-After is capped at the backoff cap: give the receiver room to ask for its second.
    psap = dataclasses.replace(cfg.receivers["psap-fallback"], backoff_cap_s=2.0)
    cfg = dataclasses.replace(cfg, receivers={**cfg.receivers, "psap-fallback": psap})
    async with running_gateway(cfg) as gw:
        assert gw.http is not None
        async with aiohttp.ClientSession() as http:
            for i in range(20):
                async with http.post(
                    f"http://127.0.0.1:{gw.http.port}/v1/ecall/acme/d{i}/msd",
                    data=msd_envelope(
                        make_msd(vin=vin_for(100 + i), timestamp=int(now)), call_id=f"d{i}", sent_at=now
                    ),
                    headers={
                        "Authorization": "Bearer provider-acme-token-0001",
                        "Content-Type": "application/msgpack",
                    },
                ) as resp:
                    assert resp.status == 202
        await until(lambda: gw.forwarder.lanes["psap-fallback"].breaker.state != "closed")
        await asyncio.sleep(1.0)
        assert gw.forwarder.dead_lettered == 0
        gauges = dict((r, d) for r, d, _ in gw.forwarder.outbox_gauges(time.time()))
        assert gauges["psap-fallback"] == 20
        assert gw.health.checks()["outbox_flowing"]  # a second of backlog is not "stuck" (300 s)
        await recv.start()
        try:
            await until(lambda: len(recv.keys) == 20, timeout_s=30)
        finally:
            await recv.stop()
        assert gw.forwarder.dead_lettered == 0
    statuses = [r.status for r in recv.requests]
    assert statuses[:2] == [429, 429]
    # Nothing was sent within the second the receiver asked for after its first 429.
    first_429 = recv.requests[0].at
    assert all(r.at - first_429 >= 0.95 for r in recv.requests[2:])
