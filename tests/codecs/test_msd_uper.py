"""The UPER building blocks, each through the interpreted construct and the generated fast path.

``roundtrip`` is the codecs' ``common()``: it checks parse, build, and that the generated code
agrees with the interpreted schema, for one element in a one-component SEQUENCE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from construct import Construct

from ecallgw.codecs._fastpath import FastSequence
from ecallgw.codecs._uper import (
    Boolean,
    Enumerated,
    Integer,
    OctetString,
    RelativeOid,
    Sequence,
    UperError,
    VinCharacters,
    build_bits,
    container_to_model,
    model_to_container,
    oid_from_octets,
    oid_to_octets,
    parse_bits,
    snake,
)
from ecallgw.model import IILocations, VehicleType


@dataclass(frozen=True, slots=True, kw_only=True)
class Box:
    """A one-component SEQUENCE value for testing single elements."""

    value: Any


def _bits(text: str) -> bytes:
    text = text.replace(" ", "")
    text += "0" * (-len(text) % 8)
    return int(text, 2).to_bytes(len(text) // 8) if text else b""


def _box(node: Construct) -> Sequence:
    return Sequence("value" / node, model=Box)


def roundtrip(node: Construct, bits: str, value: Any) -> None:
    """``bits`` (a string of 0/1, padded to octets) is the UPER encoding of ``value`` by ``node``."""
    schema = _box(node)
    data = _bits(bits)
    parsed, used = parse_bits(schema, data)
    assert used == len(bits.replace(" ", ""))
    assert container_to_model(schema, parsed) == Box(value=value)
    assert build_bits(schema, model_to_container(schema, Box(value=value))) == data
    fast = FastSequence(schema, "t")
    assert fast.decode(data) == Box(value=value)
    assert fast.encode(Box(value=value)) == data


VT = [VehicleType(v) for v in range(1, 14)]
VT3 = list(VehicleType)

# (id, node, bits, value): X.691 clause in the comment where it is not obvious.
CASES: list[tuple[str, Construct, str, Any]] = [
    ("boolean", Boolean, "1", True),
    ("uint8 max", Integer(0, 255), "11111111", 255),
    ("delta min (value + 512)", Integer(-512, 511), "0000000000", -512),
    ("delta max", Integer(-512, 511), "1111111111", 511),
    ("delta 0", Integer(-512, 511), "1000000000", 0),
    ("latitude min (value + 2^31)", Integer(-(2**31), 2**31 - 1), "0" * 32, -(2**31)),
    ("timestamp max", Integer(0, 2**32 - 1), "1" * 32, 2**32 - 1),
    ("range limit 100..255 (8 bits, offset 100)", Integer(100, 255), "10011011", 255),
    ("delta-V -255..255 (9 bits)", Integer(-255, 255), "000000000", -255),
    ("ASI15 0..2047 (11 bits)", Integer(0, 2047), "10000000000", 1024),
    # ENUMERATED with `...`: extension bit, then the root index (not the value).
    (
        "vehicle type M1 (index 0)",
        Enumerated(VT, extensible=True),
        "0 0000",
        VehicleType.passengerVehicleClassM1,
    ),
    (
        "vehicle type L7e (index 12)",
        Enumerated(VT, extensible=True),
        "0 1100",
        VehicleType.motorcyclesClassL7e,
    ),
    (
        "v3 other class (index 22, 5 bits)",
        Enumerated(VT3, extensible=True),
        "0 10110",
        VehicleType.otherVehicleClass,
    ),
    ("impact location other", Enumerated(list(IILocations), extensible=True), "0 110", IILocations.other),
    # VIN: the 6-bit index into 0-9 A-H J-N P R-Z: W=29, M=21, 9=9.
    ("VIN WMI", VinCharacters(3), "011101 010101 001001", "WM9"),
    ("VIN model year Z", VinCharacters(1), "100000", "Z"),
    ("octet string empty", OctetString(), "00000000", b""),
    ("octet string 2", OctetString(), "00000010 00110000 00110000", b"00"),
    # Length 200: long form 10xxxxxx xxxxxxxx (X.691 11.9.3.7).
    ("octet string 200 (long form)", OctetString(), "10000000 11001000" + "10101011" * 200, b"\xab" * 200),
    ("relative OID 1.2.125", RelativeOid(), "00000011 00000001 00000010 01111101", "1.2.125"),
    ("relative OID 8.1", RelativeOid(), "00000010 00001000 00000001", "8.1"),
    # An arc of 128 takes two octets: 0x81 0x00 (X.690 8.20.2).
    ("relative OID 128.0", RelativeOid(), "00000011 10000001 00000000 00000000", "128.0"),
]


@pytest.mark.parametrize(("node", "bits", "value"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_element(node: Construct, bits: str, value: Any) -> None:
    roundtrip(node, bits, value)


# (id, node, bits, reason word, bit offset): inputs the element must refuse, in both paths.
REFUSED: list[tuple[str, Construct, str, str, int]] = [
    ("range limit 256", Integer(100, 255), "10011100", "out of range", 0),
    ("vehicle type index 13 of 13", Enumerated(VT, extensible=True), "0 1101", "index 13", 0),
    ("vehicle type extension", Enumerated(VT, extensible=True), "1 0000", "extension", 0),
    ("VIN index 33", VinCharacters(1), "100001", "index 33", 0),
    ("relative OID, no arcs", RelativeOid(), "00000000", "malformed", 0),
    ("relative OID, leading 0x80", RelativeOid(), "00000010 10000000 00000001", "malformed", 0),
    ("relative OID, open last arc", RelativeOid(), "00000001 10000001", "malformed", 0),
    # 2^64 needs ten octets 0x82 0x80 ... 0x80 0x00: above MAX_ARC, refused before it grows.
    ("relative OID, arc 2^64", RelativeOid(), "00001010 10000010" + " 10000000" * 8 + " 00000000", "2^64", 0),
    ("octet string past the end", OctetString(), "00000011 00000000", "truncated", 8),
    ("fragmented length", OctetString(), "11000001", "fragmented", 0),
    ("truncated integer", Integer(0, 2**32 - 1), "1111", "truncated", 0),
]


@pytest.mark.parametrize(
    ("node", "bits", "word", "offset"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_refused(node: Construct, bits: str, word: str, offset: int) -> None:
    schema = _box(node)
    data = _bits(bits)
    with pytest.raises(UperError) as info:
        parse_bits(schema, data)
    assert word in info.value.reason
    assert info.value.bit_offset == offset  # where the refused element (or its octets) starts
    assert FastSequence(schema, "t").decode(data) is None


@pytest.mark.parametrize(
    "oid", ["0", "1.2.125", "8.1", "1.4.2", "128", "2.999.16384", "4294967295.0", str(2**64 - 1) + ".7"]
)
def test_oid_conversion(oid: str) -> None:
    octets = oid_to_octets(oid)
    assert octets is not None
    assert oid_from_octets(octets) == oid


@pytest.mark.parametrize(
    "text", ["", "1..2", "1.", ".1", "01", "1.-2", "a.b", "1.٣", str(2**64), "9" * 5000], ids=repr
)
def test_not_an_oid(text: str) -> None:
    assert oid_to_octets(text) is None


def test_huge_arc_is_refused_not_a_crash() -> None:
    # 3000 continuation octets: the decimal form would exceed Python's 4300-digit limit.
    assert oid_from_octets(b"\xff" * 3000 + b"\x7f") is None
    assert oid_from_octets(bytes.fromhex("81ffffffffffffffff7f")) == str(2**64 - 1)


@pytest.mark.parametrize(
    ("name", "attr"),
    [
        ("vehicleIdentificationNumber", "vehicle_identification_number"),
        ("recentVehicleLocationN1", "recent_vehicle_location_n1"),
        ("isovisModelyear", "isovis_modelyear"),
        ("deltaVX", "delta_vx"),
        ("otherStorage", "other_storage"),
        ("id", "id"),
    ],
)
def test_snake(name: str, attr: str) -> None:
    # Model attributes are the mechanical snake_case of the ASN.1 names (docs/style.md "Naming").
    assert snake(name) == attr
