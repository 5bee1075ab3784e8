"""Render and parse the documents receivers get: the incident JSON document and OASIS CAP 1.2.

Both render one ``IncidentSnapshot`` (one revision of an incident) and carry the MSD twice: decoded
(ASN.1 field names) and as the bytes the vehicle sent (base64), so a PSAP can run its own decoder.
The JSON document follows docs/interfaces.md and the JSON Schema shipped in
``ecallgw/codecs/schemas/incident.schema.json``; the CAP mapping (message types, references,
urgency/severity/certainty, area, parameters) is documented in docs/documents.md.

The parsers are for receivers we run ourselves (the simulated PSAP, tests, the load test): they
check what they read and raise ``DecodeError`` (codec "document" or "cap") for anything else.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ecallgw.codecs import msd as msd_codec
from ecallgw.codecs._incident_schema import INCIDENT_SCHEMA
from ecallgw.errors import DecodeError, EncodeError
from ecallgw.model import Call, IncidentSnapshot, Level, Msd, Position, Reason

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

__all__ = [
    "CAP_AREA_RADIUS_KM",
    "CAP_MEDIA_TYPE",
    "CAP_NAMESPACE",
    "CAP_SEVERITY",
    "INCIDENT_SCHEMA",
    "JSON_MEDIA_TYPE",
    "MAX_DOCUMENT_BYTES",
    "MSD_MEDIA_TYPE",
    "CapAlert",
    "cap_identifier",
    "cap_time",
    "iso_time",
    "parse_cap",
    "parse_json_document",
    "render_cap",
    "render_json",
]

JSON_MEDIA_TYPE = "application/json"
CAP_MEDIA_TYPE = "application/common-alerting-protocol+xml"
MSD_MEDIA_TYPE = "application/EmergencyCallData.eCall.MSD"
"""RFC 8147 media type of the binary MSD."""
CAP_NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"

MAX_DOCUMENT_BYTES = 1 << 20
"""Largest document the parsers accept (ours are a few kilobytes)."""

CAP_SEVERITY: dict[Level, tuple[str, str, str]] = {
    # level: (urgency, severity, certainty) - docs/documents.md §"CAP mapping" explains each row
    "critical": ("Immediate", "Extreme", "Likely"),
    "high": ("Immediate", "Severe", "Likely"),
    "medium": ("Expected", "Moderate", "Possible"),
    "low": ("Expected", "Minor", "Possible"),
}
"""CAP urgency, severity and certainty for each triage level of an open or updated incident."""

CAP_AREA_RADIUS_KM = {True: 0.15, False: 1.0}
"""Radius of the CAP area circle: EN 15722 positionCanBeTrusted means within ±150 m with 95 %
confidence; an untrusted position gets 1 km."""

_ISO_MS = "%Y-%m-%dT%H:%M:%S"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MAX_TIME = 253402214400.0  # 9999-12-31T00:00Z: a day of margin below datetime.MAXYEAR
# Characters XML 1.0 cannot carry at all (C0 controls except tab, LF, CR; surrogates; U+FFFE/F).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# CAP identifiers and senders must not hold spaces, commas, '<' or '&' (CAP 1.2 §3.2.1).
_CAP_TOKEN = re.compile(r"[^\s,<&]+")


# --- Shared helpers ---------------------------------------------------------------------------------


def _check_time(t: float, what: str) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise EncodeError(f"{what} {t!r} is not a finite time")
    if not 0 <= t < _MAX_TIME:
        raise EncodeError(f"{what} {t!r} is outside 1970..9999")
    return float(t)


def iso_time(t: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds and ``Z``.

    Raises:
        EncodeError: for a time that is not finite or outside 1970..9999.

    >>> iso_time(1764158400.25)
    '2025-11-26T12:00:00.250Z'
    """
    # The gateway's times are floats in range: one comparison chain checks them (NaN fails it, and
    # so does infinity); anything else takes the full check, which raises with the reason.
    if type(t) is float and 0.0 <= t < _MAX_TIME:
        ms = round(t * 1000)
    else:
        ms = round(_check_time(t, "time") * 1000)
    second, milli = divmod(ms, 1000)
    return f"{_iso_second(second)}.{milli:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    # A document's times fall in a few seconds of each other: formatting each second once saves
    # most of the datetime arithmetic and strftime (~3 us per time, four times per document).
    return f"{_EPOCH + dt.timedelta(seconds=second):{_ISO_MS}}"


