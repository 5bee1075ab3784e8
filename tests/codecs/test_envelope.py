"""Provider envelopes: round trips, every key's checks, unknown keys, and fuzzing (only DecodeError)."""

from __future__ import annotations

import functools
import json
import math
import operator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ecallgw.codecs import msd as msd_codec
from ecallgw.codecs.envelope import (
    MAX_CALL_ID_CHARS,
    MAX_ENVELOPE_BYTES,
    MAX_MSD_BYTES,
    decode_envelope,
    decode_raw_msd,
    encode_envelope,
    signal_kind,
)
from ecallgw.codecs.nmea import encode_gga
from ecallgw.errors import DecodeError, EncodeError
from ecallgw.model import CancelSignal, Msd, MsdSignal, Position, PositionSignal
from tests.codecs._strategies import msds

VECTORS = json.loads((Path(__file__).parent / "vectors" / "msd-public.json").read_text())
RAW = bytes.fromhex(VECTORS[0]["hex"])
SENT_AT = 1_764_158_400.25  # 2025-11-26 12:00:00.25 UTC
# A fix 2.25 s before SENT_AT; the checksum computed here, independently of the codec.
_GGA_BODY = "GPGGA,115958.00,4807.03800,N,01131.00000,E,1,08,0.9,545.4,M,,,,"
GGA = f"${_GGA_BODY}*{functools.reduce(operator.xor, _GGA_BODY.encode(), 0):02X}"


def pack(**fields: Any) -> bytes:
    out: bytes = msgpack.packb(fields, use_bin_type=True)
    return out


def msd_body(**overrides: Any) -> dict[str, Any]:
    return {"call_id": "call-1", "sent_at": SENT_AT, "msd": RAW} | overrides


def decode_error(kind: str, payload: bytes, tps: str = "tps1", vehicle: str = "veh-1") -> DecodeError:
    with pytest.raises(DecodeError) as err:
        decode_envelope(kind, tps, vehicle, payload)
    return err.value


# --- What arrives ----------------------------------------------------------------------------------


def test_msd_envelope_decodes_with_the_raw_bytes_kept() -> None:
    s = decode_envelope("msd", "tps1", "veh-1", pack(**msd_body(callback="+4930123456", lang="de-AT")))
    assert isinstance(s, MsdSignal)
    assert (s.tps, s.vehicle, s.call_id, s.sent_at) == ("tps1", "veh-1", "call-1", SENT_AT)
    assert (s.callback, s.lang) == ("+4930123456", "de-AT")
    assert s.msd == msd_codec.decode(RAW)
    assert s.msd.raw == RAW


def test_msd_in_a_zero_filled_frame_keeps_the_frame_as_raw() -> None:
    # In-band modems send a 140-octet frame; the document must carry exactly what came.
    frame = RAW + bytes(MAX_MSD_BYTES - len(RAW))
    s = decode_envelope("msd", "t", "v", pack(**msd_body(msd=frame)))
    assert isinstance(s, MsdSignal)
    assert s.msd.raw == frame
    assert msgpack.unpackb(encode_envelope(s))["msd"] == frame


def test_cancel_and_position_envelopes_decode() -> None:
    c = decode_envelope("cancel", "t", "v", pack(call_id="c", sent_at=5, reason="driver pressed cancel"))
    assert c == CancelSignal(tps="t", vehicle="v", call_id="c", sent_at=5.0, reason="driver pressed cancel")
    assert isinstance(c.sent_at, float)
    p = decode_envelope("position", "t", "v", pack(call_id="c", sent_at=SENT_AT, nmea=GGA))
    assert isinstance(p, PositionSignal)
    assert p.position.source == "nmea"
    assert p.position.at == SENT_AT - 2.25  # the time of day took sent_at's date
    assert p.position.lat == pytest.approx(48 + 7.038 / 60)


