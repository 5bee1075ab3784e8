"""Replay a recorded signal log through a fresh engine (pure part of ``ecallgw triage replay``).

The log is JSON lines, one record per line, in the shape of the gateway's journal rows
(docs/triage.md "Signal log"). Records are parsed into values here and run in order; the command
module reads the file and prints. Decoding uses the pure codecs (``codecs.envelope``, ``codecs.msd``,
``codecs.nmea``), so a record that does not decode yields an error record, not a crash.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ecallgw.model import CancelSignal, IncidentSnapshot, MsdSignal, Position, PositionSignal, Reason, Signal
from ecallgw.triage.engine import Decision, TriageEngine

__all__ = [
    "ActionRecord",
    "FurtherRecord",
    "LogError",
    "PruneRecord",
    "Record",
    "SignalRecord",
    "TickRecord",
    "decision_to_json",
    "parse_record",
    "replay",
]

_frozen = {"frozen": True, "slots": True, "kw_only": True}


class LogError(ValueError):
    """A log record that cannot be replayed; ``field`` names the key at fault."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


@dataclass(**_frozen)
class SignalRecord:
    """A received signal and its receipt time."""

    at: float
    signal: Signal


@dataclass(**_frozen)
class ActionRecord:
    """An operator action."""

    at: float
    incident_id: str
    action: str
    actor: str = ""


@dataclass(**_frozen)
class TickRecord:
    """A timer tick: ``due(at)`` was called."""

    at: float


@dataclass(**_frozen)
class FurtherRecord:
    """A further decision of the input before it (a storm seen in hindsight: its members' revisions
    and its aggregate), so every input still has exactly one line of its own."""

    at: float


@dataclass(**_frozen)
class PruneRecord:
    """A prune: ``prune(at)`` was called."""

    at: float


Record = SignalRecord | ActionRecord | TickRecord | PruneRecord