def cap_time(t: float) -> str:
    """Epoch seconds in the CAP 1.2 dateTime form, whole seconds, UTC as ``-00:00`` (CAP §3.3.2).

    Raises:
        EncodeError: for a time that is not finite or outside 1970..9999.

    >>> cap_time(1764158400.75)
    '2025-11-26T12:00:00-00:00'
    """
    when = _EPOCH + dt.timedelta(seconds=math.floor(_check_time(t, "time")))
    return f"{when:{_ISO_MS}}-00:00"


def _msd_raw(msd: Msd) -> bytes:
    # The bytes as the vehicle sent them; a snapshot built in code may have none, then canonical UPER.
    return msd.raw if msd.raw else msd_codec.encode(msd)


def _reasons(reasons: tuple[Reason, ...]) -> list[dict[str, str]]:
    return [{"code": r.code, "text": r.text} for r in reasons]


def _number(x: float | int | None, what: str) -> float | int | None:
    if x is None:
        return None
    if isinstance(x, float) and not math.isfinite(x):
        raise EncodeError(f"{what} {x!r} is not finite")
    return x


# --- JSON ---------------------------------------------------------------------------------------------


def _position_json(p: Position) -> dict[str, Any]:
    if not (math.isfinite(p.lat) and math.isfinite(p.lon) and abs(p.lat) <= 90 and abs(p.lon) <= 180):
        raise EncodeError(f"position ({p.lat!r}, {p.lon!r}) is outside ±90°/±180°")
    return {
        "lat": p.lat,
        "lon": p.lon,
        "trusted": p.trusted,
        "source": p.source,
        "at": None if p.at is None else iso_time(p.at),
        "quality": p.quality,
        "heading_deg": _number(p.heading_deg, "heading_deg"),
        "speed_kmh": _number(p.speed_kmh, "speed_kmh"),
        "altitude_m": _number(p.altitude_m, "altitude_m"),
        "satellites": p.satellites,
        "hdop": _number(p.hdop, "hdop"),
    } | ({} if p.accuracy_m is None else {"accuracy_m": _number(p.accuracy_m, "accuracy_m")})


def _call_json(c: Call) -> dict[str, Any]:
    return {
        "tps": c.tps,
        "vehicle": c.vehicle,
        "call_id": c.call_id,
        "activation": c.activation,
        "first_at": iso_time(c.first_at),
        "last_at": iso_time(c.last_at),
        "msd_version": c.msd_version,
        "callback": c.callback,
        "lang": c.lang,
    }


def json_document(snapshot: IncidentSnapshot, *, forwarded_at: float) -> dict[str, Any]:
    """The incident document as a dict (what :func:`render_json` serialises).

    Every float in it is finite: the times, coordinates and measurements are checked here, because
    render_json's encoder (orjson) would write NaN and infinities as null rather than refuse them.

    Raises:
        EncodeError: for a time, number or MSD that cannot be rendered.
    """
    s = snapshot
    return {
        "document": "ecallgw.incident",
        "document_version": 1,
        "incident_id": s.incident_id,
        "revision": s.revision,
        "status": s.status,
        "severity": {
            "level": s.severity.level,
            "score": s.severity.score,
            "reasons": _reasons(s.severity.reasons),
        },
        # The primary call, every field from that one call; null for a storm's aggregate (no call).
        "call": None
        if not s.call_id
        else {
            "tps": s.tps,
            "vehicle": s.vehicle,
            "call_id": s.call_id,
            "automatic": s.automatic,
            "test": s.test,
            "callback": s.callback,
            "lang": s.lang,
        },
        "calls": [_call_json(c) for c in s.calls],
        "members": list(s.members),
        "msd": None if s.msd is None else msd_codec.to_json_dict(s.msd),
        "msd_raw": None if s.msd is None else base64.b64encode(_msd_raw(s.msd)).decode("ascii"),
        "position": None if s.position is None else _position_json(s.position),
        "scene_id": s.scene_id,
        "reasons": _reasons(s.reasons),
        "operator_note": s.operator_note,
        "received_at": iso_time(s.received_at),
        "updated_at": iso_time(s.updated_at),
        "forwarded_at": iso_time(forwarded_at),
    }


