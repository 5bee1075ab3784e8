"""The JSON Schema of the incident document, as data (the source of schemas/incident.schema.json).

The schema is kept here so that ``codecs.document`` validates without reading a file (codecs do no
I/O); ``ecallgw/codecs/schemas/incident.schema.json`` is this value written out for receivers, and
a test fails when the two differ. Field names of the ``msd`` object are EN 15722's ASN.1 names.
"""

from __future__ import annotations

from typing import Any

__all__ = ["INCIDENT_SCHEMA", "SCHEMA_ID"]

SCHEMA_ID = "urn:ecallgw:schema:incident:1"

_TIME = {
    "type": "string",
    "format": "date-time",
    # ISO 8601 UTC with milliseconds, always "Z" (docs/documents.md §Times)
    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$",
}
_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}


def _int(lo: int, hi: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": lo, "maximum": hi}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(required),
        "properties": required | (optional or {}),
        "additionalProperties": False,
    }


_REASON = _obj({"code": {"type": "string", "minLength": 1}, "text": {"type": "string"}})

# --- EN 15722 MSD (docs/interfaces.md §"MSD as JSON"; ASN.1 in tests/codecs/asn1/msd-v*.asn) -------

_VEHICLE_TYPES = [
    "passengerVehicleClassM1",
    "busesAndCoachesClassM2",
    "busesAndCoachesClassM3",
    "lightCommercialVehiclesClassN1",
    "heavyDutyVehiclesClassN2",
    "heavyDutyVehiclesClassN3",
    "motorcyclesClassL1e",
    "motorcyclesClassL2e",
    "motorcyclesClassL3e",
    "motorcyclesClassL4e",
    "motorcyclesClassL5e",
    "motorcyclesClassL6e",
    "motorcyclesClassL7e",
    "trailersClassO",
    "agriVehiclesClassR",
    "agriVehiclesClassS",
    "agriVehiclesClassT",
    "offRoadVehiclesG",
    "specialPurposeMotorCaravanClassSA",
    "specialPurposeArmouredVehicleClassSB",
    "specialPurposeAmbulanceClassSC",
    "specialPurposeHearseClassSD",
    "otherVehicleClass",
]
_VIN_CHARS = "[A-HJ-NPR-Z0-9]"
_PROPULSION = [
    "gasolineTankPresent",
    "dieselTankPresent",
    "compressedNaturalGas",
    "liquidPropaneGas",
    "electricEnergyStorage",
    "hydrogenStorage",
]


def _msd_structure(version: int) -> dict[str, Any]:
    """MSDStructure of one version: v2 adds otherStorage; v3 makes N1/N2 mandatory, renames
    numberOfPassengers to numberOfOccupants and adds vehicle types 14..23 (docs/msd.md §5)."""
    v3 = version == 3
    propulsion = _PROPULSION + (["otherStorage"] if version >= 2 else [])
    required: dict[str, Any] = {
        "messageIdentifier": _int(0, 255),
        "control": _obj(
            {
                "automaticActivation": {"type": "boolean"},
                "testCall": {"type": "boolean"},
                "positionCanBeTrusted": {"type": "boolean"},
                "vehicleType": {"enum": _VEHICLE_TYPES if v3 else _VEHICLE_TYPES[:13]},
            }
        ),
        "vehicleIdentificationNumber": {"$ref": "#/$defs/vin"},
        # BOOLEAN DEFAULT FALSE flags are always present in the JSON.
        "vehiclePropulsionStorageType": _obj({name: {"type": "boolean"} for name in propulsion}),
        "timestamp": _int(0, 2**32 - 1),
        "vehicleLocation": {"$ref": "#/$defs/vehicleLocation"},
        "vehicleDirection": _int(0, 255),
    }
    delta = {"$ref": "#/$defs/vehicleLocationDelta"}
    recent = {"recentVehicleLocationN1": delta, "recentVehicleLocationN2": delta}
    if v3:
        return _obj(required | recent, {"numberOfOccupants": _int(0, 255)})
    return _obj(required, recent | {"numberOfPassengers": _int(0, 255)})


def _msd_message(version: int) -> dict[str, Any]:
    return _obj(
        {"msdStructure": _msd_structure(version)},
        {"optionalAdditionalData": {"$ref": "#/$defs/additionalData"}},
    )


