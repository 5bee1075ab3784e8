"""Decode and encode the provider envelopes (msgpack maps) that carry MSDs, cancels and positions.

The envelope is the contract of docs/interfaces.md §"Ingest over MQTT": topic
``ecall/v1/{tps}/{vehicle}/{kind}`` (or the HTTP path) names the provider, the vehicle and the kind;
the body is one msgpack map. Bounds and rules (docs/documents.md §Envelopes):

========== ======================== ===========================================================
key        kinds                    accepted value
========== ======================== ===========================================================
call_id    msd, cancel, position    str, 1..128 characters, no control characters
sent_at    msd, cancel, position    int or float (not bool), finite, 0 ≤ sent_at < 9999-12-31
msd        msd                      bin, 1..140 bytes (the EN 15722 MSD size limit), as sent
callback   msd (optional)           str, E.164: ``+`` then 2..15 digits; any other value is left out
lang       msd (optional)           str, BCP 47 shape, at most 35 characters; else left out
reason     cancel (optional)        str, at most 512 characters, no control characters
nmea       position                 str, at most 4096 characters (decoded by codecs.nmea)
========== ======================== ===========================================================

The whole envelope is at most ``MAX_ENVELOPE_BYTES``. Keys not listed are tolerated and ignored (a
provider may add its own); a key given twice is refused, because which one counts would be a guess.
An optional key with value nil counts as absent. ``tps`` and ``vehicle`` must match
``[A-Za-z0-9_-]{1,64}``. Every problem raises ``DecodeError(codec="envelope", path=<key>)``; a bad
MSD or NMEA payload inside raises the inner codec's DecodeError ("msd" or "nmea").
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any, Literal

import msgpack

from ecallgw.codecs import msd as msd_codec
from ecallgw.codecs import nmea as nmea_codec
from ecallgw.errors import DecodeError, EncodeError
from ecallgw.model import CancelSignal, Msd, MsdSignal, PositionSignal, Signal

__all__ = [
    "ENVELOPE_KEYS",
    "KINDS",
    "MAX_CALL_ID_CHARS",
    "MAX_ENVELOPE_BYTES",
    "MAX_MSD_BYTES",
    "MAX_REASON_CHARS",
    "MAX_SENT_AT",
    "Kind",
    "decode_envelope",
    "decode_raw_msd",
    "encode_envelope",
    "signal_kind",
]

_CODEC = "envelope"

Kind = Literal["msd", "cancel", "position"]
KINDS: tuple[Kind, ...] = ("msd", "cancel", "position")

MAX_ENVELOPE_BYTES = 8192
"""Largest envelope accepted, in bytes (an MSD envelope is about 200; NMEA needs the rest)."""

MAX_MSD_BYTES = 140
"""Largest MSD accepted, in bytes: EN 15722 limits the encoded MSD to 140 bytes."""

MAX_CALL_ID_CHARS = 128
"""Longest call id accepted, in characters (a UUID is 36)."""

MAX_REASON_CHARS = 512
"""Longest cancel reason accepted, in characters."""

MAX_SENT_AT = 253402214400.0
"""sent_at must be below this (9999-12-31T00:00Z): the documents render times as ISO 8601."""

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_BCP47 = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")


ENVELOPE_KEYS = frozenset({"call_id", "sent_at", "msd", "callback", "lang", "reason", "nmea"})
"""Every key of the envelope contract (the only keys an error's ``path`` ever names)."""


class _Pairs(list[tuple[Any, Any]]):
    """A msgpack map as its key/value pairs, so that repeated keys can be seen."""


def _error(reason: str, path: str = "") -> DecodeError:
    return DecodeError(_CODEC, reason, path=path)


def _check_name(value: object, path: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _error(f"{path} {value!r:.80} does not match [A-Za-z0-9_-]{{1,64}}", path)
    return value


def _check_call_id(value: object, path: str = "call_id") -> str:
    if not isinstance(value, str):
        raise _error(f"must be a string, not {_typename(value)}", path)
    if not 1 <= len(value) <= MAX_CALL_ID_CHARS:
        raise _error(f"length {len(value)} is outside 1..{MAX_CALL_ID_CHARS}", path)
    if _CONTROL.search(value):
        raise _error("holds control characters", path)
    return value


def _check_sent_at(value: object, path: str = "sent_at") -> float:
    # bool is an int in Python but not a time; msgpack true/false must not pass as 1/0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _error(f"must be a number (epoch seconds), not {_typename(value)}", path)
    number = float(value)
    if not math.isfinite(number):
        raise _error(f"{value!r} is not finite", path)
    if not 0 <= number < MAX_SENT_AT:
        raise _error(f"{value!r} is outside 0..{MAX_SENT_AT:.0f} (1970 to 9999-12-31)", path)
    return number


def _check_msd_bytes(value: object, path: str = "msd") -> bytes:
    if not isinstance(value, bytes):
        raise _error(f"must be bin (the UPER MSD), not {_typename(value)}", path)
    if not 1 <= len(value) <= MAX_MSD_BYTES:
        raise _error(f"length {len(value)} bytes is outside 1..{MAX_MSD_BYTES}", path)
    return value


def _check_text(
    value: object, path: str, *, pattern: re.Pattern[str] | None, limit: int, lines: bool = False
) -> str:
    if not isinstance(value, str):
        raise _error(f"must be a string, not {_typename(value)}", path)
    if len(value) > limit:
        raise _error(f"length {len(value)} exceeds {limit}", path)
    if pattern is not None and not pattern.fullmatch(value):
        raise _error(f"{value!r:.80} does not have the expected form", path)
    # NMEA sentences are separated by line breaks; its codec checks the characters of each sentence.
    if not lines and _CONTROL.search(value):
        raise _error("holds control characters", path)
    return value


def _lenient(value: object, path: str, *, pattern: re.Pattern[str], limit: int) -> str | None:
    if value is None:
        return None
    try:
        return _check_text(value, path, pattern=pattern, limit=limit)
    except DecodeError:
        return None


def _typename(value: object) -> str:
    if isinstance(value, msgpack.ExtType):  # a namedtuple: test before the tuple check below
        return f"ext type {value.code}"
    return {bytes: "bin", str: "str", bool: "bool", int: "int", float: "float", type(None): "nil"}.get(
        type(value), "array" if isinstance(value, (list, tuple)) else type(value).__name__
    )


def _unpack(payload: bytes) -> dict[str, Any]:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise _error(f"payload must be bytes, not {type(payload).__name__}")
    if len(payload) > MAX_ENVELOPE_BYTES:
        raise _error(f"payload of {len(payload)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    if len(payload) == 0:
        raise _error("payload is empty")
    try:
        obj = msgpack.unpackb(
            bytes(payload),
            raw=False,
            strict_map_key=True,
            object_pairs_hook=_Pairs,
        )
    except msgpack.ExtraData as exc:
        raise _error("payload has bytes after the msgpack map") from exc
    except UnicodeDecodeError as exc:
        raise _error(f"a msgpack str is not valid UTF-8 at byte {exc.start}") from exc
    except (ValueError, msgpack.UnpackException) as exc:
        # FormatError, StackError, OutOfData, non-text map keys: the bytes are not one msgpack value.
        detail = f": {exc}" if str(exc) else ""
        raise _error(f"payload is not one msgpack value ({type(exc).__name__}{detail})") from exc
    if not isinstance(obj, _Pairs):
        raise _error(f"payload must be a msgpack map, not {_typename(obj)}")
    fields: dict[str, Any] = {}
    for key, value in obj:
        if not isinstance(key, str):
            continue  # unknown (non-text) key: tolerated like any other unknown key
        if key in fields:
            # Only a key of the contract is named: an unknown key is the sender's text (it may be
            # a VIN), and the path ends up in logs and metric labels.
            if key in ENVELOPE_KEYS:
                raise _error("key appears more than once", key)
            raise _error("an unknown key appears more than once")
        fields[key] = value
    return fields


def _required(fields: dict[str, Any], key: str) -> Any:
    if key not in fields or fields[key] is None:
        raise _error("required key is missing", key)
    return fields[key]


def _optional(fields: dict[str, Any], key: str) -> Any:
    return fields.get(key)


def decode_envelope(kind: str, tps: str, vehicle: str, payload: bytes) -> Signal:
    """Decode one envelope into a Signal.

    Args:
        kind: the last topic level or HTTP path segment: ``msd``, ``cancel`` or ``position``.
        tps: the provider, from the topic or path.
        vehicle: the provider's key for the vehicle, from the topic or path.
        payload: the msgpack body.

    Returns:
        An MsdSignal (MSD decoded, ``msd.raw`` = the bytes as sent), a CancelSignal, or a
        PositionSignal (NMEA decoded with ``reference_time=sent_at``).

    Raises:
        DecodeError: codec "envelope" with ``path`` naming the key (or "kind", "tps", "vehicle"),
            or the inner codec's error ("msd", "nmea") for a bad MSD or NMEA payload.
    """
    if kind not in KINDS:
        raise _error(f"kind {kind!r:.40} is not one of msd, cancel, position", "kind")
    tps = _check_name(tps, "tps")
    vehicle = _check_name(vehicle, "vehicle")
    fields = _unpack(payload)
    call_id = _check_call_id(_required(fields, "call_id"))
    sent_at = _check_sent_at(_required(fields, "sent_at"))
    if kind == "msd":
        raw = _check_msd_bytes(_required(fields, "msd"))
        callback = _optional(fields, "callback")
        lang = _optional(fields, "lang")
        # A malformed callback number or language tag must not cost the emergency: the MSD still
        # goes through and the bad optional value is left out (the raw envelope stays in the journal).
        callback = _lenient(callback, "callback", pattern=_E164, limit=16)
        lang = _lenient(lang, "lang", pattern=_BCP47, limit=35)
        return MsdSignal(
            tps=tps,
            vehicle=vehicle,
            call_id=call_id,
            sent_at=sent_at,
            msd=_decode_msd(raw),
            callback=callback,
            lang=lang,
        )
    if kind == "cancel":
        reason = _optional(fields, "reason")
        if reason is not None:
            reason = _check_text(reason, "reason", pattern=None, limit=MAX_REASON_CHARS)
        return CancelSignal(tps=tps, vehicle=vehicle, call_id=call_id, sent_at=sent_at, reason=reason)
    text = _check_text(
        _required(fields, "nmea"), "nmea", pattern=None, limit=nmea_codec.MAX_NMEA_CHARS, lines=True
    )
    position = nmea_codec.decode_nmea(text, reference_time=sent_at)
    return PositionSignal(tps=tps, vehicle=vehicle, call_id=call_id, sent_at=sent_at, position=position)


def _decode_msd(raw: bytes) -> Msd:
    msd = msd_codec.decode(raw)
    # Forwarded documents carry the bytes exactly as the vehicle sent them.
    if msd.raw != raw:
        msd = replace(msd, raw=raw)
    return msd


def decode_raw_msd(tps: str, vehicle: str, call_id: str, body: bytes, *, sent_at: float) -> MsdSignal:
    """Decode an HTTP body of type ``application/EmergencyCallData.eCall.MSD`` (RFC 8147).

    Args:
        tps: the provider, from the path.
        vehicle: the vehicle key, from the path.
        call_id: the ``Call-Id`` header.
        body: the raw UPER MSD.
        sent_at: the time to record as sent, normally the receive time (the body carries none).

    Returns:
        An MsdSignal without callback or language (a raw body has no place for them).

    Raises:
        DecodeError: codec "envelope" naming "tps", "vehicle", "call_id", "msd" or "sent_at", or
            codec "msd" for a malformed MSD.
    """
    tps = _check_name(tps, "tps")
    vehicle = _check_name(vehicle, "vehicle")
    call_id = _check_call_id(call_id)
    sent = _check_sent_at(sent_at)
    raw = _check_msd_bytes(bytes(body) if isinstance(body, (bytearray, memoryview)) else body)
    return MsdSignal(tps=tps, vehicle=vehicle, call_id=call_id, sent_at=sent, msd=_decode_msd(raw))


def signal_kind(signal: Signal) -> Kind:
    """The envelope kind (topic level) of a signal: ``msd``, ``cancel`` or ``position``."""
    if isinstance(signal, MsdSignal):
        return "msd"
    if isinstance(signal, CancelSignal):
        return "cancel"
    return "position"


def encode_envelope(signal: Signal, *, nmea: str | None = None) -> bytes:
    """Encode a signal as the msgpack envelope a provider sends (for simulators and tests).

    Args:
        signal: the signal. An MsdSignal sends ``msd.raw`` when it is not empty (so simulators can
            send non-canonical bytes), else the canonical encoding of ``msd``.
        nmea: for a PositionSignal, the sentences to send; when None, an RMC + GGA pair is built from
            ``signal.position`` at ``position.at`` (or ``sent_at``) with the GP talker.

    Returns:
        The msgpack bytes; ``decode_envelope(signal_kind(signal), tps, vehicle, result)`` gives an
        equal signal back (for positions, up to the 1e-5 minute resolution of NMEA).

    Raises:
        EncodeError: when a value would not pass ``decode_envelope`` (so a simulator cannot send by
            accident what the gateway must refuse; build bad envelopes with msgpack directly).
    """
    if nmea is not None and not isinstance(signal, PositionSignal):
        raise EncodeError("nmea is given for a signal that is not a PositionSignal")
    body: dict[str, Any] = {"call_id": signal.call_id, "sent_at": signal.sent_at}
    if isinstance(signal, MsdSignal):
        body["msd"] = signal.msd.raw if signal.msd.raw else msd_codec.encode(signal.msd)
        if signal.callback is not None:
            body["callback"] = signal.callback
        if signal.lang is not None:
            body["lang"] = signal.lang
    elif isinstance(signal, CancelSignal):
        if signal.reason is not None:
            body["reason"] = signal.reason
    elif nmea is not None:
        body["nmea"] = nmea
    else:
        at = signal.position.at if signal.position.at is not None else signal.sent_at
        body["nmea"] = nmea_codec.encode_nmea(signal.position, at=at)
    try:
        _check_name(signal.tps, "tps")
        _check_name(signal.vehicle, "vehicle")
        _check_call_id(body["call_id"])
        _check_sent_at(body["sent_at"])
        if "msd" in body:
            _check_msd_bytes(body["msd"])
        if "callback" in body:
            _check_text(body["callback"], "callback", pattern=_E164, limit=16)
        if "lang" in body:
            _check_text(body["lang"], "lang", pattern=_BCP47, limit=35)
        if "reason" in body:
            _check_text(body["reason"], "reason", pattern=None, limit=MAX_REASON_CHARS)
        if "nmea" in body:
            _check_text(body["nmea"], "nmea", pattern=None, limit=nmea_codec.MAX_NMEA_CHARS, lines=True)
    except DecodeError as exc:
        raise EncodeError(f"envelope would be refused: {exc}") from exc
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    if len(packed) > MAX_ENVELOPE_BYTES:
        raise EncodeError(f"envelope of {len(packed)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    return packed