def render_json(snapshot: IncidentSnapshot, *, forwarded_at: float) -> bytes:
    """Render the incident document (docs/interfaces.md) as UTF-8 JSON.

    Args:
        snapshot: the revision to send.
        forwarded_at: when this delivery is made (epoch seconds UTC).

    Returns:
        Compact UTF-8 JSON; every key is always present, unknown values are null.

    Raises:
        EncodeError: for a time, number or MSD that cannot be rendered (our fault, not the sender's),
            an integer outside -2**63..2**64-1, or text that is not Unicode (a lone surrogate).
    """
    return _dump_json(json_document(snapshot, forwarded_at=forwarded_at))


def _dump_json(doc: dict[str, Any]) -> bytes:
    # orjson parses back to the same value as json.dumps(ensure_ascii=False, allow_nan=False,
    # separators=(",", ":")).encode() (a property test holds it to that), at a tenth of the cost,
    # with three differences handled here or by the callers:
    # - NaN and infinities become null instead of raising: json_document checks every float it
    #   puts in (times in iso_time, coordinates and measurements in _position_json);
    # - integers beyond 64 bits are refused (the stdlib wrote them): a revision or satellite count
    #   that large is a bug, and many receivers' parsers could not read it exactly anyway;
    # - keys must be str (the stdlib turned 1 into "1"): json_document's keys are all literals.
    # Lone surrogates fail in both (the stdlib's output failed to encode as UTF-8).
    try:
        return orjson.dumps(doc)
    except orjson.JSONEncodeError as exc:
        raise EncodeError(f"incident document: {exc}") from exc


