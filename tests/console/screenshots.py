"""Make docs/img/console-queue.png, console-incident.png and console-breakdowns.png with the tests' browser.

    .venv/bin/python -m tests.console.screenshots
    .venv/bin/python -m tests.console.screenshots storm    # docs/img/console-storm.png only

A real gateway (mosquitto, SQLite in a temporary directory, a PSAP webhook on 127.0.0.1), a few
simulated crashes around Brussels published over MQTT, two simulated assistance providers and two
breakdowns from the online form (one no provider can take), an operator signed in through the page;
no tile server (the map as the tests see it).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import aiomqtt

from ecallgw.simulators.assistance import SimulatedProvider
from tests.browserkit import launch
from tests.gateway.broker import Mosquitto
from tests.gateway.harness import OPERATOR_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import make_msd, msd_envelope, vin_for
from tests.gateway.receiver import Receiver

OUT = Path(__file__).parents[2] / "docs" / "img"

# (vehicle n, automatic, passengers, lat, lon): a few calls of one evening around Brussels.
CALLS = [
    (11, True, 4, 50.8466, 4.3528),
    (12, False, 1, 50.8503, 4.3517),
    (13, True, 2, 50.8120, 4.3830),
    (14, True, 1, 50.8794, 4.7005),
]


async def breakdowns(base: str) -> None:
    """Two breakdowns from the online form: one a provider takes, one with no tow truck in range."""
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    forms = [
        {"lat": 50.8400, "lon": 4.3600, "what": "battery", "vehicle": "1-XYZ-987 Peugeot 208"},
        {
            "lat": 50.7000,
            "lon": 4.6000,
            "what": "engine",
            "vehicle": "2-ABC-123 VW Golf",
            "phone": "+32 470 11 12 13",
        },
    ]
    async with aiohttp.ClientSession() as s:
        for form in forms:
            async with s.post(f"{base}/v1/assistance/links", json={}, headers=headers) as resp:
                url = (await resp.json())["url"]
            async with s.post(f"{url}/request", json=form) as resp:
                assert resp.status == 201, await resp.text()


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, Mosquitto() as broker:
        receiver = Receiver()
        garage = SimulatedProvider(
            name="garage-ixelles",
            token="garage-ixelles-token-0001",
            lat=50.8300,
            lon=4.3700,
            capabilities=("repair",),
            radius_km=15.0,
        )
        tow = SimulatedProvider(
            name="tow-brussels", token="tow-brussels-token-0001", lat=50.8600, lon=4.3500, radius_km=10.0
        )
        await receiver.start()
        try:
            await garage.start()
            await tow.start()
            assistance: dict[str, object] = {"providers": [garage.config(), tow.config()]}
            cfg = gateway_config(
                Path(tmp), broker=broker, psap_url=receiver.url, psap_format="cap", assistance=assistance
            )
            async with running_gateway(cfg) as gw, launch() as browser:
                assert gw.http is not None
                url = f"http://127.0.0.1:{gw.http.port}/console/"
                ctx = await browser.context(locale="en-GB")
                page = await ctx.new_page()
                await page.set_viewport_size({"width": 1440, "height": 900})
                await page.goto(url)
                await page.fill("#token", OPERATOR_TOKEN)
                await page.click("#signin button[type=submit]")
                await page.wait_for_selector("body[data-ready=app]")
                async with aiomqtt.Client(broker.host, broker.port) as pub:
                    for n, automatic, passengers, lat, lon in CALLS:
                        now = time.time()
                        msd = make_msd(
                            vin=vin_for(n),
                            timestamp=int(now),
                            automatic=automatic,
                            passengers=passengers,
                            lat=lat,
                            lon=lon,
                        )
                        envelope = msd_envelope(msd, call_id=f"call-{n}", sent_at=now)
                        await pub.publish(f"ecall/v1/acme/car-{n}/msd", envelope, qos=1)
                    # The first vehicle moves on a little: a trail of two points.
                    msd = make_msd(
                        vin=vin_for(11),
                        timestamp=int(time.time()),
                        lat=50.8478,
                        lon=4.3551,
                        message_identifier=2,
                    )
                    await pub.publish(
                        "ecall/v1/acme/car-11/msd",
                        msd_envelope(msd, call_id="call-11", sent_at=time.time()),
                        qos=1,
                    )
                await page.wait_for_function("document.querySelectorAll('#queue-body tr').length >= 4")
                await asyncio.sleep(2.0)  # the counters follow the events within 1.5 s
                await page.screenshot(path=str(OUT / "console-queue.png"))
                await page.set_viewport_size({"width": 1440, "height": 1500})
                await page.click("#queue-body tr:has-text('call-11')")
                await page.wait_for_selector("#trail li")
                await page.click("button[data-action=claim]")
                await page.wait_for_selector("#claim.claimed")
                await page.fill("#note-text", "Driver answers, dazed; two children in the back.")
                await page.click("#note-add")
                await page.wait_for_selector(".note-text")
                await asyncio.sleep(0.5)
                await page.screenshot(path=str(OUT / "console-incident.png"))
                await breakdowns(url.removesuffix("/console/"))
                await page.set_viewport_size({"width": 1440, "height": 1100})
                await page.select_option("#f-status", "active")
                await page.click("#tab-assist")
                await page.wait_for_selector("#cases-body tr")
                await page.click("#cases-body tr")
                await page.wait_for_selector("#case-actions")
                await page.fill("#share-garage", "Garage Dupont, Chaussée de Wavre 12, Ixelles")
                await asyncio.sleep(0.5)
                await page.screenshot(path=str(OUT / "console-breakdowns.png"))
                await ctx.close()
        finally:
            await receiver.stop()
            await garage.stop()
            await tow.stop()
    print(
        f"wrote {OUT / 'console-queue.png'}, {OUT / 'console-incident.png'}, {OUT / 'console-breakdowns.png'}"
    )


async def storm() -> None:
    """docs/img/console-storm.png: a provider's SOS buttons fire together (a storm threshold of two
    calls), one automatic crash among them; the operator opens the storm and is about to confirm."""
    OUT.mkdir(parents=True, exist_ok=True)
    triage: dict[str, object] = {"storm_min_count": 2, "storm_window_s": 600.0, "escalation_delay_s": 300.0}
    with tempfile.TemporaryDirectory() as tmp, Mosquitto() as broker:
        receiver = Receiver()
        await receiver.start()
        try:
            cfg = gateway_config(
                Path(tmp), broker=broker, psap_url=receiver.url, psap_format="cap", triage=triage
            )
            async with running_gateway(cfg) as gw, launch() as browser:
                assert gw.http is not None
                url = f"http://127.0.0.1:{gw.http.port}/console/"
                ctx = await browser.context(locale="en-GB")
                page = await ctx.new_page()
                await page.set_viewport_size({"width": 1440, "height": 1000})
                await page.goto(url)
                await page.fill("#token", OPERATOR_TOKEN)
                await page.click("#signin button[type=submit]")
                await page.wait_for_selector("body[data-ready=app]")
                async with aiomqtt.Client(broker.host, broker.port) as pub:
                    for n in range(5):
                        now = time.time()
                        msd = make_msd(
                            vin=vin_for(30 + n),
                            timestamp=int(now),
                            automatic=n == 3,
                            lat=50.84 + n / 200,
                            lon=4.35 + n / 300,
                        )
                        envelope = msd_envelope(msd, call_id=f"sos-{n}", sent_at=now)
                        await pub.publish(f"ecall/v1/acme/unit-{n}/msd", envelope, qos=1)
                        await asyncio.sleep(0.2)
                await page.wait_for_selector("#queue-body tr.storm")
                await page.wait_for_function("document.querySelectorAll('#queue-body tr').length >= 6")
                await page.click("#queue-body tr.storm")
                await page.wait_for_selector("#storm-members li")
                await page.click("#storm-confirm")
                await asyncio.sleep(2.0)  # the counters follow the events within 1.5 s
                await page.screenshot(path=str(OUT / "console-storm.png"))
                await ctx.close()
        finally:
            await receiver.stop()
    print(f"wrote {OUT / 'console-storm.png'}")


if __name__ == "__main__":
    asyncio.run(storm() if sys.argv[1:] == ["storm"] else main())
