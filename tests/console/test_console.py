"""The operator console in headless Chromium against a whole gateway: real mosquitto, SQLite, PSAP.

Each test starts a gateway in this process, signs operators in through the page's own form and
drives the page as an operator would; every request the page makes is checked to stay on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import aiohttp
import aiomqtt
import pytest
from aiohttp import web
from playwright.async_api import BrowserContext, Page, expect

from ecallgw.app import Gateway
from ecallgw.codecs import document
from ecallgw.codecs import msd as msd_codec
from ecallgw.config import Config
from ecallgw.model import AdditionalData, CrashInfo, EraAdditionalData
from ecallgw.simulators._oad import encode_era
from tests.browserkit import Browser
from tests.gateway.broker import Mosquitto, free_port
from tests.gateway.harness import OPERATOR_TOKEN, SRE_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import make_msd, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver
from tests.tlskit import Pki

I18N = Path(__file__).parents[2] / "ecallgw" / "console" / "i18n"
SECOND_OPERATOR = "operator-carol-token-0005"


def _config(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, **sections: dict[str, object]
) -> Config:
    cfg = gateway_config(tmp_path, broker=mosquitto, psap_url=receiver.url, psap_format="cap")
    tokens = [
        {"name": t.name, "role": t.role, "tps": t.tps, "token": t.token.reveal()} for t in cfg.auth.tokens
    ]
    tokens.append({"name": "carol", "role": "operator", "token": SECOND_OPERATOR})
    return gateway_config(
        tmp_path,
        broker=mosquitto,
        psap_url=receiver.url,
        psap_format="cap",
        http_port=cfg.http.port,
        auth={"tokens": tokens},
        **cast(dict[str, Any], sections),  # extra tables ([triage], [receivers], [console])
    )


@asynccontextmanager
async def gateway(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, **sections: dict[str, object]
) -> AsyncIterator[Gateway]:
    async with running_gateway(_config(tmp_path, mosquitto, receiver, **sections)) as gw:
        yield gw


def base_url(gw: Gateway) -> str:
    assert gw.http is not None
    return f"http://127.0.0.1:{gw.http.port}"


def with_crash_data(msd: bytes) -> bytes:
    """The same MSD with ERA additional data: crash severity (ASI15) 1200, front impact and rollover."""
    value = msd_codec.decode(msd)
    era = EraAdditionalData(
        format=1, crash_severity=1200, crash_info=CrashInfo(crash_front=True, crash_rollover=True)
    )
    oad = AdditionalData(oid="1.4.1", data=encode_era(era))
    message = dataclasses.replace(value.msd, optional_additional_data=oad)
    return msd_codec.encode(dataclasses.replace(value, msd=message))


async def crash(mosquitto: Mosquitto, n: int, *, lat: float = 50.8466, lon: float = 4.3528) -> str:
    """Publish an automatic crash of vehicle ``car-{n}`` over MQTT; returns its call id."""
    now = time.time()
    msd = make_msd(vin=vin_for(n), timestamp=int(now), automatic=True, passengers=3, lat=lat, lon=lon)
    call_id = f"call-{n}"
    async with asyncio.timeout(10), aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
        await pub.publish(
            f"ecall/v1/acme/car-{n}/msd", msd_envelope(msd, call_id=call_id, sent_at=now), qos=1
        )
    return call_id


TONE_COUNTER = """() => {
    window.tones = 0;
    const start = OscillatorNode.prototype.start;
    OscillatorNode.prototype.start = function (...args) {
        window.tones += 1;
        return start.apply(this, args);
    };
}"""


async def sign_in(
    browser: Browser, gw: Gateway, token: str = OPERATOR_TOKEN, *, locale: str = "en-GB"
) -> tuple[BrowserContext, Page]:
    ctx = await browser.context(locale=locale)
    page = await ctx.new_page()
    await page.goto(f"{base_url(gw)}/console/")
    await page.fill("#token", token)
    await page.click("#signin button[type=submit]")
    await page.wait_for_selector("body[data-ready=app]")
    return ctx, page


async def open_incident(page: Page, incident_id: str) -> None:
    await page.click(f"#queue-body tr[data-id='{incident_id}']")
    await page.wait_for_selector("#detail .detail-head")


async def first_incident(gw: Gateway) -> str:
    """The id of the gateway's first incident, once it is stored."""
    async with asyncio.timeout(5):
        while not (rows := await gw.store.list_incidents()):  # noqa: ASYNC110 (polls the store)
            await asyncio.sleep(0.02)
    return rows[0].incident_id


