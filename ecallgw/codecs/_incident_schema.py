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
_DELTA = _obj({"latitudeDelta": _int(-512, 511), "longitudeDelta": _int(-512, 511)})
_PROPULSION = [
    "gasolineTankPresent",
    "dieselTankPresent",
    "compressedNaturalGas",
    "liquidPropaneGas",
    "electricEnergyStorage",
    "hydrogenStorage",
]
_MSD_STRUCTURE = _obj(
    {
        "messageIdentifier": _int(0, 255),
        "control": _obj(
            {
                "automaticActivation": {"type": "boolean"},
                "testCall": {"type": "boolean"},
                "positionCanBeTrusted": {"type": "boolean"},
                "vehicleType": {"enum": _VEHICLE_TYPES},
            }
        ),
        "vehicleIdentificationNumber": _obj(
            {
                "isowmi": {"type": "string", "pattern": f"^{_VIN_CHARS}{{3}}$"},
                "isovds": {"type": "string", "pattern": f"^{_VIN_CHARS}{{6}}$"},
                "isovisModelyear": {"type": "string", "pattern": f"^{_VIN_CHARS}$"},
                "isovisSeqPlant": {"type": "string", "pattern": f"^{_VIN_CHARS}{{7}}$"},
            }
        ),
        # BOOLEAN DEFAULT FALSE flags are always present; otherStorage exists from v2 on.
        "vehiclePropulsionStorageType": _obj(
            {name: {"type": "boolean"} for name in _PROPULSION}, {"otherStorage": {"type": "boolean"}}
        ),
        "timestamp": _int(0, 2**32 - 1),
        "vehicleLocation": _obj(
            {"positionLatitude": _int(-(2**31), 2**31 - 1), "positionLongitude": _int(-(2**31), 2**31 - 1)}
        ),
        "vehicleDirection": _int(0, 255),
    },
    {
        "recentVehicleLocationN1": _DELTA,
        "recentVehicleLocationN2": _DELTA,
        "numberOfPassengers": _int(0, 255),
        "numberOfOccupants": _int(0, 255),
    },
)
_MSD = {
    "type": "object",
    "oneOf": [
        _obj({"id": {"const": 1}, "msd": {"$ref": "#/$defs/msdMessage"}}),
        _obj({"msdVersion": {"enum": [2, 3]}, "msd": {"$ref": "#/$defs/msdMessage"}}),
    ],
}
_MSD_MESSAGE = _obj(
    {"msdStructure": _MSD_STRUCTURE},
    {
        "optionalAdditionalData": _obj(
            {
                "oid": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)*$"},
                "data": {"type": "string", "pattern": "^([0-9a-f]{2})*$"},
            },
            # The decoded ERA-GLONASS or Euro NCAP data, in the MSD codec's JSON form.
            {"decoded": {"type": "object"}},
        )
    },
)

# --- The incident document (docs/interfaces.md §"Forwarding to emergency services") ---------------

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
            "call": _obj(
                {
                    "tps": _NAME,
                    "vehicle": _NAME,
                    "call_id": {"type": "string", "minLength": 1},
                    "automatic": {"type": "boolean"},
                    "test": {"type": "boolean"},
                    "callback": _nullable({"type": "string"}),
                    "lang": _nullable({"type": "string"}),
                }
            ),
            "msd": _nullable({"$ref": "#/$defs/msd"}),
            "msd_raw": _nullable({"type": "string", "contentEncoding": "base64", "minLength": 4}),
            "position": _nullable(
                _obj(
                    {
                        "lat": {"type": "number", "minimum": -90, "maximum": 90},
                        "lon": {"type": "number", "minimum": -180, "maximum": 180},
                        "trusted": {"type": "boolean"},
                        "source": {"enum": ["msd", "nmea"]},
                        "at": _nullable(_TIME),
                        "quality": _nullable({"type": "string"}),
                        "heading_deg": _nullable({"type": "number", "minimum": 0, "maximum": 360}),
                        "speed_kmh": _nullable({"type": "number", "minimum": 0}),
                        "altitude_m": _nullable({"type": "number"}),
                        "satellites": _nullable({"type": "integer", "minimum": 0}),
                        "hdop": _nullable({"type": "number", "minimum": 0}),
                    }
                )
            ),
            "scene_id": _nullable({"type": "string", "minLength": 1}),
            "reasons": {"type": "array", "items": {"$ref": "#/$defs/reason"}},
            "received_at": _TIME,
            "updated_at": _TIME,
            "forwarded_at": _TIME,
        }
    ),
    "$defs": {"reason": _REASON, "msd": _MSD, "msdMessage": _MSD_MESSAGE},
}
