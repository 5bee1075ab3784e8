"""The position a caller sends through a location link (issue 14), as the gateway journals it.

The public page posts ``{lat, lon, accuracy_m}``; the gateway adds the incident's call and the time
and journals the JSON below (transport ``link``, kind ``link_position``), so a replay decodes it like
any other signal. Pure: no clock, no I/O.

=========== =========================================================================
key         value
=========== =========================================================================
call_id     the incident's primary call (the position joins that call)
sent_at     when the caller's page sent it (epoch seconds, the gateway's clock)
lat, lon    WGS84 degrees
accuracy_m  the browser's stated accuracy (95 %), metres, 0 < accuracy_m <= 100000
=========== =========================================================================
"""

from __future__ import annotations

import json
import math
from typing import Any

from ecallgw.errors import DecodeError
from ecallgw.model import Position, PositionSignal

__all__ = ["LINK_POSITION", "TRUSTED_ACCURACY_M", "decode_link_position", "encode_link_position"]

LINK_POSITION = "link_position"
TRUSTED_ACCURACY_M = 150.0
"""A browser fix this accurate counts as trusted: EN 15722's positionCanBeTrusted means ±150 m."""


def _number(d: dict[str, Any], key: str, lo: float, hi: float) -> float:
    v = d.get(key)
    # The range test comes first: it is exact for an int of any size (math.isfinite would raise
    # OverflowError converting a 400-digit one) and false for NaN.
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi or not math.isfinite(v):
        raise DecodeError("link", f"{key} must be a number in [{lo:g}, {hi:g}]", path=key)
    return float(v)


def check_position(d: Any) -> tuple[float, float, float]:
    """(lat, lon, accuracy_m) of what a caller's page posted; `DecodeError` naming the field."""
    if not isinstance(d, dict):
        raise DecodeError("link", "the position must be a JSON object {lat, lon, accuracy_m}")
    lat = _number(d, "lat", -90.0, 90.0)
    lon = _number(d, "lon", -180.0, 180.0)
    acc = _number(d, "accuracy_m", 0.0, 100_000.0)
    return lat, lon, acc


def encode_link_position(call_id: str, sent_at: float, lat: float, lon: float, accuracy_m: float) -> bytes:
    """The journaled payload of one shared position."""
    body = {"call_id": call_id, "sent_at": sent_at, "lat": lat, "lon": lon, "accuracy_m": accuracy_m}
    return json.dumps(body, separators=(",", ":")).encode()


def decode_link_position(tps: str, vehicle: str, payload: bytes) -> PositionSignal:
    """The position signal of a journaled link position (source ``caller_link``)."""
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError("link", "not JSON") from exc
    lat, lon, acc = check_position(d)
    call_id = d.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise DecodeError("link", "call_id must be a non-empty string", path="call_id")
    sent_at = _number(d, "sent_at", 0.0, 253402300799.0)
    position = Position(
        lat=lat,
        lon=lon,
        trusted=acc <= TRUSTED_ACCURACY_M,
        source="caller_link",
        at=sent_at,
        quality="browser",
        accuracy_m=acc,
    )
    return PositionSignal(tps=tps, vehicle=vehicle, call_id=call_id, sent_at=sent_at, position=position)
