"""The twin-class builders in triage/_fast.py give exactly what the dataclass constructors give."""

from __future__ import annotations


def test_fast_builders_equal_the_constructors() -> None:
    # The twin-class construction must give the very objects the dataclass constructors give:
    # equal, hashable alike, of the right class and still frozen.
    import dataclasses

    import pytest

    from ecallgw.model import Call, IncidentSnapshot, Position, Reason, Severity
    from ecallgw.triage import Decision, Outcome, Route, _fast

    sev = Severity(level="high", score=50)
    reasons = (Reason(code="new_call", text="first MSD of a new call"),)
    pos = _fast.make_position(48.2, 16.4, True, 1.0, 90.0)
    assert pos == Position(lat=48.2, lon=16.4, trusted=True, source="msd", at=1.0, heading_deg=90.0)
    snap = _fast.make_snapshot(
        "inc-1",
        1,
        "open",
        sev,
        "acme",
        "v",
        "c",
        True,
        False,
        1.0,
        2.0,
        None,
        pos,
        None,
        None,
        "inc-1",
        reasons,
    )
    ref = IncidentSnapshot(
        incident_id="inc-1", revision=1, status="open", severity=sev, tps="acme", vehicle="v", call_id="c",
        automatic=True, test=False, received_at=1.0, updated_at=2.0, position=pos, scene_id="inc-1",
        reasons=reasons,
    )  # fmt: skip
    assert snap == ref and hash(snap) == hash(ref) and type(snap) is IncidentSnapshot
    route = _fast.make_route("operator", "inc-1", 1)
    assert route == Route(receiver="operator", incident_id="inc-1", revision=1) and type(route) is Route
    d = _fast.make_decision(Outcome.new_incident, reasons, snap, (route,))
    assert d == Decision(
        outcome=Outcome.new_incident, reasons=reasons, incident=snap, routes=(route,), incident_id="inc-1"
    )
    call = _fast.make_call("acme", "v", "c", "manual", 1.0, 2.0, 2, "+43", None)
    ref_call = Call(
        tps="acme", vehicle="v", call_id="c", activation="manual", first_at=1.0, last_at=2.0,
        msd_version=2, callback="+43",
    )  # fmt: skip
    assert call == ref_call and hash(call) == hash(ref_call) and type(call) is Call
    for obj in (pos, snap, route, d, call):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, dataclasses.fields(obj)[0].name, None)
    assert _fast.twin(type("NoSlots", (), {})) is None
