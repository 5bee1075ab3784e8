"""Properties of the engine over random signal sequences: safety, idempotence, determinism, order.

The world is small on purpose (a few vehicles, calls and places) so that random sequences hit the
interesting collisions: redials, resends, cancels before and after forwarding, orphans, timers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ecallgw.model import IncidentSnapshot, MsdSignal, Signal
from ecallgw.triage import Decision, Outcome, TriageEngine
from tests.triage._build import (
    GRAZ,
    KEY,
    POLICY,
    T0,
    VIENNA,
    cancel_signal,
    msd_signal,
    position_signal,
    vin_for,
)

PLACES = [VIENNA, (48.2090, 16.3745), (48.25, 16.45), GRAZ, (52.52, 13.40), None]
NON_PSAP = {POLICY.operator_receiver, POLICY.test_receiver}


@dataclass(frozen=True)
class Step:
    """One generated input: a signal, a timer tick or an operator action, at a time offset."""

    dt: float
    signal: Signal | None = None
    action: tuple[int, str] | None = None  # (incident index, action)
    prune: bool = False


@st.composite
def signals(draw: st.DrawFn, vehicles: int = 3, places: list[Any] | None = None) -> Signal:
    v = draw(st.integers(0, vehicles - 1))
    call = f"c{draw(st.integers(0, 2))}"
    vehicle = f"veh{v}"
    kind = draw(st.sampled_from(["msd", "msd", "msd", "cancel", "position"]))
    place = draw(st.sampled_from(places or PLACES))
    if kind == "msd":
        return msd_signal(
            vin=vin_for(v),
            vehicle=vehicle,
            call_id=call,
            automatic=draw(st.booleans()),
            test=draw(st.sampled_from([False, False, False, True])),
            trusted=draw(st.booleans()),
            position=place,
            mid=draw(st.integers(1, 4)),
            occupants=draw(st.sampled_from([1, 2, 255])),
            timestamp=draw(st.sampled_from([None, 0, int(T0) - 7200])),
        )
    if kind == "cancel":
        return cancel_signal(vehicle=vehicle, call_id=call, sent_at=T0 + draw(st.integers(0, 3)))
    lat, lon = place or VIENNA
    return position_signal(
        lat,
        lon,
        trusted=draw(st.booleans()),
        vehicle=vehicle,
        call_id=call,
        sent_at=T0 + draw(st.integers(0, 600)),
    )


steps = st.one_of(
    st.builds(Step, dt=st.sampled_from([0.0, 1.0, 30.0, 90.0, 150.0]), signal=signals()),
    st.builds(Step, dt=st.sampled_from([1.0, 61.0, 200.0])),
    # Prunes after an hour and more: state goes, later signals open fresh incidents.
    st.builds(Step, dt=st.sampled_from([3000.0, 4000.0]), prune=st.just(True)),
    st.builds(
        Step,
        dt=st.just(1.0),
        action=st.tuples(
            st.integers(0, 5), st.sampled_from(["ack", "cancel", "escalate", "resolve", "bogus"])
        ),
    ),
)
sequences = st.lists(steps, min_size=1, max_size=30)


def run(steps_: list[Step], *, repeat_signals: bool = False) -> list[tuple[Step, Decision]]:
    """Run a sequence on a fresh engine; with ``repeat_signals`` every signal is applied twice."""
    engine = TriageEngine(POLICY, KEY)
    out: list[tuple[Step, Decision]] = []
    incidents: list[str] = []
    latest: dict[str, IncidentSnapshot] = {}
    now = T0
    for s in steps_:
        now += s.dt
        before = len(out)
        if s.signal is not None:
            d = engine.on_signal(s.signal, now=now)
            out.append((s, d))
            if repeat_signals:
                again = engine.on_signal(s.signal, now=now)
                assert again.incident is None and again.routes == ()
                assert again.outcome in (Outcome.duplicate, Outcome.orphan_signal)
        elif s.action is not None:
            iid = incidents[s.action[0] % len(incidents)] if incidents else "inc-none"
            out.append((s, engine.on_operator_action(iid, s.action[1], now=now)))
        elif s.prune:
            out.extend((s, d) for d in engine.due(now))
            engine.prune(now)
        else:
            out.extend((s, d) for d in engine.due(now))
        for _, d in out[-3:]:
            if d.outcome is Outcome.new_incident and d.incident and d.incident.incident_id not in incidents:
                incidents.append(d.incident.incident_id)
        # What the gateway reads back (engine.get) is always the revision last decided, complete.
        latest.update((d.incident.incident_id, d.incident) for _, d in out[before:] if d.incident)
        if s.prune:
            latest = {k: v for k, v in latest.items() if engine.get(k) is not None}
        for iid, snap in latest.items():
            assert engine.get(iid) == snap
    return out


def _is_real_automatic(sig: Signal | None) -> bool:
    return isinstance(sig, MsdSignal) and sig.msd.automatic and not sig.msd.test


@given(sequences)
def test_safety_every_automatic_activation_reaches_a_psap(seq: list[Step]) -> None:
    # The bar: an automatic non-test MSD is, by the decision on it, routed to a PSAP (now or earlier).
    engine = TriageEngine(POLICY, KEY)
    routed: dict[str, set[str]] = defaultdict(set)
    incidents: list[str] = []
    now = T0
    for s in seq:
        now += s.dt
        if s.signal is not None:
            decisions = [engine.on_signal(s.signal, now=now)]
        elif s.action is not None:
            iid = incidents[s.action[0] % len(incidents)] if incidents else "inc-none"
            decisions = [engine.on_operator_action(iid, s.action[1], now=now)]
        else:
            decisions = engine.due(now)
            if s.prune:
                engine.prune(now)
        for d in decisions:
            for r in d.routes:
                routed[r.incident_id].add(r.receiver)
            if d.outcome is Outcome.new_incident and d.incident:
                incidents.append(d.incident.incident_id)
        if _is_real_automatic(s.signal):
            assert isinstance(s.signal, MsdSignal)
            inc = engine._calls[
                (s.signal.tps, s.signal.vehicle, s.signal.call_id)
            ]  # white-box: the call's incident
            assert routed[inc.id] - NON_PSAP, f"automatic activation not at a PSAP: {decisions}"


@given(sequences)
def test_decisions_are_well_formed(seq: list[Step]) -> None:
    last_revision: dict[str, int] = {}
    receivers: dict[str, set[str]] = defaultdict(set)
    for _, d in run(seq):
        assert d.reasons, "never a silent decision"
        assert (d.incident is None) == (d.routes == ())
        if d.incident is None:
            continue
        iid = d.incident.incident_id
        # Revisions count up by one per incident, with no gaps a receiver could wonder about.
        assert d.incident.revision == last_revision.get(iid, 0) + 1
        last_revision[iid] = d.incident.revision
        routed = {r.receiver for r in d.routes}
        if routed == {POLICY.operator_receiver} < receivers[iid]:
            # A call joined and nothing the others were told changed: the desk's revision alone
            # (issue 12); they see the next number that concerns them.
            assert d.outcome is Outcome.joined_incident
            continue
        # Whoever received a revision receives every later one (so a cancel reaches them all).
        assert receivers[iid] <= routed
        receivers[iid] = routed
        # Test calls never reach anyone but the test receiver.
        if d.incident.test:
            assert routed == {POLICY.test_receiver}
        assert 0 <= d.incident.severity.score <= 100


@given(sequences)
def test_exact_repeats_change_nothing(seq: list[Step]) -> None:
    # Applying every signal twice (broker redelivery) gives the same decisions as applying it once.
    assert run(seq, repeat_signals=True) == run(seq)


@given(sequences)
def test_same_sequence_same_decisions(seq: list[Step]) -> None:
    # Determinism: the journal replay after a restart must reproduce ids, revisions and routes.
    assert run(seq) == run(seq)


VIENNA_PLACES = [VIENNA, (48.2090, 16.3745), None]
GRAZ_PLACES = [GRAZ, (47.0712, 15.4399), None]


@given(
    st.lists(
        st.tuples(st.sampled_from([0.0, 30.0, 150.0]), signals(vehicles=1, places=VIENNA_PLACES)), max_size=12
    ),
    st.lists(
        st.tuples(st.sampled_from([0.0, 30.0, 150.0]), signals(vehicles=1, places=GRAZ_PLACES)), max_size=12
    ),
    st.randoms(use_true_random=False),
)
def test_vehicles_far_apart_do_not_interact(
    a: list[tuple[float, Signal]], b: list[tuple[float, Signal]], rnd: Any
) -> None:
    # Order-independence where it should hold: two vehicles at different places (no scene, no storm)
    # get the same decisions however their signals interleave.
    def timed(xs: list[tuple[float, Signal]], tag: str) -> list[tuple[float, Signal]]:
        t = T0
        out = []
        for dt, sig in xs:
            t += dt
            out.append((t, _retag(sig, tag)))
        return out

    ta, tb = timed(a, "A"), timed(b, "B")
    merged = ta + tb
    rnd.shuffle(merged)
    # Keep each vehicle's own order: stable-sort the shuffle by (vehicle, own index).
    order = {id(x): i for i, x in enumerate(ta)} | {id(x): i for i, x in enumerate(tb)}
    queues = {"A": iter(ta), "B": iter(tb)}
    interleaved = [next(queues["A" if x[1].vehicle.startswith("A") else "B"]) for x in merged]
    assert len(order) == len(interleaved)

    def per_vehicle(items: list[tuple[float, Signal]]) -> dict[str, list[Decision]]:
        engine = TriageEngine(POLICY, KEY)
        out: dict[str, list[Decision]] = defaultdict(list)
        for now, sig in items:
            out[sig.vehicle[0]].append(engine.on_signal(sig, now=now))
        return out

    assert per_vehicle(interleaved) == per_vehicle(ta + tb)


def _retag(sig: Signal, tag: str) -> Signal:
    from dataclasses import replace

    if isinstance(sig, MsdSignal):
        # A distinct VIN per tag: the two vehicles must not share a pseudonym.
        from ecallgw.model import VehicleIdentificationNumber

        vin = vin_for(1 if tag == "A" else 2)
        s = sig.msd.msd.msd_structure
        structure = replace(s, vehicle_identification_number=VehicleIdentificationNumber.from_vin(vin))
        msd = replace(sig.msd, msd=replace(sig.msd.msd, msd_structure=structure))
        return replace(sig, vehicle=tag + sig.vehicle, msd=msd)
    return replace(sig, vehicle=tag + sig.vehicle)


# --- real crashes: exactly one incident per vehicle --------------------------------------------------


@st.composite
def crash(draw: st.DrawFn, v: int, place: tuple[float, float]) -> list[tuple[float, Signal]]:
    """One vehicle's real crash: an automatic eCall, resends, NMEA fixes, redials within 2 minutes."""
    out: list[tuple[float, Signal]] = []
    t = T0 + draw(st.floats(0, 30))
    call = 0
    mid = 1
    lat, lon = place
    out.append((t, msd_signal(vin=vin_for(v), vehicle=f"v{v}", call_id=f"v{v}-c0", position=place, mid=1)))
    for _ in range(draw(st.integers(0, 8))):
        what = draw(st.sampled_from(["resend", "repeat", "redial", "position", "manual"]))
        if what == "repeat":
            # A broker redelivery: the same signal again, a little later; it is no vehicle activity,
            # so the redial window still runs from the last real signal.
            out.append((t + draw(st.floats(0, 5)), out[-1][1]))
            continue
        t += draw(st.floats(1, 119))  # within the EN 16062 redial window of the last signal
        jitter = (lat + draw(st.floats(-0.001, 0.001)), lon + draw(st.floats(-0.001, 0.001)))  # ~ 100 m
        if what == "redial":
            call += 1
            mid = 1
        elif what in ("resend", "manual"):
            mid += 1
        if what == "position":
            sig: Signal = position_signal(*jitter, vehicle=f"v{v}", call_id=f"v{v}-c{call}", sent_at=t)
        else:
            sig = msd_signal(
                vin=vin_for(v),
                vehicle=f"v{v}",
                call_id=f"v{v}-c{call}",
                position=jitter,
                mid=mid,
                automatic=what != "manual",
                sent_at=t,
            )
        out.append((t, sig))
    return out


