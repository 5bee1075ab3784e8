"""Every call accounted for, through the real gateway (issue 12), on each store backend.

Two providers report one VIN over MQTT: the PSAP's documents carry a call block whose fields all
come from one call and a calls list naming both. A redial over HTTP is answered with the incident it
joined, as docs/interfaces.md promises, and the operator history shows it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from ecallgw.codecs import document
from tests.gateway.broker import Mosquitto
from tests.gateway.harness import OPERATOR_TOKEN, PROVIDER_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import make_msd, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver

pytestmark = pytest.mark.usefixtures("store_backend")


async def test_two_providers_one_vin_documents_keep_each_call_whole(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver
) -> None:
    now = time.time()
    maker = make_msd(vin=vin_for(21), timestamp=int(now), automatic=True)
    box = make_msd(vin=vin_for(21), timestamp=int(now), automatic=True)
    async with running_gateway(gateway_config(tmp_path, broker=mosquitto, psap_url=receiver.url)) as gw:
        async with asyncio.timeout(10), aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
            await pub.publish(
                "ecall/v1/acme/car-21/msd",
                msd_envelope(maker, call_id="m-1", sent_at=now, callback="+4915111111111"),
                qos=1,
            )
            await until(lambda: len(receiver.accepted) == 1)
            await pub.publish(
                "ecall/v1/fleetbox/box-77/msd",
                msd_envelope(box, call_id="fb-1", sent_at=now + 1, callback="+4915122222222"),
                qos=1,
            )
            await until(lambda: len(receiver.accepted) == 2)
        rows = await gw.store.list_incidents()
        by_box = await gw.store.find_incidents(call_id="fb-1")
        by_vehicle = await gw.store.find_incidents(vehicle="box-77")
        # The operator API finds it by the second provider's call id and vehicle key too.
        assert gw.http is not None
        found = []
        async with aiohttp.ClientSession() as http:
            for params in ({"q": "fb-1"}, {"vehicle": "box-77"}, {"q": "m-1"}, {"vehicle": "car-21"}):
                async with http.get(
                    f"http://127.0.0.1:{gw.http.port}/v1/incidents",
                    params=params,
                    headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    found.append([i["incident_id"] for i in (await resp.json())["incidents"]])
    docs = [document.parse_json_document(r.body) for r in receiver.accepted]  # valid against the schema
    assert len(rows) == 1 and [r.incident_id for r in by_box] == [rows[0].incident_id] == [
        r.incident_id for r in by_vehicle
    ]
    assert found == [[rows[0].incident_id]] * 4
    first, second = docs
    assert (first["revision"], second["revision"]) == (1, 2)  # the new number: news for the PSAP
    for doc in docs:
        # Every field of the call block from the first provider's call, the box's number nowhere in it.
        assert doc["call"] == {
            "tps": "acme",
            "vehicle": "car-21",
            "call_id": "m-1",
            "automatic": True,
            "test": False,
            "callback": "+4915111111111",
            "lang": None,
        }
        assert doc["calls"][0] | {"first_at": None, "last_at": None} == {
            "tps": "acme",
            "vehicle": "car-21",
            "call_id": "m-1",
            "activation": "automatic",
            "first_at": None,
            "last_at": None,
            "msd_version": 2,
            "callback": "+4915111111111",
            "lang": None,
        }
    assert [(c["tps"], c["call_id"], c["callback"]) for c in second["calls"]] == [
        ("acme", "m-1", "+4915111111111"),
        ("fleetbox", "fb-1", "+4915122222222"),
    ]
    assert {r["code"] for r in second["reasons"]} >= {"provider_joined", "callback_added"}


async def test_http_redial_is_answered_with_the_incident_it_joined(
    tmp_path: Path, receiver: Receiver
) -> None:
    now = time.time()
    msd = make_msd(vin=vin_for(22), timestamp=int(now), automatic=True)
    async with running_gateway(gateway_config(tmp_path, broker=None, psap_url=receiver.url)) as gw:
        assert gw.http is not None
        base = f"http://127.0.0.1:{gw.http.port}"
        headers = {"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"}
        answers = []
        async with aiohttp.ClientSession() as http:
            for call_id, sent_at in (("c-1", now), ("c-2", now + 20), ("c-2", now + 25)):
                async with http.post(
                    f"{base}/v1/ecall/acme/car-22/msd",
                    data=msd_envelope(msd, call_id=call_id, sent_at=sent_at),
                    headers=headers,
                ) as resp:
                    assert resp.status == 202
                    answers.append(await resp.json())
            iid = answers[0]["incident_id"]
            await until(lambda: len(receiver.accepted) == 1)
            async with http.get(
                f"{base}/v1/incidents/{iid}", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
            ) as resp:
                assert resp.status == 200
                history = (await resp.json())["history"]
    assert answers[0]["outcome"] == "new_incident" and iid.startswith("inc-")
    # The redial joined it (was incident_id null), and a resend of the redial names it as well.
    assert answers[1] == {"incident_id": iid, "outcome": "joined_incident"}
    assert answers[2] == {"incident_id": iid, "outcome": "duplicate"}
    # The operator history shows the call coming back; the PSAP was told nothing new.
    assert [h["outcome"] for h in history] == ["new_incident", "joined_incident"]
    assert "redial_joined" in {r["code"] for r in history[1]["reasons"]}
    assert [json.loads(r.body)["revision"] for r in receiver.accepted] == [1]


async def test_a_storm_seen_in_hindsight_is_confirmed_at_the_desk(tmp_path: Path, receiver: Receiver) -> None:
    # A provider's SOS buttons fire together: the first manual calls open normally, the fourth makes
    # the storm known; all four are held, the desk confirms the storm's aggregate and they are
    # cancelled, none ever reaching the PSAP.
    now = time.time()
    config = gateway_config(
        tmp_path, broker=None, psap_url=receiver.url, triage={"storm_min_count": 3, "escalation_delay_s": 3}
    )
    async with running_gateway(config) as gw:
        assert gw.http is not None
        base = f"http://127.0.0.1:{gw.http.port}"
        provider = {"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"}
        operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        ids = []
        async with aiohttp.ClientSession() as http:
            for n in range(4):
                msd = make_msd(vin=vin_for(40 + n), timestamp=int(now), automatic=False)
                async with http.post(
                    f"{base}/v1/ecall/acme/sos-{n}/msd",
                    data=msd_envelope(msd, call_id=f"s-{n}", sent_at=now + n),
                    headers=provider,
                ) as resp:
                    assert resp.status == 202
                    ids.append((await resp.json())["incident_id"])
            storms = [r for r in await gw.store.list_incidents() if r.incident_id.startswith("storm-")]
            assert len(storms) == 1
            storm = storms[0].incident_id
            async with http.post(
                f"{base}/v1/incidents/{storm}/actions", json={"action": "confirm_storm"}, headers=operator
            ) as resp:
                assert resp.status == 200, await resp.text()
                confirmed = await resp.json()
            await asyncio.sleep(4)  # past every escalation timer
            rows = {r.incident_id: r for r in await gw.store.list_incidents()}
            found = await gw.store.get_incident(storm)
    assert confirmed["outcome"] == "resolved"
    assert [rows[i].status for i in ids] == ["cancelled"] * 4
    assert found is not None and found[0].status == "resolved"
    assert receiver.accepted == []  # nothing of it at the PSAP
