"""Find an incident by any of its calls (issue 12), on SQLite and on PostgreSQL.

The incidents come from a real triage engine: the car maker's call, the same VIN through a fleet box
(a second provider), then a redial; the store keeps every call the revisions bring and finds the
incident by any call id or vehicle key.
"""

from __future__ import annotations

import dataclasses

from ecallgw.gateway.records import DecisionRecord, RawSignal, Unit
from ecallgw.model import MsdSignal
from ecallgw.triage import Decision, TriageEngine
from ecallgw.triage.decision import Route
from tests.gateway.helpers import make_snapshot
from tests.gateway.store.support import AnyStore
from tests.triage._build import KEY, POLICY, T0, msd_signal, vin_for


def _unit(n: int, sig: MsdSignal, d: Decision, at: float) -> Unit:
    records = tuple(
        DecisionRecord(
            outcome=str(x.outcome),
            reasons=x.reasons,
            snapshot=x.incident,
            routes=x.routes,
            signal_at=at,
            incident_id=x.incident_id,
        )
        for x in (d, *d.also)
    )
    raw = RawSignal(
        transport="mqtt",
        kind="msd",
        tps=sig.tps,
        vehicle=sig.vehicle,
        payload=bytes([n]) * 8,
        received_at=at,
        source=f"ecall/v1/{sig.tps}/{sig.vehicle}/msd",
    )
    return Unit(journal_type="signal", at=at, signal=raw, decisions=records)


async def test_an_incident_is_found_by_any_of_its_calls(store: AnyStore) -> None:
    engine = TriageEngine(POLICY, KEY)
    signals = [
        msd_signal(callback="+431111111"),
        msd_signal(tps="fleetbox", vehicle="box-9", call_id="fb-1", callback="+432222222"),
        msd_signal(call_id="call-2"),  # the car maker's unit redials
        msd_signal(vin=vin_for(7), vehicle="other", call_id="x-1"),  # another car
    ]
    ids = []
    for n, sig in enumerate(signals):
        at = T0 + 10 * n
        d = engine.on_signal(sig, now=at)
        ids.append(d.incident_id)
        await store.commit(_unit(n, sig, d, at))
    car, other = ids[0], ids[3]
    assert ids[1] == ids[2] == car

    async def found(*, call_id: str | None = None, vehicle: str | None = None) -> list[str]:
        return [r.incident_id for r in await store.find_incidents(call_id=call_id, vehicle=vehicle)]

    assert await found(call_id="call-1") == [car]
    assert await found(call_id="fb-1") == [car]  # the second provider's call
    assert await found(call_id="call-2") == [car]  # the redial
    assert await found(vehicle="box-9") == [car]
    assert await found(vehicle="veh-1") == [car]
    assert await found(call_id="fb-1", vehicle="box-9") == [car]
    assert await found(call_id="fb-1", vehicle="veh-1") == []  # both from one call, or nothing
    assert await found(call_id="x-1") == [other]
    assert await found(call_id="nope") == []
    assert await found() == []


async def test_old_incidents_are_found_by_their_vehicle_and_calls_expire_with_them(store: AnyStore) -> None:
    # Stored before calls were kept: no calls in the snapshot; the primary vehicle key finds it.
    old = make_snapshot("inc-old", at=1000.0)
    assert old.calls == ()
    await store.commit(
        Unit(
            journal_type=None,
            at=1000.0,
            decisions=(
                DecisionRecord(
                    outcome="new_incident",
                    reasons=(),
                    snapshot=old,
                    routes=(Route(receiver="psap", incident_id="inc-old", revision=1),),
                    signal_at=1,
                ),
            ),
        )
    )
    assert [r.incident_id for r in await store.find_incidents(vehicle="v1")] == ["inc-old"]
    # Its row's primary call finds it too (a row stored before the desk's migration has none).
    assert [r.incident_id for r in await store.find_incidents(call_id=old.call_id)] == ["inc-old"]
    assert await store.find_incidents(call_id="nope") == []

    # Every delivery confirmed at commit, then past retention: its calls go with the incident.
    engine = TriageEngine(POLICY, KEY)
    first = msd_signal(vin=vin_for(3), vehicle="gone", call_id="g-1")
    again = msd_signal(vin=vin_for(3), vehicle="gone", call_id="g-2")
    for n, (sig, at) in enumerate(((first, 2000.0), (again, 2030.0)), 1):
        d = engine.on_signal(sig, now=at)
        await store.commit(
            dataclasses.replace(_unit(n, sig, d, at), confirm_on_commit=frozenset(POLICY.receivers()))
        )
    assert len(await store.find_incidents(vehicle="gone")) == 1
    counts = await store.delete_before(1_000_000.0 + T0)
    # inc-old waits for its PSAP delivery: kept; the other goes with both its calls.
    assert counts["incidents"] == 1 and counts["incident_calls"] == 2
    assert await store.find_incidents(vehicle="gone") == []
    assert [r.incident_id for r in await store.find_incidents(vehicle="v1")] == ["inc-old"]


async def test_the_row_follows_the_primary_call_when_it_switches(store: AnyStore) -> None:
    # A manual call opens the incident; the vehicle's automatic call through a second provider
    # joins it and becomes the primary: the row's call fields are then all that call's, so that a
    # single-call lookup by the row and the calls table agree.
    engine = TriageEngine(POLICY, KEY)
    manual = msd_signal(automatic=False, call_id="m-1")
    crash = msd_signal(tps="fleetbox", vehicle="box-3", call_id="a-1")
    ids = []
    for n, sig in enumerate((manual, crash)):
        at = T0 + 10 * n
        d = engine.on_signal(sig, now=at)
        ids.append(d.incident_id)
        await store.commit(_unit(n, sig, d, at))
    snap = engine.get(ids[1] or "")
    assert snap is not None
    assert ids[0] == ids[1] and snap.call_id == "a-1"  # the automatic call is the primary now
    [row] = await store.find_incidents(call_id="a-1", vehicle="box-3")
    assert (row.incident_id, row.tps, row.vehicle) == (ids[0], "fleetbox", "box-3")
    assert [r.incident_id for r in await store.find_incidents(call_id="m-1", vehicle="veh-1")] == [ids[0]]
    assert await store.find_incidents(call_id="a-1", vehicle="veh-1") == []  # not one call's