@functools.cache
def _validator() -> Validator:
    # Imported on first use: only receivers parse documents, the daemon never does.
    import jsonschema

    cls = jsonschema.validators.validator_for(INCIDENT_SCHEMA)
    cls.check_schema(INCIDENT_SCHEMA)
    validator: Validator = cls(INCIDENT_SCHEMA, format_checker=cls.FORMAT_CHECKER)
    return validator


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_document(data: bytes) -> dict[str, Any]:
    """Parse an incident document and validate it against the shipped JSON Schema.

    Args:
        data: the UTF-8 JSON body.

    Returns:
        The document as a dict (JSON types; times stay ISO 8601 strings).

    Raises:
        DecodeError: codec "document"; ``path`` is the JSON pointer of the first schema violation.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise DecodeError("document", f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DecodeError("document", f"document of {len(data)} bytes exceeds {MAX_DOCUMENT_BYTES}")
    try:
        doc = json.loads(bytes(data).decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise DecodeError("document", f"not UTF-8 at byte {exc.start}") from exc
    except (ValueError, RecursionError) as exc:
        raise DecodeError("document", f"not JSON: {exc}") from exc
    from jsonschema.exceptions import best_match

    # best_match picks the deepest, most specific error (inside anyOf/oneOf too), deterministically.
    error = best_match(_validator().iter_errors(doc))
    if error is not None:
        path = "/" + "/".join(str(p) for p in error.absolute_path)
        raise DecodeError("document", f"does not match the incident schema: {error.message[:300]}", path=path)
    if not isinstance(doc, dict):  # pragma: no cover - the schema requires an object
        raise DecodeError("document", "not a JSON object")
    return doc


# --- CAP 1.2 -------------------------------------------------------------------------------------------


def cap_identifier(incident_id: str, revision: int) -> str:
    """The CAP identifier of one revision: ``ecallgw:{incident_id}:{revision}``.

    Deterministic, so a retried delivery carries the same identifier and a later Update or Cancel
    can name the Alert without a lookup. Characters CAP forbids in identifiers (space, comma, ``<``,
    ``&``) and ``%`` are percent-encoded.

    >>> cap_identifier("inc-4f1c2a9e0b7d6c5a3e2f1d0c", 2)
    'ecallgw:inc-4f1c2a9e0b7d6c5a3e2f1d0c:2'
    >>> cap_identifier("a, b&c", 1)
    'ecallgw:a%2C%20b%26c:1'
    """
    return f"ecallgw:{_quote(incident_id)}:{revision}"


_ID_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/+=@")


def _quote(incident_id: str) -> str:
    # RFC 3986 percent-encoding of UTF-8, keeping the characters above; written out because
    # urllib belongs to the I/O modules codecs do not import.
    return "".join(
        c if c in _ID_SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        for c in incident_id
    )


def _unquote(text: str) -> str:
    """Inverse of :func:`_quote`; ValueError for text that no id quotes to."""
    if "%" in text and not re.fullmatch(r"(?:[^%]|%[0-9A-F]{2})*", text):
        raise ValueError("malformed percent-encoding")
    raw = re.sub(rb"%([0-9A-F]{2})", lambda m: bytes([int(m[1], 16)]), text.encode("utf-8", "surrogatepass"))
    return raw.decode("utf-8", "surrogatepass")


def _xml_text(value: object) -> str:
    # XML 1.0 cannot carry C0 controls even escaped; replace them so the document stays well formed.
    return _XML_INVALID.sub("\ufffd", str(value))


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else key, inner)
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _flatten(f"{prefix}.{i}", inner)
    elif isinstance(value, bool):
        yield prefix, "true" if value else "false"
    else:
        yield prefix, str(value)


def _msd_parameters(msd: Msd) -> Iterator[tuple[str, str]]:
    yield "vin", msd.vin
    if msd.position is not None:
        yield "msd_lat", f"{msd.position[0]:.7f}"
        yield "msd_lon", f"{msd.position[1]:.7f}"
    # One parameter per leaf of the MSD's JSON form, named by its ASN.1 path ("msd:msdStructure.timestamp").
    as_json = msd_codec.to_json_dict(msd)
    for name, value in _flatten("", as_json):
        yield f"msd:{name.removeprefix('msd.')}", value


def _call_parameters(s: IncidentSnapshot) -> Iterator[tuple[str, str]]:
    # Every call of the incident, numbered from 1 (the primary, whose fields the parameters above
    # repeat), each parameter of call N from call N alone (docs/documents.md); a storm's members.
    for n, c in enumerate(s.calls, 1):
        yield f"call:{n}:tps", c.tps
        yield f"call:{n}:vehicle", c.vehicle
        yield f"call:{n}:call_id", c.call_id
        yield f"call:{n}:activation", c.activation
        yield f"call:{n}:first_at", iso_time(c.first_at)
        yield f"call:{n}:last_at", iso_time(c.last_at)
        if c.msd_version is not None:
            yield f"call:{n}:msd_version", str(c.msd_version)
        if c.callback is not None:
            yield f"call:{n}:callback", c.callback
        if c.lang is not None:
            yield f"call:{n}:lang", c.lang
    for member in s.members:
        yield "member", member


def _parameters(s: IncidentSnapshot) -> Iterator[tuple[str, str]]:
    yield "incident_id", s.incident_id
    yield "revision", str(s.revision)
    yield "status", s.status
    yield "level", s.severity.level
    yield "score", str(s.severity.score)
    for r in s.severity.reasons:
        yield "severity_reason", f"{r.code}: {r.text}"
    for r in s.reasons:
        yield "reason", f"{r.code}: {r.text}"
    yield "tps", s.tps
    yield "vehicle", s.vehicle
    yield "call_id", s.call_id
    yield "automatic", "true" if s.automatic else "false"
    yield "test", "true" if s.test else "false"
    if s.callback is not None:
        yield "callback", s.callback
    if s.lang is not None:
        yield "lang", s.lang
    if s.scene_id is not None:
        yield "scene_id", s.scene_id
    yield from _call_parameters(s)
    yield "received_at", iso_time(s.received_at)
    yield "updated_at", iso_time(s.updated_at)
    if s.position is not None:
        yield "position_source", s.position.source
        yield "position_trusted", "true" if s.position.trusted else "false"
        if s.position.at is not None:
            yield "position_at", iso_time(s.position.at)
    if s.msd is not None:
        yield from _msd_parameters(s.msd)


class _XmlWriter:
    """The few shapes of a CAP alert written as text: elements of text, and elements of elements.

    The output is what ElementTree wrote before (``ET.indent`` with two spaces, text escaped as
    ``&amp; &lt; &gt;``, an empty text as ``<tag />``); the tests check that ElementTree
    re-serialises every document to the same text. Building ~370 elements to serialise them once cost
    two thirds of ``render_cap``.
    """

    def __init__(self) -> None:
        self.lines: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>']
        self.depth = 0

    def leaf(self, tag: str, text: object) -> None:
        value = _xml_text(text)
        if "&" in value or "<" in value or ">" in value:  # rare: test before paying for replace
            value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        pad = "  " * self.depth
        self.lines.append(f"{pad}<{tag}>{value}</{tag}>" if value else f"{pad}<{tag} />")

    def start(self, tag: str, attributes: str = "") -> None:
        self.lines.append(f"{'  ' * self.depth}<{tag}{attributes}>")
        self.depth += 1

    def end(self, tag: str) -> None:
        self.depth -= 1
        self.lines.append(f"{'  ' * self.depth}</{tag}>")

    def pair(self, tag: str, name: str, value: str) -> None:
        self.start(tag)
        self.leaf("valueName", name)
        self.leaf("value", value)
        self.end(tag)

    def document(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


def _msg_type(s: IncidentSnapshot, first_sent_at: float | None, first_revision: int) -> str:
    if first_sent_at is None or s.revision <= first_revision:
        if s.status == "cancelled":
            # A receiver that never got the Alert has nothing to cancel: routing should not send it.
            raise EncodeError(f"incident {s.incident_id} revision {s.revision}: Cancel without an Alert")
        return "Alert"
    return "Cancel" if s.status == "cancelled" else "Update"


def render_cap(
    snapshot: IncidentSnapshot,
    *,
    sender: str,
    forwarded_at: float,
    first_sent_at: float | None = None,
    first_revision: int = 1,
) -> bytes:
    """Render one revision as an OASIS CAP 1.2 alert (docs/documents.md §CAP).

    The first message a receiver gets is an Alert; later revisions are an Update, or a Cancel when
    the incident is cancelled, each referencing that Alert as ``sender,identifier,sent``.

    Args:
        snapshot: the revision to send.
        sender: our CAP sender id (no spaces, commas, ``<`` or ``&``), e.g. ``ecallgw@tps.example``.
        forwarded_at: when this message is sent (epoch seconds UTC); becomes ``sent``.
        first_sent_at: when the receiver was sent the Alert of this incident; None when this
            message is the first the receiver gets (then it is the Alert).
        first_revision: the revision that Alert carried (1 unless the incident was routed to this
            receiver only later, for example after an escalation).

    Returns:
        UTF-8 XML with a declaration, valid against the CAP 1.2 XML schema.

    Raises:
        EncodeError: for a sender CAP forbids, a time or number that cannot be rendered, or a
            Cancel for a receiver that was never sent the Alert.
    """
    s = snapshot
    if not isinstance(sender, str) or not _CAP_TOKEN.fullmatch(sender) or _XML_INVALID.search(sender):
        raise EncodeError(f"CAP sender {sender!r} is empty or holds a space, comma, '<' or '&'")
    msg_type = _msg_type(s, first_sent_at, first_revision)
    urgency, severity, certainty = CAP_SEVERITY[s.severity.level]
    if s.status == "cancelled":
        # The occupants or the provider said there is no emergency (any more).
        urgency, certainty = "Past", "Unlikely"
    elif s.status == "resolved":
        urgency = "Past"
    kind = "Automatic" if s.automatic else "Manual"

    w = _XmlWriter()
    w.start("alert", f' xmlns="{CAP_NAMESPACE}"')
    w.leaf("identifier", cap_identifier(s.incident_id, s.revision))
    w.leaf("sender", sender)
    w.leaf("sent", cap_time(forwarded_at))
    w.leaf("status", "Test" if s.test else "Actual")
    w.leaf("msgType", msg_type)
    w.leaf("source", f"ecallgw; telematics provider {s.tps}")
    w.leaf("scope", "Restricted")
    w.leaf("restriction", "eCall data for emergency services only (EU Regulation 2015/758 art. 6)")
    w.leaf("code", "TPS-eCall")
    if s.status in ("cancelled", "resolved") or s.operator_note:
        note = "; ".join(f"{r.code}: {r.text}" for r in s.reasons) or s.status
        # The operator's own words travel with the next revision (issue 13).
        w.leaf("note", f"{note}; operator note: {s.operator_note}" if s.operator_note else note)
    if msg_type != "Alert" and first_sent_at is not None:  # (_msg_type gives Alert when it is None)
        first = cap_identifier(s.incident_id, first_revision)
        w.leaf("references", f"{sender},{first},{cap_time(first_sent_at)}")
    w.leaf("incidents", _quote(s.incident_id))

    w.start("info")
    w.leaf("language", "en")
    w.leaf("category", "Rescue")
    w.leaf("category", "Transport")
    w.leaf("event", f"{kind} eCall")
    if s.status == "resolved":
        w.leaf("responseType", "AllClear")
    w.leaf("urgency", urgency)
    w.leaf("severity", severity)
    w.leaf("certainty", certainty)
    w.pair("eventCode", "trigger", kind.lower())
    w.leaf("onset", cap_time(s.received_at))
    headline = {
        "cancelled": f"{kind} eCall cancelled",
        "resolved": f"{kind} eCall resolved",
    }.get(s.status, f"{kind} eCall, {s.severity.level} severity ({s.severity.score}/100)")
    w.leaf("headline", ("TEST: " if s.test else "") + headline)
    lines = [f"{kind} eCall from vehicle {s.vehicle} via telematics provider {s.tps}, call {s.call_id}."]
    lines += [f"Severity: {r.text} [{r.code}]" for r in s.severity.reasons]
    lines += [f"Triage: {r.text} [{r.code}]" for r in s.reasons]
    if s.operator_note:
        lines.append(f"Operator note: {s.operator_note}")
    w.leaf("description", "\n".join(lines))
    if s.callback is not None:
        w.leaf("instruction", f"Call the occupants back at {s.callback}.")
        w.leaf("contact", s.callback)
    for name, value in _parameters(s):
        w.pair("parameter", name, value)
    if s.msd is not None:
        raw = _msd_raw(s.msd)
        w.start("resource")
        w.leaf("resourceDesc", f"eCall MSD (EN 15722 version {s.msd.version}, UPER) as sent")
        w.leaf("mimeType", MSD_MEDIA_TYPE)
        w.leaf("size", len(raw))
        w.leaf("derefUri", base64.b64encode(raw).decode("ascii"))
        # CAP 1.2 §3.2.3: digest is the SHA-1 of the resource (an integrity check, not security).
        w.leaf("digest", hashlib.sha1(raw, usedforsecurity=False).hexdigest())
        w.end("resource")
    if s.position is not None:
        p = s.position
        if not (math.isfinite(p.lat) and math.isfinite(p.lon) and abs(p.lat) <= 90 and abs(p.lon) <= 180):
            raise EncodeError(f"position ({p.lat!r}, {p.lon!r}) is outside ±90°/±180°")
        w.start("area")
        trust = "trusted" if p.trusted else "not trusted"
        w.leaf("areaDesc", f"Vehicle position ({p.source}, {trust})")
        w.leaf("circle", f"{p.lat:.7f},{p.lon:.7f} {CAP_AREA_RADIUS_KM[p.trusted]}")
        w.end("area")
    w.end("info")
    w.end("alert")
    return w.document()


@dataclass(frozen=True, slots=True, kw_only=True)
class CapAlert:
    """What a receiver reads from one of our CAP alerts (see :func:`parse_cap`).

    ``parameters`` keeps every ``info/parameter`` in document order, repeats included.
    """

    identifier: str
    sender: str
    sent: str
    status: str
    msg_type: str
    references: tuple[str, ...]
    incident_id: str
    revision: int
    urgency: str
    severity: str
    certainty: str
    parameters: tuple[tuple[str, str], ...]
    msd_raw: bytes | None
    circle: str | None

    def parameter(self, name: str) -> str | None:
        """The first value of parameter ``name``, or None."""
        return next((v for n, v in self.parameters if n == name), None)

    def parameter_values(self, name: str) -> tuple[str, ...]:
        """Every value of parameter ``name``, in document order."""
        return tuple(v for n, v in self.parameters if n == name)


def _cap_error(reason: str, path: str = "") -> DecodeError:
    return DecodeError("cap", reason, path=path)


def _text(parent: ET.Element, tag: str, path: str, *, required: bool = True) -> str | None:
    el = parent.find(f"{{{CAP_NAMESPACE}}}{tag}")
    if el is None or not (el.text or "").strip():
        if required:
            raise _cap_error("required element is missing or empty", f"{path}/{tag}")
        return None
    return (el.text or "").strip()


_MSG_TYPES = ("Alert", "Update", "Cancel", "Ack", "Error")
_STATUSES = ("Actual", "Exercise", "System", "Test", "Draft")


def parse_cap(data: bytes) -> CapAlert:
    """Parse one of our CAP 1.2 alerts (the receiving side: simulated PSAP, tests, load test).

    Checks the namespace and the elements a receiver relies on, decodes the MSD resource and
    verifies its size and SHA-1 digest. It is not a full XML Schema validation (tests do that with
    lxml); DTDs and entities are refused outright.

    Args:
        data: the XML body.

    Returns:
        The fields of the alert that identify and describe the incident.

    Raises:
        DecodeError: codec "cap"; ``path`` names the element.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise _cap_error(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise _cap_error(f"document of {len(data)} bytes exceeds {MAX_DOCUMENT_BYTES}")
    # A CAP alert never needs a DTD; refusing them rules out entity expansion attacks.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise _cap_error("DTDs and entity declarations are not accepted")
    try:
        root = ET.fromstring(bytes(data))
    except ET.ParseError as exc:
        raise _cap_error(f"not well-formed XML: {exc}") from exc
    except (LookupError, ValueError) as exc:
        # An unknown encoding in the XML declaration, or bytes that are not of the declared one.
        raise _cap_error(f"not well-formed XML: {type(exc).__name__}: {exc}") from exc
    if root.tag != f"{{{CAP_NAMESPACE}}}alert":
        raise _cap_error(f"root element is {root.tag!r}, not the CAP 1.2 alert", "/")
    path = "/alert"
    identifier = _text(root, "identifier", path) or ""
    sender = _text(root, "sender", path) or ""
    sent = _text(root, "sent", path) or ""
    status = _text(root, "status", path) or ""
    msg_type = _text(root, "msgType", path) or ""
    if status not in _STATUSES:
        raise _cap_error(f"status {status!r} is not a CAP status", f"{path}/status")
    if msg_type not in _MSG_TYPES:
        raise _cap_error(f"msgType {msg_type!r} is not a CAP message type", f"{path}/msgType")
    refs = _text(root, "references", path, required=False)
    references = tuple(refs.split()) if refs else ()
    for ref in references:
        if ref.count(",") != 2:
            raise _cap_error(f"reference {ref!r} is not sender,identifier,sent", f"{path}/references")
    if msg_type in ("Update", "Cancel") and not references:
        raise _cap_error(f"{msg_type} without references", f"{path}/references")
    info = root.find(f"{{{CAP_NAMESPACE}}}info")
    if info is None:
        raise _cap_error("required element is missing", f"{path}/info")
    ipath = f"{path}/info"
    parameters: list[tuple[str, str]] = []
    for el in info.findall(f"{{{CAP_NAMESPACE}}}parameter"):
        name = el.findtext(f"{{{CAP_NAMESPACE}}}valueName")
        value = el.findtext(f"{{{CAP_NAMESPACE}}}value")
        if name is None or value is None:
            raise _cap_error("parameter without valueName or value", f"{ipath}/parameter")
        parameters.append((name, value))
    # The identifier carries incident id and revision losslessly (percent-encoded); parameters are
    # text for people and lose what XML cannot carry.
    # The revision is the last segment; the id may hold colons of its own (kept unescaped).
    m = re.fullmatch(r"ecallgw:(\S+):([1-9][0-9]{0,9})", identifier)
    if m is None:
        raise _cap_error(
            f"identifier {identifier!r} is not ecallgw:<incident id>:<revision>", f"{path}/identifier"
        )
    try:
        incident_id, revision = _unquote(m[1]), int(m[2])
    except ValueError as exc:  # UnicodeDecodeError included
        raise _cap_error(
            f"identifier {identifier!r} is not percent-encoded UTF-8", f"{path}/identifier"
        ) from exc
    if cap_identifier(incident_id, revision) != identifier:
        raise _cap_error(f"identifier {identifier!r} is not in canonical form", f"{path}/identifier")
    msd_raw: bytes | None = None
    for res in info.findall(f"{{{CAP_NAMESPACE}}}resource"):
        if (res.findtext(f"{{{CAP_NAMESPACE}}}mimeType") or "").strip() != MSD_MEDIA_TYPE:
            continue
        msd_raw = _resource_bytes(res, f"{ipath}/resource")
        break
    area = info.find(f"{{{CAP_NAMESPACE}}}area")
    circle = None if area is None else _text(area, "circle", f"{ipath}/area", required=False)
    return CapAlert(
        identifier=identifier,
        sender=sender,
        sent=sent,
        status=status,
        msg_type=msg_type,
        references=references,
        incident_id=incident_id,
        revision=revision,
        urgency=_text(info, "urgency", ipath) or "",
        severity=_text(info, "severity", ipath) or "",
        certainty=_text(info, "certainty", ipath) or "",
        parameters=tuple(parameters),
        msd_raw=msd_raw,
        circle=circle,
    )


def _resource_bytes(res: ET.Element, path: str) -> bytes:
    encoded = _text(res, "derefUri", path) or ""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _cap_error(f"derefUri is not base64: {exc}", f"{path}/derefUri") from exc
    size = _text(res, "size", path, required=False)
    if size is not None and size != str(len(raw)):
        raise _cap_error(f"size {size} does not match the {len(raw)} decoded bytes", f"{path}/size")
    digest = _text(res, "digest", path, required=False)
    if digest is not None and digest.lower() != hashlib.sha1(raw, usedforsecurity=False).hexdigest():
        raise _cap_error("digest does not match the SHA-1 of the decoded bytes", f"{path}/digest")
    return raw
