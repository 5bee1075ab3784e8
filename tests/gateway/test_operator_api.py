"""The operator API of issue 13 over real HTTP, on both store backends: the queue's fields, filters,
cursor and counters; claims seen live by another operator; notes; cancel's requirements; the note
reaching the PSAP; the event stream live by default, resumed, and reset."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ecallgw.app import Gateway
from ecallgw.config import Config
from ecallgw.simulators.pgserver import PgServer
from tests.gateway.harness import (
    OPERATOR_TOKEN,
    OTHER_PROVIDER_TOKEN,
    PROVIDER_TOKEN,
    SRE_TOKEN,
    gateway_config,
    running_gateway,
)
from tests.gateway.helpers import make_msd, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver

pytestmark = pytest.mark.usefixtures("store_backend")

CAROL_TOKEN = "operator-carol-token-0005"
TOKENS = [
    {"name": "acme", "role": "provider", "tps": "acme", "token": PROVIDER_TOKEN},
    {"name": "other", "role": "provider", "tps": "other", "token": OTHER_PROVIDER_TOKEN},
    {"name": "alice", "role": "operator", "token": OPERATOR_TOKEN},
    {"name": "carol", "role": "operator", "token": CAROL_TOKEN},
    {"name": "bob", "role": "sre", "token": SRE_TOKEN},
]
ALICE = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
CAROL = {"Authorization": f"Bearer {CAROL_TOKEN}"}


@dataclass
class Desk:
    gw: Gateway
    http: aiohttp.ClientSession
    base: str

    async def ingest(
        self, vehicle: str, n: int, *, automatic: bool = True, tps: str = "acme", lat: float = 48.0
    ) -> str:
        now = time.time()
        token = PROVIDER_TOKEN if tps == "acme" else OTHER_PROVIDER_TOKEN
        msd = make_msd(vin=vin_for(n), timestamp=int(now), automatic=automatic, lat=lat + n * 0.1)
        async with self.http.post(
            f"{self.base}/v1/ecall/{tps}/{vehicle}/msd",
            data=msd_envelope(msd, call_id=f"call-{vehicle}", sent_at=now),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/msgpack"},
        ) as resp:
            assert resp.status == 202, await resp.text()
            return str((await resp.json())["incident_id"])

    async def get(self, path: str, headers: dict[str, str] = ALICE) -> tuple[int, Any]:
        async with self.http.get(f"{self.base}{path}", headers=headers) as resp:
            return resp.status, await resp.json()

    async def act(self, iid: str, body: dict[str, Any], headers: dict[str, str] = ALICE) -> tuple[int, Any]:
        async with self.http.post(
            f"{self.base}/v1/incidents/{iid}/actions", json=body, headers=headers
        ) as resp:
            return resp.status, await resp.json()

    async def queue(self, query: str = "") -> list[dict[str, Any]]:
        status, body = await self.get(f"/v1/incidents{query}")
        assert status == 200, body
        return list(body["incidents"])


@asynccontextmanager
async def desk(tmp_path: Path, receiver: Receiver) -> AsyncIterator[Desk]:
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url, auth={"tokens": TOKENS})
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
        assert gw.http is not None
        yield Desk(gw, http, f"http://127.0.0.1:{gw.http.port}")


async def sse_events(
    resp: aiohttp.ClientResponse, count: int, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """The next ``count`` events of a stream: id, event and data (JSON)."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with asyncio.timeout(timeout_s):
        while len(events) < count:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if not line:
                if current:
                    events.append(current)
                current = {}
                continue
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    return events


