"""Location links end to end: operator API → simulated SMS gateway → headless Chromium → the incident.

Real gateway (SQLite file or PostgreSQL), real HTTP on 127.0.0.1, real Chromium with a fixed
geolocation; only the SMS operator is simulated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import aiohttp
import pytest

from ecallgw.gateway.caller_api import token_hash
from ecallgw.gateway.store.caller import CallerStore, LinkRow
from ecallgw.simulators.sms import SimulatedSmsGateway
from tests.browserkit import Browser
from tests.caller.kit import SMS_TOKEN, base_url, call, caller_config, ingest_call, position_of
from tests.gateway.harness import running_gateway
from tests.gateway.helpers import until
from tests.gateway.receiver import Receiver

pytestmark = pytest.mark.usefixtures("store_backend")


async def test_operator_link_sms_browser_position_reaches_api_and_psap(
    tmp_path: Path,
    receiver: Receiver,
    sms: SimulatedSmsGateway,
    browser: Browser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        running_gateway(caller_config(tmp_path, psap_url=receiver.url, sms=sms)) as gw,
        aiohttp.ClientSession() as s,
    ):
        incident_id = await ingest_call(s, gw)
        await until(lambda: len(receiver.accepted) == 1)
        status, link = await call(
            s, "POST", f"{base_url(gw)}/v1/incidents/{incident_id}/links", json={"purpose": "location"}
        )
        assert status == 201, link
        assert link["max_uses"] == 3 and link["state"] == "active"
        assert 1790 < link["expires_at"] - time.time() <= 1800
        [message] = await sms.wait(1)
        assert message.to == "+4915112345678"  # the call's callback number
        assert message.key == link["link_id"] and message.authorization == f"Bearer {SMS_TOKEN}"
        assert message.url is not None and message.url.startswith(base_url(gw) + "/l/")
        token = message.url.rsplit("/", 1)[1]
        # Only the token's SHA-256 is stored.
        row = await CallerStore(gw.store).link(link["link_id"])
        assert row is not None and row.token_hash == token_hash(token)

        ctx = await browser.context(locale="fr-BE", geolocation=(50.85, 4.35), accuracy_m=12.0)
        page = await ctx.new_page()
        response = await page.goto(message.url)
        assert response is not None and response.status == 200
        assert "Content-Security-Policy" in response.headers or "content-security-policy" in response.headers
        consent = await page.text_content("#consent")
        assert consent is not None and "votre position" in consent  # French, from Accept-Language
        await page.click("#share")
        t0 = time.monotonic()
        while True:
            pos = await position_of(s, gw, incident_id)
            if pos is not None and pos["source"] == "caller_link":
                break
            assert time.monotonic() - t0 < 1.0, pos
            await asyncio.sleep(0.02)
        assert (round(pos["lat"], 5), round(pos["lon"], 5)) == (50.85, 4.35)
        assert pos["accuracy_m"] == 12.0 and pos["trusted"] is True
        await page.wait_for_selector("#status.ok")
        # Every receiver that has the incident gets the new revision (here the PSAP).
        await until(lambda: len(receiver.accepted) == 2)
        doc = json.loads(receiver.accepted[1].body)
        assert doc["revision"] == 2 and doc["position"]["source"] == "caller_link"
        # The use is audited under the link's id, never its token.
        _, full = await call(s, "GET", f"{base_url(gw)}/v1/incidents/{incident_id}")
        actions = [a["action"] for a in full["audit"]]
        assert "link_position" in actions and "link_create_location" in actions
        assert token not in json.dumps(full)
        _, links = await call(s, "GET", f"{base_url(gw)}/v1/incidents/{incident_id}/links")
        assert links["links"][0]["uses"] == 1 and links["links"][0]["sms"] == "sent"
        await ctx.close()
    assert browser.foreign_requests == []
    # Logs name the link id; never its token, never the phone number (pseudonymised).
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert link["link_id"] in logged
    assert token not in logged and "+4915112345678" not in logged


async def test_expired_revoked_and_used_up_links_answer_a_readable_410(
    tmp_path: Path, receiver: Receiver, sms: SimulatedSmsGateway, browser: Browser
) -> None:
    async with (
        running_gateway(caller_config(tmp_path, psap_url=receiver.url, sms=sms)) as gw,
        aiohttp.ClientSession() as s,
    ):
        incident_id = await ingest_call(s, gw)
        base = base_url(gw)
        # Revoked.
        _, revoked = await call(
            s, "POST", f"{base}/v1/incidents/{incident_id}/links", json={"purpose": "location"}
        )
        status, body = await call(s, "DELETE", f"{base}/v1/links/{revoked['link_id']}")
        assert status == 200 and body["state"] == "revoked"
        # Used once of once.
        _, once = await call(
            s, "POST", f"{base}/v1/incidents/{incident_id}/links", json={"purpose": "location", "max_uses": 1}
        )
        # Expired: written with a past expiry into the real store.
        expired_token = "expired-token-for-the-test-000000000000000"
        now = time.time()
        await CallerStore(gw.store).insert_link(
            LinkRow(
                link_id="lnk-expired",
                token_hash=token_hash(expired_token),
                purpose="location",
                incident_id=incident_id,
                case_id=None,
                phone="+32470000000",
                lang="en",
                created_at=now - 3600,
                expires_at=now - 1800,
                max_uses=3,
                uses=0,
                revoked_at=None,
                created_by="alice",
                auto_key=None,
                sms_state="none",
            )
        )
        messages = await sms.wait(2)
        urls = {m.key: m.url for m in messages}
        ctx = await browser.context(locale="nl-BE", geolocation=(50.85, 4.35))
        page = await ctx.new_page()
        await page.goto(str(urls[once["link_id"]]))
        await page.click("#share")
        await page.wait_for_selector("#status.ok")
        for url in (urls[once["link_id"]], urls[revoked["link_id"]], f"{base}/l/{expired_token}"):
            response = await page.goto(str(url))
            assert response is not None and response.status == 410, url
            gone = await page.text_content("#gone")
            assert gone is not None and "verlopen" in gone  # Dutch, plainly
        # A position posted with a refused link changes nothing.
        async with s.post(
            f"{base}/l/{expired_token}/position", json={"lat": 1.0, "lon": 1.0, "accuracy_m": 5}
        ) as resp:
            assert resp.status == 410
        response = await page.goto(f"{base}/l/no-such-token")
        assert response is not None and response.status == 404
        # The language switch.
        await page.goto(f"{base}/l/{expired_token}?lang=de")
        gone = await page.text_content("#gone")
        assert gone is not None and "abgelaufen" in gone
        await ctx.close()
        _, full = await call(s, "GET", f"{base}/v1/incidents/{incident_id}")
        assert sum(a["action"] == "link_refused_location" for a in full["audit"]) >= 3
    assert browser.foreign_requests == []


async def test_sms_retried_after_5xx_is_delivered_once(tmp_path: Path, receiver: Receiver) -> None:
    async with SimulatedSmsGateway(fail_first=2) as sms:
        cfg = caller_config(tmp_path, psap_url=receiver.url, sms=sms)
        async with running_gateway(cfg) as gw, aiohttp.ClientSession() as s:
            incident_id = await ingest_call(s, gw)
            status, link = await call(
                s,
                "POST",
                f"{base_url(gw)}/v1/incidents/{incident_id}/links",
                json={"purpose": "location", "phone": "+32 470 12 34 56"},
            )
            assert status == 201
            [message] = await sms.wait(1)
            await until(lambda: sms.requests == 3)
            assert message.to == "+32 470 12 34 56"
            assert set(sms.keys_seen) == {link["link_id"]}  # one idempotency key for every attempt
            assert len(sms.messages) == 1


async def test_bad_position_and_options_are_refused_naming_the_field(
    tmp_path: Path, receiver: Receiver, sms: SimulatedSmsGateway
) -> None:
    async with (
        running_gateway(caller_config(tmp_path, psap_url=receiver.url, sms=sms)) as gw,
        aiohttp.ClientSession() as s,
    ):
        incident_id = await ingest_call(s, gw)
        base = base_url(gw)
        for body, field in (
            ({"purpose": "map"}, "purpose"),
            ({"purpose": "location", "ttl_s": 5}, "ttl_s"),
            ({"purpose": "location", "max_uses": 0}, "max_uses"),
            ({"purpose": "location", "phone": "<script>"}, "phone"),
        ):
            status, answer = await call(s, "POST", f"{base}/v1/incidents/{incident_id}/links", json=body)
            assert status == 400 and field in answer["error"], (body, answer)
        status, _ = await call(s, "POST", f"{base}/v1/incidents/nope/links", json={"purpose": "location"})
        assert status == 404
        status, _ = await call(
            s, "POST", f"{base}/v1/incidents/{incident_id}/links", headers={}, json={"purpose": "location"}
        )
        assert status == 401
        assert sms.messages == []  # nothing was created above
        status, _ = await call(
            s, "POST", f"{base}/v1/incidents/{incident_id}/links", json={"purpose": "location"}
        )
        assert status == 201
        [message] = await sms.wait(1)
        assert message.url is not None
        for bad, field in (
            ({"lat": 91, "lon": 0, "accuracy_m": 5}, "lat"),
            ({"lat": 1, "lon": 2}, "accuracy_m"),
        ):
            async with s.post(f"{message.url}/position", json=bad) as resp:
                assert resp.status == 400
                assert (await resp.json())["field"] == field
        _, links = await call(s, "GET", f"{base}/v1/incidents/{incident_id}/links")
        assert links["links"][0]["uses"] == 0  # refused input uses nothing
