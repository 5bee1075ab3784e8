"""Restart: the journal replayed through a fresh triage engine rebuilds the same state, sends nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from ecallgw.app import Gateway
from tests.gateway.harness import OPERATOR_TOKEN, PROVIDER_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import cancel_envelope, make_msd, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver


async def post(http: aiohttp.ClientSession, gw: Gateway, path: str, body: bytes) -> dict[str, object]:
    assert gw.http is not None
    async with http.post(
        f"http://127.0.0.1:{gw.http.port}{path}",
        data=body,
        headers={"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"},
    ) as resp:
        assert resp.status == 202, await resp.text()
        result: dict[str, object] = await resp.json()
        return result


async def test_replay_rebuilds_state_without_new_revisions_or_deliveries(
    tmp_path: Path, receiver: Receiver
) -> None:
    now = time.time()
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url, triage={"escalation_delay_s": 0.3})
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
        assert gw.http is not None
        auto = make_msd(vin=vin_for(21), timestamp=int(now))
        await post(http, gw, "/v1/ecall/acme/a/msd", msd_envelope(auto, call_id="a", sent_at=now))
        resent = make_msd(vin=vin_for(21), timestamp=int(now), message_identifier=2)
        await post(http, gw, "/v1/ecall/acme/a/msd", msd_envelope(resent, call_id="a", sent_at=now + 1))
        manual = make_msd(vin=vin_for(22), timestamp=int(now), automatic=False)
        await post(http, gw, "/v1/ecall/acme/b/msd", msd_envelope(manual, call_id="b", sent_at=now))
        await post(http, gw, "/v1/ecall/acme/b/cancel", cancel_envelope(call_id="b", sent_at=now + 2))
        timed = make_msd(vin=vin_for(23), timestamp=int(now), automatic=False)
        await post(http, gw, "/v1/ecall/acme/c/msd", msd_envelope(timed, call_id="c", sent_at=now))
        acted = make_msd(vin=vin_for(24), timestamp=int(now), automatic=False)
        d = await post(http, gw, "/v1/ecall/acme/d/msd", msd_envelope(acted, call_id="d", sent_at=now))
        async with http.post(
            f"http://127.0.0.1:{gw.http.port}/v1/incidents/{d['incident_id']}/actions",
            json={"action": "ack"},
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        ) as resp:
            assert resp.status == 200
        await until(lambda: len(receiver.accepted) >= 2)  # 'a' at once, 'c' after its timer
        await asyncio.sleep(0.5)  # 'd' was acknowledged: its timer must not fire
        before = await gw.store.counts()
        journal = len(await gw.store.journal(0, 1000))
        sent_before = len(receiver.requests)
    assert sent_before == 2
    async with running_gateway(cfg) as gw:
        assert gw.pipeline.replayed == journal
        await asyncio.sleep(0.5)  # time for any wrongly re-created delivery or timer
        assert await gw.store.counts() == before
        rows = await gw.store.list_incidents()
        assert len(rows) == 4
        for row in rows:
            found = await gw.store.get_incident(row.incident_id)
            assert found is not None
            assert gw.pipeline.engine.get(row.incident_id) == found[1][-1].snapshot
    assert len(receiver.requests) == sent_before
    assert {r.key.split(":")[1] for r in receiver.accepted} == {"1", "2"}  # 'a' rev 1, 'c' escalated rev 2
