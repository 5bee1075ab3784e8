"""Two replicas of one PostgreSQL store: a link made on one is used through the other, a case
offered by one is answered through the other, and a silent provider's deadline is kept by
whichever replica's timer comes first. Real PostgreSQL, real HTTP on 127.0.0.1."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp

from ecallgw.app import Gateway
from ecallgw.config import Config
from ecallgw.simulators.assistance import SimulatedProvider
from ecallgw.simulators.pgserver import PgServer
from ecallgw.simulators.sms import SimulatedSmsGateway
from tests.caller.kit import SMS_TOKEN, base_url, call, ingest_call, position_of
from tests.gateway.harness import gateway_config, running_gateway
from tests.gateway.helpers import until
from tests.gateway.receiver import Receiver


def _config(tmp_path: Path, receiver: Receiver, dsn: str, name: str, **sections: dict[str, object]) -> Config:
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
        **sections,  # type: ignore[arg-type]
    )


async def test_links_and_cases_work_across_replicas(
    tmp_path: Path, receiver: Receiver, pg_server: PgServer, sms: SimulatedSmsGateway
) -> None:
    dsn = pg_server.create_database()
    silent = await SimulatedProvider(
        name="tow-silent", token="tow-silent-token-0001", lat=50.86, lon=4.36, policy="silent"
    ).start()
    accepts = await SimulatedProvider(
        name="tow-ok", token="tow-ok-token-00000001", lat=50.90, lon=4.40
    ).start()
    sections = {
        "sms": {"url": sms.url, "token": SMS_TOKEN, "backoff_base_s": 0.05},
        "assistance": {"answer_timeout_s": 1.0, "providers": [silent.config(), accepts.config()]},
    }
    try:
        async with AsyncExitStack() as stack:
            r1 = await stack.enter_async_context(
                running_gateway(_config(tmp_path, receiver, dsn, "r1", **sections))
            )
            r2 = await stack.enter_async_context(
                running_gateway(_config(tmp_path, receiver, dsn, "r2", **sections), lead=False)
            )
            gws: list[Gateway] = [r1, r2]
            await until(lambda: sum(g.leadership is not None and g.leadership.leading for g in gws) == 1)
            async with aiohttp.ClientSession() as s:
                incident_id = await ingest_call(s, r1)
                status, _ = await call(
                    s,
                    "POST",
                    f"{base_url(r1)}/v1/incidents/{incident_id}/links",
                    json={"purpose": "location"},
                )
                assert status == 201
                [message] = await sms.wait(1)
                token = str(message.url).rsplit("/", 1)[1]
                async with s.post(
                    f"{base_url(r2)}/l/{token}/position", json={"lat": 50.85, "lon": 4.35, "accuracy_m": 9}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                pos = await position_of(s, r1, incident_id)
                assert pos is not None and pos["source"] == "caller_link"
                # A form link from r2, the request on r1; the timers of both replicas race for the
                # silent provider's deadline: exactly one moves the case on.
                _, form = await call(
                    s, "POST", f"{base_url(r2)}/v1/assistance/links", json={"phone": "+32470000001"}
                )
                token = form["url"].rsplit("/", 1)[1]
                async with s.post(
                    f"{base_url(r1)}/assist/{token}/request",
                    json={"lat": 50.85, "lon": 4.35, "what": "engine"},
                ) as resp:
                    case_id = (await resp.json())["case_id"]
                await until(lambda: len(accepts.answers) == 1, timeout_s=10)
                _, case = await call(s, "GET", f"{base_url(r2)}/v1/assistance/cases/{case_id}")
                assert case["status"] == "accepted" and case["provider"] == "tow-ok"
                assert case["tried"] == [{"provider": "tow-silent", "outcome": "no answer"}]
                assert (
                    len(silent.offers) == 1 and len(accepts.offers) == 1
                )  # one offer each, not one per replica
    finally:
        await silent.stop()
        await accepts.stop()
