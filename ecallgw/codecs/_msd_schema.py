"""The EN 15722 MSD schemas, one per version, declared with construct field by field.

Each block follows the ASN.1 module of its version (tests/codecs/asn1/msd-v1.asn, msd-v2.asn,
msd-v3.asn; docs/msd.md §3 and §5): the extension bit of a type with ``...`` first, then one
presence bit per OPTIONAL or DEFAULT component in declaration order, then the components. These
declarations are the single source of truth: the interpreted parse, the construct build, the JSON
mapping and the generated fast path (:mod:`ecallgw.codecs._fastpath`) are all derived from them.
"""

from __future__ import annotations

from construct import Construct

from ecallgw.codecs import oad
from ecallgw.codecs._uper import (
    Boolean,
    Containing,
    Enumerated,
    Integer,
    OctetString,
    RelativeOid,
    Sequence,
    VinCharacters,
    default,
    extension_bit,
    optional,
    presence,
)
from ecallgw.model import (
    AdditionalData,
    ControlType,
    Msd,
    MsdMessage,
    MsdStructure,
    VehicleIdentificationNumber,
    VehicleLocation,
    VehicleLocationDelta,
    VehiclePropulsionStorageType,
    VehicleType,
)

__all__ = ["SCHEMAS", "V1", "V2", "V3"]


# --- Types common to every version (EN 15722 Annex A; docs/msd.md §3.2-3.6) -------------------

# VIN ::= SEQUENCE { isowmi (SIZE 3), isovds (SIZE 6), isovisModelyear (SIZE 1), isovisSeqPlant (SIZE 7) }
VIN = Sequence(
    "isowmi" / VinCharacters(3),
    "isovds" / VinCharacters(6),
    "isovisModelyear" / VinCharacters(1),
    "isovisSeqPlant" / VinCharacters(7),
    model=VehicleIdentificationNumber,
)

# VehicleLocation ::= SEQUENCE { positionLatitude, positionLongitude INTEGER (-2147483648..2147483647) }
VehicleLocationSchema = Sequence(
    "positionLatitude" / Integer(-2147483648, 2147483647),
    "positionLongitude" / Integer(-2147483648, 2147483647),
    model=VehicleLocation,
)

# VehicleLocationDelta ::= SEQUENCE { latitudeDelta, longitudeDelta INTEGER (-512..511) }, no `...`
VehicleLocationDeltaSchema = Sequence(
    "latitudeDelta" / Integer(-512, 511),
    "longitudeDelta" / Integer(-512, 511),
    model=VehicleLocationDelta,
)

# AdditionalData ::= SEQUENCE { oid RELATIVE-OID, data OCTET STRING }, no `...` (checked against
# the EN 15722:2011 example). `decoded` is ours: the scheme the OID names, decoded when known.
AdditionalDataSchema = Sequence(
    "oid" / RelativeOid(),
    "data" / OctetString(),
    model=AdditionalData,
    computed={"decoded": (oad.decode_oad, ("oid", "data"))},
)

_PROPULSION_V1 = (
    "gasolineTankPresent",
    "dieselTankPresent",
    "compressedNaturalGas",
    "liquidPropaneGas",
    "electricEnergyStorage",
    "hydrogenStorage",
)


def _propulsion(names: tuple[str, ...]) -> Sequence:
    # VehiclePropulsionStorageType ::= SEQUENCE { <flag> BOOLEAN DEFAULT FALSE, ..., ... }
    return Sequence(
        extension_bit(),
        *(presence(n, has_default=True, default_value=False) for n in names),
        *(default(n, Boolean, False) for n in names),
        model=VehiclePropulsionStorageType,
    )


def _control(vehicle_types: int) -> Sequence:
    # ControlType ::= SEQUENCE { automaticActivation, testCall, positionCanBeTrusted BOOLEAN,
    #                            vehicleType VehicleType }; VehicleType ::= ENUMERATED { ..., ... }
    return Sequence(
        "automaticActivation" / Boolean,
        "testCall" / Boolean,
        "positionCanBeTrusted" / Boolean,
        "vehicleType" / Enumerated([VehicleType(v) for v in range(1, vehicle_types + 1)], extensible=True),
        model=ControlType,
    )


