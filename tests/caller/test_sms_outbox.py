"""The SMS outbox is durable without the token: a message pending across a restart is sent once
with a re-minted token (the never-sent one stops working), and of two replicas exactly one sends a
pending message. Real gateway, SQLite or PostgreSQL, the simulated SMS gateway on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from ecallgw.app import Gateway
from ecallgw.gateway.caller_api import token_hash
from ecallgw.gateway.store.caller import CallerStore, LinkRow
from ecallgw.simulators.pgserver import PgServer
from ecallgw.simulators.sms import SimulatedSmsGateway
from tests.caller.kit import SMS_TOKEN, base_url, call, ingest_call, position_of
from tests.caller.test_replicas import _config
from tests.gateway.harness import gateway_config, running_gateway
from tests.gateway.helpers import until
from tests.gateway.receiver import Receiver

_RETRY = {"backoff_base_s": 0.05, "backoff_cap_s": 0.2, "max_attempts": 1000}


@pytest.mark.usefixtures("store_backend")
async def test_a_pending_sms_survives_a_restart_with_a_fresh_token(
    tmp_path: Path, receiver: Receiver
) -> None:
    sms = await SimulatedSmsGateway(fail_first=10**9).start()  # down: 503 to everything
    try:
        # One configuration for both processes: the same store, the same port.
        config = gateway_config(
            tmp_path, broker=None, psap_url=receiver.url, sms={"url": sms.url, "token": SMS_TOKEN, **_RETRY}
        )
        async with aiohttp.ClientSession() as s:
            async with running_gateway(config) as gw:
                incident_id = await ingest_call(s, gw)
                status, link = await call(
                    s,
                    "POST",
                    f"{base_url(gw)}/v1/incidents/{incident_id}/links",
                    json={"purpose": "location"},
                )
                assert status == 201 and link["sms"] == "pending"
                old_token = link["url"].rsplit("/", 1)[1]  # read out to the operator, never sent
                await until(lambda: sms.requests >= 2)  # attempted, unconfirmed
            tried = sms.requests
            async with running_gateway(config) as gw:
                base = base_url(gw)
                await until(lambda: sms.requests > tried)  # the new process took the message up
                sms.fail_first = sms.requests  # the SMS gateway is back
                [message] = await sms.wait(1)
                # Attempts under the link id may have reached the provider: a new key, not a
                # different text under the old one.
                assert message.key == f"{link['link_id']}.r1"
                assert message.to == "+4915112345678"
                token = str(message.url).rsplit("/", 1)[1]
                assert token != old_token
                row = await CallerStore(gw.store).link(link["link_id"])
                assert row is not None and row.token_hash == token_hash(token)
                await _until_sent(gw, link["link_id"])
                async with s.get(f"{base}/l/{token}") as resp:
                    assert resp.status == 200
                async with s.post(
                    f"{base}/l/{token}/position", json={"lat": 50.85, "lon": 4.35, "accuracy_m": 9}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                pos = await position_of(s, gw, incident_id)
                assert pos is not None and pos["source"] == "caller_link"
                async with s.get(f"{base}/l/{old_token}") as resp:
                    assert resp.status == 404
                async with s.post(
                    f"{base}/l/{old_token}/position", json={"lat": 50.0, "lon": 4.0, "accuracy_m": 9}
                ) as resp:
                    assert resp.status == 404
        assert len(sms.messages) == 1
    finally:
        await sms.stop()


async def _until_sent(gw: Gateway, link_id: str) -> None:
    async with asyncio.timeout(5.0):
        # The state is a store row, with no event to wait on.
        while (row := await CallerStore(gw.store).link(link_id)) is None or row.sms_state != "sent":  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_two_replicas_send_a_pending_sms_once(
    tmp_path: Path, receiver: Receiver, pg_server: PgServer, sms: SimulatedSmsGateway
) -> None:
    dsn = pg_server.create_database()
    sections = {"sms": {"url": sms.url, "token": SMS_TOKEN, **_RETRY}}
    async with AsyncExitStack() as stack:
        r1 = await stack.enter_async_context(
            running_gateway(_config(tmp_path, receiver, dsn, "r1", **sections))
        )
        r2 = await stack.enter_async_context(
            running_gateway(_config(tmp_path, receiver, dsn, "r2", **sections), lead=False)
        )
        # Messages left pending by a process that died holding no token: both replicas' pollers
        # see them due at once and race for each one.
        store = CallerStore(r1.store)
        now = time.time()
        ids = [f"lnk-orphan{i:02d}" for i in range(8)]
        for link_id in ids:
            await store.insert_link(_link(link_id, now))
            await store.insert_sms(link_id, base_url(r2), now=now, owner="sms-gone", lease_until=now - 1)
        await sms.wait(len(ids))
        await asyncio.sleep(1.5)  # a poll of each replica after the last delivery: nothing more
        assert sorted(sms.keys_seen) == ids  # each sent once (no attempt so far: the same key)
        async with aiohttp.ClientSession() as s:
            for message in sms.messages:
                token = str(message.url).rsplit("/", 1)[1]
                async with s.get(f"{base_url(r1)}/l/{token}") as resp:
                    assert resp.status == 200  # the re-minted token opens the page
        for link_id in ids:
            await _until_sent(r2, link_id)


def _link(link_id: str, now: float) -> LinkRow:
    return LinkRow(
        link_id=link_id,
        token_hash=token_hash(f"never-sent-{link_id}"),
        purpose="location",
        incident_id=None,
        case_id=None,
        phone="+32470000009",
        lang="en",
        created_at=now,
        expires_at=now + 600,
        max_uses=3,
        uses=0,
        revoked_at=None,
        created_by="operator",
        auto_key=None,
        sms_state="pending",
    )
