"""Two replicas of one PostgreSQL store in this process: every replica serves the operator API.

A signal ingested by one replica is answered with the incident the sequencer (whichever replica
leads) made of it; the other replica's SSE subscribers get the revision (LISTEN/NOTIFY fan-out);
an operator action posted to the replica that does not lead is decided by the one that does; the
leader metric says who leads. Real PostgreSQL, real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp

from ecallgw.app import Gateway
from ecallgw.config import Config
from ecallgw.simulators.pgserver import PgServer
from tests.gateway.harness import OPERATOR_TOKEN, PROVIDER_TOKEN, SRE_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import make_msd, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver


def _config(tmp_path: Path, receiver: Receiver, dsn: str, name: str) -> Config:
    return gateway_config(
        tmp_path / name,
        broker=None,
        psap_url=receiver.url,
        store={
            "backend": "postgresql",
            "dsn": dsn,
            "replica_id": name,
            "lease_s": 2.0,
            "decision_wait_s": 5.0,
        },
    )


async def _sse_revision(events: aiohttp.ClientResponse) -> dict[str, object]:
    lines: list[str] = []
    async with asyncio.timeout(10):
        while not lines or not lines[-1].startswith("data: "):
            lines.append((await events.content.readline()).decode().strip())
    return dict(json.loads(lines[-1].removeprefix("data: ")))


async def test_every_replica_serves_the_operator_api(
    tmp_path: Path, receiver: Receiver, pg_server: PgServer
) -> None:
    dsn = pg_server.create_database()
    async with AsyncExitStack() as stack:
        r1 = await stack.enter_async_context(running_gateway(_config(tmp_path, receiver, dsn, "r1")))
        r2 = await stack.enter_async_context(
            running_gateway(_config(tmp_path, receiver, dsn, "r2"), lead=False)
        )
        gateways: dict[str, Gateway] = {"r1": r1, "r2": r2}
        await until(
            lambda: sum(g.leadership is not None and g.leadership.leading for g in gateways.values()) == 1
        )
        leader = next(g for g in gateways.values() if g.leadership is not None and g.leadership.leading)
        other = r2 if leader is r1 else r1
        assert leader.http is not None and other.http is not None
        lead_url = f"http://127.0.0.1:{leader.http.port}"
        other_url = f"http://127.0.0.1:{other.http.port}"
        op = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        now = time.time()
        async with aiohttp.ClientSession() as http:
            events = await http.get(f"{other_url}/v1/incidents/events", headers=op)  # on the follower
            assert events.status == 200
            # Ingest on the follower: stored there, decided by the leader, answered with the id.
            async with http.post(
                f"{other_url}/v1/ecall/acme/car-41/msd",
                data=msd_envelope(
                    make_msd(vin=vin_for(41), timestamp=int(now), automatic=False), call_id="c41", sent_at=now
                ),
                headers={"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"},
            ) as resp:
                assert resp.status == 202
                answer = await resp.json()
            assert answer["outcome"] == "new_incident" and str(answer["incident_id"]).startswith("inc-")
            incident_id = answer["incident_id"]
            first = await _sse_revision(events)
            assert (first["incident_id"], first["revision"]) == (incident_id, 1)
            # An action through the follower is decided by the leader, in order, and fanned out.
            async with http.post(
                f"{other_url}/v1/incidents/{incident_id}/actions",
                json={"action": "escalate", "note": "hand to the PSAP"},
                headers=op,
            ) as resp:
                assert resp.status == 200
                acted = await resp.json()
            assert acted["outcome"] == "escalated" and acted["revision"] == 2
            second = await _sse_revision(events)
            assert (second["incident_id"], second["revision"]) == (incident_id, 2)
            events.close()
            # Both replicas read the same incident with its whole history and audit.
            for base in (lead_url, other_url):
                async with http.get(f"{base}/v1/incidents/{incident_id}", headers=op) as resp:
                    detail = await resp.json()
                assert [h["document"]["revision"] for h in detail["history"]] == [1, 2]
                assert ("escalate", "alice") in [(a["action"], a["actor"]) for a in detail["audit"]]
            # The leader metric says who leads; each replica is ready.
            sre = {"Authorization": f"Bearer {SRE_TOKEN}"}
            for gw, expected in ((leader, 1.0), (other, 0.0)):
                assert gw.http is not None
                async with http.get(f"http://127.0.0.1:{gw.http.port}/metrics", headers=sre) as resp:
                    text = await resp.text()
                line = next(x for x in text.splitlines() if x.startswith("ecallgw_sequencer_leader "))
                assert float(line.split()[1]) == expected
                async with http.get(f"http://127.0.0.1:{gw.http.port}/readyz", headers=sre) as resp:
                    ready = await resp.json()
                assert ready["ready"] is True and ready["checks"]["sequencer_keeping_up"] is True
