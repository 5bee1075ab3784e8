"""Breakdown assistance end to end: the online form or a vehicle's bCall → the nearest simulated
provider with the capability → decline/timeout → the next → accept → the tracking page; nobody →
the operators' queue. Real gateway and store (both backends), real HTTP and MQTT on 127.0.0.1,
headless Chromium; only the providers and the SMS operator are simulated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from ecallgw.simulators.assistance import Policy, SimulatedProvider
from ecallgw.simulators.sms import SimulatedSmsGateway
from tests.browserkit import Browser
from tests.caller.kit import base_url, call, caller_config
from tests.gateway.broker import Mosquitto
from tests.gateway.harness import running_gateway
from tests.gateway.helpers import make_msd, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver

pytestmark = pytest.mark.usefixtures("store_backend")

HERE = (50.85, 4.35)  # the breakdown, Brussels


@asynccontextmanager
async def providers(
    *specs: tuple[str, float, float, tuple[str, ...], Policy, float],
) -> AsyncIterator[list[SimulatedProvider]]:
    started = []
    try:
        for name, lat, lon, caps, policy, radius in specs:
            p = SimulatedProvider(
                name=name,
                token=f"{name}-assistance-token-0001",
                lat=lat,
                lon=lon,
                capabilities=caps,
                policy=policy,
                radius_km=radius,
                eta_min=20,
            )
            started.append(await p.start())
        yield started
    finally:
        for p in started:
            await p.stop()


def assistance(ps: list[SimulatedProvider], timeout_s: float = 30.0) -> dict[str, object]:
    return {"answer_timeout_s": timeout_s, "providers": [p.config() for p in ps]}


async def text_when(page: Any, selector: str, ok: Callable[[str], bool], timeout_s: float = 8.0) -> str:
    """Poll an element's text (the page's CSP forbids the eval that wait_for_function uses)."""
    async with asyncio.timeout(timeout_s):
        while not ok(text := await page.text_content(selector) or ""):  # noqa: ASYNC110 - a page in another process
            await asyncio.sleep(0.05)
    return text


async def case_when(
    s: aiohttp.ClientSession, base: str, case_id: str, status: str, timeout_s: float = 10.0
) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        while True:
            code, case = await call(s, "GET", f"{base}/v1/assistance/cases/{case_id}")
            assert code == 200, case
            if case["status"] == status:
                return dict(case)
            await asyncio.sleep(0.05)


async def test_online_form_nearest_capable_provider_decline_next_accept_tracking(
    tmp_path: Path, receiver: Receiver, sms: SimulatedSmsGateway, browser: Browser
) -> None:
    async with providers(
        ("taxi-next-door", 50.851, 4.351, ("taxi",), "accept", 50.0),  # nearest, cannot tow
        ("tow-near", 50.86, 4.36, ("tow", "repair"), "decline", 50.0),  # ~1.3 km, declines
        ("tow-mid", 50.90, 4.40, ("tow",), "accept", 50.0),  # ~6.6 km, accepts
        ("tow-far", 50.95, 4.50, ("tow",), "accept", 50.0),  # ~15 km: never asked
        ("tow-out-of-area", 50.86, 4.37, ("tow",), "accept", 0.5),  # near, but serves 500 m only
    ) as ps:
        cfg = caller_config(tmp_path, psap_url=receiver.url, sms=sms, assistance=assistance(ps))
        async with running_gateway(cfg) as gw, aiohttp.ClientSession() as s:
            base = base_url(gw)
            code, link = await call(
                s, "POST", f"{base}/v1/assistance/links", json={"phone": "+32 470 11 12 13"}
            )
            assert code == 201, link
            [message] = await sms.wait(1)
            assert message.to == "+32 470 11 12 13" and message.url is not None
            assert message.url.startswith(f"{base}/assist/")

            ctx = await browser.context(locale="fr-BE", geolocation=HERE, accuracy_m=8.0)
            page = await ctx.new_page()
            await page.goto(message.url)
            await page.click("#locate")
            await text_when(page, "#located", bool)
            await page.fill("#vehicle", "1-ABC-234 <b>Golf</b>")
            await page.select_option("#what", "engine")
            await page.fill("#phone", "+32 470 11 12 13")
            await page.click("#submit")
            await page.wait_for_selector("#follow:not([hidden])")
            tracking = await page.get_attribute("#follow", "href")
            assert tracking is not None and tracking.startswith(f"{base}/t/")

            code, listed = await call(s, "GET", f"{base}/v1/assistance/cases")
            [case] = listed["cases"]
            accepted = await case_when(s, base, case["case_id"], "accepted")
            assert accepted["provider"] == "tow-mid"
            assert accepted["tried"] == [{"provider": "tow-near", "outcome": "declined"}]
            assert accepted["eta_min"] == 20 and accepted["capability"] == "tow"
            assert accepted["vehicle"] == "1-ABC-234 <b>Golf</b>"
            assert [len(p.offers) for p in ps] == [0, 1, 1, 0, 0]
            offer = ps[2].offers[0]
            assert (
                offer["position"] == {"lat": HERE[0], "lon": HERE[1]} and offer["phone"] == "+32 470 11 12 13"
            )
            # Another provider cannot answer a case that is not offered to it.
            code, _ = await call(
                s,
                "POST",
                f"{base}/v1/assistance/cases/{case['case_id']}/answer",
                headers={"Authorization": f"Bearer {ps[4].token}"},
                json={"accept": True},
            )
            assert code == 404

            # The operator shares the garage; the tracking page shows provider, ETA and garage.
            code, _ = await call(
                s,
                "POST",
                f"{base}/v1/assistance/cases/{case['case_id']}/share",
                json={"garage": "Garage <Central>, Rue Haute 1"},
            )
            assert code == 200
            await page.goto(tracking)
            await text_when(page, "#f-garage", lambda t: "Central" in t)
            assert await page.text_content("#f-provider") == "tow-mid"
            assert "20" in (await page.text_content("#f-eta") or "")
            assert await page.text_content("#f-garage") == "Garage <Central>, Rue Haute 1"  # as text
            assert "en route" in (await page.text_content("#f-state") or "")
            html = await page.content()
            assert "+32 470" not in html and "1-ABC-234" not in html  # nothing personal beyond the case
            # Live: a change shows without reloading.
            await call(
                s,
                "POST",
                f"{base}/v1/assistance/cases/{case['case_id']}/share",
                json={"replacement": "Polo, 13:00"},
            )
            await text_when(page, "#f-replacement", lambda t: t == "Polo, 13:00")
            await ctx.close()
            text = (
                await call(
                    s, "GET", f"{base}/metrics", headers={"Authorization": "Bearer sre-bob-token-000000004"}
                )
            )[1]
            assert "ecallgw_assistance_accept_seconds_count 1.0" in text
    assert receiver.requests == []  # never a PSAP
    assert browser.foreign_requests == []


async def test_silent_provider_skipped_after_timeout_and_nobody_goes_to_the_operators(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with providers(
        ("tow-silent", 50.86, 4.36, ("tow",), "silent", 50.0),
        ("tow-late", 50.90, 4.40, ("tow",), "decline", 50.0),
    ) as ps:
        cfg = caller_config(
            tmp_path, psap_url=receiver.url, sms=None, assistance=assistance(ps, timeout_s=1.0)
        )
        async with running_gateway(cfg) as gw, aiohttp.ClientSession() as s:
            base = base_url(gw)
            code, link = await call(s, "POST", f"{base}/v1/assistance/links", json={})
            assert code == 201 and link["sms"] == "none" and "url" in link
            t0 = time.monotonic()
            async with s.post(
                f"{link['url']}/request",
                json={
                    "lat": HERE[0],
                    "lon": HERE[1],
                    "what": "accident",
                    "vehicle": "",
                    "phone": "",
                    "address": "",
                },
            ) as resp:
                assert resp.status == 201, await resp.text()
                case_id = (await resp.json())["case_id"]
            case = await case_when(s, base, case_id, "unassigned")
            assert time.monotonic() - t0 >= 1.0  # the silent one had its full second
            assert case["tried"] == [
                {"provider": "tow-silent", "outcome": "no answer"},
                {"provider": "tow-late", "outcome": "declined"},
            ]
            assert "tow-silent no answer" in case["reason"]
            code, queue = await call(s, "GET", f"{base}/v1/assistance/cases?status=unassigned")
            assert [c["case_id"] for c in queue["cases"]] == [case_id]
            # Out of everyone's area: straight to the queue, with the reason.
            async with s.post(
                f"{link['url']}/request",
                json={"address": "-33.9, 18.4", "what": "battery", "vehicle": "", "phone": ""},
            ) as resp:
                far = (await resp.json())["case_id"]
            case = await case_when(s, base, far, "unassigned")
            assert case["tried"] == [] and "no available provider with capability repair" in case["reason"]
            # A typed address without coordinates: the operator locates the caller.
            async with s.post(
                f"{link['url']}/request",
                json={"address": "Rue de la Loi 16, Bruxelles", "what": "engine", "vehicle": "", "phone": ""},
            ) as resp:
                assert resp.status == 201
                addressed = (await resp.json())["case_id"]
            case = await case_when(s, base, addressed, "unassigned")
            assert "no position" in case["reason"]
            # Bad form input names the field.
            async with s.post(f"{link['url']}/request", json={"what": "fire", "address": "x"}) as resp:
                assert resp.status == 400 and (await resp.json())["field"] == "what"
    assert receiver.requests == []


async def test_bcall_over_mqtt_and_http_is_dispatched_and_never_reaches_the_psap(
    tmp_path: Path, receiver: Receiver, mosquitto: Mosquitto
) -> None:
    async with providers(("tow-mid", 50.90, 4.40, ("tow",), "accept", 50.0)) as ps:
        cfg = caller_config(
            tmp_path,
            psap_url=receiver.url,
            sms=None,
            assistance=assistance(ps),
            mqtt={"host": mosquitto.host, "port": mosquitto.port, "enabled": True},
        )
        now = time.time()
        msd = make_msd(vin=vin_for(7), timestamp=int(now), automatic=False, lat=HERE[0], lon=HERE[1])
        envelope = msd_envelope(msd, call_id="b-1", sent_at=now)
        async with running_gateway(cfg) as gw, aiohttp.ClientSession() as s:
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
                await pub.publish("ecall/v1/acme/car-7/bcall", envelope, qos=1)
                await pub.publish("ecall/v1/acme/car-7/bcall", envelope, qos=1)  # the same call again
            base = base_url(gw)

            async def cases() -> list[dict[str, Any]]:
                return list((await call(s, "GET", f"{base}/v1/assistance/cases"))[1]["cases"])

            async with asyncio.timeout(10):
                while not (listed := await cases()) or listed[0]["status"] != "accepted":  # noqa: ASYNC110 - the gateway's API, polled
                    await asyncio.sleep(0.05)
            assert (
                len(listed) == 1 and listed[0]["origin"] == "vehicle" and listed[0]["provider"] == "tow-mid"
            )
            # Over HTTP ingest too.
            code, answer = await call(
                s,
                "POST",
                f"{base}/v1/bcall/acme/car-8",
                headers={
                    "Authorization": "Bearer provider-acme-token-0001",
                    "Content-Type": "application/msgpack",
                },
                data=msd_envelope(
                    make_msd(vin=vin_for(8), timestamp=int(now), lat=HERE[0], lon=HERE[1]),
                    call_id="b-2",
                    sent_at=now,
                ),
            )
            assert code == 202 and answer["status"] == "dispatching", answer
            await until(lambda: len(ps[0].offers) == 2)
            assert await gw.store.list_incidents() == []  # no incident, no triage
    assert receiver.requests == []


async def test_dispatch_state_survives_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    async with providers(
        ("tow-silent", 50.86, 4.36, ("tow",), "silent", 50.0),
        ("tow-mid", 50.90, 4.40, ("tow",), "accept", 50.0),
    ) as ps:
        cfg = caller_config(
            tmp_path, psap_url=receiver.url, sms=None, assistance=assistance(ps, timeout_s=1.5)
        )
        async with running_gateway(cfg) as gw, aiohttp.ClientSession() as s:
            base = base_url(gw)
            _, link = await call(s, "POST", f"{base}/v1/assistance/links", json={})
            async with s.post(
                f"{link['url']}/request", json={"lat": HERE[0], "lon": HERE[1], "what": "engine"}
            ) as resp:
                case_id = (await resp.json())["case_id"]
            await until(lambda: len(ps[0].offers) == 1)
        assert ps[1].offers == []  # stopped while the silent one still had time
        async with running_gateway(cfg) as gw, aiohttp.ClientSession() as s:
            case = await case_when(s, base_url(gw), case_id, "accepted")
            assert case["provider"] == "tow-mid"
            assert case["tried"] == [{"provider": "tow-silent", "outcome": "no answer"}]
            # The tracking link made before the restart still works.
            _, full = await call(s, "GET", f"{base_url(gw)}/v1/assistance/cases/{case_id}")
            assert [lk["purpose"] for lk in full["links"]] == ["tracking"]


async def test_operator_controls_availability_redispatch_named_offer_and_close(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with providers(
        ("tow-mid", 50.90, 4.40, ("tow",), "accept", 50.0),
        ("tow-elsewhere", 51.50, -0.12, ("tow",), "accept", 20.0),  # London: out of range
    ) as ps:
        cfg = caller_config(tmp_path, psap_url=receiver.url, sms=None, assistance=assistance(ps))
        async with running_gateway(cfg) as gw, aiohttp.ClientSession() as s:
            base = base_url(gw)
            code, _ = await call(
                s, "POST", f"{base}/v1/assistance/providers/tow-mid", json={"available": False}
            )
            assert code == 200
            _, listed = await call(s, "GET", f"{base}/v1/assistance/providers")
            assert {p["name"]: p["available"] for p in listed["providers"]} == {
                "tow-mid": False,
                "tow-elsewhere": True,
            }
            _, link = await call(s, "POST", f"{base}/v1/assistance/links", json={})
            async with s.post(
                f"{link['url']}/request", json={"lat": HERE[0], "lon": HERE[1], "what": "engine"}
            ) as resp:
                case_id = (await resp.json())["case_id"]
            case = await case_when(s, base, case_id, "unassigned")
            assert "no available provider" in case["reason"]
            # The provider comes back on its own (its token, its own availability only) ...
            own = {"Authorization": f"Bearer {ps[0].token}"}
            code, _ = await call(
                s, "POST", f"{base}/v1/assistance/availability", headers=own, json={"available": True}
            )
            assert code == 200
            code, _ = await call(s, "GET", f"{base}/v1/assistance/cases", headers=own)
            assert code == 403  # a provider does not read the operators' queue
            # ... and the operator dispatches the case again: the nearest takes it.
            code, _ = await call(s, "POST", f"{base}/v1/assistance/cases/{case_id}/dispatch", json={})
            assert code == 200
            case = await case_when(s, base, case_id, "accepted")
            assert case["provider"] == "tow-mid"
            code, _ = await call(s, "POST", f"{base}/v1/assistance/cases/{case_id}/dispatch", json={})
            assert code == 409  # accepted: nothing to dispatch
            # A named offer reaches a provider dispatch would not choose (out of its range).
            async with s.post(
                f"{link['url']}/request", json={"lat": HERE[0], "lon": HERE[1], "what": "engine"}
            ) as resp:
                second = (await resp.json())["case_id"]
            await case_when(s, base, second, "accepted")
            code, _ = await call(
                s, "POST", f"{base}/v1/assistance/cases/{second}/close", json={"note": "caller left"}
            )
            assert code == 200
            async with s.post(
                f"{link['url']}/request", json={"lat": HERE[0], "lon": HERE[1], "what": "engine"}
            ) as resp:
                third = (await resp.json())["case_id"]
            await call(s, "POST", f"{base}/v1/assistance/providers/tow-mid", json={"available": False})
            code, moved = await call(
                s, "POST", f"{base}/v1/assistance/cases/{third}/dispatch", json={"provider": "tow-elsewhere"}
            )
            assert code == 200 and moved["provider"] == "tow-elsewhere"
            case = await case_when(s, base, third, "accepted")
            assert case["provider"] == "tow-elsewhere"
            code, closed = await call(s, "GET", f"{base}/v1/assistance/cases?status=closed")
            assert [c["case_id"] for c in closed["cases"]] == [second]
            code, _ = await call(
                s, "POST", f"{base}/v1/assistance/cases/{third}/dispatch", json={"provider": "nobody"}
            )
            assert code == 400
    assert receiver.requests == []
