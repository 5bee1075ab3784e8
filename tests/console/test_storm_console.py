"""Provider storms in the operator console (issue 12), headless Chromium against a whole gateway.

A provider's SOS buttons fire together: triage (with a storm threshold lowered to two calls) holds
the manual calls and gives the desk one aggregate. The operator sees it as a storm in the queue,
opens it, goes to a member and back, and confirms or dismisses it; the members change live.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, Route, expect

from ecallgw.app import Gateway
from ecallgw.codecs import document
from tests.browserkit import Browser
from tests.console.test_console import (
    I18N,
    SECOND_OPERATOR,
    _visible_english_leftovers,
    base_url,
    gateway,
    open_incident,
    sign_in,
)
from tests.gateway.broker import Mosquitto
from tests.gateway.harness import OPERATOR_TOKEN, PROVIDER_TOKEN
from tests.gateway.helpers import make_msd, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver

# The third new incident of one provider within a minute is a storm; held calls wait five minutes.
STORMY: dict[str, object] = {"storm_min_count": 2, "storm_window_s": 60.0, "escalation_delay_s": 300.0}
CALLS = 3


async def sos_storm(gw: Gateway, calls: range = range(CALLS), *, automatic: bool = False) -> list[str]:
    """Calls (manual by default) of provider acme from vehicles ``sos-{n}`` over HTTP; their incident ids."""
    now = time.time()
    headers = {"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"}
    ids = []
    async with aiohttp.ClientSession() as http:
        for n in calls:
            msd = make_msd(
                vin=vin_for(60 + n), timestamp=int(now), automatic=automatic, lat=50.80 + n / 100, lon=4.35
            )
            async with http.post(
                f"{base_url(gw)}/v1/ecall/acme/sos-{n}/msd",
                data=msd_envelope(msd, call_id=f"sos-call-{n}", sent_at=now + n),
                headers=headers,
            ) as resp:
                assert resp.status == 202, await resp.text()
                ids.append((await resp.json())["incident_id"])
    return ids


async def api(gw: Gateway, incident_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{base_url(gw)}/v1/incidents/{incident_id}",
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        ) as resp,
    ):
        assert resp.status == 200
        data: dict[str, Any] = await resp.json()
        return data


async def storm_row_id(page: Page) -> str:
    row = page.locator("#queue-body tr.storm")
    await expect(row).to_have_count(1)
    storm_id = await row.get_attribute("data-id")
    assert storm_id is not None and storm_id.startswith("storm-")
    return storm_id


async def test_a_storm_is_seen_opened_and_confirmed_its_held_calls_cancelled_live(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, browser: Browser
) -> None:
    async with gateway(tmp_path, mosquitto, receiver, triage=STORMY) as gw:
        ctx, page = await sign_in(browser, gw)
        ctx_c, carol = await sign_in(browser, gw, SECOND_OPERATOR)  # watches, does nothing
        members = await sos_storm(gw)

        # The queue: one storm row with its badge (provider, member count), no vehicle columns.
        storm_id = await storm_row_id(page)
        row = page.locator(f"#queue-body tr[data-id='{storm_id}']")
        await expect(row.locator(".badge.storm")).to_have_text(f"Storm · acme · {CALLS} calls")
        await expect(row).to_contain_text("Provider storm")
        await expect(page.locator("#announce")).to_have_text(
            f"New provider storm: acme, {CALLS} calls ({storm_id})"
        )
        assert await page.locator("#queue-body tr").first.get_attribute("data-id") == storm_id  # on top

        # An automatic crash of the same provider joins the storm: at its PSAP at once all the same.
        [crash] = await sos_storm(gw, range(CALLS, CALLS + 1), automatic=True)
        await expect(row.locator(".badge.storm")).to_have_text(f"Storm · acme · {CALLS + 1} calls")
        await until(lambda: len(receiver.accepted) >= 1)

        # Its view: provider, window, count, the members with level/status/kind, the reason in words.
        await open_incident(page, storm_id)
        await expect(page.locator("#storm-provider")).to_have_text("acme")
        await expect(page.locator("#storm-count")).to_have_text(str(CALLS + 1))
        await expect(page.locator(f"#storm-members li[data-id='{crash}']")).to_contain_text("Automatic")
        await expect(page.locator("#storm-window")).to_contain_text("counted over 1:00")
        items = page.locator("#storm-members li")
        await expect(items).to_have_count(CALLS + 1)
        for member in members:
            item = page.locator(f"#storm-members li[data-id='{member}']")
            await expect(item).to_contain_text("Manual")
            await expect(item).to_contain_text("held for an operator")
            await expect(item.locator(".badge")).to_have_count(1)
        await expect(page.locator("#storm-reasons")).to_contain_text("provider storm: about")
        assert await page.locator("#detail .detail-head").count() == 1

        # A member says it is in the storm and links back to it.
        await page.click(f"#storm-members a[data-id='{members[0]}']")
        await expect(page.locator("#storm-member")).to_contain_text(
            "Part of a storm of acme: escalation waits for an operator."
        )
        await page.click("#storm-link")
        await expect(page.locator("#storm-count")).to_have_text(str(CALLS + 1))
        await page.click(f"#storm-members a[data-id='{crash}']")
        await expect(page.locator("#storm-member")).to_contain_text("an automatic call: at its PSAP already")
        await page.click("#storm-link")

        await open_incident(carol, storm_id)
        await expect(carol.locator("#storm-members li")).to_have_count(CALLS + 1)

        # Confirm asks once more; going back does nothing.
        await page.click("#storm-confirm")
        await expect(page.locator("#storm-step")).to_contain_text("Cancel the held manual calls of acme")
        await page.click("#storm-no")
        await expect(page.locator("#storm-step")).to_have_count(0)
        await page.click("#storm-confirm")
        await page.fill("#storm-note", "Firmware fault of the acme boxes, provider informed.")
        await page.click("#storm-yes")
        await expect(page.locator("#action-status")).to_have_text("Done: resolved")

        # Live: the storm resolved, each held member cancelled (its revisions over the event stream).
        await expect(page.locator("#storm-status")).to_contain_text("Resolved")
        for member in members:
            await expect(page.locator(f"#storm-members li[data-id='{member}']")).to_contain_text("Cancelled")
            await expect(page.locator(f"#queue-body tr[data-id='{member}']")).to_have_count(0)  # not active
        await expect(page.locator("#storm-confirm")).to_have_count(0)
        # Carol's view follows over the event stream alone: the aggregate's and the members' revisions.
        await expect(carol.locator("#storm-status")).to_contain_text("Resolved")
        await expect(carol.locator("#storm-confirm")).to_have_count(0)
        for member in members:
            await expect(carol.locator(f"#storm-members li[data-id='{member}']")).to_contain_text("Cancelled")
        await expect(page.locator(f"#storm-members li[data-id='{crash}']")).not_to_contain_text("Cancelled")
        storm = await api(gw, storm_id)
        assert storm["status"] == "resolved" and sorted(storm["members"]) == sorted([*members, crash])
        assert (await api(gw, crash))["status"] in ("open", "updated")  # untouched, at its PSAP
        for member in members:
            data = await api(gw, member)
            assert data["status"] == "cancelled"
            assert "storm_confirmed" in {r["code"] for r in data["history"][-1]["reasons"]}
        # None of the held calls reached the PSAP; the automatic crash did.
        assert {document.parse_cap(r.body).incident_id for r in receiver.accepted} == {crash}
        # The member's view says why it was cancelled.
        await page.click(f"#storm-members a[data-id='{members[1]}']")
        await expect(page.locator("#storm-member")).to_contain_text("Cancelled with the storm of acme")
        await ctx.close()
        await ctx_c.close()
    assert browser.foreign_requests == []


@pytest.mark.parametrize(("locale", "lang"), [("fr-BE", "fr"), ("nl-BE", "nl")])
async def test_a_storm_dismissed_in_french_and_dutch_without_english_leftovers(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, browser: Browser, locale: str, lang: str
) -> None:
    async with gateway(tmp_path, mosquitto, receiver, triage=STORMY) as gw:
        members = await sos_storm(gw)
        ctx, page = await sign_in(browser, gw, locale=locale)

        async def only_the_storm(route: Route) -> None:
            # A long queue whose page holds the storm but none of its members.
            resp = await route.fetch()
            data = await resp.json()
            data["incidents"] = [i for i in data["incidents"] if i["incident_id"].startswith("storm-")]
            await route.fulfill(response=resp, json=data)

        await page.route(re.compile(r"/v1/incidents\?limit=200$"), only_the_storm)
        await page.reload()
        await page.wait_for_selector("body[data-ready=app]")
        storm_id = await storm_row_id(page)
        await expect(page.locator("#queue-body tr")).to_have_count(1)
        await expect(page.locator(".badge.storm")).to_contain_text(f"{CALLS}")
        text = await page.inner_text("body")
        assert _visible_english_leftovers(text, lang) == [], text
        await open_incident(page, storm_id)
        # The members' level and status all the same, from one request for the provider's window.
        await expect(page.locator("#storm-members li .badge")).to_have_count(CALLS)
        fetched = [u for u in browser.requests if "/v1/incidents?" in u and "limit=1000" in u]
        assert len(fetched) == 1 and "tps=acme" in fetched[0], fetched
        await page.click("#storm-dismiss")
        await expect(page.locator("#storm-step")).to_be_visible()
        text = await page.inner_text("body")
        assert _visible_english_leftovers(text, lang) == [], text
        await page.click("#storm-yes")
        await expect(page.locator("#storm-confirm")).to_have_count(0)
        catalog = json.loads((I18N / f"{lang}.json").read_text())
        for member in members:  # live: back on their escalation timer, no longer held
            item = page.locator(f"#storm-members li[data-id='{member}']")
            await expect(item).to_contain_text(catalog["storm.member_timer"])
        text = await page.inner_text("body")
        assert _visible_english_leftovers(text, lang) == [], text

        # Dismissed: the members lose the flag and wait for their escalation timer again.
        for member in members:
            data = await api(gw, member)
            codes = {r["code"] for r in data["reasons"]}
            assert data["status"] in ("open", "updated") and "provider_storm" not in codes
            assert data["escalation_due_at"] is not None
        assert (await api(gw, storm_id))["status"] == "cancelled"
        await page.click(f"#storm-members a[data-id='{members[0]}']")
        await expect(page.locator("#storm-member #storm-link")).to_be_visible()
        await expect(page.locator("#countdown")).not_to_be_empty()
        text = await page.inner_text("body")
        assert _visible_english_leftovers(text, lang) == [], text
        await ctx.close()
    assert browser.foreign_requests == []