def _message(structure: Sequence) -> Sequence:
    # MSDMessage ::= SEQUENCE { msdStructure, optionalAdditionalData AdditionalData OPTIONAL, ... }
    return Sequence(
        extension_bit(),
        presence("optionalAdditionalData"),
        "msdStructure" / structure,
        optional("optionalAdditionalData", AdditionalDataSchema),
        model=MsdMessage,
    )


# --- Versions 1 and 2: EN 15722:2011 (msd-v1.asn) and EN 15722:2015 (msd-v2.asn) --------------
#
# The two MSDStructures differ only in VehiclePropulsionStorageType (otherStorage from v2 on); v2
# also wraps MSDMessage in an OCTET STRING. One declaration serves both, so they cannot drift.


def _structure_v1_v2(propulsion: tuple[str, ...]) -> Sequence:
    # MSDStructure ::= SEQUENCE { messageIdentifier, control, vehicleIdentificationNumber,
    #     vehiclePropulsionStorageType, timestamp, vehicleLocation, vehicleDirection,
    #     recentVehicleLocationN1 OPTIONAL, recentVehicleLocationN2 OPTIONAL,
    #     numberOfPassengers INTEGER (0..255) OPTIONAL, ... }
    return Sequence(
        extension_bit(),
        presence("recentVehicleLocationN1"),
        presence("recentVehicleLocationN2"),
        presence("numberOfPassengers"),
        "messageIdentifier" / Integer(0, 255),
        "control" / _control(13),
        "vehicleIdentificationNumber" / VIN,
        "vehiclePropulsionStorageType" / _propulsion(propulsion),
        "timestamp" / Integer(0, 4294967295),
        "vehicleLocation" / VehicleLocationSchema,
        "vehicleDirection" / Integer(0, 255),
        optional("recentVehicleLocationN1", VehicleLocationDeltaSchema),
        optional("recentVehicleLocationN2", VehicleLocationDeltaSchema),
        optional("numberOfPassengers", Integer(0, 255)),
        model=MsdStructure,
    )


def _wrapped(structure: Sequence) -> Sequence:
    # ECallMessage ::= SEQUENCE { msdVersion INTEGER (0..255), msd OCTET STRING (CONTAINING MSDMessage) }
    return Sequence(
        "msdVersion" / Integer(0, 255),
        "msd" / Containing(_message(structure)),
        model=Msd,
        rename={"msdVersion": "version"},
        constants={"raw": b""},  # what was received is set by the codec, not by the schema
    )


MSDStructureV1 = _structure_v1_v2(_PROPULSION_V1)

# ECallMessage ::= SEQUENCE { id INTEGER (0..255), msd MSDMessage }: no `...`, no wrapper.
V1 = Sequence(
    "id" / Integer(0, 255),
    "msd" / _message(MSDStructureV1),
    model=Msd,
    rename={"id": "version"},
    constants={"raw": b""},
)

MSDStructureV2 = _structure_v1_v2((*_PROPULSION_V1, "otherStorage"))
V2 = _wrapped(MSDStructureV2)


# --- Version 3: EN 15722:2020 (msd-v3.asn): N1/N2 mandatory, numberOfOccupants, 23 vehicle types

MSDStructureV3 = Sequence(
    extension_bit(),
    presence("numberOfOccupants"),
    "messageIdentifier" / Integer(0, 255),
    "control" / _control(23),
    "vehicleIdentificationNumber" / VIN,
    "vehiclePropulsionStorageType" / _propulsion((*_PROPULSION_V1, "otherStorage")),
    "timestamp" / Integer(0, 4294967295),
    "vehicleLocation" / VehicleLocationSchema,
    "vehicleDirection" / Integer(0, 255),
    "recentVehicleLocationN1" / VehicleLocationDeltaSchema,
    "recentVehicleLocationN2" / VehicleLocationDeltaSchema,
    optional("numberOfOccupants", Integer(0, 255)),
    model=MsdStructure,
    rename={"numberOfOccupants": "number_of_passengers"},
)

V3 = _wrapped(MSDStructureV3)

SCHEMAS: dict[int, Construct] = {1: V1, 2: V2, 3: V3}
"""ECallMessage schema by the value of byte 0."""
