"""Helpers of the caller tests: a gateway with SMS and assistance configured, API calls."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp

from ecallgw.app import Gateway
from ecallgw.config import Config
from ecallgw.simulators.sms import SimulatedSmsGateway
from tests.gateway.harness import OPERATOR_TOKEN, PROVIDER_TOKEN, gateway_config
from tests.gateway.helpers import make_msd, msd_envelope, vin_for

OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
PROVIDER = {"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"}
SMS_TOKEN = "sms-gateway-token-0001"


def caller_config(
    tmp_path: Path, *, psap_url: str, sms: SimulatedSmsGateway | None, **sections: dict[str, object]
) -> Config:
    tables: dict[str, dict[str, object]] = {
        "sms": {"url": sms.url, "token": SMS_TOKEN, "backoff_base_s": 0.05, "backoff_cap_s": 0.2}
        if sms is not None
        else {},
        **sections,
    }
    return gateway_config(tmp_path, broker=None, psap_url=psap_url, **tables)  # type: ignore[arg-type]


def base_url(gw: Gateway) -> str:
    assert gw.http is not None
    return f"http://127.0.0.1:{gw.http.port}"


async def call(
    session: aiohttp.ClientSession, method: str, url: str, *, headers: dict[str, str] = OPERATOR, **kw: Any
) -> tuple[int, Any]:
    async with session.request(method, url, headers=headers, **kw) as resp:
        try:
            return resp.status, await resp.json(content_type=None)
        except ValueError:
            return resp.status, await resp.text()


async def ingest_call(
    session: aiohttp.ClientSession,
    gw: Gateway,
    *,
    vehicle: str = "car-1",
    n: int = 1,
    lat: float = 48.137,
    lon: float = 11.575,
    automatic: bool = True,
) -> str:
    """An eCall over HTTP ingest; its incident id."""
    now = time.time()
    msd = make_msd(vin=vin_for(n), timestamp=int(now), automatic=automatic, lat=lat, lon=lon)
    status, body = await call(
        session,
        "POST",
        f"{base_url(gw)}/v1/ecall/acme/{vehicle}/msd",
        headers=PROVIDER,
        data=msd_envelope(msd, call_id=f"call-{n}", sent_at=now),
    )
    assert status == 202, body
    return str(body["incident_id"])


async def position_of(session: aiohttp.ClientSession, gw: Gateway, incident_id: str) -> dict[str, Any] | None:
    status, body = await call(session, "GET", f"{base_url(gw)}/v1/incidents/{incident_id}")
    assert status == 200, body
    pos: dict[str, Any] | None = body["history"][-1]["document"]["position"]
    return pos
