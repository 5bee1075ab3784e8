"""Values the MSD encoder must refuse, and JSON that is not an MSD."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import pytest

from ecallgw.codecs import msd as codec
from ecallgw.errors import DecodeError, EncodeError
from ecallgw.model import (
    AdditionalData,
    Msd,
    MsdStructure,
    VehicleIdentificationNumber,
    VehicleLocation,
    VehicleLocationDelta,
    VehiclePropulsionStorageType,
    VehicleType,
)
from tests.codecs.test_msd_vectors import PUBLIC, PUBLIC_BYTES

BASE = codec.decode(PUBLIC_BYTES)


def _structure(msd: Msd, **changes: Any) -> Msd:
    structure = dataclasses.replace(msd.structure, **changes)
    return dataclasses.replace(msd, msd=dataclasses.replace(msd.msd, msd_structure=structure))


def _control(msd: Msd, **changes: Any) -> Msd:
    return _structure(msd, control=dataclasses.replace(msd.structure.control, **changes))


def _v(version: Literal[1, 2, 3]) -> Msd:
    return dataclasses.replace(BASE, version=version)


# Each case: why it cannot be encoded. Both the generated and the interpreted encoder must refuse.
UNENCODABLE: list[tuple[str, Callable[[], Msd]]] = [
    # I, O and Q are not in the VIN alphabet (the EN 15722:2011 example's "WMI" misprint).
    (
        "VIN letter I",
        lambda: _structure(
            BASE, vehicle_identification_number=VehicleIdentificationNumber.from_vin("WMIVDSVDSYA123456")
        ),
    ),
    (
        "VIN letter O",
        lambda: _structure(
            BASE, vehicle_identification_number=VehicleIdentificationNumber.from_vin("WM9VDSVDSYA12345O")
        ),
    ),
    (
        "VIN letter Q",
        lambda: _structure(
            BASE, vehicle_identification_number=VehicleIdentificationNumber.from_vin("WM9VDSVQSYA123456")
        ),
    ),
    (
        "VIN too short",
        lambda: _structure(
            BASE, vehicle_identification_number=VehicleIdentificationNumber.from_vin("WM9VDSVDSYA12345")
        ),
    ),
    (
        "VIN lower case",
        lambda: _structure(
            BASE, vehicle_identification_number=VehicleIdentificationNumber.from_vin("wm9VDSVDSYA123456")
        ),
    ),
    ("messageIdentifier 256", lambda: _structure(BASE, message_identifier=256)),
    ("messageIdentifier -1", lambda: _structure(BASE, message_identifier=-1)),
    ("timestamp 2**32", lambda: _structure(BASE, timestamp=2**32)),
    (
        "latitude 2**31",
        lambda: _structure(
            BASE, vehicle_location=VehicleLocation(position_latitude=2**31, position_longitude=0)
        ),
    ),
    (
        "longitude -2**31 - 1",
        lambda: _structure(
            BASE, vehicle_location=VehicleLocation(position_latitude=0, position_longitude=-(2**31) - 1)
        ),
    ),
    ("direction 256", lambda: _structure(BASE, vehicle_direction=256)),
    (
        "delta 512",
        lambda: _structure(
            BASE, recent_vehicle_location_n1=VehicleLocationDelta(latitude_delta=512, longitude_delta=0)
        ),
    ),
    (
        "delta -513",
        lambda: _structure(
            BASE, recent_vehicle_location_n2=VehicleLocationDelta(latitude_delta=0, longitude_delta=-513)
        ),
    ),
    ("passengers 256", lambda: _structure(BASE, number_of_passengers=256)),
    # Vehicle types 14..23 exist from EN 15722:2020 (v3) on.
    ("v1 trailer", lambda: _control(BASE, vehicle_type=VehicleType.trailersClassO)),
    ("v2 other vehicle class", lambda: _control(_v(2), vehicle_type=VehicleType.otherVehicleClass)),
    # otherStorage was added in v2.
    (
        "v1 otherStorage",
        lambda: _structure(
            BASE, vehicle_propulsion_storage_type=VehiclePropulsionStorageType(other_storage=True)
        ),
    ),
    # N1 and N2 are mandatory in v3.
    ("v3 without N1", lambda: _structure(_v(3), recent_vehicle_location_n1=None)),
    ("v3 without N2", lambda: _structure(_v(3), recent_vehicle_location_n2=None)),
    (
        "OID with an empty arc",
        lambda: dataclasses.replace(
            BASE,
            msd=dataclasses.replace(BASE.msd, optional_additional_data=AdditionalData(oid="1..2", data=b"")),
        ),
    ),
    (
        "OID with a leading zero",
        lambda: dataclasses.replace(
            BASE,
            msd=dataclasses.replace(BASE.msd, optional_additional_data=AdditionalData(oid="1.02", data=b"")),
        ),
    ),
    # Arcs are bounded at 2^64 - 1 (docs/msd-codec.md, "Optional additional data").
    (
        "OID arc 2^64",
        lambda: dataclasses.replace(
            BASE,
            msd=dataclasses.replace(
                BASE.msd, optional_additional_data=AdditionalData(oid=f"1.{2**64}", data=b"")
            ),
        ),
    ),
    (
        "data not bytes",
        lambda: dataclasses.replace(
            BASE,
            msd=dataclasses.replace(
                BASE.msd,
                optional_additional_data=AdditionalData(oid="1.2", data="00FF"),  # type: ignore[arg-type]
            ),
        ),
    ),
    ("version 4", lambda: dataclasses.replace(BASE, version=4)),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("make", [c[1] for c in UNENCODABLE], ids=[c[0] for c in UNENCODABLE])
def test_unencodable(make: Callable[[], Msd]) -> None:
    msd = make()
    with pytest.raises(EncodeError):
        codec.encode(msd)
    with pytest.raises(EncodeError):
        codec.encode(msd, canonical=False)
    fast = codec._FAST.get(msd.version)
    assert fast is None or fast.encode(msd) is None  # the generated encoder gives up, never guesses


def test_encodable_neighbours() -> None:
    # The limits themselves are fine: the checks above are not off by one.
    edge = _structure(
        _v(3),
        message_identifier=255,
        timestamp=2**32 - 1,
        vehicle_location=VehicleLocation(position_latitude=-(2**31), position_longitude=2**31 - 1),
        vehicle_direction=255,
        recent_vehicle_location_n1=VehicleLocationDelta(latitude_delta=-512, longitude_delta=511),
        number_of_passengers=0,
        control=dataclasses.replace(BASE.structure.control, vehicle_type=VehicleType.otherVehicleClass),
    )
    assert codec.decode(codec.encode(edge)) == edge
    assert isinstance(edge.structure, MsdStructure)


# JSON that is not an MSD: from_json_dict names the key (a DecodeError: the sender's JSON is wrong).
def _json(**msd_structure: Any) -> dict[str, Any]:
    return {
        "id": 1,
        "msd": {
            **PUBLIC["json"]["msd"],
            "msdStructure": {**PUBLIC["json"]["msd"]["msdStructure"], **msd_structure},
        },
    }


BAD_JSON: list[tuple[str, Any, str]] = [
    ("not an object", [], ""),
    ("no version", {"msd": {}}, ""),
    ("v1 under msdVersion", {"msdVersion": 1, "msd": PUBLIC["json"]["msd"]}, ""),
    ("unknown key", _json(speed=3), "msd.msdStructure"),
    ("missing mandatory", {"id": 1, "msd": {"msdStructure": {}}}, "msd.msdStructure.messageIdentifier"),
    ("string for an integer", _json(timestamp="123"), "msd.msdStructure.timestamp"),
    ("boolean for an integer", _json(vehicleDirection=True), "msd.msdStructure.vehicleDirection"),
    (
        "unknown vehicle type",
        _json(control={**PUBLIC["json"]["msd"]["msdStructure"]["control"], "vehicleType": "spaceship"}),
        "msd.msdStructure.control.vehicleType",
    ),
    (
        "v3 vehicle type in v1",
        _json(control={**PUBLIC["json"]["msd"]["msdStructure"]["control"], "vehicleType": "trailersClassO"}),
        "msd.msdStructure.control.vehicleType",
    ),
    ("v3 name in v1", _json(numberOfOccupants=2), "msd.msdStructure"),
    (
        "bad hex",
        {"id": 1, "msd": {**PUBLIC["json"]["msd"], "optionalAdditionalData": {"oid": "1", "data": "0g"}}},
        "msd.optionalAdditionalData.data",
    ),
]


@pytest.mark.parametrize(("value", "path"), [c[1:] for c in BAD_JSON], ids=[c[0] for c in BAD_JSON])
def test_bad_json(value: Any, path: str) -> None:
    with pytest.raises(DecodeError) as info:
        codec.from_json_dict(value)
    assert info.value.path == path


def test_json_defaults_may_be_left_out() -> None:
    # BOOLEAN DEFAULT FALSE components may be omitted on input; output always has them.
    value = _json(vehiclePropulsionStorageType={"gasolineTankPresent": True, "electricEnergyStorage": True})
    assert codec.from_json_dict(value) == BASE
    assert codec.to_json_dict(codec.from_json_dict(value)) == PUBLIC["json"]