def test_unknown_keys_are_tolerated_and_nil_optional_keys_are_absent() -> None:
    body = msd_body(provider_ext={"a": [1, 2.0, None]}, callback=None, lang=None, **{"": b"x"})
    s = decode_envelope("msd", "t", "v", pack(**body))
    assert isinstance(s, MsdSignal)
    assert (s.callback, s.lang) == (None, None)
    # non-text keys are unknown keys too
    raw_map = b"\x84" + pack(**msd_body())[1:] + b"\xc4\x01k\x01"
    assert isinstance(decode_envelope("msd", "t", "v", raw_map), MsdSignal)


# --- What is refused, naming the key -----------------------------------------------------------------

BAD: list[tuple[str, dict[str, Any], str, str]] = [
    # (kind, body, path, words in the reason) - one problem each
    ("msd", {"sent_at": SENT_AT, "msd": RAW}, "call_id", "missing"),
    ("msd", msd_body(call_id=None), "call_id", "missing"),
    ("msd", msd_body(call_id=7), "call_id", "not int"),
    ("msd", msd_body(call_id=b"call-1"), "call_id", "not bin"),
    ("msd", msd_body(call_id=""), "call_id", "outside 1..128"),
    ("msd", msd_body(call_id="x" * (MAX_CALL_ID_CHARS + 1)), "call_id", "outside 1..128"),
    ("msd", msd_body(call_id="a\nb"), "call_id", "control"),
    ("msd", msd_body(sent_at="1764158400"), "sent_at", "not str"),
    ("msd", msd_body(sent_at=True), "sent_at", "not bool"),
    ("msd", msd_body(sent_at=math.nan), "sent_at", "not finite"),
    ("msd", msd_body(sent_at=math.inf), "sent_at", "not finite"),
    ("msd", msd_body(sent_at=-1), "sent_at", "outside"),
    ("msd", msd_body(sent_at=1e13), "sent_at", "outside"),
    ("msd", msd_body(sent_at=[1]), "sent_at", "not array"),
    ("msd", msd_body(sent_at=msgpack.ExtType(5, b"x")), "sent_at", "not ext type 5"),
    ("msd", {"call_id": "c", "sent_at": 1}, "msd", "missing"),
    ("msd", msd_body(msd=RAW.hex()), "msd", "not str"),
    ("msd", msd_body(msd=b""), "msd", "outside 1..140"),
    ("msd", msd_body(msd=RAW + bytes(MAX_MSD_BYTES + 1 - len(RAW))), "msd", "outside 1..140"),
    ("cancel", {"call_id": "c", "sent_at": 1, "reason": 3}, "reason", "not int"),
    ("cancel", {"call_id": "c", "sent_at": 1, "reason": "r" * 513}, "reason", "exceeds 512"),
    ("cancel", {"call_id": "c", "sent_at": 1, "reason": "a\x00b"}, "reason", "control"),
    ("cancel", {"sent_at": 1}, "call_id", "missing"),
    ("position", {"call_id": "c", "sent_at": 1}, "nmea", "missing"),
    ("position", {"call_id": "c", "sent_at": 1, "nmea": GGA.encode()}, "nmea", "not bin"),
    ("position", {"call_id": "c", "sent_at": 1, "nmea": "\r\n".join([GGA] * 60)}, "nmea", "exceeds 4096"),
]


# Malformed optional call details must not cost the emergency: the MSD goes through without them.
LENIENT: list[tuple[dict[str, Any], str, str | None]] = [
    # (body, the key that is left out, the other key's value, which must survive)
    (msd_body(callback="030 123456", lang="de"), "callback", "de"),  # national format, not E.164
    (msd_body(callback="+0301234", lang="de"), "callback", "de"),  # no leading zero after the plus
    (msd_body(callback=4930123456, lang="de"), "callback", "de"),  # a number, not a string
    (msd_body(lang="deutsch österreich", callback="+4930123456"), "lang", "+4930123456"),  # not BCP 47
    (msd_body(lang="en-" + "a" * 40, callback="+4930123456"), "lang", "+4930123456"),  # over 35 chars
]


