"""render_json's encoder (orjson) against the stdlib encoder it replaced: the same value for every snapshot.

The stdlib call below is what render_json did before; it stays here as the oracle, not in the product.
Where the two differ by design (NaN and infinities, integers beyond 64 bits, non-str keys), the tests
pin down what render_json does instead.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecallgw.codecs.document import _dump_json, iso_time, json_document, render_json
from ecallgw.errors import EncodeError
from ecallgw.model import IncidentSnapshot, Position, Reason
from tests.codecs._snapshot_strategies import snapshots, times
from tests.codecs.test_document_json import golden_snapshot

T = 1_764_158_401.0
INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1


def stdlib_render(snapshot: IncidentSnapshot, *, forwarded_at: float) -> bytes:
    """render_json as it was: the pure-Python encoder path of json.dumps."""
    doc = json_document(snapshot, forwarded_at=forwarded_at)
    return json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def assert_same_value(ours: bytes, oracle: bytes) -> None:
    ours_value, oracle_value = json.loads(ours), json.loads(oracle)
    assert ours_value == oracle_value
    # repr also tells 1 from 1.0 and -0.0 from 0.0 (both == equal) and shows the key order.
    assert repr(ours_value) == repr(oracle_value)


# --- Same value as the stdlib encoder -------------------------------------------------------------------

# Past what triage produces, to reach the encoders' edges: integers over the whole 64-bit range orjson
# writes, any finite float (tiny ones are written 0.00001 by orjson and 1e-05 by the stdlib, huge
# ones with exponents), -0.0, text with controls, U+2028 and non-BMP characters.
any_float = st.floats(allow_nan=False, allow_infinity=False)
int64 = st.integers(INT64_MIN, UINT64_MAX)
odd_text = st.text() | st.sampled_from(["\u2028\u2029", '\x7f\x00\x1f"\\/', "\U0010ffff", "é"])

wide_positions = st.builds(
    Position,
    lat=st.floats(-90, 90) | st.sampled_from([-0.0, 90.0, -180 / 2, 1e-300]),
    lon=st.floats(-180, 180),
    trusted=st.booleans(),
    source=st.sampled_from(["msd", "nmea"]),
    at=st.none() | st.floats(0, 253402214399.0),
    quality=st.none() | odd_text,
    heading_deg=st.none() | any_float,
    speed_kmh=st.none() | any_float,
    altitude_m=st.none() | any_float,
    satellites=st.none() | int64,
    hdop=st.none() | any_float,
)


@st.composite
def wide_snapshots(draw: st.DrawFn) -> IncidentSnapshot:
    s = draw(snapshots())
    return replace(
        s,
        revision=draw(int64),
        severity=replace(s.severity, score=draw(int64)),
        call_id=draw(odd_text),
        position=draw(st.none() | wide_positions),
        reasons=tuple(draw(st.lists(st.builds(Reason, code=odd_text, text=odd_text), max_size=3))),
    )


@given(snapshots(), times)
def test_documents_parse_to_what_the_stdlib_encoder_gave(snapshot: IncidentSnapshot, at: float) -> None:
    assert_same_value(render_json(snapshot, forwarded_at=at), stdlib_render(snapshot, forwarded_at=at))


@given(wide_snapshots(), times)
def test_documents_at_the_encoders_edges_parse_to_the_same_value(
    snapshot: IncidentSnapshot, at: float
) -> None:
    ours = render_json(snapshot, forwarded_at=at)
    assert_same_value(ours, stdlib_render(snapshot, forwarded_at=at))
    ours.decode("utf-8")


@pytest.mark.parametrize("value", [INT64_MIN, -1, 0, 2**53 + 1, 2**63, UINT64_MAX])
def test_integers_of_the_64_bit_range_are_written_exactly(value: int) -> None:
    s = replace(golden_snapshot(), revision=value)
    assert_same_value(render_json(s, forwarded_at=T), stdlib_render(s, forwarded_at=T))
    assert json.loads(render_json(s, forwarded_at=T))["revision"] == value


# --- Where the encoders differ, render_json keeps the old contract or refuses -------------------------


# Decision: an integer orjson cannot write (beyond -2**63..2**64-1) is an EncodeError. The stdlib
# wrote it; but a revision, score or satellite count that large is a bug of ours, and JavaScript or
# Java receivers could not read it exactly. The forwarder dead-letters the document (reason "render").
@given(
    st.sampled_from(["revision", "score", "satellites"]),
    st.integers(min_value=UINT64_MAX + 1) | st.integers(max_value=INT64_MIN - 1),
)
def test_integers_beyond_64_bits_raise_encode_error(field: str, value: int) -> None:
    s = golden_snapshot()
    position = s.position
    assert position is not None
    if field == "revision":
        s = replace(s, revision=value)
    elif field == "score":
        s = replace(s, severity=replace(s.severity, score=value))
    else:
        s = replace(s, position=replace(position, satellites=value))
    assert str(value).encode() in stdlib_render(s, forwarded_at=T)  # the old encoder wrote it
    with pytest.raises(EncodeError, match="64-bit"):
        render_json(s, forwarded_at=T)


FLOAT_FIELDS = ["lat", "lon", "heading_deg", "speed_kmh", "altitude_m", "hdop", "at"]
TIME_FIELDS = ["received_at", "updated_at", "forwarded_at"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("field", FLOAT_FIELDS + TIME_FIELDS)
def test_nan_and_infinity_in_any_float_raise_encode_error(field: str, value: float) -> None:
    # orjson writes NaN and infinities as null where allow_nan=False raised, so json_document must
    # refuse every non-finite float before the encoder sees it: one row per float of the document.
    assert orjson.dumps(value) == b"null"
    s, at = golden_snapshot(), T
    assert s.position is not None
    change: dict[str, Any] = {field: value}
    if field in FLOAT_FIELDS:
        s = replace(s, position=replace(s.position, **change))
    elif field == "forwarded_at":
        at = value
    else:
        s = replace(s, **change)
    with pytest.raises(EncodeError):
        json_document(s, forwarded_at=at)
    with pytest.raises(EncodeError):
        render_json(s, forwarded_at=at)


def test_text_that_is_not_unicode_raises_encode_error_as_before() -> None:
    s = replace(golden_snapshot(), reasons=(Reason(code="x", text="lone \ud800 surrogate"),))
    with pytest.raises(UnicodeEncodeError):  # a ValueError: the old render_json made it EncodeError
        stdlib_render(s, forwarded_at=T)
    with pytest.raises(EncodeError, match="surrogates"):
        render_json(s, forwarded_at=T)


@pytest.mark.parametrize(
    "doc",
    [
        {1: "x"},  # the stdlib wrote "1": json_document's keys are literals, so this is a bug
        {"a": {None: 1}},
        {"a": [object()]},  # not a JSON type (the stdlib raised TypeError, an unhandled crash)
    ],
    ids=["int-key", "none-key", "object"],
)
def test_what_orjson_refuses_is_an_encode_error(doc: dict[str, Any]) -> None:
    with pytest.raises(EncodeError, match="incident document"):
        _dump_json(doc)


# --- iso_time: its fast path against datetime ----------------------------------------------------------


def _iso_reference(t: float) -> str:
    when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=round(t * 1000))
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Seconds(float):
    """A float subclass: takes the full check, not the fast path."""


@given(st.floats(0, 253402214399.0) | st.integers(0, 253402214399) | st.floats(0, 1e10).map(_Seconds))
def test_iso_time_is_the_utc_time_to_the_millisecond(t: float) -> None:
    assert iso_time(t) == _iso_reference(t)


@pytest.mark.parametrize(
    "bad",
    [math.nan, math.inf, -math.inf, -0.001, 253402214400.0, True, "1764158400", None, _Seconds(math.nan)],
    ids=["nan", "inf", "-inf", "negative", "year-9999-end", "bool", "str", "none", "nan-subclass"],
)
def test_iso_time_refuses_what_is_not_a_time_in_range(bad: Any) -> None:
    with pytest.raises(EncodeError):
        iso_time(bad)