@given(st.data(), st.integers(1, 4))
def test_each_real_crash_is_one_incident_per_vehicle(data: st.DataObject, n: int) -> None:
    # Several vehicles in one pile-up: one incident each, all at a PSAP, all in one scene.
    signals_ = [x for v in range(n) for x in data.draw(crash(v, VIENNA))]
    signals_.sort(key=lambda x: x[0])
    engine = TriageEngine(POLICY, KEY)
    new: dict[str, list[str]] = defaultdict(list)
    routed: dict[str, set[str]] = defaultdict(set)
    scenes = set()
    for now, sig in signals_:
        d = engine.on_signal(sig, now=now)
        if d.outcome is Outcome.new_incident and d.incident:
            new[sig.vehicle].append(d.incident.incident_id)
            scenes.add(d.incident.scene_id)
        for r in d.routes:
            routed[r.incident_id].add(r.receiver)
    assert {v: len(ids) for v, ids in new.items()} == {f"v{v}": 1 for v in range(n)}
    assert all(routed[ids[0]] >= {"operator", "psap-vienna"} for ids in new.values())
    assert len(scenes) == 1


@given(
    st.floats(-80, 80),
    st.floats(-179, 179),
    st.floats(0, 360),
    st.floats(0.0, 0.97),
    st.booleans(),
)
def test_scene_links_exactly_within_the_radius(
    lat: float, lon: float, bearing: float, frac: float, far: bool
) -> None:
    # The scene grid must find every incident within scene_distance_m, wherever cell edges fall.
    import math

    r = POLICY.scene_distance_m
    d = r * (1.05 + frac) if far else r * frac
    # Destination point on the sphere (the same radius the engine's haversine uses).
    earth_r = 6_371_008.8
    p1, l1, b = math.radians(lat), math.radians(lon), math.radians(bearing)
    p2 = math.asin(math.sin(p1) * math.cos(d / earth_r) + math.cos(p1) * math.sin(d / earth_r) * math.cos(b))
    l2 = l1 + math.atan2(
        math.sin(b) * math.sin(d / earth_r) * math.cos(p1),
        math.cos(d / earth_r) - math.sin(p1) * math.sin(p2),
    )
    other = (math.degrees(p2), math.degrees(l2))
    if not -180 < other[1] < 180:
        return  # across the antimeridian: documented as not linked
    engine = TriageEngine(POLICY, KEY)
    a = engine.on_signal(msd_signal(vin=vin_for(1), vehicle="a", position=(lat, lon)), now=T0).incident
    b_ = engine.on_signal(msd_signal(vin=vin_for(2), vehicle="b", position=other), now=T0 + 1).incident
    assert a is not None and b_ is not None
    assert (b_.scene_id == a.incident_id) is (not far)


@given(
    st.tuples(st.integers(-(2**40), 2**40), st.integers(-(2**40), 2**40)),
    st.tuples(st.integers(-(2**40), 2**40), st.integers(-(2**40), 2**40)),
    st.integers(-3, 3),
    st.integers(-3, 3),
)
def test_scene_cell_keys_are_injective(a: tuple[int, int], b: tuple[int, int], drow: int, dcol: int) -> None:
    # The scene grid packs (row, column) into one int where it can: two cells share a key only
    # when they are the same cell, near the packing limits too.
    from ecallgw.triage.engine import _CELL_HALF, _cell

    near = (a[0] + drow, a[1] + dcol)
    edge = (a[0], _CELL_HALF - 1 + dcol)
    for x, y in ((a, b), (a, near), (edge, (a[0] + 1, -_CELL_HALF + dcol)), (edge, a)):
        assert (_cell(*x) == _cell(*y)) is (x == y)