@pytest.mark.parametrize(
    ("body", "dropped", "kept"), LENIENT, ids=["cb-national", "cb-zero", "cb-int", "lang-words", "lang-long"]
)
def test_malformed_optional_call_details_are_left_out_not_refused(
    body: dict[str, Any], dropped: str, kept: str | None
) -> None:
    s = decode_envelope("msd", "tps1", "veh-1", pack(**body))
    assert isinstance(s, MsdSignal)
    assert s.msd == msd_codec.decode(RAW)
    values = {"callback": s.callback, "lang": s.lang}
    assert values.pop(dropped) is None
    assert next(iter(values.values())) == kept


@pytest.mark.parametrize(("kind", "body", "path", "why"), BAD, ids=[f"{b[0]}-{b[2]}-{b[3]}" for b in BAD])
def test_bad_value_is_refused_naming_its_key(kind: str, body: dict[str, Any], path: str, why: str) -> None:
    err = decode_error(kind, pack(**body))
    assert (err.codec, err.path) == ("envelope", path)
    assert why in err.reason


NOT_AN_ENVELOPE = [
    (b"", "empty"),
    (b"\xc1", "not one msgpack value"),  # 0xc1 is never used in msgpack
    (b"\x82\xa1a", "not one msgpack value"),  # truncated
    (msgpack.packb([1, 2]), "must be a msgpack map, not array"),
    (msgpack.packb("call_id"), "must be a msgpack map, not str"),
    (pack(**msd_body()) + b"\x00", "bytes after"),
    (b"\x81\x01\x02", "not one msgpack value"),  # int key
    (b"\x81\x91\x01\x02", "not one msgpack value"),  # array key
    (b"\x91" * 2000 + b"\x00", "not one msgpack value"),  # nesting deeper than the unpacker's stack
    (b"\x81\xa1a\xa2\xff\xfe", "not valid UTF-8"),
    (b"\x00" * (MAX_ENVELOPE_BYTES + 1), "exceeds"),
]


@pytest.mark.parametrize(("payload", "why"), NOT_AN_ENVELOPE, ids=[n[1] for n in NOT_AN_ENVELOPE])
def test_payload_that_is_not_a_map_is_refused(payload: bytes, why: str) -> None:
    err = decode_error("msd", payload)
    assert (err.codec, err.path) == ("envelope", "")
    assert why in err.reason


def test_a_key_given_twice_is_refused() -> None:
    twice = b"\x84" + pack(**msd_body())[1:] + msgpack.packb("call_id") + msgpack.packb("other")
    err = decode_error("msd", twice)
    assert (err.path, err.reason) == ("call_id", "key appears more than once")


@pytest.mark.parametrize(
    ("kind", "tps", "vehicle", "path"),
    [
        ("alert", "t", "v", "kind"),
        ("msd", "", "v", "tps"),
        ("msd", "t/x", "v", "tps"),
        ("msd", "t", "v" * 65, "vehicle"),
        ("msd", "t", "vé", "vehicle"),
        ("msd", "t", "+", "vehicle"),
    ],
)
def test_kind_tps_and_vehicle_are_checked(kind: str, tps: str, vehicle: str, path: str) -> None:
    assert decode_error(kind, pack(**msd_body()), tps, vehicle).path == path


def test_inner_payload_errors_come_from_the_inner_codec() -> None:
    err = decode_error("msd", pack(**msd_body(msd=b"\x09" + RAW[1:])))
    assert err.codec == "msd"
    err = decode_error("msd", pack(**msd_body(msd=RAW[:20])))
    assert err.codec == "msd"
    assert err.bit_offset is not None
    err = decode_error("position", pack(call_id="c", sent_at=1, nmea=GGA[:-1] + "0"))
    assert err.codec == "nmea"
    assert "checksum" in err.reason


# --- The HTTP raw MSD body ------------------------------------------------------------------------------


