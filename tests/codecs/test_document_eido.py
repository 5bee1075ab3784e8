"""NENA EIDO documents: valid against the official NENA-STA-021.1b schema for any snapshot, and saying it.

The schema is NENA's OpenAPI 3.0 document with the NIEM components it references, in
tests/codecs/data/eido/ (SOURCE.txt says where from and how converted). OpenAPI 3.0 schema objects
are JSON Schema draft 4 (Wright-00) plus keywords a draft-4 validator ignores, so jsonschema's
Draft4Validator validates against it as published.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
from hypothesis import given, settings
from referencing.jsonschema import DRAFT4

from ecallgw.codecs import msd as msd_codec
from ecallgw.codecs.document import render_json
from ecallgw.codecs.eido import EIDO_MEDIA_TYPE, eido_document, render_eido, tracking_id
from ecallgw.codecs.renderers import FORMATS, renderer
from ecallgw.errors import EncodeError
from ecallgw.model import IncidentSnapshot, Reason
from tests.codecs._snapshot_strategies import snapshots, times
from tests.codecs.test_document_json import golden_snapshot

EIDO = Path(__file__).parent / "data" / "eido"
BASE = "https://eido.invalid/Schema/"  # where the schema's relative $refs resolve; never fetched
SENDER = "ecallgw@tps.example"
# RFC 3339 date-time (OpenAPI's `format: date-time`); jsonschema checks it only with an extra package.
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def _fix_known_defects(node: Any) -> Any:
    # The published schema writes AgentType's `minItems: 1,` (a string "1,"): a validator that
    # meets it raises TypeError. Read as the 1 it means; nothing else is changed.
    if isinstance(node, dict):
        return {
            k: int(v.rstrip(",")) if k == "minItems" and isinstance(v, str) else _fix_known_defects(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_fix_known_defects(v) for v in node]
    return node


def _validator() -> jsonschema.protocols.Validator:
    resources = []
    for path in sorted((EIDO / "Schema").rglob("*.json")):
        # The $refs name the YAML files of the original; the copies are the same trees as JSON.
        uri = BASE + path.relative_to(EIDO / "Schema").with_suffix(".yaml").as_posix()
        contents = _fix_known_defects(json.loads(path.read_text()))
        resources.append((uri, referencing.Resource.from_contents(contents, default_specification=DRAFT4)))

    # No retrieval: a $ref into a file not copied here fails, naming it (SOURCE.txt says how to add it).
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(resources)
    checker = jsonschema.FormatChecker()
    checker.checks("date-time")(lambda text: not isinstance(text, str) or bool(_RFC3339.fullmatch(text)))
    schema = {"$ref": BASE + "openapi.yaml#/components/schemas/EmergencyIncidentDataObjectType"}
    return jsonschema.Draft4Validator(schema, registry=registry, format_checker=checker)


VALIDATOR = _validator()


def errors(doc: Any) -> list[str]:
    return [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(doc)]


def components(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every data component by its $id (the incident and dispositions nest; the others are arrays)."""
    out = {doc["incidentComponent"]["$id"]: doc["incidentComponent"]}
    for d in doc["incidentComponent"].get("dispositionComponent", []):
        out[d["$id"]] = d
    for key, value in doc.items():
        if key.endswith("Component") and isinstance(value, list):
            out |= {c["$id"]: c for c in value}
    return out


# --- The validator is the official schema, and not vacuous --------------------------------------------


def test_the_official_sample_is_valid_and_broken_copies_are_not() -> None:
    sample = json.loads((EIDO / "Samples" / "Sample call transfer EIDO.json").read_text())
    assert errors(sample) == []
    assert errors({k: v for k, v in sample.items() if k != "agencyComponent"}) == [
        "/: 'agencyComponent' is a required property"
    ]
    assert errors(sample | {"eidoVersion": "2.0"}) == ["/eidoVersion: '2.0' is not one of ['1.0']"]
    bad_time = sample | {"lastUpdateTimeStamp": "30/04/2021 14:43"}
    assert errors(bad_time) == ["/lastUpdateTimeStamp: '30/04/2021 14:43' is not a 'date-time'"]
    # Into the NIEM components: an identification value must be a niem-xs:string object.
    vehicle = {
        "$id": "v",
        "lastUpdateTimeStamp": "2021-04-30T14:43:49Z",
        "updatedByAgencyReference": {"$ref": "a"},
        "vehicleRelationshipType": ["Involved"],
        "vehicleRelationshipTimeStamp": "2021-04-30T14:43:49Z",
        "ncVehicleComponent": {"identification": [{"identificationId": ["1HGCM82633A004352"]}]},
    }
    assert errors(sample | {"vehicleComponent": [vehicle]}) == [
        "/vehicleComponent/0/ncVehicleComponent/identification/0/identificationId/0: "
        "'1HGCM82633A004352' is not of type 'object'"
    ]


