"""Make docs/img/console-queue.png and docs/img/console-incident.png with the tests' browser.

    .venv/bin/python -m tests.console.screenshots

A real gateway (mosquitto, SQLite in a temporary directory, a PSAP webhook on 127.0.0.1), a few
simulated crashes around Brussels published over MQTT, an operator signed in through the page;
no tile server (the map as the tests see it).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import aiomqtt

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


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, Mosquitto() as broker:
        receiver = Receiver()
        await receiver.start()
        try:
            cfg = gateway_config(Path(tmp), broker=broker, psap_url=receiver.url, psap_format="cap")
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
                await ctx.close()
        finally:
            await receiver.stop()
    print(f"wrote {OUT / 'console-queue.png'} and {OUT / 'console-incident.png'}")


if __name__ == "__main__":
    asyncio.run(main())
