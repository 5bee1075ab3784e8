"""Properties of the MSD codec for every version, checked against asn1tools as the oracle."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecallgw.codecs import msd as codec
from ecallgw.codecs import oad
from ecallgw.model import EraAdditionalData, IncInfo, Msd
from tests.codecs import _oracle as oracle
from tests.codecs._strategies import Version, era_additional_data, inc_infos, msds

VERSIONS: tuple[Version, ...] = (1, 2, 3)


def _without_decoded(value: dict[str, object]) -> dict[str, object]:
    out = json.loads(json.dumps(value))
    out["msd"].get("optionalAdditionalData", {}).pop("decoded", None)
    return dict(out)


@pytest.mark.parametrize("version", VERSIONS)
def test_roundtrip_and_oracle(version: Version) -> None:
    @given(msds(version))
    def check(msd: Msd) -> None:
        data = codec.encode(msd)
        decoded = codec.decode(data)
        assert decoded == msd
        assert decoded.raw == data
        # Our encoding equals asn1tools' byte for byte, and asn1tools reads it back to our JSON.
        as_json = codec.to_json_dict(msd)
        assert oracle.encode(as_json) == data
        assert oracle.decode(data) == _without_decoded(as_json)
        # The generated fast path and the interpreted construct schema agree both ways.
        assert codec._encode_interpreted(msd) == data
        assert codec._FAST[version].decode(data) == msd
        assert codec._decode_interpreted(data) == msd

    check()


@pytest.mark.parametrize("version", VERSIONS)
def test_decode_of_oracle_encoding(version: Version) -> None:
    @given(msds(version))
    def check(msd: Msd) -> None:
        data = oracle.encode(codec.to_json_dict(msd))
        assert _without_decoded(codec.to_json_dict(codec.decode(data))) == oracle.decode(data)

    check()


@pytest.mark.parametrize("version", VERSIONS)
def test_non_canonical_decodes_to_the_same_value(version: Version) -> None:
    # Legato and Qualcomm send every DEFAULT component with its presence bit set (docs/msd.md §3.5).
    @given(msds(version))
    def check(msd: Msd) -> None:
        canonical = codec.encode(msd)
        every_default = codec.encode(msd, canonical=False)
        assert codec.decode(every_default) == msd
        assert codec._FAST[version].decode(every_default) == msd  # the fast path handles them too
        assert oracle.decode(every_default) == oracle.decode(canonical)
        # Seven (six in v1) value bits more; a byte longer unless they fit into the padding.
        assert len(canonical) <= len(every_default) <= len(canonical) + 2

    check()


@pytest.mark.parametrize("version", VERSIONS)
def test_json_roundtrip(version: Version) -> None:
    @given(msds(version))
    def check(msd: Msd) -> None:
        as_json = json.loads(json.dumps(msd.to_json_dict()))
        assert Msd.from_json_dict(as_json) == msd
        structure = as_json["msd"]["msdStructure"]
        # BOOLEAN DEFAULT FALSE always present; the v3 occupant count has its v3 name.
        assert len(structure["vehiclePropulsionStorageType"]) == (6 if version == 1 else 7)
        passengers = msd.structure.number_of_passengers
        key = "numberOfOccupants" if version == 3 else "numberOfPassengers"
        assert structure.get(key) == passengers
        assert ("id" if version == 1 else "msdVersion") in as_json

    check()


@given(era_additional_data(1))
def test_era_format1_matches_oracle(value: EraAdditionalData) -> None:
    data = oad.encode_oad(value)
    assert data == oracle.encode_oad("1.4.1", oad.oad_to_json(value))
    assert oad.decode_oad("1.4.1", data) == value
    assert oracle.decode_oad("1.4.1", data) == oad.oad_to_json(value)


@given(era_additional_data(2))
def test_era_format2_matches_oracle(value: EraAdditionalData) -> None:
    data = oad.encode_oad(value)
    assert data == oracle.encode_oad("1.4.2", oad.oad_to_json(value))
    assert oad.decode_oad("1.4.2", data) == value
    assert oracle.decode_oad("1.4.2", data) == oad.oad_to_json(value)


@given(inc_infos())
def test_euro_ncap_matches_oracle(value: IncInfo) -> None:
    data = oad.encode_oad(value)
    assert data == oracle.encode_oad("8.1", oad.oad_to_json(value))
    assert oad.decode_oad("8.1", data) == value
    assert oracle.decode_oad("8.1", data) == oad.oad_to_json(value)


@given(msds())
def test_version_is_signalled_in_byte_0(msd: Msd) -> None:
    data = codec.encode(msd)
    assert data[0] == msd.version
    if msd.version != 1:
        # v2/v3: a length determinant, then exactly that many octets (docs/msd.md §2).
        length, start = (data[1], 2) if data[1] < 0x80 else (((data[1] & 0x3F) << 8) | data[2], 3)
        assert len(data) == start + length
    other = dataclasses.replace(msd, raw=b"ignored")
    assert codec.encode(other) == data


@pytest.mark.parametrize("version", (2, 3))
def test_long_form_length_of_a_short_container_decodes(version: Version) -> None:
    # X.691 says an encoder uses one octet below 128; a sender that writes 10xxxxxx xxxxxxxx
    # anyway is still unambiguous, so both paths read it to the same value.
    @given(msds(version))
    def check(msd: Msd) -> None:
        data = codec.encode(msd)
        if data[1] >= 0x80:
            return  # already the long form
        long_form = bytes([data[0], 0x80, data[1]]) + data[2:]
        assert codec.decode(long_form) == msd
        assert codec._FAST[version].decode(long_form) == msd
        assert codec.decode(long_form).raw == long_form

    check()


def _damaged(data: bytes, flips: list[int], tail: bytes) -> bytes:
    out = bytearray(data)
    for bit in flips:
        out[bit // 8 % len(out)] ^= 0x80 >> (bit % 8)
    return bytes(out) + tail


_oad_octets = st.one_of(
    st.binary(max_size=12),
    # Valid encodings with a few bits flipped and maybe an octet more: near the edge of validity.
    st.builds(
        _damaged,
        st.one_of(era_additional_data(1), era_additional_data(2), inc_infos()).map(oad.encode_oad),
        st.lists(st.integers(0, 95), max_size=3),
        st.sampled_from([b"", b"\x00", b"\x80"]),
    ),
)


@given(st.sampled_from(["1.4.1", "1.4.2", "8.1"]), _oad_octets)
def test_oad_fast_decoder_alone_decides(oid: str, data: bytes) -> None:
    # decode_oad trusts the generated decoder's "gave up" as "does not decode": the interpreted
    # parse must agree on every input, and asn1tools must read what decodes to the same value.
    decoded = oad.decode_oad(oid, data)
    assert decoded == oad._decode_interpreted(oid, data)
    if decoded is not None:
        assert oracle.decode_oad(oid, data) == oad.oad_to_json(decoded)
