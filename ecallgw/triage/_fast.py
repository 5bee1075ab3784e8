"""Fast construction of the frozen objects triage emits on every revision.

A frozen slotted dataclass's ``__init__`` stores each field through ``object.__setattr__``, which
costs ~2.3 µs for the 17 fields of an ``IncidentSnapshot`` on our machines. Filling a mutable class
with the same slots and then assigning ``__class__`` (allowed between identical slot layouts) builds
an equal object ten times faster. The same technique builds the codec's MSDs
(``ecallgw/codecs/_fastpath.py``). It is used only for classes without ``__post_init__`` whose twin
passes a probe at import; otherwise the normal constructor runs. Every builder sets every field.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ecallgw.model import Activation, Call, IncidentSnapshot, Msd, Position, Reason, Severity, Status
from ecallgw.triage.decision import Decision, Outcome, Route

__all__ = [
    "make_call",
    "make_decision",
    "make_position",
    "make_reason",
    "make_route",
    "make_snapshot",
    "twin",
]


def twin(cls: type) -> type | None:
    """A mutable class with the slots of frozen ``cls``, or None when the technique cannot apply."""
    if "__post_init__" in dir(cls):
        return None  # the normal constructor would run code the twin skips
    slots = tuple(cls.__dict__.get("__slots__", ()))
    if not slots:
        return None
    mutable: type = type(f"_Mutable{cls.__name__}", (object,), {"__slots__": slots})
    try:
        probe: Any = mutable()
        for i, name in enumerate(slots):
            setattr(probe, name, i)
        probe.__class__ = cls
    except TypeError:
        return None
    if not isinstance(probe, cls) or [getattr(probe, n) for n in slots] != list(range(len(slots))):
        return None
    return mutable


def _rest(cls: type, given: str) -> tuple[tuple[str, Any], ...]:
    """(name, default) of the fields of ``cls`` a builder below does not set: a field added to the
    model with a default is set to it, never left unset (which would make reading it raise)."""
    names = set(given.split())
    out = []
    for f in dataclasses.fields(cls):
        if f.name in names:
            continue
        if f.default is dataclasses.MISSING:  # pragma: no cover - a new required field needs a builder change
            raise TypeError(f"{cls.__name__}.{f.name} has no default: the fast builder must set it")
        out.append((f.name, f.default))
    return tuple(out)


_SNAPSHOT = twin(IncidentSnapshot)
_SNAPSHOT_REST = _rest(
    IncidentSnapshot,
    "incident_id revision status severity tps vehicle call_id automatic test received_at updated_at msd "
    "position callback lang scene_id reasons calls members",
)
_POSITION = twin(Position)
_POSITION_REST = _rest(
    Position, "lat lon trusted source at quality heading_deg speed_kmh altitude_m satellites hdop"
)


def make_snapshot(
    incident_id: str,
    revision: int,
    status: Status,
    severity: Severity,
    tps: str,
    vehicle: str,
    call_id: str,
    automatic: bool,
    test: bool,
    received_at: float,
    updated_at: float,
    msd: Msd | None,
    position: Position | None,
    callback: str | None,
    lang: str | None,
    scene_id: str | None,
    reasons: tuple[Reason, ...],
    calls: tuple[Call, ...] = (),
    members: tuple[str, ...] = (),
) -> IncidentSnapshot:
    """``IncidentSnapshot(...)`` with every field given, built the fast way when possible."""
    if _SNAPSHOT is None:  # pragma: no cover - the probe passes on CPython 3.11+
        return IncidentSnapshot(
            incident_id=incident_id,
            revision=revision,
            status=status,
            severity=severity,
            tps=tps,
            vehicle=vehicle,
            call_id=call_id,
            automatic=automatic,
            test=test,
            received_at=received_at,
            updated_at=updated_at,
            msd=msd,
            position=position,
            callback=callback,
            lang=lang,
            scene_id=scene_id,
            reasons=reasons,
            calls=calls,
            members=members,
        )
    o: Any = _SNAPSHOT()
    o.incident_id = incident_id
    o.revision = revision
    o.status = status
    o.severity = severity
    o.tps = tps
    o.vehicle = vehicle
    o.call_id = call_id
    o.automatic = automatic
    o.test = test
    o.received_at = received_at
    o.updated_at = updated_at
    o.msd = msd
    o.position = position
    o.callback = callback
    o.lang = lang
    o.scene_id = scene_id
    o.reasons = reasons
    o.calls = calls
    o.members = members
    for name, value in _SNAPSHOT_REST:
        setattr(o, name, value)
    o.__class__ = IncidentSnapshot
    snapshot: IncidentSnapshot = o
    return snapshot


def make_position(
    lat: float, lon: float, trusted: bool, at: float | None, heading_deg: float | None
) -> Position:
    """An MSD-sourced ``Position`` (source "msd", no NMEA extras), built the fast way when possible."""
    if _POSITION is None:  # pragma: no cover - the probe passes on CPython 3.11+
        return Position(lat=lat, lon=lon, trusted=trusted, source="msd", at=at, heading_deg=heading_deg)
    o: Any = _POSITION()
    o.lat = lat
    o.lon = lon
    o.trusted = trusted
    o.source = "msd"
    o.at = at
    o.quality = None
    o.heading_deg = heading_deg
    o.speed_kmh = None
    o.altitude_m = None
    o.satellites = None
    o.hdop = None
    for name, value in _POSITION_REST:
        setattr(o, name, value)
    o.__class__ = Position
    position: Position = o
    return position


_CALL = twin(Call)


def make_call(
    tps: str,
    vehicle: str,
    call_id: str,
    activation: Activation,
    first_at: float,
    last_at: float,
    msd_version: int | None,
    callback: str | None,
    lang: str | None,
) -> Call:
    """``Call(...)`` with every field given, built the fast way when possible."""
    if _CALL is None:  # pragma: no cover - the probe passes on CPython 3.11+
        return Call(
            tps=tps,
            vehicle=vehicle,
            call_id=call_id,
            activation=activation,
            first_at=first_at,
            last_at=last_at,
            msd_version=msd_version,
            callback=callback,
            lang=lang,
        )
    o: Any = _CALL()
    o.tps = tps
    o.vehicle = vehicle
    o.call_id = call_id
    o.activation = activation
    o.first_at = first_at
    o.last_at = last_at
    o.msd_version = msd_version
    o.callback = callback
    o.lang = lang
    o.__class__ = Call
    call: Call = o
    return call


_ROUTE = twin(Route)
_DECISION = twin(Decision)
_REASON = twin(Reason)


def make_reason(code: str, text: str) -> Reason:
    """``Reason(...)``, built the fast way when possible (texts with numbers are built per decision)."""
    if _REASON is None:  # pragma: no cover - the probe passes on CPython 3.11+
        return Reason(code=code, text=text)
    o: Any = _REASON()
    o.code = code
    o.text = text
    o.__class__ = Reason
    reason: Reason = o
    return reason


def make_route(receiver: str, incident_id: str, revision: int) -> Route:
    """``Route(...)``, built the fast way when possible."""
    if _ROUTE is None:  # pragma: no cover - the probe passes on CPython 3.11+
        return Route(receiver=receiver, incident_id=incident_id, revision=revision)
    o: Any = _ROUTE()
    o.receiver = receiver
    o.incident_id = incident_id
    o.revision = revision
    o.__class__ = Route
    route: Route = o
    return route


def make_decision(
    outcome: Outcome,
    reasons: tuple[Reason, ...],
    incident: IncidentSnapshot | None,
    routes: tuple[Route, ...],
    incident_id: str | None = None,
    also: tuple[Decision, ...] = (),
) -> Decision:
    """``Decision(...)``, built the fast way when possible; ``incident_id`` defaults to the revision's."""
    if incident is not None and incident_id is None:
        incident_id = incident.incident_id
    if _DECISION is None:  # pragma: no cover - the probe passes on CPython 3.11+
        return Decision(
            outcome=outcome,
            reasons=reasons,
            incident=incident,
            routes=routes,
            incident_id=incident_id,
            also=also,
        )
    o: Any = _DECISION()
    o.outcome = outcome
    o.reasons = reasons
    o.incident = incident
    o.routes = routes
    o.incident_id = incident_id
    o.also = also
    o.__class__ = Decision
    decision: Decision = o
    return decision
