"""The caller's side against a hostile client on 127.0.0.1 (security review of issue 14).

Real gateway (SQLite), real HTTP on 127.0.0.1, a simulated provider's webhook.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp

from ecallgw.simulators.assistance import SimulatedProvider
from tests.caller.kit import OPERATOR, base_url, call, caller_config, ingest_call
from tests.gateway.harness import running_gateway
from tests.gateway.helpers import until
from tests.gateway.receiver import Receiver

FORGED = {"Host": "attacker.example"}
DEEP = b"[" * 2000 + b"]" * 2000  # under the 4096-byte bound; json.loads raises RecursionError
HUGE = "9" * 400  # an int json.loads takes; math.isfinite raises OverflowError on it


async def test_provider_answer_url_never_comes_from_a_request_host_header(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Without caller.public_url, the URL a provider posts its own token to is this server's socket
    address: an unauthenticated request with a forged Host must not redirect it elsewhere."""
    provider = await SimulatedProvider(
        name="tow-1", token="tow-1-assistance-token-0001", lat=50.85, lon=4.35, policy="silent"
    ).start()
    try:
        cfg = caller_config(
            tmp_path,
            psap_url=receiver.url,
            sms=None,
            assistance={"answer_timeout_s": 30.0, "providers": [provider.config()]},
        )
        async with running_gateway(cfg) as gw, aiohttp.ClientSession() as s:
            base = base_url(gw)
            code, link = await call(s, "POST", f"{base}/v1/assistance/links", json={"phone": "+32 470 11"})
            assert code == 201, link
            form = {"lat": 50.85, "lon": 4.35, "accuracy_m": 10, "what": "engine", "vehicle": "car"}
            # An attacker with no link at all, then the caller's own request, both with a forged Host.
            code, _ = await call(s, "POST", f"{base}/assist/no-such-token/request", headers=FORGED, json=form)
            assert code == 404
            code, made = await call(s, "POST", f"{link['url']}/request", headers=FORGED, json=form)
            assert code == 201, made
            await until(lambda: len(provider.offers) == 1)
            [offer] = provider.offers
            assert offer["answer_url"] == f"{base}/v1/assistance/cases/{made['case_id']}/answer"
            # A later offer (an operator's dispatch) is made with no request at hand: the same.
            code, _ = await call(
                s,
                "POST",
                f"{base}/v1/assistance/cases/{made['case_id']}/dispatch",
                json={"provider": "tow-1"},
            )
            assert code == 200
            await until(lambda: len(provider.offers) == 1)  # one offer per idempotency key
    finally:
        await provider.stop()


async def test_deep_or_huge_json_is_a_400_never_a_500(tmp_path: Path, receiver: Receiver) -> None:
    async with (
        running_gateway(caller_config(tmp_path, psap_url=receiver.url, sms=None)) as gw,
        aiohttp.ClientSession() as s,
    ):
        base = base_url(gw)
        incident_id = await ingest_call(s, gw)
        code, loc = await call(
            s,
            "POST",
            f"{base}/v1/incidents/{incident_id}/links",
            json={"purpose": "location", "phone": "+3247"},
        )
        assert code == 201, loc
        code, form = await call(s, "POST", f"{base}/v1/assistance/links", json={"phone": "+3247"})
        assert code == 201, form
        cases: list[tuple[str, str, dict[str, str], bytes]] = [
            (f"{loc['url']}/position", "lat", {}, f'{{"lat": {HUGE}, "lon": 1, "accuracy_m": 5}}'.encode()),
            (
                f"{loc['url']}/position",
                "accuracy_m",
                {},
                f'{{"lat": 1, "lon": 1, "accuracy_m": -{HUGE}}}'.encode(),
            ),
            (f"{loc['url']}/position", "", {}, DEEP),
            (f"{form['url']}/request", "lat", {}, f'{{"what": "engine", "lat": {HUGE}, "lon": 1}}'.encode()),
            (f"{form['url']}/request", "", {}, DEEP),
            (
                f"{base}/v1/incidents/{incident_id}/links",
                "ttl_s",
                OPERATOR,
                f'{{"purpose": "location", "phone": "+3247", "ttl_s": {HUGE}}}'.encode(),
            ),
            (f"{base}/v1/assistance/links", "", OPERATOR, DEEP),
            (f"{base}/v1/incidents/{incident_id}/actions", "", OPERATOR, DEEP),  # operator_api
        ]
        for url, field, headers, body in cases:
            code, answer = await call(s, "POST", url, headers=headers, data=body)
            assert code == 400, (url, answer)
            assert isinstance(answer, dict) and field in answer["error"], answer
        # Nothing of that was counted as a use: the location link still takes its three positions.
        for _ in range(3):
            code, answer = await call(
                s,
                "POST",
                f"{loc['url']}/position",
                headers={},
                json={"lat": 50.0, "lon": 4.0, "accuracy_m": 9},
            )
            assert code == 200, answer
