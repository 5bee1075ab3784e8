"""The caller's side in the console (issue 14) in headless Chromium against a whole gateway: a
location link sent from the incident view, shared by the caller's browser and shown live; a link
revoked from the console; a breakdown nobody could take, dispatched by hand from the Breakdowns tab.

Real mosquitto, SQLite, PSAP webhook, SMS gateway and assistance providers on 127.0.0.1 (the SMS
operator and the tow trucks simulated); every request of the pages is checked to stay there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import aiohttp
import aiomqtt
from playwright.async_api import expect

from ecallgw.codecs import msd as msd_codec
from ecallgw.simulators.assistance import SimulatedProvider
from ecallgw.simulators.sms import SimulatedSmsGateway
from tests.browserkit import Browser
from tests.caller.kit import SMS_TOKEN, call
from tests.console.test_console import (
    _visible_english_leftovers,
    base_url,
    first_incident,
    gateway,
    open_incident,
    sign_in,
)
from tests.gateway.broker import Mosquitto
from tests.gateway.harness import OPERATOR_TOKEN
from tests.gateway.helpers import make_msd, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver

CALLBACK = "+4915112345678"  # msd_envelope's callback number


def sms_table(sms: SimulatedSmsGateway) -> dict[str, object]:
    return {"url": sms.url, "token": SMS_TOKEN, "backoff_base_s": 0.05, "backoff_cap_s": 0.2}


async def untrusted_crash(mosquitto: Mosquitto, n: int) -> None:
    """An automatic crash whose MSD says its position cannot be trusted."""
    now = time.time()
    value = msd_codec.decode(make_msd(vin=vin_for(n), timestamp=int(now), lat=50.80, lon=4.30))
    st = value.msd.msd_structure
    st = dataclasses.replace(st, control=dataclasses.replace(st.control, position_can_be_trusted=False))
    msd = msd_codec.encode(dataclasses.replace(value, msd=dataclasses.replace(value.msd, msd_structure=st)))
    async with asyncio.timeout(10), aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
        await pub.publish(
            f"ecall/v1/acme/car-{n}/msd", msd_envelope(msd, call_id=f"call-{n}", sent_at=now), qos=1
        )


async def test_location_link_sent_from_the_console_shows_the_callers_position_live(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, sms: SimulatedSmsGateway, browser: Browser
) -> None:
    async with gateway(tmp_path, mosquitto, receiver, sms=sms_table(sms)) as gw:
        await untrusted_crash(mosquitto, 21)
        incident_id = await first_incident(gw)
        ctx, page = await sign_in(browser, gw)
        await open_incident(page, incident_id)
        await expect(page.locator("#detail")).to_contain_text("position NOT trusted")
        await page.evaluate("() => { window.notReloaded = true; }")
        # The phone is the call's callback number (editable); the link goes by SMS.
        await expect(page.locator("#link-phone")).to_have_value(CALLBACK)
        await page.click("#send-location-link")
        [message] = await sms.wait(1)
        assert message.to == CALLBACK and message.url is not None
        assert message.url.startswith(f"{base_url(gw)}/l/")
        row = page.locator("#links-box tr[data-purpose=location]")
        await expect(row).to_contain_text("location")
        await expect(row).to_contain_text("0/3")
        await expect(row.locator("td").nth(3)).to_have_text("sent", timeout=3000)
        assert await page.locator("code.link-url").count() == 0  # the SMS carried it: never shown

        # The caller opens the SMS's link on a phone with a position and shares it.
        phone_ctx = await browser.context(locale="nl-BE", geolocation=(50.85, 4.35), accuracy_m=25.0)
        phone = await phone_ctx.new_page()
        await phone.goto(message.url)
        await phone.click("#share")
        t0 = time.monotonic()
        shown = page.locator("#position-source")
        await expect(shown).to_contain_text("caller's phone", timeout=2000)
        assert time.monotonic() - t0 < 2.0
        await expect(shown).to_have_text("50.85000, 4.35000 — caller's phone (accuracy ±25 m)")
        await expect(page.locator("#map path.accuracy")).to_have_count(1)
        await expect(page.locator("#trail")).to_contain_text("(caller's phone)")
        await expect(row).to_contain_text("1/3")
        assert await page.evaluate("() => window.notReloaded === true")  # live, no reload

        # The same view in Dutch: no English left, links and position included.
        await page.select_option("#lang", "nl")
        await expect(shown).to_contain_text("telefoon van de beller")
        text = await page.inner_text("body")
        assert _visible_english_leftovers(text, "nl") == [], text
        for c in (ctx, phone_ctx):
            await c.close()
    assert browser.foreign_requests == []


async def test_a_link_revoked_from_the_console_is_gone_for_the_caller(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, browser: Browser
) -> None:
    async with gateway(tmp_path, mosquitto, receiver) as gw:  # no SMS gateway: the URL is read out
        await untrusted_crash(mosquitto, 22)
        incident_id = await first_incident(gw)
        ctx, page = await sign_in(browser, gw)
        await open_incident(page, incident_id)
        await page.click("#send-tracking-link")
        row = page.locator("#links-box tr[data-purpose=tracking]")
        await expect(row).to_contain_text("not sent")
        url = await page.locator("code.link-url").inner_text()
        assert url.startswith(f"{base_url(gw)}/t/")
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            assert resp.status == 200
        await row.locator("button.revoke").click()
        await expect(row).to_contain_text("revoked", timeout=3000)
        assert await page.locator("code.link-url").count() == 0  # a revoked link's URL is not shown
        assert await row.locator("button.revoke").count() == 0
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            assert resp.status == 410
        await ctx.close()
    assert browser.foreign_requests == []


async def test_a_breakdown_nobody_could_take_is_dispatched_by_hand_from_the_console(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, browser: Browser
) -> None:
    far = SimulatedProvider(
        name="tow-ghent", token="tow-ghent-assistance-token-01", lat=51.05, lon=3.72, radius_km=20.0
    )
    await far.start()  # ~50 km from the breakdown: out of its range, so nobody takes the case
    try:
        assistance = {"answer_timeout_s": 30.0, "providers": [far.config()]}
        async with gateway(tmp_path, mosquitto, receiver, assistance=assistance) as gw:
            base = base_url(gw)
            async with aiohttp.ClientSession() as s:
                code, link = await call(s, "POST", f"{base}/v1/assistance/links", json={})
                assert code == 201, link
                async with s.post(
                    f"{link['url']}/request",
                    json={"lat": 50.85, "lon": 4.35, "what": "engine", "vehicle": "<b>1-ABC-234</b>"},
                ) as resp:
                    assert resp.status == 201, await resp.text()
                    case_id = (await resp.json())["case_id"]
            ctx, page = await sign_in(browser, gw)
            await expect(page.locator("#c-unassigned")).to_have_text("1", timeout=3000)
            await page.click("#tab-assist")
            row = page.locator(f"#cases-body tr[data-case='{case_id}']")
            await expect(row).to_contain_text(
                "No available provider able to tow serves this place.", timeout=4000
            )
            await expect(row).to_contain_text("Engine problem")
            await expect(page.locator("#providers-body")).to_contain_text("tow-ghent")
            await row.click()
            case = page.locator("#case")
            await expect(case.locator("#case-provider")).to_have_text("none yet")
            await expect(case).to_contain_text("<b>1-ABC-234</b>")  # the caller's words, as text
            assert await case.locator("b").count() == 0
            # The operator offers it to the provider by hand; the provider accepts.
            await page.select_option("#dispatch-provider", "tow-ghent")
            await page.click("#dispatch")
            await expect(case.locator("#case-provider")).to_have_text("tow-ghent", timeout=3000)
            await expect(case.locator("#case-status-line")).to_contain_text(
                "Provider on its way", timeout=5000
            )
            await expect(case).to_contain_text("25 min")
            assert len(far.offers) == 1 and far.offers[0]["case_id"] == case_id
            await expect(page.locator("#dispatch")).to_be_disabled()
            # What the caller's tracking page shows, then the case is closed.
            await page.fill("#share-garage", "Garage Dupont, Chaussée de Wavre 12")
            await page.fill("#share-eta", "15")
            await page.click("#share-form button[type=submit]")
            await expect(case.locator("#case-info")).to_contain_text("Garage Dupont, Chaussée de Wavre 12")
            await expect(case).to_contain_text("15 min")
            await page.click("#close-case")
            await expect(case.locator("#case-status-line")).to_contain_text("Closed", timeout=3000)
            # The assistance form for another caller (no SMS gateway here: the address to read out),
            # and the provider marked unavailable.
            await page.click("#assist-form button[type=submit]")
            await expect(page.locator("#assist-form-status code.link-url")).to_contain_text(f"{base}/assist/")
            toggle = page.locator("#providers-body button[data-provider=tow-ghent]")
            await expect(toggle).to_have_text("available")
            await toggle.click()
            await expect(toggle).to_have_text("unavailable", timeout=3000)
            async with aiohttp.ClientSession() as s:
                _, listed = await call(s, "GET", f"{base}/v1/assistance/providers")
                assert [p["available"] for p in listed["providers"]] == [False]
            # The Breakdowns tab in French: no English left.
            await page.select_option("#lang", "fr")
            await expect(case.locator("#case-status-line")).to_contain_text("Clôturé")
            text = await page.inner_text("body")
            assert _visible_english_leftovers(text, "fr") == [], text
            await ctx.close()
    finally:
        await far.stop()
    assert browser.foreign_requests == []


async def test_breakdowns_are_polled_only_while_seen(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, browser: Browser
) -> None:
    """Cases have no event stream: the list is polled while the tab is shown, only a count while
    the incidents are, nothing while the browser tab is hidden (the page's clock is driven here)."""
    async with gateway(tmp_path, mosquitto, receiver) as gw:
        ctx = await browser.context()
        await ctx.clock.install()
        page = await ctx.new_page()
        await page.goto(f"{base_url(gw)}/console/")
        await page.fill("#token", OPERATOR_TOKEN)
        await page.click("#signin button[type=submit]")
        await page.wait_for_selector("body[data-ready=app]")

        def polls() -> int:
            return sum("/v1/assistance/cases" in u for u in browser.requests)

        async def settled(expected: int) -> None:
            # A timer's fetch reaches the recording route a moment after the clock ran it.
            await until(lambda: polls() >= expected, timeout_s=3)
            await asyncio.sleep(0.3)
            assert polls() == expected

        await page.click("#tab-assist")
        await expect(page.locator("#cases-empty")).to_be_visible()
        await asyncio.sleep(0.3)
        shown = polls()
        await page.clock.run_for(9100)
        await settled(shown + 3)  # every 3 s
        await page.click("#tab-incidents")
        await settled(shown + 4)  # the tab's count, at once ...
        await page.clock.run_for(19000)
        await settled(shown + 4)
        await page.clock.run_for(2000)
        await settled(shown + 5)  # ... and every 20 s, no list
        # The browser tab is hidden: nothing at all.
        await page.evaluate(
            """() => {
                Object.defineProperty(document, "hidden", { value: true, configurable: true });
                document.dispatchEvent(new Event("visibilitychange"));
            }"""
        )
        await page.clock.run_for(120000)
        await settled(shown + 5)
        await ctx.close()
    assert browser.foreign_requests == []