@pytest.mark.slow  # three browser contexts, ~5.5 s
async def test_sign_in_live_queue_and_claim_seen_by_another_operator(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, browser: Browser
) -> None:
    async with gateway(tmp_path, mosquitto, receiver) as gw:
        # A wrong token: refused, the form again with the message.
        ctx0 = await browser.context()
        page0 = await ctx0.new_page()
        await page0.goto(f"{base_url(gw)}/console/")
        await page0.fill("#token", "not-a-token-of-anyone-here")
        await page0.click("#signin button[type=submit]")
        await expect(page0.locator("#signin-failed")).to_be_visible()
        await page0.fill("#token", SRE_TOKEN)  # a token, but not an operator's
        await page0.click("#signin button[type=submit]")
        await expect(page0.locator("#signin-failed")).to_be_visible()

        ctx_a, alice = await sign_in(browser, gw)
        ctx_c, carol = await sign_in(browser, gw, SECOND_OPERATOR)
        for page in (alice, carol):  # count the tones the page plays (WebAudio oscillators started)
            await page.evaluate(TONE_COUNTER)
        await carol.click("#sound")  # Carol mutes hers
        await expect(carol.locator("#sound")).to_have_text("Sound off")
        await expect(alice.locator("#who")).to_have_text("Signed in as alice")
        cookies = await ctx_a.cookies()
        [session] = [c for c in cookies if c["name"] == "ecallgw_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"

        # A crash over MQTT shows in both queues within a second, without a reload.
        t0 = time.monotonic()
        call_id = await crash(mosquitto, 1)
        row = alice.locator("#queue-body tr", has_text=call_id)
        await expect(row).to_be_visible(timeout=1000)
        assert time.monotonic() - t0 < 1.5  # publish included
        await expect(carol.locator("#queue-body tr", has_text=call_id)).to_be_visible(timeout=1000)
        await expect(alice.locator("#announce")).to_contain_text("New")
        assert await alice.evaluate("window.tones") == 1
        assert await carol.evaluate("window.tones") == 0
        await expect(row).to_have_class(re.compile(r"\bfresh\b"))  # highlighted
        await expect(alice.locator("#c-open")).to_have_text("1", timeout=3000)
        await expect(alice.locator("#c-unacknowledged")).to_have_text("1")
        incident_id = await row.get_attribute("data-id")
        assert incident_id is not None

        # Alice claims it; Carol sees who has it, live.
        await open_incident(alice, incident_id)
        await open_incident(carol, incident_id)
        await alice.click("button[data-action=claim]")
        await expect(alice.locator("#claim")).to_have_text("Handled by alice", timeout=3000)
        await expect(carol.locator("#claim")).to_have_text("Handled by alice", timeout=3000)
        await expect(carol.locator(f"#queue-body tr[data-id='{incident_id}'] td.claimed")).to_have_text(
            "alice"
        )
        # Alice hands it to Carol: both see the new holder.
        await alice.fill("#assignee", "carol")
        await alice.click("#assign")
        await expect(carol.locator("#claim")).to_have_text("Handled by carol", timeout=3000)
        await expect(alice.locator("#claim")).to_have_text("Handled by carol")

        # The incident view: the decoded MSD in words, the manufacturer from the WMI.
        detail = alice.locator("#detail")
        await expect(detail).to_contain_text("passenger car (M1)")
        await expect(detail).to_contain_text("petrol")
        await expect(detail).to_contain_text("Volkswagen")
        await expect(detail).to_contain_text("+4915112345678")
        await expect(detail).to_contain_text("Automatic")
        for ctx in (ctx0, ctx_a, ctx_c):
            await ctx.close()
    assert browser.foreign_requests == []


async def test_cancel_with_note_reaches_the_psap_and_notes_are_text(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, browser: Browser
) -> None:
    async with gateway(tmp_path, mosquitto, receiver) as gw:
        ctx, page = await sign_in(browser, gw)
        dialogs: list[str] = []
        page.on("dialog", lambda d: dialogs.append(d.message))
        await crash(mosquitto, 2)
        await until(lambda: len(receiver.accepted) >= 1)
        incident_id = await first_incident(gw)
        row = page.locator(f"#queue-body tr[data-id='{incident_id}']")
        await expect(row).to_be_visible()
        # Times in the operator's zone (the context's Europe/Brussels), whatever the server's.
        [stored] = await gw.store.list_incidents()
        local = dt.datetime.fromtimestamp(stored.received_at, ZoneInfo("Europe/Brussels"))
        await expect(row).to_contain_text(local.strftime("%H:%M:%S"))
        # Filters and search narrow the queue, live rows included.
        await page.select_option("#f-kind", "manual")
        await expect(row).to_have_count(0)
        await page.select_option("#f-kind", "automatic")
        await expect(row).to_have_count(1)
        await page.fill("#f-q", "call-2")
        await expect(row).to_have_count(1)
        await page.fill("#f-q", "call-99")
        await expect(row).to_have_count(0)
        await page.fill("#f-q", "")
        await open_incident(page, incident_id)
        await page.click("button[data-action=ack]")
        await expect(row).to_contain_text("acknowledged", timeout=3000)

        # A note with markup and CRLF: shown as the very text, nothing runs.
        hostile = "<script>alert(1)</script>\r\n<img src=x onerror=alert(2)>second line"
        await page.fill("#note-text", hostile)
        await page.click("#note-add")
        # The note's own answer (the ack's "Done" is still on screen until it comes).
        await expect(page.locator("#action-status")).to_contain_text("note added")
        shown = page.locator("#detail").get_by_text("<script>alert(1)</script>", exact=False).first
        await expect(shown).to_be_visible()
        assert await page.locator("#detail script").count() == 0
        assert await page.locator("#detail img").count() == 0
        assert dialogs == []

        # Cancel needs a reason and a note; with both it reaches the PSAP as a CAP Cancel.
        await page.click("#detail details summary")
        await page.click("#cancel-form button[type=submit]")
        await expect(page.locator("#action-status")).to_have_text("Cancelling needs a reason and a note.")
        await page.select_option("#cancel-reason", "false_trigger")
        await page.fill("#cancel-note", "Driver answered: airbag fired in the car park, nobody hurt.")
        await page.click("#cancel-form button[type=submit]")
        await expect(page.locator("#action-status")).to_contain_text("Done", timeout=3000)

        def cancels() -> list[document.CapAlert]:
            alerts = [document.parse_cap(r.body) for r in receiver.accepted]
            return [a for a in alerts if a.msg_type == "Cancel"]

        await until(lambda: bool(cancels()), timeout_s=5)
        [cancel] = cancels()
        assert cancel.incident_id == incident_id
        body = next(r.body for r in receiver.accepted if b"<msgType>Cancel</msgType>" in r.body).decode()
        # The operator's note in the PSAP's Cancel depends on the API's note-in-CAP work (issue 13).
        if "airbag fired in the car park" not in body:
            pytest.xfail("the CAP Cancel does not carry the operator's note yet (operator API, issue 13)")
        await ctx.close()
    assert browser.foreign_requests == []


BRUSSELS = {
    "type": "Polygon",
    "coordinates": [[[4.30, 50.80], [4.42, 50.80], [4.42, 50.90], [4.30, 50.90], [4.30, 50.80]]],
}


async def test_map_shows_the_trail_without_a_tile_server_and_the_area_filter(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, browser: Browser
) -> None:
    async with gateway(
        tmp_path,
        mosquitto,
        receiver,
        triage={"psap_areas": [{"receiver": "psap-brussels", "geometry": BRUSSELS}]},
        receivers={"psap-brussels": {"kind": "http", "url": receiver.url, "format": "cap"}},
    ) as gw:
        ctx, page = await sign_in(browser, gw)
        await crash(mosquitto, 3, lat=50.8466, lon=4.3528)
        incident_id = await first_incident(gw)
        # The vehicle sends its MSD again from a little further: a second point of the trail.
        msd = make_msd(
            vin=vin_for(3), timestamp=int(time.time()), lat=50.8480, lon=4.3560, message_identifier=2
        )
        msd = with_crash_data(msd)  # and now with crash data
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
            await pub.publish(
                "ecall/v1/acme/car-3/msd", msd_envelope(msd, call_id="call-3", sent_at=time.time()), qos=1
            )
        await page.wait_for_selector(f"#queue-body tr[data-id='{incident_id}']")
        await open_incident(page, incident_id)
        await expect(page.locator("#trail li")).to_have_count(2, timeout=3000)
        await expect(page.locator("#trail")).to_contain_text("50.84660, 4.35280")
        await expect(page.locator("#map .leaflet-overlay-pane path")).not_to_have_count(0)
        await expect(page.locator("#map .leaflet-control-scale")).to_be_visible()
        assert await page.locator("#map .leaflet-tile").count() == 0
        # The MSD's optional additional data in words.
        await expect(page.locator("#detail")).to_contain_text("Crash severity1200")
        await expect(page.locator("#detail")).to_contain_text("Crash typefront, rollover")
        # The queue's area filter: the PSAP area triage routed by.
        await expect(page.locator("#detail")).to_contain_text("psap-brussels")
        row = page.locator(f"#queue-body tr[data-id='{incident_id}']")
        await page.select_option("#f-area", "-")  # outside every area
        await expect(row).to_have_count(0)
        await page.select_option("#f-area", "psap-brussels")
        await expect(row).to_have_count(1)
        await ctx.close()
    assert browser.foreign_requests == []


def _visible_english_leftovers(text: str, lang: str) -> list[str]:
    en = json.loads((I18N / "en.json").read_text())
    other = json.loads((I18N / f"{lang}.json").read_text())
    leftovers = []
    for key, value in en.items():
        if other[key] == value or len(value) < 4:
            continue  # the same word in both languages (Incident, Position, minibus (M2))
        literal = re.sub(r"\\\{\w+\\\}", ".*?", re.escape(value))
        if re.search(rf"(?<!\w){literal}(?!\w)", text):
            leftovers.append(value)
    return leftovers


def test_catalogues_have_every_key() -> None:
    en = json.loads((I18N / "en.json").read_text())
    for lang in ("fr", "nl"):
        other = json.loads((I18N / f"{lang}.json").read_text())
        assert set(other) == set(en), lang
        for key, value in en.items():  # the same placeholders
            assert set(re.findall(r"\{\w+\}", other[key])) == set(re.findall(r"\{\w+\}", value)), key


@pytest.mark.parametrize(("locale", "lang"), [("fr-BE", "fr"), ("nl-BE", "nl")])
async def test_french_and_dutch_render_without_english_leftovers(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, browser: Browser, locale: str, lang: str
) -> None:
    async with gateway(tmp_path, mosquitto, receiver) as gw:
        await crash(mosquitto, 4)
        incident_id = await first_incident(gw)
        ctx = await browser.context(locale=locale)
        page = await ctx.new_page()
        await page.goto(f"{base_url(gw)}/console/")
        await page.wait_for_selector("body[data-ready=signin]")
        assert await page.evaluate("document.documentElement.lang") == lang
        signin_text = await page.inner_text("body")
        assert _visible_english_leftovers(signin_text, lang) == []
        await page.fill("#token", OPERATOR_TOKEN)
        await page.click("#signin button[type=submit]")
        await page.wait_for_selector("body[data-ready=app]")
        await open_incident(page, incident_id)
        await page.wait_for_selector("#trail li")
        text = await page.inner_text("body")
        assert _visible_english_leftovers(text, lang) == [], text
        assert "Volkswagen" in text  # data, not a UI string
        await ctx.close()
    assert browser.foreign_requests == []


async def test_sign_out_ends_the_session_and_csrf_is_checked(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, browser: Browser
) -> None:
    async with gateway(tmp_path, mosquitto, receiver) as gw:
        await crash(mosquitto, 5)
        incident_id = await first_incident(gw)
        ctx, page = await sign_in(browser, gw)
        [cookie] = [c for c in await ctx.cookies() if c["name"] == "ecallgw_session"]
        jar = {"ecallgw_session": cookie["value"]}
        url = base_url(gw)
        headers = await page.evaluate(
            "async () => (await fetch('/console/')).headers.get('content-security-policy')"
        )
        assert "default-src 'self'" in headers and "frame-ancestors 'none'" in headers
        async with aiohttp.ClientSession() as http, http.get(f"{url}/console/console.js") as resp:
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Referrer-Policy"] == "no-referrer"
            assert resp.headers["Content-Type"].startswith("text/javascript")
        async with aiohttp.ClientSession(cookies=jar) as http:
            async with http.get(f"{url}/v1/incidents") as resp:  # the cookie stands for alice
                assert resp.status == 200
            action = {"action": "ack", "note": ""}
            async with http.post(f"{url}/v1/incidents/{incident_id}/actions", json=action) as resp:
                assert resp.status == 403  # no CSRF token
                assert "X-CSRF-Token" in (await resp.json())["error"]
            async with http.get(f"{url}/console/session") as resp:
                csrf = (await resp.json())["csrf"]
            evil = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
            async with http.post(
                f"{url}/v1/incidents/{incident_id}/actions", json=action, headers=evil
            ) as resp:
                assert resp.status == 403  # another origin, even with the token
            async with http.get(f"{url}/metrics") as resp:
                assert resp.status == 403  # a session is an operator's, never an SRE's
        # The sound switch and the language are remembered by the browser.
        await page.click("#sound")
        await page.select_option("#lang", "nl")
        await page.reload()
        await page.wait_for_selector("body[data-ready=app]")
        await expect(page.locator("#sound")).to_have_text("Geluid uit")
        await page.click("#signout")
        await page.wait_for_selector("body[data-ready=signin]")
        async with aiohttp.ClientSession(cookies=jar) as http, http.get(f"{url}/v1/incidents") as resp:
            assert resp.status == 401  # the session is gone on the server, not only in the browser
        # Guessing tokens at the sign-in form is throttled like guessing bearer tokens.
        async with aiohttp.ClientSession() as http:
            statuses = []
            for i in range(11):
                async with http.post(
                    f"{url}/console/session",
                    data={"token": f"guess-{i:04d}-xxxxxxxxxxxx"},
                    allow_redirects=False,
                ) as resp:
                    statuses.append(resp.status)
            assert statuses[:10] == [303] * 10 and statuses[10] == 429
        await ctx.close()
    assert browser.foreign_requests == []


async def test_demo_prints_a_console_url_and_sign_in_that_show_its_incidents_live(browser: Browser) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ecallgw",
        "demo",
        "--duration",
        "20",
        "--rate",
        "4",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        head = ""
        url = token = None
        async with asyncio.timeout(30):
            while url is None or token is None:
                line = (await proc.stdout.readline()).decode()
                assert line, head
                head += line
                if m := re.search(r"operator token (\S+)", line):
                    token = m.group(1)
                if m := re.search(r"operator console (http://\S+/console/)", line):
                    url = m.group(1)
        ctx = await browser.context()
        page = await ctx.new_page()
        await page.goto(url)
        await page.fill("#token", token)
        await page.click("#signin button[type=submit]")
        await page.wait_for_selector("body[data-ready=app]")
        await page.select_option("#f-status", "")  # every incident, also those the bot handled
        before = await page.locator("#queue-body tr").count()
        # The fleet keeps sending: rows arrive without a reload.
        await expect(page.locator("#queue-body tr")).not_to_have_count(before, timeout=10000)
        await ctx.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await proc.communicate()
    assert browser.foreign_requests == []


async def test_a_manual_calls_escalation_countdown_ticks(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, browser: Browser
) -> None:
    async with gateway(tmp_path, mosquitto, receiver, triage={"escalation_delay_s": 90}) as gw:
        now = time.time()
        msd = make_msd(vin=vin_for(6), timestamp=int(now), automatic=False, passengers=1)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
            await pub.publish(
                "ecall/v1/acme/car-6/msd", msd_envelope(msd, call_id="call-6", sent_at=now), qos=1
            )
        incident_id = await first_incident(gw)
        ctx, page = await sign_in(browser, gw)
        await open_incident(page, incident_id)
        countdown = page.locator("#countdown")
        await expect(countdown).to_contain_text("Escalation to the PSAP in 1:")
        first = await countdown.inner_text()
        await expect(countdown).not_to_have_text(first, timeout=2500)  # it ticks
        await expect(page.locator("#detail")).to_contain_text("Manual")
        await ctx.close()
    assert browser.foreign_requests == []


async def test_tiles_from_the_configured_server_only(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, browser: Browser
) -> None:
    """A tile server on loopback: the page's CSP names it, tiles load from it, nothing else leaves."""
    png = (Path(__file__).parents[2] / "ecallgw/console/vendor/leaflet/images/layers.png").read_bytes()
    served: list[str] = []

    async def tile(request: web.Request) -> web.Response:
        served.append(request.path)
        return web.Response(body=png, content_type="image/png")

    app = web.Application()
    app.router.add_get("/tiles/{z}/{x}/{y}.png", tile)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    tile_url = f"http://127.0.0.1:{port}/tiles/{{z}}/{{x}}/{{y}}.png"
    try:
        console: dict[str, object] = {"tile_url": tile_url, "tile_attribution": "<b>Test tiles</b>"}
        async with gateway(tmp_path, mosquitto, receiver, console=console) as gw:
            await crash(mosquitto, 7)
            incident_id = await first_incident(gw)
            ctx, page = await sign_in(browser, gw)
            await open_incident(page, incident_id)
            await expect(page.locator("#map img.leaflet-tile-loaded").first).to_be_visible(timeout=5000)
            assert served and all(p.startswith("/tiles/") for p in served)
            # The attribution is text: the configured markup is shown, not rendered.
            await expect(page.locator(".leaflet-control-attribution")).to_contain_text("<b>Test tiles</b>")
            async with aiohttp.ClientSession() as http, http.get(f"{base_url(gw)}/console/") as resp:
                assert (
                    f"img-src 'self' data: http://127.0.0.1:{port};"
                    in resp.headers["Content-Security-Policy"]
                )
            await ctx.close()
    finally:
        await runner.cleanup()
    assert browser.foreign_requests == []


async def test_over_tls_the_cookie_is_secure_and_host_only(tmp_path: Path, pki: Pki) -> None:
    cfg = gateway_config(
        tmp_path,
        broker=None,
        psap_url="http://127.0.0.1:9/none",
        http={"tls_cert_file": str(pki.server.cert), "tls_key_file": str(pki.server.key)},
    )
    tls = ssl.create_default_context(cafile=str(pki.ca))
    async with running_gateway(cfg) as gw:
        assert gw.http is not None
        url = f"https://127.0.0.1:{gw.http.port}"
        connector = aiohttp.TCPConnector(ssl=tls)
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.post(
                f"{url}/console/session", data={"token": OPERATOR_TOKEN}, allow_redirects=False
            ) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/console/"
                cookie = resp.headers["Set-Cookie"]
            assert cookie.startswith("__Host-ecallgw_session=")
            flags = {f.strip().lower() for f in cookie.split(";")[1:]}
            assert {"secure", "httponly", "path=/", "samesite=strict"} <= flags
            assert not any(f.startswith("domain") for f in flags)
            value = cookie.split(";")[0].split("=", 1)[1]
            headers = {"Cookie": f"__Host-ecallgw_session={value}"}
            async with http.get(f"{url}/v1/incidents", headers=headers) as resp:
                assert resp.status == 200
            headers = {"Cookie": f"ecallgw_session={value}"}  # the plaintext name is not this session
            async with http.get(f"{url}/v1/incidents", headers=headers) as resp:
                assert resp.status == 401


async def test_behind_a_tls_proxy_the_cookie_can_be_always_secure(tmp_path: Path) -> None:
    """``console.cookie_secure = "always"``: plain HTTP here (a proxy in front ends TLS), yet the
    cookie is Secure with the ``__Host-`` prefix, and that cookie is the session."""
    cfg = gateway_config(
        tmp_path, broker=None, psap_url="http://127.0.0.1:9/none", console={"cookie_secure": "always"}
    )
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
        url = base_url(gw)
        async with http.post(
            f"{url}/console/session", data={"token": OPERATOR_TOKEN}, allow_redirects=False
        ) as resp:
            assert resp.status == 303
            cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith("__Host-ecallgw_session=")
        assert "secure" in {f.strip().lower() for f in cookie.split(";")[1:]}
        value = cookie.split(";")[0].split("=", 1)[1]
        headers = {"Cookie": f"__Host-ecallgw_session={value}"}
        async with http.get(f"{url}/v1/incidents", headers=headers) as resp:
            assert resp.status == 200
    cfg = gateway_config(tmp_path, broker=None, psap_url="http://127.0.0.1:9/none")
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:  # "auto": plain HTTP
        async with http.post(
            f"{base_url(gw)}/console/session", data={"token": OPERATOR_TOKEN}, allow_redirects=False
        ) as resp:
            cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith("ecallgw_session=")
        assert "secure" not in {f.strip().lower() for f in cookie.split(";")[1:]}
