"""The published EN 15722:2011 annex example, and inputs derived from it bit by bit.

Bit positions come from the worked example in docs/msd.md §4 (copied here as constants), not
from the codec, so a wrong codec cannot agree with itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ecallgw.codecs import msd as codec
from ecallgw.errors import DecodeError
from ecallgw.model import VehicleType
from tests.codecs import _oracle as oracle

VECTORS = json.loads((Path(__file__).parent / "vectors" / "msd-public.json").read_text())
PUBLIC = VECTORS[0]
PUBLIC_BYTES = bytes.fromhex(PUBLIC["hex"])
PUBLIC_BITS = 8 * len(PUBLIC_BYTES)


def bits_of(data: bytes) -> str:
    return format(int.from_bytes(data), f"0{8 * len(data)}b")


def bytes_of(bits: str) -> bytes:
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8)


def patch(data: bytes, offset: int, value: str) -> bytes:
    """``data`` with the bits at ``offset`` replaced by ``value`` (a string of 0 and 1)."""
    bits = bits_of(data)
    return bytes_of(bits[:offset] + value + bits[offset + len(value) :])


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_public_vector(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    msd = codec.decode(data)
    as_json = codec.to_json_dict(msd)
    assert as_json == vector["json"]
    assert oracle.decode(data) == vector["json"]
    assert msd.raw == data
    if vector["canonical"]:
        assert codec.encode(msd) == data
        assert oracle.encode(vector["json"]) == data
    assert codec.from_json_dict(vector["json"]) == msd


def test_public_vector_convenience_views() -> None:
    msd = codec.decode(PUBLIC_BYTES)
    assert msd.vin == "WM9VDSVDSYA123456"  # the standard's own decode misprints "WMI"
    assert msd.position == pytest.approx((48.3003333, 11.6173667), abs=1e-6)
    assert msd.direction_deg == 28
    assert msd.occupants == 2
    assert msd.automatic and not msd.test
    assert msd.structure.control.vehicle_type is VehicleType.passengerVehicleClassM1
    # N1 = (+10, -10) units of 100 mas from the position: 173882200 / 3.6e6, 41821520 / 3.6e6.
    assert msd.recent_positions[0] == pytest.approx((48.3006111, 11.6170889), abs=1e-6)
    extra = msd.msd.optional_additional_data
    assert extra is not None and extra.oid == "1.2.125" and extra.data == b"00FF" and extra.decoded is None


def legato_copy() -> bytes:
    """The example as the Legato encoder writes it: every DEFAULT component sent (docs/msd.md §3.5).

    Propulsion presence 100010 + values 11 (bits 133..140) become presence 111111 + values 100010.
    """
    bits = bits_of(PUBLIC_BYTES)[: PUBLIC_BITS - 3]  # without the 3 padding bits
    assert bits[133:141] == "10001011"
    return bytes_of(bits[:133] + "111111" + "100010" + bits[141:])


def test_non_canonical_public_vector() -> None:
    legato = legato_copy()
    assert len(legato) == 47
    assert codec.decode(legato) == codec.decode(PUBLIC_BYTES)
    assert codec.encode(codec.decode(legato)) == PUBLIC_BYTES  # re-encoding is canonical
    assert codec.decode(legato).raw == legato


def _v2_structure() -> dict[str, Any]:
    structure = dict(PUBLIC["json"]["msd"]["msdStructure"])
    structure["vehiclePropulsionStorageType"] = {
        **structure["vehiclePropulsionStorageType"],
        "otherStorage": False,
    }
    return structure


def _v2_json(**extra: Any) -> dict[str, Any]:
    """The annex example's values as a v2 MSD (otherStorage added), with ``extra`` in MSDMessage."""
    return {"msdVersion": 2, "msd": {**PUBLIC["json"]["msd"], "msdStructure": _v2_structure(), **extra}}


def _v2_public() -> bytes:
    return codec.encode(codec.from_json_dict(_v2_json()))


def test_140_octet_frame_with_zero_fill() -> None:
    frame = PUBLIC_BYTES + bytes(140 - len(PUBLIC_BYTES))
    assert codec.decode(frame) == codec.decode(PUBLIC_BYTES)
    assert codec.decode(frame).raw == frame
    v2 = _v2_public()
    assert codec.decode(v2 + bytes(140 - len(v2))) == codec.decode(v2)


