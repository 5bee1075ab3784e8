"""A receiver configured with ``format = "eido"`` gets NENA EIDOs through the real gateway.

Real mosquitto, the real store (SQLite and PostgreSQL), a real webhook on 127.0.0.1: the MSD is
published, the incident opens (EIDO), an operator cancels it (the same incident's EIDO, updated),
and both documents validate against the official NENA-STA-021.1b schema.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import aiohttp
import pytest

from ecallgw.codecs import msd as msd_codec
from ecallgw.codecs.eido import EIDO_MEDIA_TYPE
from tests.codecs.test_document_eido import errors
from tests.gateway.broker import Mosquitto
from tests.gateway.harness import OPERATOR_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import make_msd, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver
from tests.gateway.test_end_to_end import publish

pytestmark = pytest.mark.usefixtures("store_backend")


async def test_an_eido_receiver_gets_the_incident_then_its_update(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver
) -> None:
    now = time.time()
    msd = make_msd(vin=vin_for(7), timestamp=int(now), automatic=True, passengers=2)
    cfg = gateway_config(tmp_path, broker=mosquitto, psap_url=receiver.url, psap_format="eido")
    assert cfg.receivers["psap-fallback"].format == "eido"
    async with running_gateway(cfg) as gw:
        assert gw.http is not None
        await publish(mosquitto, [("ecall/v1/acme/car-7/msd", msd_envelope(msd, call_id="c7", sent_at=now))])
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
        await until(lambda: len(receiver.accepted) == 2)
    assert [r.content_type for r in receiver.accepted] == [EIDO_MEDIA_TYPE] * 2
    assert [r.key for r in receiver.accepted] == [f"{row.incident_id}:1", f"{row.incident_id}:2"]
    opened, cancelled = (json.loads(r.body) for r in receiver.accepted)
    assert errors(opened) == [] and errors(cancelled) == []
    # One incident: the update carries the same Incident Tracking Identifier, later, and closed.
    assert opened["$id"] == cancelled["$id"]
    assert opened["incidentComponent"]["internalIncidentId"] == row.incident_id
    assert cancelled["lastUpdateTimeStamp"] > opened["lastUpdateTimeStamp"]
    assert opened["incidentComponent"]["incidentStatusCommonRegistryText"] == ["Open"]
    assert cancelled["incidentComponent"]["incidentStatusCommonRegistryText"] == ["Closed"]
    [disposition] = cancelled["incidentComponent"]["dispositionComponent"]
    assert disposition["dispositionCommonRegistryCode"] == "cancelled"
    # The MSD by value: the bytes the vehicle sent, and the VIN on the vehicle.
    raw = base64.b64decode(opened["additionalDataComponent"][0]["additionalDataByValue"])
    assert msd_codec.decode(raw).vin == vin_for(7)
    ids = opened["vehicleComponent"][0]["ncVehicleComponent"]["identification"]
    assert {"identificationId": [{"value": vin_for(7)}], "category": [{"value": "VIN"}]} in ids
    assert opened["incidentComponent"]["incidentPriorityInternalText"] in (
        "critical",
        "high",
        "medium",
        "low",
    )
