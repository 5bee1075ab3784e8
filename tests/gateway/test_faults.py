"""Fault tests: kill -9 of ``ecallgw serve`` mid-stream, broker restart, receiver outage, 429.

The bar: no signal lost, every incident delivered to every receiver it was routed to; duplicates only
ever under the same idempotency key (the receiver counts distinct keys).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from tests.gateway.broker import Mosquitto, free_port
from tests.gateway.harness import SRE_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import cancel_envelope, make_msd, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver

pytestmark = pytest.mark.slow


def stream(n: int, *, prefix: str = "car") -> list[tuple[str, bytes]]:
    """``n`` automatic eCalls of ``n`` vehicles: each one incident routed to the PSAP."""
    now = time.time()
    return [
        (
            f"ecall/v1/acme/{prefix}{i}/msd",
            msd_envelope(
                make_msd(vin=vin_for(i), timestamp=int(now)), call_id=f"call-{i}", sent_at=now + i * 1e-3
            ),
        )
        for i in range(n)
    ]


async def publish_all(broker: Mosquitto, items: list[tuple[str, bytes]], *, window: int = 100) -> None:
    """Publish with QoS 1, ``window`` at a time, retrying what the broker did not confirm."""
    i = 0
    while i < len(items):
        try:
            async with aiomqtt.Client(broker.host, broker.port, max_inflight_messages=window) as pub:
                pub.pending_calls_threshold = window * 2
                while i < len(items):
                    chunk = items[i : i + window]
                    async with asyncio.timeout(10):
                        await asyncio.gather(*(pub.publish(t, p, qos=1) for t, p in chunk))
                    i += len(chunk)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.1)  # the broker is restarting: reconnect and resend the window


def write_config(tmp_path: Path, broker: Mosquitto, recv: Receiver, http_port: int) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(
        f"""
[store]
path = "{tmp_path / "store" / "gw.sqlite3"}"
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "gw-kill"
reconnect_min_s = 0.05
reconnect_max_s = 0.5
[http]
port = {http_port}
[[auth.tokens]]
name = "bob"
role = "sre"
token = "{SRE_TOKEN}"
[receivers.psap-fallback]
kind = "http"
url = "{recv.url}"
backoff_base_s = 0.05
backoff_cap_s = 0.5
concurrency = 32
[log]
level = "warning"
"""
    )
    return path


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


@asynccontextmanager
async def serve(config: Path, http_port: int, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``ecallgw serve`` as a subprocess, ready when /readyz says so."""
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ecallgw",
            "serve",
            "--config",
            str(config),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(20):
                while True:
                    assert proc.returncode is None, tail(log)
                    try:
                        async with http.get(
                            f"http://127.0.0.1:{http_port}/readyz",
                            headers={"Authorization": f"Bearer {SRE_TOKEN}"},
                        ) as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.05)
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        assert proc.returncode in (0, -signal.SIGKILL), tail(log)


def followups(n: int) -> list[tuple[str, bytes]]:
    """A second MSD (an update: passengers and position changed) for every 10th vehicle, then a
    vehicle cancel for every 20th: each one more revision, to every receiver that had the incident.
    Published after all first MSDs, so that per vehicle the broker's order is the call's order."""
    now = time.time()
    updates = [
        (
            f"ecall/v1/acme/car{i}/msd",
            msd_envelope(
                make_msd(vin=vin_for(i), timestamp=int(now), message_identifier=2, passengers=4, lat=48.2),
                call_id=f"call-{i}",
                sent_at=now + 5 + i * 1e-3,
            ),
        )
        for i in range(0, n, 10)
    ]
    cancels = [
        (f"ecall/v1/acme/car{i}/cancel", cancel_envelope(call_id=f"call-{i}", sent_at=now + 10 + i * 1e-3))
        for i in range(0, n, 20)
    ]
    return updates + cancels


async def settle(count: Callable[[], int], target: int, *, stall_s: float, timeout_s: float) -> None:
    """Wait until ``count()`` reaches ``target`` or stops growing for ``stall_s`` (no assertion here:
    the caller states what is missing)."""
    last, since = count(), time.monotonic()
    async with asyncio.timeout(timeout_s):
        while count() < target:
            await asyncio.sleep(0.1)
            if count() != last:
                last, since = count(), time.monotonic()
            elif time.monotonic() - since > stall_s:
                return