async def test_the_queue_shows_what_an_operator_needs_filters_and_counts(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with desk(tmp_path, receiver) as d:
        t0 = time.time()
        auto = await d.ingest("car-1", 1, automatic=True)
        manual = await d.ingest("car-2", 2, automatic=False)
        other = await d.ingest("car-3", 3, automatic=False, tps="other")
        await until(lambda: len(receiver.accepted) >= 1)  # the automatic call reached the PSAP
        items = {i["incident_id"]: i for i in await d.queue()}
        assert set(items) == {auto, manual, other}
        a, m = items[auto], items[manual]
        assert (a["automatic"], a["test"], a["call_id"], a["callback"]) == (
            True,
            False,
            "call-car-1",
            "+4915112345678",
        )
        assert a["position"]["trusted"] is True and abs(a["position"]["lat"] - 48.1) < 1e-6
        assert (a["direction_deg"], a["passengers"]) == (20.0, 2)
        assert a["reasons"] and all(set(r) == {"code", "text"} for r in a["reasons"])
        assert (a["claimed_by"], a["acked"], a["escalation_due_at"]) == (None, False, None)
        # A manual call waits for an operator, then escalates: when is in the list.
        assert m["escalation_due_at"] is not None and m["automatic"] is False
        status, body = await d.get("/v1/incidents")
        assert body["counters"]["open"] == 3
        assert body["counters"]["unacknowledged"] == 3
        assert body["counters"]["waiting_escalation"] == 2
        await until_counter(d, "at_psap", 1)
        # Filters.
        assert [i["incident_id"] for i in await d.queue("?tps=other")] == [other]
        assert [i["incident_id"] for i in await d.queue("?vehicle=car-2")] == [manual]
        assert {i["incident_id"] for i in await d.queue("?kind=manual")} == {manual, other}
        assert [i["incident_id"] for i in await d.queue("?kind=automatic")] == [auto]
        assert await d.queue("?kind=test") == []
        assert [i["incident_id"] for i in await d.queue(f"?q={manual}")] == [manual]
        assert [i["incident_id"] for i in await d.queue("?q=call-car-3")] == [other]
        assert len(await d.queue("?status=open,updated")) == 3
        assert len(await d.queue("?status=cancelled&status=resolved")) == 0
        level = a["level"]
        assert auto in {i["incident_id"] for i in await d.queue(f"?level={level}")}
        assert len(await d.queue(f"?since={t0 - 60:.3f}")) == 3
        assert await d.queue(f"?until={t0 - 60:.3f}") == []
        assert len(await d.queue("?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00%2B01:00")) == 3
        # One-line errors naming the parameter.
        for query, name in [
            ("limit=0", "limit"),
            ("limit=x", "limit"),
            ("status=bogus", "status"),
            ("level=huge", "level"),
            ("kind=robot", "kind"),
            ("since=yesterday", "since"),
            ("until=nan", "until"),
            ("cursor=%21%21", "cursor"),
            ("tps=a/b", "tps"),
            ("sort=age", "sort"),
        ]:
            status, body = await d.get(f"/v1/incidents?{query}")
            assert status == 400, query
            assert body["error"].startswith(name) or repr(name) in body["error"], (query, body)
            assert "\n" not in body["error"]
        # Views are audited: who saw which incidents.
        lists = [a for a in await d.gw.store.audit_log() if a["action"] == "list"]
    assert lists and all(a["actor"] == "alice" for a in lists)
    assert auto in lists[0]["note"]


async def until_counter(d: Desk, name: str, value: int) -> None:
    for _ in range(200):
        _, body = await d.get("/v1/incidents?limit=1")
        if body["counters"][name] == value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"counter {name} never reached {value}: {body['counters']}")


async def test_pages_follow_the_queue_order_once_each(tmp_path: Path, receiver: Receiver) -> None:
    async with desk(tmp_path, receiver) as d:
        ids = [await d.ingest(f"car-{n}", n, automatic=n % 2 == 0) for n in range(1, 6)]
        status, _ = await d.act(ids[0], {"action": "ack"})
        assert status == 200
        whole = [i["incident_id"] for i in await d.queue("?limit=1000")]
        assert sorted(whole) == sorted(ids)
        assert whole[-1] == ids[0]  # acknowledged: last
        for limit in (1, 2, 3, 5):
            seen: list[str] = []
            cursor = ""
            for _ in range(10):
                status, body = await d.get(f"/v1/incidents?limit={limit}{cursor}")
                seen += [i["incident_id"] for i in body["incidents"]]
                if body["next_cursor"] is None:
                    break
                cursor = f"&cursor={body['next_cursor']}"
            assert seen == whole, limit