# --- The bar: every document valid against the official schema -------------------------------------------


@settings(max_examples=300)
@given(snapshots(), times)
def test_every_eido_is_valid_against_the_official_schema(
    snapshot: IncidentSnapshot, forwarded_at: float
) -> None:
    try:
        data = render_eido(snapshot, sender=SENDER)
    except EncodeError:
        # Only what the incident document cannot carry either (a lone surrogate in a text).
        with pytest.raises(EncodeError):
            render_json(snapshot, forwarded_at=forwarded_at)
        return
    doc = json.loads(data)
    assert errors(doc) == []
    # Every reference names a component of this EIDO (the agency, a call or a data component).
    ids = set(components(doc)) | {c["$id"] for c in doc["callComponent"]}
    refs = re.findall(r'"\$ref":\s*"([^"]*)"', data.decode())
    assert refs and set(refs) <= ids


@given(snapshots())
def test_the_eido_says_what_the_snapshot_says(s: IncidentSnapshot) -> None:
    try:
        doc = json.loads(render_eido(s, sender=SENDER))
    except EncodeError:
        return
    assert doc["$id"] == tracking_id(s.incident_id, SENDER)
    assert doc["issuingElementIdentification"] == SENDER
    updated = dt.datetime.fromisoformat(doc["lastUpdateTimeStamp"]).timestamp()
    assert abs(updated - s.updated_at) <= 0.0005 + 1e-6
    incident = doc["incidentComponent"]
    assert incident["internalIncidentId"] == s.incident_id
    assert incident["incidentStatusInternalText"] == [s.status]
    assert incident["incidentPriorityInternalText"] == s.severity.level
    assert incident["documentIdentification"] == [f"revision:{s.revision}"]
    assert ("dispositionComponent" in incident) == (s.status in ("cancelled", "resolved"))
    [notes] = doc["notesComponent"]
    assert f"{s.severity.level} ({s.severity.score}/100)" in notes["notesActionComments"]
    [call] = doc["callComponent"]
    assert call["direction"] == "incoming" and call["standardPrimaryCallType"] == "emergency"
    [vehicle] = doc["vehicleComponent"]
    ids = [
        (i["identificationId"][0]["value"], i["category"][0]["value"])
        for i in vehicle["ncVehicleComponent"]["identification"]
    ]
    assert (s.vehicle, "telematics provider vehicle key") in ids
    if s.msd is None:
        assert "additionalDataComponent" not in doc and len(ids) == 1
    else:
        assert (s.msd.vin, "VIN") in ids
        by_value, as_json = doc["additionalDataComponent"]
        # The MSD by value: the bytes the vehicle sent, and the decoded MSD they decode to.
        raw = base64.b64decode(by_value["additionalDataByValue"], validate=True)
        assert raw == (s.msd.raw or msd_codec.encode(s.msd))
        assert by_value["urlPurpose"] == "EmergencyCallData.eCall.MSD"
        assert msd_codec.from_json_dict(json.loads(as_json["additionalDataByValue"])) == s.msd
        assert msd_codec.decode(raw) == s.msd
        assert call["additionalDataReference"] == [{"$ref": by_value["$id"]}, {"$ref": as_json["$id"]}]
    if s.position is None:
        assert "locationComponent" not in doc
    else:
        [location] = doc["locationComponent"]
        pidf = ET.fromstring(location["locationByValue"])
        pos = pidf.find(".//{http://www.opengis.net/gml}pos")
        assert pos is not None and pos.text is not None
        lat, lon = map(float, pos.text.split())
        assert abs(lat - s.position.lat) < 1e-7 and abs(lon - s.position.lon) < 1e-7
        assert incident["locationReference"] == [{"$ref": location["$id"]}]
    if s.callback is None:
        assert "callbackComponent" not in doc
    else:
        [callback] = doc["callbackComponent"]
        assert callback["callBackInformationUri"] == [f"tel:{s.callback}"]


