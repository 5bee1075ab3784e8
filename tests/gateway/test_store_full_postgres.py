"""PostgreSQL refuses writes under a running gateway (a replica that sequences its own journal).

A simulation: a trigger on the journal raises SQLSTATE 53100 (disk_full, as PostgreSQL reports an
``ENOSPC`` while extending a file) for every insert; the server itself has room. What is simulated
is the server's answer, not the gateway's handling of it, which is the real code path. The real full
disk under SQLite is ``test_disk_full.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.gateway.broker import Mosquitto
from tests.gateway.faultkit import publish_all, scrape
from tests.gateway.harness import PROVIDER_TOKEN, SRE_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import make_msd, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver

pytestmark = pytest.mark.slow

_FULL = """
CREATE FUNCTION ecallgw_test_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100';
END $$;
CREATE TRIGGER ecallgw_test_full BEFORE INSERT ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION ecallgw_test_full();
"""
_SPACE_BACK = "DROP TRIGGER ecallgw_test_full ON journal; DROP FUNCTION ecallgw_test_full();"


def _calls(n: int, first: int) -> list[tuple[str, bytes]]:
    now = time.time()
    return [
        (
            f"ecall/v1/acme/p{first + i}/msd",
            msd_envelope(
                make_msd(vin=vin_for(first + i), timestamp=int(now)), call_id=f"p{first + i}", sent_at=now
            ),
        )
        for i in range(n)
    ]


async def test_postgres_disk_full_refuses_then_recovers(
    tmp_path: Path,
    pg_dsn: str,
    mosquitto: Mosquitto,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ecallgw")
    store = {
        "backend": "postgresql",
        "dsn": pg_dsn,
        "lease_s": 2.0,
        "outbox_lease_s": 5.0,
        "decision_wait_s": 2.0,
    }
    cfg = gateway_config(
        tmp_path, broker=mosquitto, psap_url=receiver.url, client_id="gw-pg-full", store=store
    )
    admin = await asyncpg.connect(pg_dsn)
    try:
        async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
            assert gw.http is not None
            port = gw.http.port
            await publish_all(mosquitto, _calls(10, 0))
            await until(lambda: len(receiver.keys) == 10, timeout_s=30)
            await admin.execute(_FULL)
            during = _calls(40, 100)
            await publish_all(mosquitto, during)  # the broker takes them; the gateway cannot store them
            await until(lambda: not gw.store.writable, timeout_s=10)
            sre = {"Authorization": f"Bearer {SRE_TOKEN}"}
            async with http.get(f"http://127.0.0.1:{port}/readyz", headers=sre) as resp:
                body = await resp.json()
            assert resp.status == 503 and body["checks"]["store_writable"] is False, body
            assert (
                "disk full" in body["reasons"]["store_writable"]
                and "53100" in body["reasons"]["store_writable"]
            )
            now = time.time()
            async with http.post(
                f"http://127.0.0.1:{port}/v1/ecall/acme/h1/msd",
                data=msd_envelope(make_msd(vin=vin_for(999), timestamp=int(now)), call_id="h1", sent_at=now),
                headers={"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"},
            ) as resp:
                assert resp.status == 503 and int(resp.headers["Retry-After"]) > 0
            assert await scrape(port, "ecallgw_store_writable") == 0
            await asyncio.sleep(1.5)
            assert await admin.fetchval("SELECT count(*) FROM journal WHERE type = 'signal'") == 10

            await admin.execute(_SPACE_BACK)  # space is back
            await until(lambda: len(receiver.keys) >= 50, timeout_s=60)
            await until(lambda: gw.store.writable, timeout_s=10)
            await asyncio.sleep(0.5)
            # Every signal stored once (the broker's redeliveries recognised), one incident each.
            assert (
                await admin.fetchval("SELECT count(*) FROM journal WHERE type = 'signal' AND seq IS NOT NULL")
                == 50
            )
            vehicles = await admin.fetch(
                "SELECT vehicle, count(*) AS n FROM incidents WHERE vehicle <> '' GROUP BY vehicle"
            )
            assert len(vehicles) == 50 and {r["n"] for r in vehicles} == {1}
            assert await scrape(port, "ecallgw_store_writable") == 1
    finally:
        await admin.close()
    entered = [r for r in caplog.records if getattr(r, "event", None) == "store_unwritable"]
    left = [r for r in caplog.records if getattr(r, "event", None) == "store_writable"]
    assert (len(entered), len(left)) == (1, 1), [r.getMessage() for r in entered + left]


async def test_sequencer_refused_says_it_once_and_catches_up(
    tmp_path: Path, pg_dsn: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Intake stores, the sequencer's commits are refused (53100 on revisions: simulated as above)."""
    caplog.set_level(logging.DEBUG, logger="ecallgw.sequencer")
    store = {
        "backend": "postgresql",
        "dsn": pg_dsn,
        "lease_s": 2.0,
        "outbox_lease_s": 5.0,
        "decision_wait_s": 1.0,
    }
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url, store=store)
    admin = await asyncpg.connect(pg_dsn)
    try:
        async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
            assert gw.http is not None
            await admin.execute(_FULL.replace("ON journal", "ON revisions"))

            async def post(n: int) -> int:
                now = time.time()
                async with http.post(
                    f"http://127.0.0.1:{gw.http.port}/v1/ecall/acme/s{n}/msd",  # type: ignore[union-attr]
                    data=msd_envelope(
                        make_msd(vin=vin_for(500 + n), timestamp=int(now)), call_id=f"s{n}", sent_at=now
                    ),
                    headers={
                        "Authorization": f"Bearer {PROVIDER_TOKEN}",
                        "Content-Type": "application/msgpack",
                    },
                ) as resp:
                    return resp.status

            assert await asyncio.gather(*(post(n) for n in range(5))) == [202] * 5  # stored: intake works
            await asyncio.sleep(4.0)  # the sequencer fails, again and again
            failed = [r for r in caplog.records if r.getMessage().startswith("sequencer commit failed")]
            assert len([r for r in failed if r.levelno == logging.ERROR]) == 1, [
                r.getMessage() for r in failed
            ]
            assert len(failed) >= 2  # and retried (at DEBUG), with backoff
            await admin.execute(_SPACE_BACK.replace("ON journal", "ON revisions"))
            async with asyncio.timeout(30):
                while await admin.fetchval("SELECT count(*) FROM journal WHERE seq IS NULL"):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            await until(lambda: len(receiver.keys) >= 5, timeout_s=30)
            vehicles = await admin.fetch("SELECT vehicle FROM incidents WHERE vehicle LIKE 's%'")
            assert sorted(r["vehicle"] for r in vehicles) == [f"s{n}" for n in range(5)]
    finally:
        await admin.close()