def test_raw_msd_body_decodes() -> None:
    s = decode_raw_msd("tps1", "veh-1", "call-9", RAW, sent_at=SENT_AT)
    assert s == MsdSignal(tps="tps1", vehicle="veh-1", call_id="call-9", sent_at=SENT_AT, msd=s.msd)
    assert s.msd.raw == RAW
    assert s.msd == msd_codec.decode(RAW)


@pytest.mark.parametrize(
    ("args", "path", "codec"),
    [
        (("t", "v", "", RAW), "call_id", "envelope"),
        (("t", "v", "c", b""), "msd", "envelope"),
        (("t", "v", "c", bytes(141)), "msd", "envelope"),
        (("t?", "v", "c", RAW), "tps", "envelope"),
        (("t", "v", "c", RAW[:-10]), None, "msd"),
    ],
)
def test_raw_msd_body_is_checked(args: tuple[str, str, str, bytes], path: str | None, codec: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_raw_msd(*args, sent_at=SENT_AT)
    assert err.value.codec == codec
    if path is not None:
        assert err.value.path == path


# --- Encoding for simulators ----------------------------------------------------------------------


call_ids = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=MAX_CALL_ID_CHARS
).filter(lambda s: not any(0x80 <= ord(c) <= 0x9F for c in s))
names = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
sent_ats = st.floats(0, 4e9) | st.integers(0, 2**32)


@given(names, names, call_ids, sent_ats, st.none() | st.from_regex(r"\+[1-9][0-9]{1,14}", fullmatch=True))
def test_msd_signal_round_trips(tps: str, vehicle: str, call_id: str, sent_at: float, cb: str | None) -> None:
    msd = msd_codec.decode(RAW)
    s = MsdSignal(tps=tps, vehicle=vehicle, call_id=call_id, sent_at=float(sent_at), msd=msd, callback=cb)
    back = decode_envelope(signal_kind(s), tps, vehicle, encode_envelope(s))
    assert back == s
    assert isinstance(back, MsdSignal)
    assert back.msd.raw == RAW


@given(msds(), st.booleans())
def test_any_msd_round_trips_with_its_bytes(msd: Msd, framed: bool) -> None:
    raw = msd_codec.encode(msd)
    # The MSD strategy covers the ASN.1 space; EN 15722 (and the envelope) caps an MSD at 140 bytes.
    assume(len(raw) <= MAX_MSD_BYTES)
    if framed:
        raw += bytes(MAX_MSD_BYTES - len(raw))  # in-band modem frame: zero fill to 140 octets
    s = MsdSignal(tps="t", vehicle="v", call_id="c", sent_at=SENT_AT, msd=replace(msd, raw=raw))
    back = decode_envelope("msd", "t", "v", encode_envelope(s))
    assert back == s
    assert isinstance(back, MsdSignal)
    assert back.msd.raw == raw


@given(names, names, call_ids, sent_ats, st.none() | st.text(max_size=40).filter(str.isprintable))
def test_cancel_signal_round_trips(
    tps: str, vehicle: str, call_id: str, sent_at: float, reason: str | None
) -> None:
    s = CancelSignal(tps=tps, vehicle=vehicle, call_id=call_id, sent_at=float(sent_at), reason=reason)
    assert decode_envelope("cancel", tps, vehicle, encode_envelope(s)) == s


@given(
    call_ids,
    st.floats(1e9, 4e9),
    st.floats(-90, 90),
    st.floats(-180, 180),
    st.none() | st.floats(-3600, 0),
)
def test_position_signal_round_trips(
    call_id: str, sent_at: float, lat: float, lon: float, age: float | None
) -> None:
    at = None if age is None else sent_at + age
    pos = Position(lat=lat, lon=lon, trusted=True, source="nmea", at=at, quality="gps")
    s = PositionSignal(tps="t", vehicle="v", call_id=call_id, sent_at=sent_at, position=pos)
    back = decode_envelope("position", "t", "v", encode_envelope(s))
    assert isinstance(back, PositionSignal)
    assert (back.call_id, back.sent_at) == (call_id, sent_at)
    assert (back.position.lat, back.position.lon) == pytest.approx((lat, lon), abs=2e-7)
    assert back.position.at == pytest.approx(sent_at if at is None else at, abs=0.006)


