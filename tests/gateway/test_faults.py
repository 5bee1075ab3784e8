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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from tests.gateway.broker import Mosquitto, free_port
from tests.gateway.harness import SRE_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import make_msd, msd_envelope, until, vin_for
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


async def test_kill_9_mid_stream_then_restart_loses_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    n = 3000
    recv = Receiver()
    await recv.start()
    http_port = free_port()
    config = write_config(tmp_path, mosquitto, recv, http_port)
    log = tmp_path / "serve.log"
    items = stream(n)
    try:
        async with serve(config, http_port, log) as proc:
            publisher = asyncio.create_task(publish_all(mosquitto, items))
            await until(lambda: len(recv.keys) >= n // 4, timeout_s=60)
            os.kill(proc.pid, signal.SIGKILL)  # mid-stream: no drain, no goodbye
            await proc.wait()
            killed_at = len(recv.keys)
            async with asyncio.timeout(60):
                await publisher
        assert killed_at < n, "the stream was over before the kill"
        async with serve(config, http_port, log):
            await until(lambda: len(recv.keys) == n, timeout_s=90, interval_s=0.1)
            await asyncio.sleep(0.3)  # anything wrongly delivered twice would show up now
    finally:
        await recv.stop()
    with sqlite3.connect(tmp_path / "store" / "gw.sqlite3") as db:
        journal = db.execute("SELECT count(*) FROM journal WHERE type='signal'").fetchone()[0]
        incidents = {r[0] for r in db.execute("SELECT incident_id FROM incidents")}
        pending = db.execute("SELECT count(*) FROM outbox WHERE state='pending'").fetchone()[0]
        dead = db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    assert journal == n  # every signal stored exactly once, redeliveries recognised
    assert len(incidents) == n
    assert recv.keys == {f"{i}:1" for i in incidents}  # every incident at the PSAP, 0 missing
    assert (pending, dead) == (0, 0)
    extra = len(recv.accepted) - n  # deliveries repeated after the crash: same keys only
    assert 0 <= extra < n


async def test_broker_restart_mid_stream(tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver) -> None:
    n = 600
    items = stream(n, prefix="b")
    cfg = gateway_config(tmp_path, broker=mosquitto, psap_url=receiver.url, client_id="gw-broker-restart")
    async with running_gateway(cfg) as gw:
        await publish_all(mosquitto, items[: n // 2])
        await until(lambda: gw.pipeline.processed >= n // 4, timeout_s=30)
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
