"""The whole gateway in-process against a real mosquitto, a real SQLite file and a real PSAP webhook."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from pathlib import Path

import aiohttp
import aiomqtt
import pytest
from lxml import etree

from ecallgw.app import Gateway
from ecallgw.codecs import document
from ecallgw.config import PipelineConfig, ReceiverConfig, StoreConfig
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.pipeline import Pipeline
from ecallgw.gateway.records import CommitResult, DecisionRecord, RawSignal, Unit
from ecallgw.gateway.store import SqliteStore
from ecallgw.triage import TriageEngine, TriagePolicy
from ecallgw.triage.decision import Route
from tests.gateway.broker import Mosquitto
from tests.gateway.harness import (
    OPERATOR_TOKEN,
    PROVIDER_TOKEN,
    SRE_TOKEN,
    gateway_config,
    running_gateway,
)
from tests.gateway.helpers import cancel_envelope, make_msd, make_snapshot, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver

CAP_XSD = Path(__file__).parents[1] / "codecs" / "data" / "CAP-v1.2.xsd"

pytestmark = pytest.mark.usefixtures("store_backend")


async def publish(broker: Mosquitto, items: list[tuple[str, bytes]]) -> None:
    async with asyncio.timeout(10), aiomqtt.Client(broker.host, broker.port) as pub:
        for topic, payload in items:
            await pub.publish(topic, payload, qos=1)


def documents(recv: Receiver) -> list[dict[str, object]]:
    return [json.loads(r.body) for r in recv.accepted]


async def test_published_msd_reaches_the_psap_as_the_right_document(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver
) -> None:
    now = time.time()
    msd = make_msd(vin=vin_for(1), timestamp=int(now), automatic=True, passengers=3)
    async with running_gateway(gateway_config(tmp_path, broker=mosquitto, psap_url=receiver.url)) as gw:
        await publish(
            mosquitto, [("ecall/v1/acme/car-1/msd", msd_envelope(msd, call_id="call-1", sent_at=now))]
        )
        await until(lambda: len(receiver.accepted) == 1)
        [row] = await gw.store.list_incidents()
    [doc] = documents(receiver)
    parsed = document.parse_json_document(receiver.accepted[0].body)  # valid against our schema
    assert parsed["incident_id"] == row.incident_id
    assert receiver.accepted[0].key == f"{row.incident_id}:1"
    assert receiver.accepted[0].content_type == "application/json"
    assert doc["revision"] == 1 and doc["status"] == "open"
    assert doc["call"] == {
        "tps": "acme",
        "vehicle": "car-1",
        "call_id": "call-1",
        "automatic": True,
        "test": False,
        "callback": "+4915112345678",
        "lang": None,
    }
    assert base64.b64decode(str(doc["msd_raw"])) == msd  # the vehicle's own bytes
    msd_json = doc["msd"]
    assert isinstance(msd_json, dict)
    assert msd_json["msd"]["msdStructure"]["vehicleIdentificationNumber"]["isowmi"] == "WVW"
    assert msd_json["msd"]["msdStructure"]["numberOfPassengers"] == 3


async def test_malformed_signal_is_quarantined_counted_and_acknowledged(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver
) -> None:
    now = time.time()
    truncated = make_msd(vin=vin_for(2), timestamp=int(now))[:9]
    cfg = gateway_config(tmp_path, broker=mosquitto, psap_url=receiver.url)
    async with running_gateway(cfg) as gw:
        await publish(
            mosquitto, [("ecall/v1/acme/car-2/msd", msd_envelope(truncated, call_id="c", sent_at=now))]
        )
        await until(lambda: gw.processed == 1)
        await gw.settled()
        [q] = await gw.store.quarantined()
        assert q["payload"] == msd_envelope(truncated, call_id="c", sent_at=now)
        assert (q["codec"], q["transport"], q["source"]) == ("msd", "mqtt", "ecall/v1/acme/car-2/msd")
        text = gw.metrics.render().decode()
        assert 'ecallgw_decode_errors_total{codec="msd",' in text
        assert await gw.store.list_incidents() == []
    # Acknowledged: a new session of the same client gets nothing again.
    async with running_gateway(cfg) as gw:
        await asyncio.sleep(0.3)
        assert gw.processed == 0
    assert receiver.requests == []


async def test_a_cancel_cancels(tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver) -> None:
    now = time.time()
    manual = make_msd(vin=vin_for(3), timestamp=int(now), automatic=False)
    async with running_gateway(gateway_config(tmp_path, broker=mosquitto, psap_url=receiver.url)) as gw:
        await publish(
            mosquitto,
            [
                ("ecall/v1/acme/car-3/msd", msd_envelope(manual, call_id="c3", sent_at=now)),
                ("ecall/v1/acme/car-3/cancel", cancel_envelope(call_id="c3", sent_at=now + 5)),
            ],
        )
        await until(lambda: gw.processed == 2)
        await gw.settled()
        [row] = await gw.store.list_incidents()
        assert (row.status, row.revision) == ("cancelled", 2)
        found = await gw.store.get_incident(row.incident_id)
        assert found is not None
        assert [(h.snapshot.revision, h.snapshot.status) for h in found[1]] == [(1, "open"), (2, "cancelled")]
        await asyncio.sleep(0.3)
    assert receiver.requests == []  # a manual call cancelled in grace never bothers the PSAP


async def test_operator_cancel_of_an_automatic_call_reaches_the_psap_as_cap_cancel(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver
) -> None:
    now = time.time()
    cfg = gateway_config(tmp_path, broker=mosquitto, psap_url=receiver.url, psap_format="cap")
    async with running_gateway(cfg) as gw:
        assert gw.http is not None
        await publish(
            mosquitto,
            [
                (
                    "ecall/v1/acme/car-4/msd",
                    msd_envelope(make_msd(vin=vin_for(4), timestamp=int(now)), call_id="c4", sent_at=now),
                )
            ],
        )
        await until(lambda: len(receiver.accepted) == 1)
        [row] = await gw.store.list_incidents()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{gw.http.port}/v1/incidents/{row.incident_id}/actions",
                json={"action": "cancel", "reason": "false trigger", "note": "called back: no emergency"},
                headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
            ) as resp,
        ):
            assert resp.status == 200
            body = await resp.json()
        assert body["outcome"] == "cancelled" and body["revision"] == 2
        await until(lambda: len(receiver.accepted) == 2)
        [entry] = await gw.store.audit_log(row.incident_id)
        assert (entry["actor"], entry["action"], entry["note"]) == (
            "alice",
            "cancel:false trigger",
            "called back: no emergency",
        )
    schema = etree.XMLSchema(etree.parse(str(CAP_XSD)))
    alert, cancel = (etree.fromstring(r.body) for r in receiver.accepted)
    for doc in (alert, cancel):
        schema.assertValid(doc)
    ns = {"cap": document.CAP_NAMESPACE}
    assert alert.findtext("cap:msgType", namespaces=ns) == "Alert"
    assert cancel.findtext("cap:msgType", namespaces=ns) == "Cancel"
    # The operator's note travels with the Cancel (issue 13).
    assert "called back: no emergency" in (cancel.findtext("cap:note", namespaces=ns) or "")
    assert "Operator note: called back: no emergency" in (
        cancel.findtext("cap:info/cap:description", namespaces=ns) or ""
    )
    # The Cancel references exactly the Alert the PSAP got (sender, identifier, sent).
    ref = cancel.findtext("cap:references", namespaces=ns)
    assert ref == ",".join(
        alert.findtext(f"cap:{k}", namespaces=ns) or "" for k in ("sender", "identifier", "sent")
    )
    assert [r.content_type for r in receiver.accepted] == [document.CAP_MEDIA_TYPE] * 2


async def test_escalation_timer_survives_a_restart(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver
) -> None:
    now = time.time()
    cfg = gateway_config(
        tmp_path, broker=mosquitto, psap_url=receiver.url, triage={"escalation_delay_s": 1.5}
    )
    manual = make_msd(vin=vin_for(5), timestamp=int(now), automatic=False)
    async with running_gateway(cfg) as gw:
        await publish(
            mosquitto, [("ecall/v1/acme/car-5/msd", msd_envelope(manual, call_id="c5", sent_at=now))]
        )
        await until(lambda: gw.processed == 1)
        await gw.settled()
    assert receiver.requests == []  # stopped before the timer fired
    await asyncio.sleep(1.6)
    async with running_gateway(cfg) as gw:
        assert gw.replayed == 1
        await until(lambda: len(receiver.accepted) == 1)
        [row] = await gw.store.list_incidents()
    [doc] = documents(receiver)
    assert doc["incident_id"] == row.incident_id and doc["revision"] == 2
    assert any(r["code"] == "escalation_timeout" for r in doc["reasons"])  # type: ignore[attr-defined]


async def test_http_ingest_raw_msd_is_stored_then_delivered(tmp_path: Path, receiver: Receiver) -> None:
    now = time.time()
    msd = make_msd(vin=vin_for(6), timestamp=int(now))
    async with running_gateway(gateway_config(tmp_path, broker=None, psap_url=receiver.url)) as gw:
        assert gw.http is not None
        base = f"http://127.0.0.1:{gw.http.port}"
        auth = {"Authorization": f"Bearer {PROVIDER_TOKEN}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{base}/v1/ecall/acme/car-6/msd",
                data=msd,
                headers={**auth, "Content-Type": document.MSD_MEDIA_TYPE, "Call-Id": "c6"},
            ) as resp:
                assert resp.status == 202
                accepted = await resp.json()
            # The same request again (a client retry) is the same signal, stored once.
            async with http.post(
                f"{base}/v1/ecall/acme/car-6/msd",
                data=msd,
                headers={**auth, "Content-Type": document.MSD_MEDIA_TYPE, "Call-Id": "c6"},
            ) as resp:
                assert resp.status == 202
                again = await resp.json()
            async with http.post(
                f"{base}/v1/ecall/acme/car-7/msd",
                data=b"\xff\xff",
                headers={**auth, "Content-Type": "application/msgpack"},
            ) as resp:
                assert resp.status == 400
                error = await resp.json()
            async with http.post(  # the same bad request again is refused again, not accepted
                f"{base}/v1/ecall/acme/car-7/msd",
                data=b"\xff\xff",
                headers={**auth, "Content-Type": "application/msgpack"},
            ) as resp:
                assert resp.status == 400
        await until(lambda: len(receiver.accepted) == 1)
        assert (await gw.store.counts())["journal"] == 1
        assert len(await gw.store.quarantined()) == 1
    assert accepted["outcome"] == "new_incident" and accepted["incident_id"].startswith("inc-")
    assert again == {"incident_id": accepted["incident_id"], "outcome": "redelivered"}
    assert error["codec"] == "envelope"
    assert receiver.accepted[0].key == f"{accepted['incident_id']}:1"


async def test_operator_api_list_get_history_and_events(tmp_path: Path, receiver: Receiver) -> None:
    now = time.time()
    async with running_gateway(gateway_config(tmp_path, broker=None, psap_url=receiver.url)) as gw:
        assert gw.http is not None
        base = f"http://127.0.0.1:{gw.http.port}"
        op = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        async with aiohttp.ClientSession() as http:
            events = await http.get(f"{base}/v1/incidents/events", headers=op)
            assert events.status == 200
            async with http.post(
                f"{base}/v1/ecall/acme/car-8/msd",
                data=msd_envelope(
                    make_msd(vin=vin_for(8), timestamp=int(now), automatic=False), call_id="c8", sent_at=now
                ),
                headers={"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"},
            ) as resp:
                incident_id = (await resp.json())["incident_id"]
            async with asyncio.timeout(5):
                lines: list[str] = []
                while len(lines) < 3:
                    lines.append((await events.content.readline()).decode().strip())
            events.close()
            assert lines[0] == "id: 1" and lines[1] == "event: revision"
            assert json.loads(lines[2].removeprefix("data: "))["incident_id"] == incident_id
            async with http.post(
                f"{base}/v1/incidents/{incident_id}/actions",
                json={"action": "ack", "note": "on it"},
                headers=op,
            ) as resp:
                assert resp.status == 200 and (await resp.json())["outcome"] == "acknowledged"
            async with http.post(
                f"{base}/v1/incidents/{incident_id}/actions", json={"action": "explode"}, headers=op
            ) as resp:
                assert resp.status == 400
            async with http.post(
                f"{base}/v1/incidents/inc-nope/actions", json={"action": "ack"}, headers=op
            ) as resp:
                assert resp.status == 404
            async with http.get(f"{base}/v1/incidents?status=open", headers=op) as resp:
                listed = (await resp.json())["incidents"]
            async with http.get(f"{base}/v1/incidents?level=bogus", headers=op) as resp:
                assert resp.status == 400
            async with http.get(f"{base}/v1/incidents/{incident_id}", headers=op) as resp:
                detail = await resp.json()
            # Resuming the stream after the last seen id gives nothing old (the ack's desk changes,
            # its note and the ack, followed the revision: ids 2 and 3).
            async with http.get(f"{base}/v1/incidents/events", headers={**op, "Last-Event-ID": "3"}) as resp:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.3):
                        await resp.content.readline()
    assert [i["incident_id"] for i in listed] == [incident_id]
    assert detail["status"] == "open" and len(detail["history"]) == 1
    assert detail["history"][0]["document"]["call"]["call_id"] == "c8"
    assert [(a["action"], a["actor"]) for a in detail["audit"]] == [("ack", "alice"), ("view", "alice")]


ENDPOINTS = [
    ("POST", "/v1/ecall/acme/car/msd", "provider"),
    ("GET", "/v1/incidents", "operator"),
    ("GET", "/v1/incidents/events", "operator"),
    ("GET", "/v1/incidents/inc-x", "operator"),
    ("POST", "/v1/incidents/inc-x/actions", "operator"),
    ("GET", "/v1/quarantine", "sre"),
    ("GET", "/v1/dead-letters", "sre"),
    ("GET", "/metrics", "sre"),
    ("GET", "/readyz", "sre"),
]
TOKENS = {"provider": PROVIDER_TOKEN, "operator": OPERATOR_TOKEN, "sre": SRE_TOKEN}


async def test_every_endpoint_refuses_missing_wrong_and_foreign_tokens(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with running_gateway(gateway_config(tmp_path, broker=None, psap_url=receiver.url)) as gw:
        assert gw.http is not None
        base = f"http://127.0.0.1:{gw.http.port}"
        async with aiohttp.ClientSession() as http:
            for method, path, role in ENDPOINTS:
                for header in (None, "Bearer not-a-token-at-all-000", f"Basic {TOKENS[role]}"):
                    headers = {"Authorization": header} if header else {}
                    async with http.request(method, base + path, headers=headers) as resp:
                        assert resp.status == 401, (method, path, header)
                for other, token in TOKENS.items():
                    if other == role:
                        continue
                    async with http.request(
                        method, base + path, headers={"Authorization": f"Bearer {token}"}
                    ) as resp:
                        assert resp.status == 403, (method, path, other)
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            # A provider cannot write under another provider's name.
            async with http.post(
                f"{base}/v1/ecall/other/car/msd",
                data=b"x",
                headers={"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"},
            ) as resp:
                assert resp.status == 403
            async with http.get(f"{base}/readyz", headers={"Authorization": f"Bearer {SRE_TOKEN}"}) as resp:
                ready = await resp.json()
            async with http.post(
                f"{base}/v1/ecall/acme/car/msd",
                data=b"x" * 70000,
                headers={"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"},
            ) as resp:
                assert resp.status == 413
        assert (await gw.store.counts())["journal"] == 0  # nothing refused was stored
    checks = {"started": True, "not_draining": True, "store_writable": True, "outbox_flowing": True}
    if gw.replica is not None:  # a replica of a PostgreSQL store also needs a sequencer keeping up
        checks["sequencer_keeping_up"] = True
    assert ready == {"ready": True, "checks": checks}


async def test_metrics_carry_no_vin_vehicle_or_incident_id(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver
) -> None:
    now = time.time()
    vin = vin_for(9)
    async with running_gateway(gateway_config(tmp_path, broker=mosquitto, psap_url=receiver.url)) as gw:
        assert gw.http is not None
        await publish(
            mosquitto,
            [
                (
                    "ecall/v1/acme/car-nine/msd",
                    msd_envelope(make_msd(vin=vin, timestamp=int(now)), call_id="c9", sent_at=now),
                )
            ],
        )
        await until(lambda: len(receiver.accepted) == 1)
        [row] = await gw.store.list_incidents()
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"http://127.0.0.1:{gw.http.port}/metrics", headers={"Authorization": f"Bearer {SRE_TOKEN}"}
            ) as resp:
                text = await resp.text()
            mosquitto.stop()
            await until(lambda: not gw.health.checks()["mqtt_connected"])
            async with http.get(
                f"http://127.0.0.1:{gw.http.port}/readyz", headers={"Authorization": f"Bearer {SRE_TOKEN}"}
            ) as resp:
                assert resp.status == 503
                assert (await resp.json())["checks"]["mqtt_connected"] is False
    for secret in (vin, "car-nine", row.incident_id, "48.13", "c9"):
        assert secret not in text
    assert 'ecallgw_deliveries_total{outcome="delivered",receiver="psap-fallback"} 1.0' in text
    assert "ecallgw_mqtt_connected 1.0" in text
    assert 'ecallgw_incidents_total{level="high"} 1.0' in text


async def test_default_fallback_psap_over_mqtt_gets_the_document(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    now = time.time()
    cfg = gateway_config(tmp_path, broker=mosquitto, psap_url="http://127.0.0.1:1/unused")
    cfg = dataclasses.replace(
        cfg, receivers={**cfg.receivers, "psap-fallback": ReceiverConfig(name="psap-fallback", kind="mqtt")}
    )
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as psap:
        await psap.subscribe("psap/v1/psap-fallback/incidents", qos=1)
        async with running_gateway(cfg) as gw:
            msd = make_msd(vin=vin_for(30), timestamp=int(now))
            await publish(
                mosquitto, [("ecall/v1/acme/car-30/msd", msd_envelope(msd, call_id="c30", sent_at=now))]
            )
            async with asyncio.timeout(5):
                message = await anext(aiter(psap.messages))
            [row] = await gw.store.list_incidents()
    assert isinstance(message.payload, bytes)
    doc = document.parse_json_document(message.payload)
    assert (doc["incident_id"], doc["revision"]) == (row.incident_id, 1)
    assert base64.b64decode(doc["msd_raw"]) == msd


async def test_provider_rate_limit_answers_429_with_retry_after(tmp_path: Path, receiver: Receiver) -> None:
    cfg = gateway_config(
        tmp_path, broker=None, psap_url=receiver.url, http={"provider_rate_per_s": 1.0, "provider_burst": 2.0}
    )
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
        assert gw.http is not None
        statuses = []
        for i in range(4):
            async with http.post(
                f"http://127.0.0.1:{gw.http.port}/v1/ecall/acme/r{i}/cancel",
                data=cancel_envelope(call_id=f"r{i}", sent_at=time.time()),
                headers={"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"},
            ) as resp:
                statuses.append((resp.status, resp.headers.get("Retry-After")))
    assert statuses[:2] == [(202, None), (202, None)]  # the burst
    assert statuses[2:] == [(429, "1"), (429, "1")]


async def test_retention_job_deletes_expired_incidents(tmp_path: Path, receiver: Receiver) -> None:
    now = time.time()
    # 0.5 s of retention, checked every 0.2 s (longer than triage state's 0.3 s + the 0.1 s prune).
    cfg = gateway_config(
        tmp_path,
        broker=None,
        psap_url=receiver.url,
        store={"retention_days": 0.5 / 86400, "retention_interval_s": 0.2},
        triage={"state_lifetime_s": 0.3},
        pipeline={"tick_interval_s": 0.05, "prune_interval_s": 0.1},
    )
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
        assert gw.http is not None
        async with http.post(
            f"http://127.0.0.1:{gw.http.port}/v1/ecall/acme/old/msd",
            data=msd_envelope(make_msd(vin=vin_for(31), timestamp=int(now)), call_id="old", sent_at=now),
            headers={"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"},
        ) as resp:
            assert resp.status == 202
        await until(lambda: len(receiver.accepted) == 1)
        assert len(await gw.store.list_incidents()) == 1
        await until(
            lambda: (
                (
                    gw.metrics.registry.get_sample_value(
                        "ecallgw_retention_deleted_total", {"table": "incidents"}
                    )
                    or 0
                )
                >= 1
            ),
            timeout_s=5,
        )
        counts = await gw.store.counts()
        kinds = {r.type for r in await gw.store.journal(0, 1000)}
    assert counts["incidents"] == 0 and counts["revisions"] == 0
    assert kinds <= {"prune"}  # the signal's journal row went with its incident; recent prunes stay


@pytest.mark.sqlite_only
async def test_a_full_store_answers_503_keeps_running_and_recovers(
    tmp_path: Path, receiver: Receiver
) -> None:
    """SQLite's ``max_page_count`` at the file's size: SQLITE_FULL as on a full disk (a simulation of
    the disk; the real one, a small tmpfs, is test_disk_full.py)."""
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url)
    async with Gateway(cfg) as gw:
        assert gw.http is not None
        task = asyncio.create_task(gw.run())
        async with asyncio.timeout(10):
            await gw.ready.wait()
        store = gw.store
        assert isinstance(store, SqliteStore)
        # Free pages inside the file (a migration that dropped an index leaves some) take new rows
        # without growing it: fill them first, so that the next row needs a page the cap refuses.
        free = await store.run(
            lambda c: (
                c.execute("PRAGMA freelist_count").fetchone()[0] * c.execute("PRAGMA page_size").fetchone()[0]
            )
        )
        await store.run(lambda c: c.execute("INSERT INTO meta VALUES ('test_filler', zeroblob(?))", (free,)))
        pages = await store.run(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await store.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
        base = f"http://127.0.0.1:{gw.http.port}"
        ingest = f"{base}/v1/ecall/acme/full/msd"
        provider = {"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"}
        body = b"\xc1" * 8000  # under the envelope limit: kept whole in quarantine, if there were room
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(5), http.post(ingest, data=body, headers=provider) as resp:
                assert resp.status == 503  # not stored: the provider must retry, elsewhere or later
                assert int(resp.headers["Retry-After"]) > 0
            sre = {"Authorization": f"Bearer {SRE_TOKEN}"}
            async with http.get(f"{base}/readyz", headers=sre) as resp:
                ready = await resp.json()
                assert resp.status == 503 and ready["checks"]["store_writable"] is False
                assert "disk full" in ready["reasons"]["store_writable"]
            async with http.post(ingest, data=body + b"2", headers=provider) as resp:
                assert resp.status == 503  # refused at once, before triage sees it
            async with http.get(f"{base}/v1/dead-letters", headers=sre) as resp:
                assert resp.status == 200  # reads stay up
            assert not task.done()  # no fail-stop
            await store.run(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))  # space is back
            await until(lambda: store.writable, timeout_s=5)
            async with http.post(ingest, data=body, headers=provider) as resp:
                assert resp.status == 400  # the retry: its original is in quarantine now, refused alike
            assert (await store.counts())["quarantine"] == 1
        gw.stop()
        async with asyncio.timeout(10):
            await task


@pytest.mark.sqlite_only
async def test_entries_for_a_removed_receiver_are_dead_lettered_and_expire(
    tmp_path: Path, receiver: Receiver
) -> None:
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url)
    old = time.time() - 10 * 86400.0  # within the 30 days of retention
    async with SqliteStore(cfg.store) as store:
        snap = make_snapshot("inc-gone", at=old)
        unit = Unit(
            journal_type=None,
            at=old,
            decisions=(
                DecisionRecord(
                    outcome="new",
                    reasons=(),
                    snapshot=snap,
                    routes=(Route(receiver="psap-removed", incident_id=snap.incident_id, revision=1),),
                    signal_at=old,
                ),
            ),
        )
        await store.commit(unit)
        assert await store.delete_before(time.time() - 86400.0) == dict.fromkeys(
            (
                "deliveries",
                "dead_letters",
                "outbox",
                "revisions",
                "incident_calls",
                "desk_events",
                "desk",
                "incidents",
                "journal",
                "quarantine",
                "audit",
                "console_sessions",
            ),
            0,
        )  # pending forever: retention could not touch it
    async with running_gateway(cfg) as gw:
        [dead] = await gw.store.dead_letters()
        assert (dead["receiver"], dead["reason"]) == ("psap-removed", "unknown_receiver")
        assert "psap-removed" in dead["detail"]
        deleted = await gw.store.delete_before(time.time() - 86400.0)
        assert (deleted["incidents"], deleted["outbox"], deleted["dead_letters"]) == (1, 1, 1)


async def test_list_stream_and_quarantine_views_are_audited(tmp_path: Path, receiver: Receiver) -> None:
    now = time.time()
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url)
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
        assert gw.http is not None
        base = f"http://127.0.0.1:{gw.http.port}"
        provider = {"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"}
        msd = make_msd(vin=vin_for(61), timestamp=int(now))
        async with http.post(
            f"{base}/v1/ecall/acme/a/msd", data=msd_envelope(msd, call_id="a", sent_at=now), headers=provider
        ) as resp:
            assert resp.status == 202
            incident_id = (await resp.json())["incident_id"]
        async with http.post(f"{base}/v1/ecall/acme/b/msd", data=b"\xc1", headers=provider) as resp:
            assert resp.status == 400
        op = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        async with http.get(f"{base}/v1/incidents?status=open", headers=op) as resp:
            assert resp.status == 200
        async with http.get(f"{base}/v1/incidents/events?since=0", headers=op) as resp:
            assert resp.status == 200
            async with asyncio.timeout(5):
                await resp.content.readline()  # the backlog's first event
        async with http.get(
            f"{base}/v1/quarantine", headers={"Authorization": f"Bearer {SRE_TOKEN}"}
        ) as resp:
            assert resp.status == 200
            [q] = (await resp.json())["quarantine"]
        audit = await gw.store.audit_log()
    views = [(a["action"], a["actor"], a["role"]) for a in audit]
    assert views == [
        ("list", "alice", "operator"),
        ("subscribe", "alice", "operator"),
        ("quarantine", "bob", "sre"),
    ]
    assert incident_id in audit[0]["note"] and "status=open" in audit[0]["note"]
    assert audit[1]["note"] == "since=0"
    assert audit[2]["note"] == f"quarantine={q['id']}"
    assert all(now - 1 <= a["at"] <= time.time() for a in audit)


async def test_readyz_fails_while_draining(tmp_path: Path) -> None:
    now = time.time()
    down = Receiver()  # never started: the delivery stays pending and holds the drain
    cfg = dataclasses.replace(gateway_config(tmp_path, broker=None, psap_url=down.url), drain_deadline_s=1.0)
    async with Gateway(cfg) as gw:
        assert gw.http is not None
        task = asyncio.create_task(gw.run())
        base = f"http://127.0.0.1:{gw.http.port}"
        sre = {"Authorization": f"Bearer {SRE_TOKEN}"}
        async with asyncio.timeout(10), aiohttp.ClientSession() as http:
            await gw.ready.wait()
            msd = make_msd(vin=vin_for(71), timestamp=int(now))
            async with http.post(
                f"{base}/v1/ecall/acme/a/msd",
                data=msd_envelope(msd, call_id="a", sent_at=now),
                headers={"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"},
            ) as resp:
                assert resp.status == 202
            async with http.get(f"{base}/readyz", headers=sre) as resp:
                assert resp.status == 200
            gw.stop()
            await until(lambda: gw.health.draining)
            async with http.get(f"{base}/readyz", headers=sre) as resp:
                assert resp.status == 503
                assert (await resp.json())["checks"]["not_draining"] is False
        async with asyncio.timeout(20):
            await task


async def test_a_failing_commit_listener_does_not_stall_intake(tmp_path: Path) -> None:
    def broken(result: CommitResult) -> None:
        raise RuntimeError("listener bug")

    now = time.time()
    async with SqliteStore(StoreConfig(path=str(tmp_path / "gw.sqlite3"))) as store:
        pipeline = Pipeline(
            PipelineConfig(), store, TriageEngine(TriagePolicy(), b"k" * 32), Metrics(), broken
        )
        task = asyncio.create_task(pipeline.run())
        try:
            raws = [
                RawSignal(
                    transport="mqtt",
                    kind="msd",
                    tps="acme",
                    vehicle=f"v{n}",
                    payload=msd_envelope(
                        make_msd(vin=vin_for(80 + n), timestamp=int(now)), call_id=f"c{n}", sent_at=now
                    ),
                    received_at=now,
                    source=f"ecall/v1/acme/v{n}/msd",
                )
                for n in range(3)
            ]
            futures = [await pipeline.submit(r) for r in raws]
            async with asyncio.timeout(5):  # before the fix the futures were never resolved
                results = await asyncio.gather(*futures)
            assert [r.outcome for r in results] == ["new_incident"] * 3
            assert (await store.counts())["incidents"] == 3
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_operator_desk_deliveries_are_recorded_with_the_commit_and_never_sent_again(
    tmp_path: Path, receiver: Receiver
) -> None:
    now = time.time()
    config = gateway_config(tmp_path, broker=None, psap_url=receiver.url)
    headers = {"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"}
    async with running_gateway(config) as gw:
        assert gw.http is not None
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{gw.http.port}/v1/ecall/acme/car-9/msd",
                data=msd_envelope(
                    make_msd(vin=vin_for(9), timestamp=int(now), automatic=False), call_id="c9", sent_at=now
                ),
                headers=headers,
            ) as resp,
        ):
            assert resp.status == 202
            incident_id = (await resp.json())["incident_id"]
        # Stored (202) means with the operators: the record exists without a forwarder round.
        found = await gw.store.get_incident(incident_id)
        assert found is not None
        operator = [d for d in found[2] if d["receiver"] == "operator"]
        assert [(d["revision"], d["state"], d["attempts"]) for d in operator] == [(1, "delivered", 1)]
        assert operator[0]["delivered_at"] is not None
        assert not [i for i in await gw.store.pending_outbox() if i.receiver == "operator"]
        metrics = gw.metrics.render().decode()
        assert 'ecallgw_deliveries_total{outcome="delivered",receiver="operator"} 1.0' in metrics
    # A restart finds nothing pending for the desk, so nothing is counted or delivered twice.
    async with running_gateway(config) as gw:
        assert not [i for i in await gw.store.pending_outbox() if i.receiver == "operator"]
        assert gw.forwarder.lanes["operator"].pending == {}
        assert 'receiver="operator"} 1.0' not in gw.metrics.render().decode()