def _error(data: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    assert info.value.codec == "msd"
    return info.value


# (id, input, expected path, expected bit offset, a word of the reason). Offsets from docs/msd.md §4.
MALFORMED: list[tuple[str, bytes, str, int, str]] = [
    ("empty input", b"", "", 0, "empty"),
    ("unknown version 4", b"\x04" + PUBLIC_BYTES[1:], "id", 0, "version"),
    # MSDMessage's extension bit is bit 8: no extension additions exist, so it is rejected.
    ("MSDMessage extension bit", patch(PUBLIC_BYTES, 8, "1"), "msd", 8, "extension"),
    ("MSDStructure extension bit", patch(PUBLIC_BYTES, 10, "1"), "msd.msdStructure", 10, "extension"),
    # VehicleType: ext bit at 25, 4-bit index at 26; index 13 is past the 13 root values of v1.
    (
        "vehicle type index 13",
        patch(PUBLIC_BYTES, 25, "01101"),
        "msd.msdStructure.control.vehicleType",
        25,
        "index 13",
    ),
    (
        "vehicle type extension",
        patch(PUBLIC_BYTES, 25, "1"),
        "msd.msdStructure.control.vehicleType",
        25,
        "extension",
    ),
    # VIN isowmi starts at bit 30; index 35 is outside the 33-character alphabet (Legato blob).
    (
        "VIN index 35",
        patch(PUBLIC_BYTES, 30, "100011"),
        "msd.msdStructure.vehicleIdentificationNumber.isowmi",
        30,
        "index 35",
    ),
    (
        "VIN third character",
        patch(PUBLIC_BYTES, 42, "111111"),
        "msd.msdStructure.vehicleIdentificationNumber.isowmi",
        42,
        "index 63",
    ),
    (
        "propulsion extension bit",
        patch(PUBLIC_BYTES, 132, "1"),
        "msd.msdStructure.vehiclePropulsionStorageType",
        132,
        "extension",
    ),
    ("truncated in timestamp", PUBLIC_BYTES[:20], "msd.msdStructure.timestamp", 141, "truncated"),
    ("truncated in the OAD data", PUBLIC_BYTES[:-2], "msd.optionalAdditionalData.data", 333, "truncated"),
    ("one trailing zero octet", PUBLIC_BYTES + b"\x00", "", 368, "after the end"),
    ("a trailing non-zero octet", PUBLIC_BYTES + b"\x01", "", 368, "after the end"),
    ("140-octet frame, non-zero fill", PUBLIC_BYTES + bytes(93) + b"\x01", "", 368, "after the end"),
    ("141 octets of zero fill", PUBLIC_BYTES + bytes(95), "", 368, "after the end"),
]


@pytest.mark.parametrize(
    ("data", "path", "offset", "word"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_v1(data: bytes, path: str, offset: int, word: str) -> None:
    error = _error(data)
    assert (error.path, error.bit_offset) == (path, offset)
    assert word in error.reason


def test_malformed_v2_framing() -> None:
    good = _v2_public()
    assert good[:2] == bytes([2, len(good) - 2])
    assert codec.decode(good).version == 2
    # The length says one octet more than there is.
    error = _error(good[:1] + bytes([good[1] + 1]) + good[2:])
    assert error.path == "msd" and error.bit_offset == 16 and "truncated" in error.reason
    # One octet more inside the container than the encoding needs.
    error = _error(good[:1] + bytes([good[1] + 1]) + good[2:] + b"\x00")
    assert error.path == "msd" and "unused" in error.reason
    # Octets after the container.
    error = _error(good + b"\x00")
    assert error.bit_offset == 8 * len(good) and "after the end" in error.reason
    assert codec.decode(good + bytes(140 - len(good))).version == 2
    # Errors inside the container name offsets in the whole PDU: MSDStructure's extension bit
    # is bit 2 of the contained encoding, i.e. bit 18.
    error = _error(patch(good, 18, "1"))
    assert (error.path, error.bit_offset) == ("msd.msdStructure", 18)


def test_long_form_length() -> None:
    # A contained MSDMessage of 128 octets or more needs the two-octet length 10xxxxxx xxxxxxxx.
    value = _v2_json(optionalAdditionalData={"oid": "1.2.125", "data": "ab" * 100})
    data = codec.encode(codec.from_json_dict(value))
    assert data[1] & 0xC0 == 0x80
    assert ((data[1] & 0x3F) << 8) | data[2] == len(data) - 3
    assert data == oracle.encode(value)
    assert codec.to_json_dict(codec.decode(data)) == value


def test_malformed_relative_oid() -> None:
    # Contents octet 0x81 alone: the last octet of an arc must have its continuation bit clear.
    # asn1tools (OCTET STRING in place of RELATIVE-OID) writes the malformed contents for us.
    spec = oracle._spec(2)
    value = spec.decode("MSDMessage", oracle.encode_message(2, _v2_json()["msd"]))
    value["optionalAdditionalData"] = {"oid": b"\x81", "data": b"\x00"}
    inner = spec.encode("MSDMessage", value)
    error = _error(bytes([2, len(inner)]) + inner)
    assert error.path == "msd.optionalAdditionalData.oid" and "relative OID" in error.reason
    # The OID starts after 2 header octets, MSDMessage's 2 preamble bits and the MSDStructure:
    # bits 10..292 in the v1 example (docs/msd.md §4), one presence bit more (otherStorage) in v2.
    assert error.bit_offset == 16 + 2 + (293 - 10) + 1


def test_relative_oid_with_a_huge_arc() -> None:
    # 3000 octets of one arc (two-octet length form): refused with a DecodeError naming the OID,
    # not a ValueError from converting a 7000-digit number to text; the message stays short.
    spec = oracle._spec(2)
    value = spec.decode("MSDMessage", oracle.encode_message(2, _v2_json()["msd"]))
    value["optionalAdditionalData"] = {"oid": b"\xff" * 2999 + b"\x7f", "data": b""}
    inner = spec.encode("MSDMessage", value)
    error = _error(bytes([2, 0x80 | len(inner) >> 8, len(inner) & 0xFF]) + inner)
    assert error.path == "msd.optionalAdditionalData.oid" and "2^64" in error.reason
    assert error.bit_offset == 24 + 2 + (293 - 10) + 1
    assert len(str(error)) < 300
