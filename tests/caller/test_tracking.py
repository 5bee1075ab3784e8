"""Tracking links and the location-link policy: an incident's state for its caller, live, nothing
else; revoked → 410; a call without a trusted MSD position gets a location link by itself."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import aiohttp
import pytest

from ecallgw.codecs import msd as msd_codec
from ecallgw.simulators.sms import SimulatedSmsGateway
from tests.browserkit import Browser
from tests.caller.kit import PROVIDER, base_url, call, caller_config, ingest_call
from tests.gateway.harness import running_gateway
from tests.gateway.helpers import make_msd, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver

pytestmark = pytest.mark.usefixtures("store_backend")


async def test_incident_tracking_page_follows_the_incident_and_is_revocable(
    tmp_path: Path, receiver: Receiver, sms: SimulatedSmsGateway, browser: Browser
) -> None:
    async with (
        running_gateway(caller_config(tmp_path, psap_url=receiver.url, sms=sms)) as gw,
        aiohttp.ClientSession() as s,
    ):
        base = base_url(gw)
        incident_id = await ingest_call(s, gw)
        code, link = await call(
            s, "POST", f"{base}/v1/incidents/{incident_id}/links", json={"purpose": "tracking", "lang": "de"}
        )
        assert code == 201 and link["purpose"] == "tracking"
        [message] = await sms.wait(1)
        assert message.url is not None and message.url.startswith(f"{base}/t/")
        ctx = await browser.context(locale="de-DE")
        page = await ctx.new_page()
        response = await page.goto(message.url)
        assert response is not None and response.status == 200
        assert await page.text_content("#f-state") == "In Bearbeitung durch die Zentrale"
        html = await page.content()
        assert "WVW" not in html and "+4915112345678" not in html and "car-1" not in html  # no VIN, no phone
        # Live: the operator resolves the incident; the open page shows it without a reload.
        code, _ = await call(
            s, "POST", f"{base}/v1/incidents/{incident_id}/actions", json={"action": "resolve"}
        )
        assert code == 200
        async with asyncio.timeout(8):
            while await page.text_content("#f-state") != "Abgeschlossen":  # noqa: ASYNC110 - a page, polled
                await asyncio.sleep(0.05)
        # Revoked: the page says so at its next poll, and a new visit gets the 410 page.
        code, _ = await call(s, "DELETE", f"{base}/v1/links/{link['link_id']}")
        assert code == 200
        async with asyncio.timeout(8):
            while not (await page.text_content("#status") or ""):  # noqa: ASYNC110 - a page, polled
                await asyncio.sleep(0.05)
        assert "nicht mehr" in (await page.text_content("#status") or "") or "abgelaufen" in (
            await page.text_content("#status") or ""
        )
        response = await page.goto(message.url)
        assert response is not None and response.status == 410
        # A tracking token does not open the location page (one purpose per token).
        token = message.url.rsplit("/", 1)[1]
        response = await page.goto(f"{base}/l/{token}")
        assert response is not None and response.status == 404
        await ctx.close()
    assert browser.foreign_requests == []


def _untrusted_msd(n: int, now: float) -> bytes:
    m = msd_codec.decode(make_msd(vin=vin_for(n), timestamp=int(now), automatic=False))
    st = m.msd.msd_structure
    st = dataclasses.replace(st, control=dataclasses.replace(st.control, position_can_be_trusted=False))
    return msd_codec.encode(dataclasses.replace(m, msd=dataclasses.replace(m.msd, msd_structure=st)))


async def test_policy_sends_a_location_link_once_for_an_untrusted_position(
    tmp_path: Path, receiver: Receiver, sms: SimulatedSmsGateway
) -> None:
    cfg = caller_config(tmp_path, psap_url=receiver.url, sms=sms, caller={"auto_location_link": True})
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as s:
        base = base_url(gw)
        now = time.time()
        await ingest_call(s, gw, vehicle="car-trusted", n=1)  # a trusted position: no link
        code, answer = await call(
            s,
            "POST",
            f"{base}/v1/ecall/acme/car-2/msd",
            headers=PROVIDER,
            data=msd_envelope(_untrusted_msd(2, now), call_id="call-2", sent_at=now, callback="+32471000002"),
        )
        assert code == 202, answer
        [message] = await sms.wait(1)
        assert message.to == "+32471000002" and message.url is not None and "/l/" in message.url
        _, links = await call(s, "GET", f"{base}/v1/incidents/{answer['incident_id']}/links")
        assert [lk["created_by"] for lk in links["links"]] == ["policy:auto_location_link"]
        # The resend of the same call (revision 2 or a duplicate) makes no second link.
        await call(
            s,
            "POST",
            f"{base}/v1/ecall/acme/car-2/msd",
            headers=PROVIDER,
            data=msd_envelope(
                _untrusted_msd(2, now + 5), call_id="call-2", sent_at=now + 5, callback="+32471000002"
            ),
        )
        await asyncio.sleep(0.5)
        await until(lambda: len(sms.messages) == 1)
        assert len(sms.messages) == 1
