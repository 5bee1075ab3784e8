"""The HTTP access log: one line per request on ``ecallgw.access``, no token, no vehicle key."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import aiohttp
import pytest

from tests.gateway.harness import OPERATOR_TOKEN, PROVIDER_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import make_msd, msd_envelope
from tests.gateway.receiver import Receiver

VIN = "WVWZZZ1KZAW000123"
MSGPACK = {"Content-Type": "application/msgpack"}


async def _requests(base: str) -> None:
    body = msd_envelope(make_msd(vin=VIN, timestamp=int(time.time())), call_id="c1", sent_at=time.time())
    async with aiohttp.ClientSession() as http:
        for path, token, data in (
            (f"/v1/ecall/acme/{VIN}/msd", PROVIDER_TOKEN, body),  # stored: 202
            (f"/v1/ecall/acme/{VIN}/msd", "not-a-known-token-000", body),  # 401
            (f"/v1/ecall/acme/{VIN}/msd", OPERATOR_TOKEN, body),  # 403: an operator may not ingest
        ):
            async with http.post(
                base + path, data=data, headers={**MSGPACK, "Authorization": f"Bearer {token}"}
            ) as resp:
                await resp.read()
        async with http.get(
            f"{base}/v1/incidents", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        ) as r:
            assert r.status == 200
        async with http.get(f"{base}/nowhere/{VIN}") as r:
            assert r.status == 404


async def test_one_line_per_request_with_route_template_and_role(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url)
    assert cfg.log.access  # on by default
    caplog.set_level(logging.INFO, logger="ecallgw.access")
    async with running_gateway(cfg) as gw:
        assert gw.http is not None
        await _requests(f"http://127.0.0.1:{gw.http.port}")
    lines = [r for r in caplog.records if r.name == "ecallgw.access"]
    got = [(r.method, r.route, r.status, r.role) for r in lines]  # type: ignore[attr-defined]
    assert got == [
        ("POST", "/v1/ecall/{tps}/{vehicle}/{kind}", 202, "provider"),
        ("POST", "/v1/ecall/{tps}/{vehicle}/{kind}", 401, "-"),
        ("POST", "/v1/ecall/{tps}/{vehicle}/{kind}", 403, "operator"),
        ("GET", "/v1/incidents", 200, "operator"),
        ("GET", "(no route)", 404, "-"),
    ]
    for r in lines:
        assert r.levelno == logging.INFO and r.event == "access"  # type: ignore[attr-defined]
        assert isinstance(r.duration_ms, float) and r.duration_ms >= 0  # type: ignore[attr-defined]
        text = str(r.__dict__) + r.getMessage()
        for secret in (PROVIDER_TOKEN, OPERATOR_TOKEN, "not-a-known-token", VIN, "acme"):
            assert secret not in text


async def test_log_access_false_switches_it_off(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url, log={"access": False})
    caplog.set_level(logging.INFO, logger="ecallgw.access")
    async with running_gateway(cfg) as gw:
        assert gw.http is not None
        await _requests(f"http://127.0.0.1:{gw.http.port}")
    assert not [r for r in caplog.records if r.name == "ecallgw.access"]