async def test_http_only_gateway_notices_space_back_without_traffic(
    tmp_path: Path, pg_dsn: str, receiver: Receiver
) -> None:
    """Ingest is refused (503) while the store refuses writes, so no write comes to retry: the store
    probes (a journal insert, rolled back) and readiness returns by itself (53100 simulated as above)."""
    store = {
        "backend": "postgresql",
        "dsn": pg_dsn,
        "lease_s": 2.0,
        "outbox_lease_s": 5.0,
        "decision_wait_s": 1.0,
    }
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url, store=store)
    admin = await asyncpg.connect(pg_dsn)
    try:
        async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
            assert gw.http is not None
            url = f"http://127.0.0.1:{gw.http.port}/v1/ecall/acme/q1/msd"
            headers = {"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"}
            now = time.time()
            body = msd_envelope(make_msd(vin=vin_for(700), timestamp=int(now)), call_id="q1", sent_at=now)
            await admin.execute(_FULL)
            async with http.post(url, data=body, headers=headers) as resp:
                assert resp.status == 503  # its commit was refused
            assert not gw.store.writable
            await asyncio.sleep(1.5)
            assert not gw.store.writable  # the probes are refused too
            await admin.execute(_SPACE_BACK)
            await until(lambda: gw.store.writable, timeout_s=5)  # no request needed
            async with http.post(url, data=body, headers=headers) as resp:
                assert resp.status == 202
            assert await admin.fetchval("SELECT count(*) FROM journal WHERE type = 'probe'") == 0
    finally:
        await admin.close()