async def scrape(http_port: int, name: str) -> float:
    """Sum of a metric's samples from the daemon's /metrics."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{http_port}/metrics", headers={"Authorization": f"Bearer {SRE_TOKEN}"}
        ) as resp,
    ):
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_kill_9_mid_stream_then_restart_loses_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    n = 3000
    recv = Receiver()
    await recv.start()
    http_port = free_port()
    config = write_config(tmp_path, mosquitto, recv, http_port)
    log = tmp_path / "serve.log"
    items = stream(n) + followups(n)
    expected_deliveries = n + n // 10 + n // 20  # first MSDs, updates, cancels: one revision each
    db_path = tmp_path / "store" / "gw.sqlite3"
    try:
        async with serve(config, http_port, log) as proc:
            publisher = asyncio.create_task(publish_all(mosquitto, items))
            await until(lambda: len(recv.keys) >= n // 4, timeout_s=60)
            os.kill(proc.pid, signal.SIGKILL)  # mid-stream: no drain, no goodbye
            await proc.wait()
            killed_at = len(recv.keys)
            with sqlite3.connect(db_path) as db:  # what the crash left: stored, not yet delivered
                stored_at_kill = db.execute("SELECT count(*) FROM journal WHERE type='signal'").fetchone()[0]
                pending_at_kill = db.execute("SELECT count(*) FROM outbox WHERE state='pending'").fetchone()[
                    0
                ]
            async with asyncio.timeout(60):
                await publisher
        assert killed_at < expected_deliveries and stored_at_kill < len(items), (
            "the stream was over before the kill"
        )
        async with serve(config, http_port, log):
            await settle(lambda: len(recv.keys), expected_deliveries, stall_s=10, timeout_s=120)
            await asyncio.sleep(0.3)  # anything wrongly delivered twice would show up now
            redelivered = await scrape(http_port, "ecallgw_signals_redelivered_total")
    finally:
        await recv.stop()
    # The kill hit work in flight: deliveries the outbox still owed, or signals the broker had to
    # deliver again because their acknowledgement never left.
    assert pending_at_kill > 0 or redelivered > 0, (pending_at_kill, redelivered)
    with sqlite3.connect(db_path) as db:
        journal = db.execute("SELECT count(*) FROM journal WHERE type='signal'").fetchone()[0]
        incidents = dict(db.execute("SELECT incident_id, revision FROM incidents").fetchall())
        routed = db.execute("SELECT incident_id, revision, receiver, state FROM outbox").fetchall()
        dead = db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    assert journal == len(items)  # every signal stored exactly once, redeliveries recognised
    assert len(incidents) == n
    assert sorted(incidents.values()).count(3) == n // 20 and sum(incidents.values()) == expected_deliveries
    expected = {f"{i}:{r}" for i, r, receiver, _ in routed if receiver == "psap-fallback"}
    missing = expected - recv.keys
    assert len(missing) == 0, (
        f"{len(missing)} of {len(expected)} deliveries missing, e.g. {sorted(missing)[:5]}"
    )
    assert recv.keys == expected and len(expected) == expected_deliveries
    # Every receiver that had an incident got its latest revision (the cancel, where there was one).
    for incident_id, revision, receiver, state in routed:
        assert state == "delivered", (incident_id, revision, receiver, state)
    latest: dict[tuple[str, str], int] = {}
    for incident_id, revision, receiver, _ in routed:
        latest[(incident_id, receiver)] = max(revision, latest.get((incident_id, receiver), 0))
    assert all(revision == incidents[iid] for (iid, _), revision in latest.items())
    cancelled = {r.key for r in recv.accepted if b"cancel_requested" in r.body}
    assert len(cancelled) == n // 20
    # Revision order per incident at the receiver: each revision first arrives after the one before
    # (a repeat after the crash re-sends under the same key, never a later revision early).
    first_seen: dict[str, list[int]] = {}
    for r in recv.accepted:
        incident_id, revision = r.key.rsplit(":", 1)
        seen = first_seen.setdefault(incident_id, [])
        if int(revision) not in seen:
            seen.append(int(revision))
    assert all(seen == sorted(seen) for seen in first_seen.values())
    assert (sum(len(s) for s in first_seen.values()), dead) == (expected_deliveries, 0)
    extra = len(recv.accepted) - expected_deliveries  # deliveries repeated after the crash: same keys only
    assert 0 <= extra < expected_deliveries


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
    assert counts["journal"] == n and counts["incidents"] == n and counts["outbox_pending"] == 0


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
