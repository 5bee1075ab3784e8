"""Damaged and random inputs: the MSD decoder raises DecodeError and nothing else, never guesses.

The long run (1,000,000 inputs) is bench/msd_fuzz.py; these are CI-sized.
"""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecallgw.codecs import msd as codec
from ecallgw.errors import DecodeError, EncodeError
from ecallgw.model import Msd
from tests.codecs._strategies import MUTATIONS, msds, mutate, random_msd


def check(data: bytes) -> bool:
    """Decode ``data``; True if it decoded. Fails the test on any exception but DecodeError, or
    when the generated fast path and the interpreted schema disagree."""
    fast = codec._FAST.get(data[0]) if data else None
    fast_value = fast.decode(data) if fast is not None else None
    try:
        value = codec.decode(data)
    except DecodeError as error:
        assert fast_value is None  # the fast path never accepts what the schema refuses
        assert error.codec == "msd"
        assert error.bit_offset is None or 0 <= error.bit_offset <= 8 * len(data)
        return False
    assert value == codec._decode_interpreted(data)
    assert fast_value is None or fast_value == value
    assert value.raw == data
    codec.to_json_dict(value)  # a decoded MSD always has a JSON form
    return True


@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    check(data)


@given(st.sampled_from((1, 2, 3)), st.binary(max_size=160))
def test_random_bytes_behind_a_version(version: int, body: bytes) -> None:
    check(bytes([version]) + body)


@given(msds(), st.sampled_from(MUTATIONS), st.randoms(use_true_random=False))
def test_mutated_msds(msd: Msd, kind: str, rng: random.Random) -> None:
    data = codec.encode(msd) if rng.random() < 0.7 else codec.encode(msd, canonical=False)
    check(mutate(rng, data, kind))


@pytest.mark.parametrize("kind", MUTATIONS)
def test_seeded_mutations(kind: str) -> None:
    rng = random.Random(f"msd-fuzz-{kind}")
    decoded = 0
    for _ in range(400):
        data = codec.encode(random_msd(rng, rng.choice((1, 2, 3))))
        decoded += check(mutate(rng, data, kind))
    if kind == "truncate":
        assert decoded == 0  # every truncation loses data bits: nothing may decode
    elif kind in ("random", "append"):
        assert decoded < 400  # zero fill of a 140-octet frame is the only tail accepted


def test_every_truncation_of_the_public_vector() -> None:
    from tests.codecs.test_msd_vectors import PUBLIC_BYTES

    for end in range(len(PUBLIC_BYTES)):
        with pytest.raises(DecodeError):
            codec.decode(PUBLIC_BYTES[:end])


def test_not_bytes() -> None:
    with pytest.raises(DecodeError):
        codec.decode("015c06")  # type: ignore[arg-type]
    assert check(bytearray(codec.encode(random_msd(random.Random(1), 2))))  # type: ignore[arg-type]


def test_oversized_input() -> None:
    data = codec.encode(random_msd(random.Random(2), 1))
    with pytest.raises(DecodeError, match="longer than any MSD"):
        codec.decode(data + bytes(codec.MAX_OCTETS))


_json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=20), st.floats(allow_nan=False)
)
_json_values = st.recursive(
    _json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _replace_leaf(value: object, rng: random.Random, new: object) -> object:
    """A copy of a JSON value with one randomly chosen member replaced by ``new``."""
    if isinstance(value, dict) and value:
        key = rng.choice(sorted(value))
        if rng.random() < 0.3:
            return {**value, key: new}
        return {**value, key: _replace_leaf(value[key], rng, new)}
    return new


@given(_json_values)
def test_from_json_dict_random_json(value: object) -> None:
    with contextlib.suppress(DecodeError):  # and nothing else
        codec.from_json_dict(value)  # type: ignore[arg-type]


@given(msds(), _json_values, st.randoms(use_true_random=False))
def test_from_json_dict_damaged_json(msd: Msd, new: object, rng: random.Random) -> None:
    damaged = _replace_leaf(codec.to_json_dict(msd), rng, new)
    try:
        value = codec.from_json_dict(damaged)  # type: ignore[arg-type]
    except DecodeError:
        return
    with contextlib.suppress(EncodeError):  # a shape-valid value out of range: EncodeError only
        codec.encode(value)


def _with_oid_octets(version: int, octets: bytes) -> bytes:
    """A valid MSD of ``version`` whose RELATIVE-OID contents are ``octets``, written by asn1tools."""
    from tests.codecs import _oracle as oracle
    from tests.codecs.test_msd_vectors import _v2_json

    spec = oracle._spec(version)
    message = spec.decode("MSDMessage", oracle.encode_message(2, _v2_json()["msd"]))
    message["optionalAdditionalData"] = {"oid": octets, "data": b"\x01"}
    inner: bytes = spec.encode("MSDMessage", message)
    length = bytes([len(inner)]) if len(inner) < 128 else bytes([0x80 | len(inner) >> 8, len(inner) & 0xFF])
    return bytes([version]) + length + inner


_oid_octets = st.one_of(
    st.binary(max_size=12),
    st.lists(st.sampled_from((0x00, 0x01, 0x7F, 0x80, 0x81, 0xFF)), max_size=24).map(bytes),
    # One long arc, open or closed: must be refused quickly, not converted to 20,000 digits.
    st.tuples(st.integers(1, 3000), st.sampled_from((b"", b"\x7f"))).map(lambda t: b"\xff" * t[0] + t[1]),
)


@given(_oid_octets)
def test_any_oid_contents(octets: bytes) -> None:
    # Every RELATIVE-OID contents either decodes to the arcs an independent reader finds (below
    # 2^64 each) or is a DecodeError naming the OID; the fast path agrees with the schema.
    from tests.codecs import _oracle as oracle

    data = _with_oid_octets(2, octets)
    if check(data):
        oid = codec.decode(data).msd.optional_additional_data.oid  # type: ignore[union-attr]
        assert oid == oracle.oid_arcs(octets)
        assert all(int(arc) < 2**64 for arc in oid.split("."))
    else:
        with pytest.raises(DecodeError) as info:
            codec.decode(data)
        assert info.value.path == "msd.optionalAdditionalData.oid"