def _str(obj: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise LogError(key, "must be a non-empty string")
    return value


def _num(obj: Mapping[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LogError(key, "must be a finite number")
    return float(value)


def _bytes(obj: Mapping[str, Any], key_b64: str, key_hex: str) -> bytes | None:
    try:
        if key_b64 in obj:
            return base64.b64decode(_str(obj, key_b64) or "", validate=True)
        if key_hex in obj:
            return bytes.fromhex(_str(obj, key_hex) or "")
    except (binascii.Error, ValueError) as exc:
        raise LogError(key_b64 if key_b64 in obj else key_hex, f"not valid: {exc}") from exc
    return None


def parse_record(obj: Any) -> Record:
    """Turn one parsed JSON line into a record.

    Args:
        obj: the JSON object of one line.

    Returns:
        The record.

    Raises:
        LogError: a missing or malformed key.
        DecodeError: the envelope, MSD or NMEA inside does not decode.
    """
    from ecallgw.codecs import envelope, nmea
    from ecallgw.codecs import msd as msd_codec

    if not isinstance(obj, Mapping):
        raise LogError("", "a record must be a JSON object")
    kind = obj.get("type", "signal")
    at = _num(obj, "at")
    if kind == "tick":
        return TickRecord(at=at)
    if kind == "prune":
        return PruneRecord(at=at)
    if kind == "action":
        return ActionRecord(
            at=at,
            incident_id=_str(obj, "incident_id") or "",
            action=_str(obj, "action") or "",
            actor=_str(obj, "actor", required=False) or "",
        )
    if kind != "signal":
        raise LogError("type", "must be signal, action, tick or prune")
    sig_kind = _str(obj, "kind")
    tps = _str(obj, "tps") or ""
    vehicle = _str(obj, "vehicle") or ""
    payload = _bytes(obj, "payload_b64", "payload_hex")
    if payload is not None:
        # The journal's form: the body exactly as received.
        if sig_kind == "msd_raw":
            call_id = _str(obj, "call_id") or ""
            sent_at = _num(obj, "sent_at") if "sent_at" in obj else at
            return SignalRecord(
                at=at, signal=envelope.decode_raw_msd(tps, vehicle, call_id, payload, sent_at=sent_at)
            )
        return SignalRecord(at=at, signal=envelope.decode_envelope(sig_kind or "", tps, vehicle, payload))
    # The readable form: envelope fields spelled out.
    call_id = _str(obj, "call_id") or ""
    sent_at = _num(obj, "sent_at") if "sent_at" in obj else at
    if sig_kind in ("msd", "msd_raw"):
        raw = _bytes(obj, "msd_b64", "msd_hex")
        if raw is not None:
            msd = msd_codec.decode(raw)
        elif isinstance(obj.get("msd"), Mapping):
            msd = msd_codec.from_json_dict(dict(obj["msd"]))
        else:
            raise LogError("msd_hex", "an msd record needs msd_hex, msd_b64 or msd (JSON)")
        return SignalRecord(
            at=at,
            signal=MsdSignal(
                tps=tps,
                vehicle=vehicle,
                call_id=call_id,
                sent_at=sent_at,
                msd=msd,
                callback=_str(obj, "callback", required=False),
                lang=_str(obj, "lang", required=False),
            ),
        )
    if sig_kind == "cancel":
        reason = _str(obj, "reason", required=False)
        return SignalRecord(
            at=at,
            signal=CancelSignal(tps=tps, vehicle=vehicle, call_id=call_id, sent_at=sent_at, reason=reason),
        )
    if sig_kind == "position":
        if "nmea" in obj:
            position = nmea.decode_nmea(_str(obj, "nmea") or "", reference_time=sent_at)
        elif isinstance(obj.get("position"), Mapping):
            p = obj["position"]
            position = Position(
                lat=_num(p, "lat"),
                lon=_num(p, "lon"),
                trusted=bool(p.get("trusted", True)),
                source="nmea",
                at=_num(p, "at") if "at" in p else sent_at,
            )
        else:
            raise LogError("nmea", "a position record needs nmea or position {lat, lon, trusted}")
        return SignalRecord(
            at=at,
            signal=PositionSignal(
                tps=tps, vehicle=vehicle, call_id=call_id, sent_at=sent_at, position=position
            ),
        )
    raise LogError("kind", "must be msd, msd_raw, cancel or position")


def replay(
    engine: TriageEngine, records: Iterable[Record], *, tick_each: bool = False
) -> Iterator[tuple[Record | FurtherRecord, Decision]]:
    """Run records through the engine in order, yielding every decision with the record that caused it.

    Args:
        engine: a fresh engine (its policy and key decide the outcome).
        records: the log, in journal order.
        tick_each: also run ``due(at)`` before every signal and action, for hand-written logs that
            have no tick records (a journal has them; do not add ticks to a journal's replay).
    """
    for rec in records:
        if isinstance(rec, TickRecord):
            for d in engine.due(rec.at):
                yield rec, d
            continue
        if isinstance(rec, PruneRecord):
            engine.prune(rec.at)
            continue
        if tick_each:
            for d in engine.due(rec.at):
                yield TickRecord(at=rec.at), d
        if isinstance(rec, SignalRecord):
            d = engine.on_signal(rec.signal, now=rec.at)
        else:
            d = engine.on_operator_action(rec.incident_id, rec.action, now=rec.at, actor=rec.actor)
        yield rec, d
        for more in d.also:  # a storm seen in hindsight: its members' revisions and its aggregate
            yield FurtherRecord(at=rec.at), more


def _reasons(rs: tuple[Reason, ...]) -> list[dict[str, str]]:
    return [{"code": r.code, "text": r.text} for r in rs]


def _incident(s: IncidentSnapshot) -> dict[str, Any]:
    # No MSD (it holds the VIN): the replay output is for judging rules, not for receivers.
    pos = s.position
    return {
        "incident_id": s.incident_id,
        "revision": s.revision,
        "status": s.status,
        "severity": {
            "level": s.severity.level,
            "score": s.severity.score,
            "reasons": _reasons(s.severity.reasons),
        },
        "tps": s.tps,
        "vehicle": s.vehicle,
        "call_id": s.call_id,
        "automatic": s.automatic,
        "test": s.test,
        "received_at": s.received_at,
        "updated_at": s.updated_at,
        "position": None
        if pos is None
        else {
            "lat": round(pos.lat, 6),
            "lon": round(pos.lon, 6),
            "trusted": pos.trusted,
            "source": pos.source,
        },
        "scene_id": s.scene_id,
        "reasons": _reasons(s.reasons),
        # Providers and call ids only: call-back numbers are personal data.
        "calls": [{"tps": c.tps, "call_id": c.call_id, "activation": c.activation} for c in s.calls],
        "members": list(s.members),
    }


def decision_to_json(record: Record | FurtherRecord, decision: Decision) -> dict[str, Any]:
    """The JSON object printed for one decision (keys in a fixed order)."""
    kind = {
        SignalRecord: "signal",
        ActionRecord: "action",
        TickRecord: "tick",
        PruneRecord: "prune",
        FurtherRecord: "further",
    }[type(record)]
    return {
        "at": record.at,
        "cause": kind,
        "outcome": decision.outcome.value,
        "incident_id": decision.incident_id,
        "reasons": _reasons(decision.reasons),
        "incident": None if decision.incident is None else _incident(decision.incident),
        "routes": [
            {"receiver": r.receiver, "incident_id": r.incident_id, "revision": r.revision}
            for r in decision.routes
        ],
    }