async def test_a_claim_is_seen_live_by_another_operator_and_no_psap_hears_of_it(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with desk(tmp_path, receiver) as d:
        iid = await d.ingest("car-1", 1, automatic=True)
        await until(lambda: len(receiver.accepted) == 1)
        events = await d.http.get(f"{d.base}/v1/incidents/events", headers=CAROL)
        assert events.status == 200
        status, body = await d.act(iid, {"action": "claim"})
        assert (status, body["outcome"], body["revision"]) == (200, "claimed", None)
        [claimed] = await sse_events(events, 1)
        assert claimed["event"] == "desk"
        assert claimed["data"] | {"at": None} == {
            "incident_id": iid,
            "kind": "claim",
            "operator": "alice",
            "at": None,
            "claimed_by": "alice",
            "acked": False,
            "text": "claimed by alice",
        }
        # Another operator cannot just take it; an assignment can.
        status, body = await d.act(iid, {"action": "claim"}, CAROL)
        assert status == 409 and body["reasons"][0]["code"] == "claimed_by_other"
        status, body = await d.act(iid, {"action": "claim", "assignee": "carol"})
        assert (status, body["outcome"]) == (200, "claimed")
        [assigned] = await sse_events(events, 1)
        assert (assigned["data"]["claimed_by"], assigned["data"]["text"]) == (
            "carol",
            "assigned to carol by alice",
        )
        status, _ = await d.act(iid, {"action": "ack"}, CAROL)
        assert status == 200
        [acked] = await sse_events(events, 1)
        assert (acked["data"]["kind"], acked["data"]["acked"], acked["data"]["claimed_by"]) == (
            "ack",
            True,
            "carol",
        )
        [row] = await d.queue()
        assert (row["claimed_by"], row["acked"], row["revision"]) == ("carol", True, 1)
        status, _ = await d.act(iid, {"action": "release"}, CAROL)
        assert status == 200
        [released] = await sse_events(events, 1)
        assert (released["data"]["kind"], released["data"]["claimed_by"]) == ("release", None)
        status, body = await d.act(iid, {"action": "release"})
        assert status == 409 and body["reasons"][0]["code"] == "not_claimed"
        events.close()
        status, body = await d.act(iid, {"action": "claim", "assignee": "no body"})
        assert status == 400 and body["error"].startswith("assignee")
        status, body = await d.act(iid, {"action": "release", "assignee": "carol"})
        assert status == 400 and "assignee" in body["error"]
        status, body = await d.act("inc-nope", {"action": "claim"})
        assert status == 404
        await asyncio.sleep(0.3)
        assert len(receiver.accepted) == 1  # no PSAP got a revision for a claim or an ack
        audit = [(a["actor"], a["action"], a["outcome"]) for a in await d.gw.store.audit_log(iid)]
        assert ("alice", "claim", "claimed") in audit and ("alice", "claim:carol", "claimed") in audit
        assert ("carol", "claim", "rejected") in audit and ("carol", "ack", "acknowledged") in audit


async def test_a_note_changes_nothing_else_and_reaches_the_psap_with_the_cancel(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with desk(tmp_path, receiver) as d:
        iid = await d.ingest("car-1", 1, automatic=True)
        await until(lambda: len(receiver.accepted) == 1)
        note = "<script>alert(1)</script>\r\nsecond line"
        status, body = await d.act(iid, {"action": "note", "note": note})
        assert (status, body["outcome"], body["revision"]) == (200, "noted", None)
        status, body = await d.act(iid, {"action": "note", "note": "   "})
        assert status == 400 and body["error"].startswith("note")
        # Cancel needs both why and a note; the answer names the missing one.
        status, body = await d.act(iid, {"action": "cancel", "note": "called back"})
        assert status == 400 and body["error"].startswith("reason")
        status, body = await d.act(iid, {"action": "cancel", "reason": "false trigger"})
        assert status == 400 and body["error"].startswith("note")
        await asyncio.sleep(0.2)
        assert len(receiver.accepted) == 1  # a note alone is no revision
        status, detail = await d.get(f"/v1/incidents/{iid}")
        assert [n["text"] for n in detail["notes"]] == [note]
        assert (detail["status"], detail["revision"]) == ("open", 1)
        status, body = await d.act(
            iid, {"action": "cancel", "reason": "false trigger", "note": "occupant says no emergency"}
        )
        assert (status, body["outcome"], body["revision"]) == (200, "cancelled", 2)
        await until(lambda: len(receiver.accepted) == 2)
        cancel = json.loads(receiver.accepted[1].body)
        assert (cancel["status"], cancel["operator_note"]) == ("cancelled", "occupant says no emergency")
        assert json.loads(receiver.accepted[0].body)["operator_note"] is None
        status, detail = await d.get(f"/v1/incidents/{iid}")
    assert [n["text"] for n in detail["notes"]] == [note, "occupant says no emergency"]
    kinds = [e["kind"] for e in detail["timeline"]]
    assert kinds.count("note") == 2 and "signal" in kinds and "revision" in kinds and "delivery" in kinds
    actions = [e for e in detail["timeline"] if e["kind"] == "action"]
    assert [(a["action"], a.get("reason")) for a in actions][-1] == ("cancel", "false trigger")
    assert [t["lat"] for t in detail["trail"]] and detail["trail"][-1]["source"] == "msd"
    assert detail["linked"] == [] and detail["acked"] is True
    [psap] = [r for r in detail["receivers"] if r["receiver"] == "psap-fallback"]
    assert (psap["revisions"], psap["confirmed"], psap["last_error"]) == (2, 2, None)
    assert psap["confirmed_at"] is not None


async def test_the_stream_starts_live_resumes_and_resets(tmp_path: Path, receiver: Receiver) -> None:
    async with desk(tmp_path, receiver) as d:
        first = await d.ingest("car-1", 1)
        live = await d.http.get(f"{d.base}/v1/incidents/events", headers=ALICE)
        second = await d.ingest("car-2", 2)
        [event] = await sse_events(live, 1)
        assert (event["event"], event["data"]["incident_id"]) == ("revision", second)  # not the old one
        live.close()
        seq = int(event["id"])
        async with d.http.get(f"{d.base}/v1/incidents/events?since=0", headers=ALICE) as resp:
            backlog = await sse_events(resp, 2)
        assert [e["data"]["incident_id"] for e in backlog] == [first, second]
        assert (await d.act(first, {"action": "note", "note": "n"}))[0] == 200
        async with d.http.get(
            f"{d.base}/v1/incidents/events", headers={**ALICE, "Last-Event-ID": str(seq)}
        ) as resp:
            [after] = await sse_events(resp, 1)
        assert (after["event"], after["data"]["kind"], int(after["id"])) == ("desk", "note", seq + 1)
        async with d.http.get(
            f"{d.base}/v1/incidents/events", headers={**ALICE, "Last-Event-ID": "99999"}
        ) as resp:
            [reset] = await sse_events(resp, 1)
        assert (reset["event"], reset["data"], reset["id"]) == ("reset", {"last_seq": seq + 1}, str(seq + 1))
        async with d.http.get(f"{d.base}/v1/incidents/events?since=x", headers=ALICE) as resp:
            assert resp.status == 400 and "since" in (await resp.json())["error"]


@pytest.mark.sqlite_only  # runs once: it makes its own two PostgreSQL replicas
async def test_claims_cross_replicas_in_one_order(
    tmp_path: Path, receiver: Receiver, pg_server: PgServer
) -> None:
    """Two replicas of one PostgreSQL store: a claim posted to one is decided by the sequencer and
    reaches the other's event stream (LISTEN/NOTIFY fan-out); two operators claiming at once through
    different replicas get one winner."""
    dsn = pg_server.create_database()

    def config(name: str) -> Config:
        store = {
            "backend": "postgresql",
            "dsn": dsn,
            "replica_id": name,
            "lease_s": 2.0,
            "decision_wait_s": 5.0,
        }
        return gateway_config(
            tmp_path / name, broker=None, psap_url=receiver.url, auth={"tokens": TOKENS}, store=store
        )

    async with AsyncExitStack() as stack:
        r1 = await stack.enter_async_context(running_gateway(config("r1")))
        r2 = await stack.enter_async_context(running_gateway(config("r2"), lead=False))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        assert r1.http is not None and r2.http is not None
        one = Desk(r1, http, f"http://127.0.0.1:{r1.http.port}")
        two = Desk(r2, http, f"http://127.0.0.1:{r2.http.port}")
        iid = await two.ingest("car-1", 1)
        events = await http.get(f"{one.base}/v1/incidents/events", headers=CAROL)
        results = await asyncio.gather(
            two.act(iid, {"action": "claim"}, ALICE), one.act(iid, {"action": "claim"}, CAROL)
        )
        assert sorted(status for status, _ in results) == [200, 409]
        winner = "alice" if results[0][0] == 200 else "carol"
        [claimed] = await sse_events(events, 1)
        assert (claimed["event"], claimed["data"]["claimed_by"]) == ("desk", winner)
        status, _ = await two.act(iid, {"action": "note", "note": "on the phone"}, ALICE)
        assert status == 200
        [noted] = await sse_events(events, 1)
        assert (noted["data"]["kind"], noted["data"]["text"]) == ("note", "on the phone")
        events.close()
        for d in (one, two):
            [row] = await d.queue()
            assert row["claimed_by"] == winner


async def test_a_redial_is_answered_with_its_incident_and_shown_as_such(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with desk(tmp_path, receiver) as d:
        first = await d.ingest("car-1", 1)
        provider = {"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"}
        answers = []
        for call_id, sent_at in (
            ("call-again", time.time()),
            ("call-again", time.time() + 1),
        ):  # redial, resend
            msd = make_msd(vin=vin_for(1), timestamp=int(sent_at), automatic=True, lat=48.1)
            async with d.http.post(
                f"{d.base}/v1/ecall/acme/car-1/msd",
                data=msd_envelope(msd, call_id=call_id, sent_at=sent_at),
                headers=provider,
            ) as resp:
                answers.append(await resp.json())
        _, detail = await d.get(f"/v1/incidents/{first}")
        found = await d.queue("?q=call-again")
    assert [a["incident_id"] for a in answers] == [first, first]
    assert [i["incident_id"] for i in found] == [first]  # found by the redial's call id
    kinds = [(e["kind"], e.get("revision")) for e in detail["timeline"] if e["kind"] in ("signal", "redial")]
    assert kinds[:2] == [("signal", 1), ("redial", 2)]


async def test_the_desk_survives_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    """Claims and notes are journaled: a restart's replay rebuilds who holds what and the note
    the next revision carries, as the store shows it."""
    async with desk(tmp_path, receiver) as d:
        iid = await d.ingest("car-1", 1, automatic=False)
        assert (await d.act(iid, {"action": "claim"}))[0] == 200
        assert (await d.act(iid, {"action": "note", "note": "driver answers, no injuries"}))[0] == 200
    async with desk(tmp_path, receiver) as d:
        status, body = await d.act(iid, {"action": "claim"}, CAROL)
        assert (status, body["reasons"][0]["code"]) == (409, "claimed_by_other")
        status, body = await d.act(iid, {"action": "escalate"}, CAROL)
        assert (status, body["outcome"]) == (200, "escalated")
        await until(lambda: any(json.loads(r.body)["revision"] == 2 for r in receiver.accepted))
        [row] = await d.queue()
    [escalated] = [json.loads(r.body) for r in receiver.accepted if json.loads(r.body)["revision"] == 2]
    assert escalated["operator_note"] == "driver answers, no injuries"
    assert (row["claimed_by"], row["acked"], row["escalation_due_at"]) == ("alice", True, None)


async def test_deliveries_per_receiver_name_the_last_error(tmp_path: Path) -> None:
    refusing = Receiver(script=lambda n: (422, {}))  # the PSAP refuses every document
    await refusing.start()
    try:
        cfg = gateway_config(
            tmp_path,
            broker=None,
            psap_url=refusing.url,
            auth={"tokens": TOKENS},
            receivers={"psap-fallback": {"kind": "http", "url": refusing.url, "max_attempts": 2}},
        )
        async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
            assert gw.http is not None
            d = Desk(gw, http, f"http://127.0.0.1:{gw.http.port}")
            iid = await d.ingest("car-1", 1, automatic=True)
            await until(lambda: len(refusing.requests) >= 1, timeout_s=10)
            for _ in range(100):
                _, detail = await d.get(f"/v1/incidents/{iid}")
                [psap] = [r for r in detail["receivers"] if r["receiver"] == "psap-fallback"]
                if psap["dead_lettered"]:
                    break
                await asyncio.sleep(0.05)
    finally:
        await refusing.stop()
    assert (psap["revisions"], psap["confirmed"], psap["dead_lettered"], psap["confirmed_at"]) == (
        1,
        0,
        1,
        None,
    )
    assert psap["last_error"]
    [desk_receiver] = [r for r in detail["receivers"] if r["receiver"] == "operator"]
    assert (desk_receiver["confirmed"], desk_receiver["last_error"]) == (1, None)
    assert not detail["at_psap"]
    assert [
        e["state"] for e in detail["timeline"] if e["kind"] == "delivery" and e["receiver"] == "psap-fallback"
    ] == ["dead_lettered"]
