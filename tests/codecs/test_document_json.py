"""The incident JSON document: valid against the shipped schema for any snapshot, content, parser, golden."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import importlib.resources
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecallgw.codecs import msd as msd_codec
from ecallgw.codecs._incident_schema import INCIDENT_SCHEMA
from ecallgw.codecs.document import iso_time, parse_json_document, render_json
from ecallgw.errors import DecodeError, EncodeError
from ecallgw.model import IncidentSnapshot, Position, Reason, Severity
from tests.codecs._snapshot_strategies import snapshots, times

DATA = Path(__file__).parent / "data"
VECTORS = json.loads((Path(__file__).parent / "vectors" / "msd-public.json").read_text())
RAW = bytes.fromhex(VECTORS[0]["hex"])
SHIPPED = importlib.resources.files("ecallgw.codecs").joinpath("schemas/incident.schema.json")
VALIDATOR = jsonschema.Draft202012Validator(
    json.loads(SHIPPED.read_text()), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def golden_snapshot() -> IncidentSnapshot:
    """The snapshot behind the golden documents: the EN 15722 annex MSD, an automatic call."""
    return IncidentSnapshot(
        incident_id="inc-4f1c2a9e0b7d6c5a3e2f1d0c",
        revision=1,
        status="open",
        severity=Severity(
            level="high",
            score=71,
            reasons=(
                Reason(code="automatic_activation", text="automatic activation by crash sensors"),
                Reason(code="occupants", text="2 occupants reported"),
            ),
        ),
        tps="acme-telematics",
        vehicle="veh-000123",
        call_id="c7f6e2d4-0b1a-4c3e-9f8d-2a1b3c4d5e6f",
        automatic=True,
        test=False,
        received_at=1_764_158_400.25,
        updated_at=1_764_158_400.5,
        msd=msd_codec.decode(RAW),
        position=Position(lat=48.300333, lon=11.617367, trusted=True, source="msd", at=1_764_158_395.0),
        callback="+4930123456",
        lang="de-DE",
        scene_id=None,
        reasons=(Reason(code="new_incident", text="first signal of this call"),),
    )


def parse_iso(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


# --- The bar: every document valid against the shipped schema -------------------------------------------


def test_shipped_schema_file_is_the_schema_the_parser_uses() -> None:
    assert json.loads(SHIPPED.read_text()) == INCIDENT_SCHEMA, (
        "schemas/incident.schema.json differs from _incident_schema.INCIDENT_SCHEMA; regenerate with "
        "`.venv/bin/python -m tests.codecs.test_document_json`"
    )
    jsonschema.Draft202012Validator.check_schema(INCIDENT_SCHEMA)


@settings(max_examples=400)
@given(snapshots(), times)
def test_every_document_is_valid_and_parses_back(snapshot: IncidentSnapshot, forwarded_at: float) -> None:
    data = render_json(snapshot, forwarded_at=forwarded_at)
    doc = json.loads(data)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in VALIDATOR.iter_errors(doc)]
    assert errors == []
    assert parse_json_document(data) == doc


@given(snapshots(), times)
def test_document_says_what_the_snapshot_says(s: IncidentSnapshot, forwarded_at: float) -> None:
    doc: dict[str, Any] = json.loads(render_json(s, forwarded_at=forwarded_at))
    assert (doc["incident_id"], doc["revision"], doc["status"]) == (s.incident_id, s.revision, s.status)
    assert doc["severity"] == {
        "level": s.severity.level,
        "score": s.severity.score,
        "reasons": [{"code": r.code, "text": r.text} for r in s.severity.reasons],
    }
    assert doc["call"] == {
        "tps": s.tps,
        "vehicle": s.vehicle,
        "call_id": s.call_id,
        "automatic": s.automatic,
        "test": s.test,
        "callback": s.callback,
        "lang": s.lang,
    }
    assert doc["reasons"] == [{"code": r.code, "text": r.text} for r in s.reasons]
    assert doc["scene_id"] == s.scene_id
    for key, t in (
        ("received_at", s.received_at),
        ("updated_at", s.updated_at),
        ("forwarded_at", forwarded_at),
    ):
        assert abs(parse_iso(doc[key]) - t) <= 0.0005 + 1e-6
    if s.msd is None:
        assert doc["msd"] is None and doc["msd_raw"] is None
    else:
        raw = base64.b64decode(doc["msd_raw"], validate=True)
        # The bytes as the vehicle sent them, and the decoded MSD that a receiver gets from them.
        assert raw == (s.msd.raw or msd_codec.encode(s.msd))
        assert msd_codec.decode(raw) == s.msd
        assert msd_codec.from_json_dict(doc["msd"]) == s.msd
    if s.position is None:
        assert doc["position"] is None
    else:
        p = doc["position"]
        assert (p["lat"], p["lon"], p["trusted"], p["source"]) == (
            s.position.lat,
            s.position.lon,
            s.position.trusted,
            s.position.source,
        )
        assert (p["at"] is None) == (s.position.at is None)


@pytest.mark.parametrize(
    ("t", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1_764_158_400.25, "2025-11-26T12:00:00.250Z"),
        (1_764_158_400.9996, "2025-11-26T12:00:01.000Z"),  # rounds into the next second
        (4_102_444_799.9994, "2099-12-31T23:59:59.999Z"),
    ],
)
def test_times_are_iso_utc_with_milliseconds(t: float, text: str) -> None:
    assert iso_time(t) == text


@pytest.mark.parametrize(
    "bad",
    [
        {"position": Position(lat=math.nan, lon=0.0, trusted=True, source="nmea")},
        {"position": Position(lat=91.0, lon=0.0, trusted=True, source="nmea")},
        {"position": Position(lat=0.0, lon=0.0, trusted=True, source="nmea", speed_kmh=math.inf)},
        {"received_at": math.nan},
        {"updated_at": -1.0},
        {"updated_at": 1e13},
    ],
    ids=["nan-lat", "lat-91", "inf-speed", "nan-time", "negative-time", "after-9999-12-31"],
)
def test_values_that_cannot_be_rendered_raise_encode_error(bad: dict[str, Any]) -> None:
    with pytest.raises(EncodeError):
        render_json(replace(golden_snapshot(), **bad), forwarded_at=1_764_158_401.0)


# --- Parser: only documents of the schema, only DecodeError ---------------------------------------------


def _golden_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(render_json(golden_snapshot(), forwarded_at=1_764_158_401.0))
    return doc


def _without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


BAD_DOCS = [
    # (document bytes, path, words in the reason)
    (b"{", "", "not JSON"),
    (b"\xff{}", "", "not UTF-8"),
    (b'{"revision": NaN}', "", "NaN is not JSON"),
    (b"[]", "/", "not of type 'object'"),
    (
        json.dumps(_without(_golden_doc(), "incident_id")).encode(),
        "/",
        "'incident_id' is a required property",
    ),
    (json.dumps(_golden_doc() | {"revision": 0}).encode(), "/revision", "less than the minimum"),
    (json.dumps(_golden_doc() | {"status": "closed"}).encode(), "/status", "is not one of"),
    (json.dumps(_golden_doc() | {"extra": 1}).encode(), "/", "Additional properties"),
    (
        json.dumps(_golden_doc() | {"forwarded_at": "2025-11-26 12:00"}).encode(),
        "/forwarded_at",
        "does not match",
    ),
    (
        json.dumps(_golden_doc() | {"severity": {"level": "high", "score": 101, "reasons": []}}).encode(),
        "/severity/score",
        "greater than the maximum",
    ),
    (b" " * (1 << 20) + b"{}", "", "exceeds"),
]


@pytest.mark.parametrize(("data", "path", "why"), BAD_DOCS, ids=[f"{b[1]}-{b[2][:20]}" for b in BAD_DOCS])
def test_parser_refuses_documents_off_the_schema(data: bytes, path: str, why: str) -> None:
    with pytest.raises(DecodeError) as err:
        parse_json_document(data)
    assert (err.value.codec, err.value.path) == ("document", path)
    assert why in err.value.reason


def test_parser_refuses_an_msd_with_a_wrong_field() -> None:
    doc = _golden_doc()
    doc["msd"]["msd"]["msdStructure"]["vehicleIdentificationNumber"]["isowmi"] = "WMI"  # 'I' not in VINs
    with pytest.raises(DecodeError) as err:
        parse_json_document(json.dumps(doc).encode())
    assert err.value.path.startswith("/msd")


def _as_version(doc: dict[str, Any], version: int) -> dict[str, Any]:
    """The golden document with its (v1) MSD restated as a valid MSD of ``version``."""
    msd = copy.deepcopy(doc["msd"])
    structure = msd["msd"]["msdStructure"]
    if version >= 2:
        structure["vehiclePropulsionStorageType"]["otherStorage"] = False
    if version == 3:
        structure["numberOfOccupants"] = structure.pop("numberOfPassengers")
    head = {"id": 1} if version == 1 else {"msdVersion": version}
    return doc | {"msd": head | {"msd": msd["msd"]}}


def _structure(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = doc["msd"]["msd"]["msdStructure"]
    return out


@pytest.mark.parametrize("version", [1, 2, 3])
def test_schema_holds_each_msd_version_to_its_own_fields(version: int) -> None:
    # The same MSD content, restated per version, is valid; then each field another version has,
    # or lacks, is refused (EN 15722: otherStorage from v2, numberOfOccupants, mandatory N1/N2 and
    # vehicle types 14..23 in v3 only).
    good = _as_version(_golden_doc(), version)
    assert parse_json_document(json.dumps(good).encode())["msd"] == good["msd"]
    # A JSON MSD the schema accepts is one the MSD codec accepts too.
    assert msd_codec.encode(msd_codec.from_json_dict(good["msd"]))

    bad: list[dict[str, Any]] = []  # also refused by the MSD codec
    wrong_name = copy.deepcopy(good)
    count = "numberOfOccupants" if version == 3 else "numberOfPassengers"
    other = "numberOfPassengers" if version == 3 else "numberOfOccupants"
    _structure(wrong_name)[other] = _structure(wrong_name).pop(count)
    bad.append(wrong_name)
    flags = copy.deepcopy(good)
    if version == 1:
        _structure(flags)["vehiclePropulsionStorageType"]["otherStorage"] = False
    else:
        del _structure(flags)["vehiclePropulsionStorageType"]["otherStorage"]
    with pytest.raises(DecodeError) as err:
        # The codec's input may leave a DEFAULT out; documents we send always carry every flag.
        parse_json_document(json.dumps(flags).encode())
    assert err.value.path.startswith("/msd")
    if version == 1:
        bad.append(flags)
    trailer = copy.deepcopy(good)
    _structure(trailer)["control"]["vehicleType"] = "trailersClassO"
    if version == 3:
        assert parse_json_document(json.dumps(trailer).encode())
        no_n1 = copy.deepcopy(good)
        del _structure(no_n1)["recentVehicleLocationN1"]
        bad.append(no_n1)
    else:
        bad.append(trailer)
    for doc in bad:
        with pytest.raises(DecodeError) as err:
            parse_json_document(json.dumps(doc).encode())
        assert err.value.path.startswith("/msd")
        with pytest.raises((DecodeError, EncodeError)):  # the codec agrees: not an MSD of it
            msd_codec.encode(msd_codec.from_json_dict(doc["msd"]))


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_json_document(data)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8), st.lists, max_leaves=20))
def test_random_json_raises_only_decode_error(value: Any) -> None:
    with pytest.raises(DecodeError):
        parse_json_document(json.dumps(value).encode())


# --- Golden file (reviewed by eye; regenerate with `python -m tests.codecs.test_document_json`) -------


GOLDEN = DATA / "incident-golden.json"


def test_golden_document() -> None:
    assert json.loads(render_json(golden_snapshot(), forwarded_at=1_764_158_401.0)) == json.loads(
        GOLDEN.read_text()
    )


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(_golden_doc(), indent=2, ensure_ascii=False) + "\n")
    Path(str(SHIPPED)).write_text(json.dumps(INCIDENT_SCHEMA, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {GOLDEN} and {SHIPPED}")