@given(snapshots())
def test_a_later_revision_is_an_update_of_the_same_incident(s: IncidentSnapshot) -> None:
    """EIDO's update: the same Incident Tracking Identifier and component ids, a later timestamp."""
    nxt = replace(s, revision=s.revision + 1, status="cancelled", updated_at=s.updated_at + 1.0)
    try:
        first = json.loads(render_eido(s, sender=SENDER))
        second = json.loads(render_eido(nxt, sender=SENDER))
    except EncodeError:
        return
    assert first["$id"] == second["$id"]
    assert set(components(first)) <= set(components(second))  # the update replaces them, id by id
    assert second["lastUpdateTimeStamp"] > first["lastUpdateTimeStamp"]
    assert second["incidentComponent"]["incidentStatusCommonRegistryText"] == ["Closed"]
    assert second["callComponent"][0]["callStateRegistryText"] == "callEnd"


def test_a_retry_sends_the_same_document() -> None:
    # The EIDO carries the revision's time, not the delivery's: a retried delivery is byte-identical.
    s = golden_snapshot()
    eido = renderer("eido", sender=SENDER)
    assert eido.render(s, forwarded_at=1e9, first=None) == eido.render(s, forwarded_at=2e9, first=None)


def test_text_from_vehicles_and_operators_is_escaped() -> None:
    s = replace(
        golden_snapshot(),
        tps="acme",
        reasons=(Reason(code="operator_note", text='<script>alert("x")</script> & <b>'),),
    )
    doc = json.loads(render_eido(s, sender=SENDER))
    notes = doc["notesComponent"][0]["notesActionComments"]
    assert "<script>" not in notes and "&lt;script&gt;" in notes and "&amp; &lt;b&gt;" in notes
    assert s.position is not None
    entity = replace(s, vehicle='v"><x a="', position=replace(s.position, source="nmea"))
    pidf = json.loads(render_eido(entity, sender=SENDER))["locationComponent"][0]
    ET.fromstring(pidf["locationByValue"])  # still well-formed XML


@pytest.mark.parametrize(
    ("source", "accuracy_m", "trusted", "radius", "method"),
    [
        ("msd", None, True, "150", "GPS"),
        ("nmea", None, False, "1000", "GPS"),
        ("caller_link", 23.2, False, "24", "Derived"),
    ],
)
def test_the_location_circle_is_the_stated_accuracy_or_the_trust_radius(
    source: str, accuracy_m: float | None, trusted: bool, radius: str, method: str
) -> None:
    s = golden_snapshot()
    assert s.position is not None
    position = replace(s.position, source=source, accuracy_m=accuracy_m, trusted=trusted)  # type: ignore[arg-type]
    doc = json.loads(render_eido(replace(s, position=position), sender=SENDER))
    pidf = ET.fromstring(doc["locationComponent"][0]["locationByValue"])
    ns = {"gs": "http://www.opengis.net/pidflo/1.0", "gp": "urn:ietf:params:xml:ns:pidf:geopriv10"}
    assert pidf.findtext(".//gs:radius", namespaces=ns) == radius
    assert pidf.findtext(".//gp:method", namespaces=ns) == method
    with pytest.raises(EncodeError):
        render_eido(replace(s, position=replace(position, accuracy_m=math.nan)), sender=SENDER)


def test_ids_cannot_be_split_by_a_colon_in_them() -> None:
    assert tracking_id("a:b", "gw@x.example") == "urn:emergency:uid:incidentid:a%3Ab:x.example"
    assert tracking_id("é", "x") == "urn:emergency:uid:incidentid:%C3%A9:x"


def test_values_that_cannot_be_rendered_raise_encode_error() -> None:
    with pytest.raises(EncodeError):
        eido_document(replace(golden_snapshot(), updated_at=float("nan")), sender=SENDER)
    with pytest.raises(EncodeError):
        eido_document(golden_snapshot(), sender="")


# --- The registry ------------------------------------------------------------------------------------------


def test_eido_is_a_registered_format_with_its_media_type() -> None:
    assert set(FORMATS) == {"json", "cap", "eido"}
    eido = renderer("eido", sender=SENDER)
    assert eido.media_type == EIDO_MEDIA_TYPE == "application/emergency.eido+json"
    assert eido.needs_first is False
    s = golden_snapshot()
    assert eido.render(s, forwarded_at=1.0, first=None) == render_eido(s, sender=SENDER)
    # Only CAP needs the receiver's first delivery (its Updates reference the Alert).
    assert {name for name in FORMATS if renderer(name, sender=SENDER).needs_first} == {"cap"}
