"""The caller's side against a hostile client on 127.0.0.1 (security review of issue 14).

Real gateway (SQLite), real HTTP on 127.0.0.1, a simulated provider's webhook.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from ecallgw.simulators.assistance import SimulatedProvider
from ecallgw.simulators.sms import SimulatedSmsGateway
from tests.caller.kit import OPERATOR, PROVIDER, base_url, call, caller_config, ingest_call
from tests.caller.test_tracking import _untrusted_msd
from tests.gateway.harness import gateway_config, running_gateway
from tests.gateway.helpers import msd_envelope, until
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


async def test_sms_gateway_and_provider_webhook_redirects_are_not_followed(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A 307 from the SMS gateway or a provider's webhook would re-post the text (the link's token)
    or the case (phone, position) to wherever it points, plain http:// included: not followed."""
    stolen: list[str] = []

    async def steal(request: web.Request) -> web.Response:
        stolen.append(await request.text())
        return web.json_response({})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/steal")

    app = web.Application()
    app.router.add_post("/steal", steal)
    app.router.add_post("/{any}", redirect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    here = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        cfg = gateway_config(
            tmp_path,
            broker=None,
            psap_url=receiver.url,
            sms={"url": f"{here}/sms", "max_attempts": 2, "backoff_base_s": 0.05, "backoff_cap_s": 0.1},
            assistance={
                "answer_timeout_s": 30.0,
                "providers": [{"name": "tow-1", "lat": 50.85, "lon": 4.35, "webhook_url": f"{here}/cases"}],
            },
        )
        async with running_gateway(cfg) as gw, aiohttp.ClientSession() as s:
            base = base_url(gw)
            incident_id = await ingest_call(s, gw)
            code, link = await call(
                s, "POST", f"{base}/v1/incidents/{incident_id}/links", json={"purpose": "location"}
            )
            assert code == 201 and link["sms"] == "pending", link
            code, form = await call(s, "POST", f"{base}/v1/assistance/links", json={"phone": "+32 470 11"})
            assert code == 201, form
            body = {"lat": 50.85, "lon": 4.35, "accuracy_m": 10, "what": "engine"}
            code, made = await call(s, "POST", f"{form['url']}/request", headers={}, json=body)
            assert code == 201, made

            async def settled() -> bool:
                _, links = await call(s, "GET", f"{base}/v1/incidents/{incident_id}/links")
                _, case = await call(s, "GET", f"{base}/v1/assistance/cases/{made['case_id']}")
                return bool(links["links"][0]["sms"] == "failed" and case["status"] == "unassigned")

            async with asyncio.timeout(10):
                while not await settled():  # noqa: ASYNC110 - polling the API
                    await asyncio.sleep(0.05)
            _, case = await call(s, "GET", f"{base}/v1/assistance/cases/{made['case_id']}")
            assert case["tried"] == [{"provider": "tow-1", "outcome": "unreachable"}], case
            assert stolen == []
    finally:
        await runner.cleanup()


async def test_public_posts_are_rate_limited_before_their_body_and_answer_with_the_page_headers(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Refused input counts against the address too (it used to be parsed before the limiter), every
    public answer carries the pages' headers, and a form's own tracking link is audited as the
    caller's, not an operator's."""
    cfg = caller_config(
        tmp_path,
        psap_url=receiver.url,
        sms=None,
        caller={"address_rate_per_min": 4, "token_rate_per_min": 100},
    )
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as s:
        base = base_url(gw)
        code, form = await call(s, "POST", f"{base}/v1/assistance/links", json={"phone": "+3247"})
        assert code == 201, form
        body = {"what": "engine", "address": "Rue de la Loi 16, Bruxelles"}
        async with s.post(f"{form['url']}/request", json=body) as resp:
            assert resp.status == 201, await resp.text()
        for url, data in ((f"{base}/l/guess/position", b"[[["), (f"{form['url']}/request", b'{"what": 5}')):
            async with s.post(url, data=data) as resp:
                assert resp.status == 400, await resp.text()
                assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
                assert resp.headers["Referrer-Policy"] == "no-referrer"
                assert resp.headers["Cache-Control"] == "no-store"
        statuses = []
        for _ in range(2):
            async with s.post(f"{base}/l/guess/position", data=b"not json") as resp:
                statuses.append(resp.status)
        assert statuses == [400, 429]  # 1 + 2 + 1 = the address's four a minute
        [made] = [a for a in await gw.store.audit_log() if a["action"] == "link_create_tracking"]
        assert made["role"] == "caller" and made["actor"] == f"link:{form['link_id']}", made


async def test_a_forged_host_does_not_reach_the_policys_sms_links(
    tmp_path: Path, receiver: Receiver, sms: SimulatedSmsGateway
) -> None:
    """The policy's location link is made with no request at hand: its SMS URL must not be the Host
    an unauthenticated request wrote before (the caller would open the attacker's page, token and all)."""
    cfg = caller_config(tmp_path, psap_url=receiver.url, sms=sms, caller={"auto_location_link": True})
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as s:
        base = base_url(gw)
        code, _ = await call(s, "POST", f"{base}/assist/no-such-token/request", headers=FORGED, data=b"{}")
        assert code == 400
        now = time.time()
        code, answer = await call(
            s,
            "POST",
            f"{base}/v1/ecall/acme/car-2/msd",
            headers=PROVIDER,
            data=msd_envelope(_untrusted_msd(2, now), call_id="call-2", sent_at=now, callback="+32471000002"),
        )
        assert code == 202, answer
        [message] = await sms.wait(1)
        assert message.url is not None and message.url.startswith(f"{base}/l/"), message.url