# Types every version shares, referenced from each version's MSDStructure.
_MSD_DEFS: dict[str, Any] = {
    "vin": _obj(
        {
            "isowmi": {"type": "string", "pattern": f"^{_VIN_CHARS}{{3}}$"},
            "isovds": {"type": "string", "pattern": f"^{_VIN_CHARS}{{6}}$"},
            "isovisModelyear": {"type": "string", "pattern": f"^{_VIN_CHARS}$"},
            "isovisSeqPlant": {"type": "string", "pattern": f"^{_VIN_CHARS}{{7}}$"},
        }
    ),
    "vehicleLocation": _obj(
        {"positionLatitude": _int(-(2**31), 2**31 - 1), "positionLongitude": _int(-(2**31), 2**31 - 1)}
    ),
    "vehicleLocationDelta": _obj({"latitudeDelta": _int(-512, 511), "longitudeDelta": _int(-512, 511)}),
    "additionalData": _obj(
        {
            "oid": {"type": "string", "pattern": r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"},
            "data": {"type": "string", "pattern": "^([0-9a-f]{2})*$"},
        },
        # The decoded ERA-GLONASS or Euro NCAP data, in the MSD codec's JSON form.
        {"decoded": {"type": "object"}},
    ),
}


# One schema per version, chosen by the version key, so each version is held to its own fields.
# if/then/else checks only the chosen branch, where oneOf would validate the MSD once per version.
_MSD = {
    "if": {"type": "object", "required": ["id"]},
    "then": _obj({"id": {"const": 1}, "msd": _msd_message(1)}),
    "else": {
        "if": {"type": "object", "required": ["msdVersion"], "properties": {"msdVersion": {"const": 2}}},
        "then": _obj({"msdVersion": {"const": 2}, "msd": _msd_message(2)}),
        "else": _obj({"msdVersion": {"const": 3}, "msd": _msd_message(3)}),
    },
}

# --- The incident document (docs/interfaces.md §"Forwarding to emergency services") ---------------

_CALL = _obj(
    {
        "tps": _NAME,
        "vehicle": _NAME,
        "call_id": {"type": "string", "minLength": 1},
        "activation": {"enum": ["automatic", "manual", "test"]},
        "first_at": _TIME,
        "last_at": _TIME,
        "msd_version": _nullable(_int(1, 3)),
        "callback": _nullable({"type": "string"}),
        "lang": _nullable({"type": "string"}),
    }
)

INCIDENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "ecallgw incident document",
    "description": "One revision of an incident as ecallgw forwards it (docs/documents.md).",
    **_obj(
        {
            "document": {"const": "ecallgw.incident"},
            "document_version": {"const": 1},
            "incident_id": {"type": "string", "minLength": 1},
            "revision": {"type": "integer", "minimum": 1},
            "status": {"enum": ["open", "updated", "cancelled", "resolved"]},
            "severity": _obj(
                {
                    "level": {"enum": ["critical", "high", "medium", "low"]},
                    "score": _int(0, 100),
                    "reasons": {"type": "array", "items": {"$ref": "#/$defs/reason"}},
                }
            ),
            # The primary call, every field from that one call (null: a storm's aggregate, for the
            # operator desk only); ``calls`` lists every call, the primary first (issue 12).
            "call": _nullable(
                _obj(
                    {
                        "tps": _NAME,
                        "vehicle": _NAME,
                        "call_id": {"type": "string", "minLength": 1},
                        "automatic": {"type": "boolean"},
                        "test": {"type": "boolean"},
                        "callback": _nullable({"type": "string"}),
                        "lang": _nullable({"type": "string"}),
                    }
                )
            ),
            "calls": {"type": "array", "items": {"$ref": "#/$defs/call"}},
            "members": {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True},
            "msd": _nullable({"$ref": "#/$defs/msd"}),
            "msd_raw": _nullable({"type": "string", "contentEncoding": "base64", "minLength": 4}),
            "position": _nullable(
                _obj(
                    {
                        "lat": {"type": "number", "minimum": -90, "maximum": 90},
                        "lon": {"type": "number", "minimum": -180, "maximum": 180},
                        "trusted": {"type": "boolean"},
                        "source": {"enum": ["msd", "nmea", "caller_link"]},
                        "at": _nullable(_TIME),
                        "quality": _nullable({"type": "string"}),
                        "heading_deg": _nullable({"type": "number", "minimum": 0, "maximum": 360}),
                        "speed_kmh": _nullable({"type": "number", "minimum": 0}),
                        "altitude_m": _nullable({"type": "number"}),
                        "satellites": _nullable({"type": "integer", "minimum": 0}),
                        "hdop": _nullable({"type": "number", "minimum": 0}),
                    },
                    # A caller's browser position (source caller_link) states its accuracy.
                    {"accuracy_m": {"type": "number", "minimum": 0}},
                )
            ),
            "scene_id": _nullable({"type": "string", "minLength": 1}),
            "reasons": {"type": "array", "items": {"$ref": "#/$defs/reason"}},
            "operator_note": _nullable({"type": "string", "maxLength": 2000}),
            "received_at": _TIME,
            "updated_at": _TIME,
            "forwarded_at": _TIME,
        }
    ),
    "$defs": {"reason": _REASON, "call": _CALL, "msd": _MSD, **_MSD_DEFS},
}