def test_position_signal_sends_the_given_sentences() -> None:
    pos = Position(lat=1.0, lon=2.0, trusted=True, source="nmea")
    s = PositionSignal(tps="t", vehicle="v", call_id="c", sent_at=SENT_AT, position=pos)
    nmea = encode_gga(pos, at=SENT_AT, talker="GN")
    assert msgpack.unpackb(encode_envelope(s, nmea=nmea)) == {
        "call_id": "c",
        "sent_at": SENT_AT,
        "nmea": nmea,
    }


@pytest.mark.parametrize(
    "signal",
    [
        CancelSignal(tps="t", vehicle="v", call_id="", sent_at=1.0),
        CancelSignal(tps="t t", vehicle="v", call_id="c", sent_at=1.0),
        CancelSignal(tps="t", vehicle="v", call_id="c", sent_at=math.nan),
        CancelSignal(tps="t", vehicle="v", call_id="c", sent_at=1.0, reason="x" * 600),
        MsdSignal(tps="t", vehicle="v", call_id="c", sent_at=1.0, msd=msd_codec.decode(RAW), lang="?"),
    ],
    ids=["empty-call-id", "tps", "sent-at", "reason", "lang"],
)
def test_encoder_refuses_what_the_decoder_would(signal: MsdSignal | CancelSignal) -> None:
    with pytest.raises(EncodeError):
        encode_envelope(signal)


def test_nmea_only_goes_with_a_position_signal() -> None:
    with pytest.raises(EncodeError):
        encode_envelope(CancelSignal(tps="t", vehicle="v", call_id="c", sent_at=1.0), nmea=GGA)


# --- Fuzzing: only DecodeError ----------------------------------------------------------------------------

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=160),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=12,
)
envelope_like = st.fixed_dictionaries(
    {},
    optional={
        "call_id": msgpack_values,
        "sent_at": msgpack_values,
        "msd": st.binary(min_size=1, max_size=140) | st.just(RAW) | msgpack_values,
        "callback": msgpack_values,
        "lang": msgpack_values,
        "reason": msgpack_values,
        "nmea": msgpack_values | st.just(GGA),
    },
)


def _only_decode_error(kind: str, payload: bytes) -> None:
    try:
        decode_envelope(kind, "t", "v", payload)
    except DecodeError as exc:
        assert exc.codec in ("envelope", "msd", "nmea")


@given(st.sampled_from(["msd", "cancel", "position"]), envelope_like | msgpack_values)
def test_fuzzed_envelope_values_raise_only_decode_error(kind: str, body: Any) -> None:
    _only_decode_error(kind, msgpack.packb(body, use_bin_type=True))


@given(st.sampled_from(["msd", "cancel", "position"]), st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(kind: str, payload: bytes) -> None:
    _only_decode_error(kind, payload)


@given(
    st.sampled_from([("msd", pack(**msd_body())), ("position", pack(call_id="c", sent_at=1, nmea=GGA))]),
    st.data(),
)
def test_mutated_envelopes_raise_only_decode_error(case: tuple[str, bytes], data: st.DataObject) -> None:
    kind, payload = case
    buf = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        i = data.draw(st.integers(0, len(buf) - 1), label="index")
        buf[i] = data.draw(st.integers(0, 255), label="byte")
    _only_decode_error(kind, bytes(buf))


def test_an_unknown_key_given_twice_is_not_named() -> None:
    # An unknown key is the sender's text (here a VIN): it must not become the error's path.
    vin = "WVWZZZ1JZXW000001"
    twice = b"\x85" + pack(**msd_body())[1:] + (msgpack.packb(vin) + msgpack.packb(1)) * 2
    err = decode_error("msd", twice)
    assert (err.codec, err.path) == ("envelope", "")
    assert vin not in str(err)
