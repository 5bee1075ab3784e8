"""Table tests for every triage rule: a sequence of steps and what each decision must say.

Each case is a list of steps run on a fresh engine, and for each step the expected outcome, the set of
receivers it routes to, and reason codes that must appear. The comment on each case says why it exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from ecallgw.model import IIDeltaV, IILocations, IncInfo
from ecallgw.triage import Decision, Outcome, TriageEngine, TriagePolicy
from tests.triage._build import (
    GRAZ,
    KEY,
    POLICY,
    T0,
    VIENNA,
    cancel_signal,
    msd_signal,
    position_signal,
)

Oc = Outcome
OP, VIE, STY, FB, TEST = "operator", "psap-vienna", "psap-styria", "psap-fallback", "test"
NEAR = (48.2090, 16.3745)  # ~100 m from VIENNA
FAR = (48.25, 16.45)  # ~7 km from VIENNA, still in the Vienna area
OUTSIDE = (52.52, 13.40)  # Berlin: no configured area


@dataclass
class Step:
    """One input and what its decision(s) must show."""

    kind: str  # msd | cancel | pos | due | act
    now: float
    kw: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome | None = None  # for "due": None means no decision at all
    routes: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    incident: int = 0  # for "act": index of the incident (in creation order) acted on


def S(  # noqa: N802 - a one-letter builder keeps the table readable
    kind: str,
    now: float,
    outcome: Outcome | None,
    routes: set[str] | None = None,
    codes: set[str] | None = None,
    incident: int = 0,
    **kw: Any,
) -> Step:
    return Step(kind, T0 + now, kw, outcome, frozenset(routes or ()), frozenset(codes or ()), incident)


CASES: dict[str, list[Step]] = {
    # An automatic crash goes to its area's PSAP and the operator on its first signal.
    "auto-first-signal": [
        S("msd", 1, Oc.new_incident, {OP, VIE}, {"new_call", "automatic_to_psap", "routed_psap_area"})
    ],
    # Broker redelivery of the same MSD changes nothing.
    "exact-repeat": [
        S("msd", 1, Oc.new_incident, {OP, VIE}),
        S("msd", 2, Oc.duplicate, codes={"exact_repeat"}),
    ],
    # A retransmission (messageIdentifier + 1) with nothing new is folded silently.
    "resend-unchanged": [
        S("msd", 1, Oc.new_incident, {OP, VIE}),
        S("msd", 3, Oc.duplicate, codes={"msd_resend_unchanged"}, mid=2),
    ],
    # A resend whose position moved 500 m is news for every receiver.
    "resend-moved": [
        S("msd", 1, Oc.new_incident, {OP, VIE}),
        S("msd", 3, Oc.new_revision, {OP, VIE}, {"position_moved"}, mid=2, position=(48.2125, 16.3738)),
    ],
    # GNSS jitter (~10 m) is not a new revision.
    "resend-jitter": [
        S("msd", 1, Oc.new_incident, {OP, VIE}),
        S("msd", 3, Oc.duplicate, mid=2, position=(48.2083, 16.3738)),
    ],
    # New occupants count: receivers must see it (and severity may rise).
    "resend-occupants": [
        S("msd", 1, Oc.new_incident, {OP, VIE}),
        S("msd", 3, Oc.new_revision, {OP, VIE}, {"msd_occupants_changed"}, mid=2, occupants=3),
    ],
    # An older MSD arriving late must not move the incident back.
    "out-of-order": [
        S("msd", 1, Oc.new_incident, {OP, VIE}, mid=2),
        S("msd", 2, Oc.duplicate, codes={"msd_out_of_order"}, mid=1, position=FAR),
    ],
    # EN 16062: a dropped call redialled within 2 minutes near the same place is the same incident;
    # the operator desk sees the call come back (issue 12), the PSAP was told nothing new.
    "redial-joins": [
        S("msd", 1, Oc.new_incident, {OP, VIE}),
        S("msd", 60, Oc.joined_incident, {OP}, {"redial_joined"}, call_id="call-2"),
    ],
    # ... and when it comes from 100 m further on, receivers see the move.
    "redial-joins-moved": [
        S("msd", 1, Oc.new_incident, {OP, VIE}),
        S(
            "msd",
            60,
            Oc.joined_incident,
            {OP, VIE},
            {"redial_joined", "position_moved"},
            call_id="call-2",
            position=NEAR,
        ),
    ],
    # A redial with a new call-back number is joined and shown to receivers.
    "redial-new-callback": [
        S("msd", 1, Oc.new_incident, {OP, VIE}),
        S(
            "msd",
            60,
            Oc.joined_incident,
            {OP, VIE},
            {"redial_joined", "callback_added"},
            call_id="call-2",
            callback="+431234567",
        ),
    ],
    # Outside the redial window: a new incident, linked to the earlier one as the same scene.
    "redial-late": [
        S("msd", 1, Oc.new_incident, {OP, VIE}),
        S("msd", 200, Oc.new_incident, {OP, VIE}, {"scene_linked"}, call_id="call-2", position=NEAR),
    ],
    # Within the window but 7 km away: the vehicle drove on, a new emergency.
    "redial-far": [
        S("msd", 1, Oc.new_incident, {OP, VIE}),
        S("msd", 60, Oc.new_incident, {OP, VIE}, call_id="call-2", position=FAR),
    ],
    # Position unknown: the same vehicle within the window is the likelier truth.
    "redial-unknown-position": [
        S("msd", 1, Oc.new_incident, {OP, VIE}),
        S("msd", 60, Oc.joined_incident, {OP}, {"redial_joined"}, call_id="call-2", position=None),
    ],
    # An untrusted position may be kilometres off: it cannot rule out a redial of the same vehicle.
    "redial-untrusted-far": [
        S("msd", 1, Oc.new_incident, {OP, VIE}, trusted=False),
        S(
            "msd",
            60,
            Oc.joined_incident,
            {OP, VIE},
            {"redial_joined", "position_moved"},
            call_id="call-2",
            position=FAR,
        ),
    ],
    # After an operator closed the incident, the vehicle calling again is a new incident, with why.
    "redial-after-close": [
        S("msd", 1, Oc.new_incident, {OP}, automatic=False),
        S("act", 10, Oc.cancelled, {OP}, action="cancel"),
        S("msd", 40, Oc.new_incident, {OP}, {"redial_after_close"}, call_id="call-2", automatic=False),
    ],
    # A manual call goes to the operator first and escalates to the PSAP by timer.
    "manual-escalates": [
        S("msd", 1, Oc.new_incident, {OP}, {"escalation_pending"}, automatic=False),
        S("due", 60, None),
        S("due", 61, Oc.escalated, {OP, VIE}, {"escalation_timeout"}),
        S("due", 200, None),
    ],
    # An operator ack stops the timer: the operator decides.
    "manual-ack": [
        S("msd", 1, Oc.new_incident, {OP}, automatic=False),
        S("act", 10, Oc.acknowledged, action="ack"),
        S("due", 100, None),
        S("act", 110, Oc.escalated, {OP, VIE}, {"escalated_by_operator"}, action="escalate"),
    ],
    # A mistaken press cancelled within the grace period: closed, only the operator saw it.
    "manual-cancel-in-grace": [
        S("msd", 1, Oc.new_incident, {OP}, automatic=False),
        S("cancel", 20, Oc.cancelled, {OP}, {"cancelled_in_grace"}),
        S("due", 100, None),
    ],
    # A late cancel of a manual call waits for an operator and holds the escalation.
    "manual-cancel-late": [
        S("msd", 1, Oc.new_incident, {OP}, automatic=False),
        S("cancel", 90, Oc.cancel_requested, {OP}, {"cancel_requested"}),
        S("due", 200, None),
        S("act", 210, Oc.cancelled, {OP}, {"cancelled_by_operator"}, action="cancel"),
    ],
    # Safety: a vehicle cancel never retracts an automatic alert; the PSAP keeps it until an
    # operator confirms.
    "auto-cancel-needs-operator": [
        S("msd", 1, Oc.new_incident, {OP, VIE}),
        S("cancel", 5, Oc.cancel_requested, {OP, VIE}, {"cancel_requested"}),
        S("cancel", 6, Oc.duplicate, codes={"exact_repeat"}),
        S("act", 30, Oc.cancelled, {OP, VIE}, {"cancelled_by_operator"}, action="cancel"),
        S("act", 31, Oc.rejected, codes={"incident_closed"}, action="resolve"),
    ],
    # Test calls reach the test receiver only; their cancel goes there too.
    "test-call": [
        S("msd", 1, Oc.new_incident, {TEST}, {"test_call"}, test=True),
        S("cancel", 100, Oc.cancelled, {TEST}),
        S("act", 101, Oc.rejected, codes={"incident_closed"}, action="escalate"),
    ],
    # An operator cannot send a test call to a PSAP.
    "test-not-escalated": [
        S("msd", 1, Oc.new_incident, {TEST}, test=True),
        S("act", 2, Oc.rejected, codes={"test_call_not_escalated"}, action="escalate"),
    ],
    # A non-test MSD in a test call makes it real: operator and PSAP now.
    "test-flag-cleared": [
        S("msd", 1, Oc.new_incident, {TEST}, test=True),
        S("msd", 2, Oc.new_revision, {TEST, OP, VIE}, {"test_flag_cleared"}, mid=2),
    ],
    # Outside every area: the fallback PSAP.
    "outside-areas": [S("msd", 1, Oc.new_incident, {OP, FB}, {"routed_psap_fallback"}, position=OUTSIDE)],
    # Position unknown (0x7FFFFFFF): flagged, still forwarded, to the fallback.
    "invalid-position": [
        S("msd", 1, Oc.new_incident, {OP, FB}, {"position_invalid", "routed_psap_fallback"}, position=None)
    ],
    # An untrusted position is flagged but still routes by area.
    "untrusted-position": [S("msd", 1, Oc.new_incident, {OP, VIE}, {"position_untrusted"}, trusted=False)],
    # A later NMEA fix moves the incident into an area: that PSAP joins the receivers.
    "position-fixes-area": [
        S("msd", 1, Oc.new_incident, {OP, FB}, position=None),
        S(
            "pos",
            10,
            Oc.new_revision,
            {OP, FB, VIE},
            {"position_first_fix", "routed_psap_area"},
            lat=VIENNA[0],
            lon=VIENNA[1],
        ),
        S("pos", 11, Oc.duplicate, codes={"position_older"}, lat=GRAZ[0], lon=GRAZ[1], sent_at=T0 + 5),
        S(
            "pos",
            12,
            Oc.duplicate,
            codes={"position_untrusted_ignored"},
            lat=GRAZ[0],
            lon=GRAZ[1],
            trusted=False,
            sent_at=T0 + 12,
        ),
        S(
            "pos",
            13,
            Oc.duplicate,
            codes={"position_unchanged"},
            lat=VIENNA[0],
            lon=VIENNA[1],
            sent_at=T0 + 13,
        ),
    ],
    # A cancel that overtook its MSD is kept, then applied: the manual call is closed on arrival.
    "orphan-cancel-first": [
        S("cancel", 1, Oc.orphan_signal, codes={"no_incident_for_call"}),
        S("msd", 2, Oc.new_incident, {OP}, {"cancelled_in_grace"}, automatic=False),
    ],
    # ... but an automatic one still reaches the PSAP, flagged for the operator.
    "orphan-cancel-automatic": [
        S("cancel", 1, Oc.orphan_signal),
        S("msd", 2, Oc.new_incident, {OP, VIE}, {"cancel_requested", "automatic_to_psap"}),
    ],
    # A position that overtook an MSD without a fix gives the incident its area at once.
    "orphan-position-first": [
        S("pos", 1, Oc.orphan_signal, lat=GRAZ[0], lon=GRAZ[1]),
        S("msd", 2, Oc.new_incident, {OP, STY}, {"position_first_fix"}, position=None),
    ],
    # A manual call joined by an automatic one is forwarded to the PSAP at once.
    "manual-upgraded": [
        S("msd", 1, Oc.new_incident, {OP}, automatic=False),
        S("msd", 30, Oc.joined_incident, {OP, VIE}, {"upgraded_to_automatic"}, call_id="call-2"),
        S("due", 100, None),
    ],
    # A stale automatic MSD is flagged, never held back.
    "stale-automatic": [
        S("msd", 1, Oc.new_incident, {OP, VIE}, {"msd_timestamp_stale"}, timestamp=int(T0) - 7200)
    ],
    # A manual MSD with timestamp 0 waits for an operator instead of escalating by timer.
    "zero-time-manual": [
        S(
            "msd",
            1,
            Oc.new_incident,
            {OP},
            {"msd_timestamp_missing", "escalation_held"},
            automatic=False,
            timestamp=0,
        ),
        S("due", 200, None),
    ],
    # A new MSD in a call after its incident was closed is a new incident, never a silent reopen.
    "reactivated-after-close": [
        S("msd", 1, Oc.new_incident, {OP}, automatic=False),
        S("cancel", 5, Oc.cancelled, {OP}),
        S("msd", 9, Oc.duplicate, codes={"incident_closed"}, mid=2, automatic=False),
        S("msd", 10, Oc.new_incident, {OP, VIE}, mid=3),
    ],
    # Operator actions on unknown incidents or with unknown verbs are explained, not raised.
    "operator-edge-cases": [
        S("msd", 1, Oc.new_incident, {OP, VIE}),
        S("act", 2, Oc.rejected, codes={"unknown_action"}, action="delete"),
        S("act", 3, Oc.rejected, codes={"already_at_psap"}, action="escalate"),
        S("act", 4, Oc.acknowledged, codes={"acknowledged"}, action="ack"),
        S("act", 5, Oc.acknowledged, codes={"already_acknowledged"}, action="ack"),
        S("act", 6, Oc.resolved, {OP, VIE}, {"resolved_by_operator"}, action="resolve"),
        S("msd", 7, Oc.duplicate, codes={"exact_repeat"}),
        S("cancel", 8, Oc.duplicate, codes={"incident_closed"}),
        S("pos", 9, Oc.duplicate, codes={"incident_closed"}, lat=GRAZ[0], lon=GRAZ[1]),
    ],
    # Crash physics in a resend raise the severity: a new revision.
    "resend-delta-v": [
        S("msd", 1, Oc.new_incident, {OP, VIE}),
        S(
            "msd",
            2,
            Oc.new_revision,
            {OP, VIE},
            {"msd_additional_data_changed"},
            mid=2,
            oad=IncInfo(
                location_of_impact=IILocations.front,
                delta_v=IIDeltaV(range_limit=150, delta_vx=-60, delta_vy=0),
            ),
        ),
    ],
}


def _run(engine: TriageEngine, steps: list[Step]) -> list[list[Decision]]:
    out: list[list[Decision]] = []
    incidents: list[str] = []
    for st in steps:
        kw = dict(st.kw)
        if st.kind == "msd":
            ds = [engine.on_signal(msd_signal(**kw), now=st.now)]
        elif st.kind == "cancel":
            ds = [engine.on_signal(cancel_signal(**kw), now=st.now)]
        elif st.kind == "pos":
            lat, lon = kw.pop("lat"), kw.pop("lon")
            ds = [engine.on_signal(position_signal(lat, lon, **kw), now=st.now)]
        elif st.kind == "due":
            ds = engine.due(st.now)
        else:
            ds = [engine.on_operator_action(incidents[st.incident], kw["action"], now=st.now, actor="alice")]
        for d in ds:
            if d.outcome is Outcome.new_incident and d.incident is not None:
                incidents.append(d.incident.incident_id)
        out.append(ds)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_rule(name: str) -> None:
    steps = CASES[name]
    engine = TriageEngine(POLICY, KEY)
    for i, (st, ds) in enumerate(zip(steps, _run(engine, steps), strict=True)):
        where = f"step {i} ({st.kind} at +{st.now - T0:.0f}s)"
        if st.outcome is None:
            assert ds == [], f"{where}: expected no decision, got {[d.outcome for d in ds]}"
            continue
        assert len(ds) == 1, where
        d = ds[0]
        assert d.outcome is st.outcome, f"{where}: {d.outcome} {[r.code for r in d.reasons]}"
        assert {r.receiver for r in d.routes} == st.routes, where
        codes = {r.code for r in d.reasons}
        if d.incident is not None:
            codes |= {r.code for r in d.incident.reasons}
        assert st.codes <= codes, f"{where}: missing {st.codes - codes} in {codes}"
        assert d.reasons, f"{where}: a decision always has a reason"
        # Routes and the snapshot go together, and routes carry the snapshot's revision.
        assert (d.incident is None) == (not d.routes), where
        if d.incident is not None:
            assert {(r.incident_id, r.revision) for r in d.routes} == {
                (d.incident.incident_id, d.incident.revision)
            }


def test_revisions_count_up_and_statuses_follow() -> None:
    e = TriageEngine(POLICY, KEY)
    d1 = e.on_signal(msd_signal(), now=T0 + 1)
    d2 = e.on_signal(msd_signal(mid=2, position=FAR), now=T0 + 2)
    d3 = e.on_operator_action(d1.incident.incident_id, "cancel", now=T0 + 3)  # type: ignore[union-attr]
    snaps = [d.incident for d in (d1, d2, d3)]
    assert [(s.revision, s.status) for s in snaps if s] == [(1, "open"), (2, "updated"), (3, "cancelled")]
    assert e.get(d1.incident.incident_id) == d3.incident  # type: ignore[union-attr]
    assert d3.incident is not None and d3.incident.received_at == T0 + 1 and d3.incident.updated_at == T0 + 3


def test_multi_vehicle_scene_links_each_own_incident() -> None:
    # Two cars in one crash: two incidents (each vehicle its own), one scene id (the first's).
    e = TriageEngine(POLICY, KEY)
    a = e.on_signal(msd_signal(vin="WVWZZZ1JZXW000001", vehicle="a"), now=T0 + 1).incident
    b = e.on_signal(msd_signal(vin="WVWZZZ1JZXW000002", vehicle="b", position=NEAR), now=T0 + 2).incident
    c = e.on_signal(msd_signal(vin="WVWZZZ1JZXW000003", vehicle="c", position=GRAZ), now=T0 + 3).incident
    assert a and b and c
    assert len({a.incident_id, b.incident_id, c.incident_id}) == 3
    assert a.scene_id == b.scene_id == a.incident_id
    assert c.scene_id == c.incident_id  # far away: its own scene
    assert "scene_linked" in {r.code for r in b.reasons}


def test_manual_burst_holds_escalation() -> None:
    # Button misuse: the third manual incident of one vehicle in 30 minutes waits for an operator.
    e = TriageEngine(POLICY, KEY)
    outs = []
    for i in range(3):
        now = T0 + i * 300
        d = e.on_signal(msd_signal(call_id=f"c{i}", automatic=False, timestamp=int(now)), now=now)
        e.on_operator_action(d.incident.incident_id, "resolve", now=now + 10)  # type: ignore[union-attr]
        outs.append(d)
    codes = [{r.code for r in d.reasons} for d in outs]
    assert "manual_burst" not in codes[1] and "manual_burst" in codes[2]
    assert "escalation_held" in codes[2]
    assert e.due(T0 + 5000) == []


def test_provider_storm_never_holds_back_automatic() -> None:
    e = TriageEngine(POLICY, KEY)
    decisions = [
        e.on_signal(
            msd_signal(tps="flood", vehicle=f"v{i}", vin=f"WVWZZZ1JZ{i:08d}", position=OUTSIDE), now=T0 + i
        )
        for i in range(25)
    ]
    stormy = [d for d in decisions if "provider_storm" in {r.code for r in d.reasons}]
    assert len(stormy) == 25 - POLICY.storm_min_count  # from the 21st on
    assert all({r.receiver for r in d.routes} == {OP, FB} for d in decisions)
    # A manual call in the storm waits for an operator.
    m = e.on_signal(
        msd_signal(tps="flood", vehicle="m", vin="WVWZZZ1JZ99999999", automatic=False), now=T0 + 30
    )
    assert {"provider_storm", "escalation_held"} <= {r.code for r in m.reasons}
    assert e.due(T0 + 1000) == []
    # Another provider is not in a storm.
    other = e.on_signal(msd_signal(tps="calm", vehicle="x", vin="WVWZZZ1JZ88888888"), now=T0 + 31)
    assert "provider_storm" not in {r.code for r in other.reasons}


def test_storm_baseline_adapts_to_a_busy_provider() -> None:
    # A provider with 30 calls per 10 minutes every day is busy, not stormy, once its baseline is learnt.
    policy = TriagePolicy.from_mapping({"storm_baseline_s": 6000})
    e = TriageEngine(policy, KEY)
    flagged_late = 0
    n = 0
    for window in range(30):
        for j in range(30):
            now = T0 + window * 600 + j * 19
            d = e.on_signal(
                msd_signal(tps="busy", vehicle=f"v{n}", vin=f"WVWZZZ1JZ{n:08d}", position=OUTSIDE), now=now
            )
            n += 1
            if window >= 25 and "provider_storm" in {r.code for r in d.reasons}:
                flagged_late += 1
    assert flagged_late == 0


def test_prune_forgets_old_state() -> None:
    e = TriageEngine(POLICY, KEY)
    d = e.on_signal(msd_signal(), now=T0)
    iid = d.incident.incident_id  # type: ignore[union-attr]
    assert e.prune(T0 + 3599) == 0 and e.get(iid) is not None
    assert e.prune(T0 + 3601) == 1 and e.get(iid) is None and len(e) == 0
    # The same call later is new state: a new incident with a new id.
    d2 = e.on_signal(msd_signal(), now=T0 + 4000)
    assert d2.outcome is Outcome.new_incident and d2.incident and d2.incident.incident_id != iid
    assert e.on_operator_action(iid, "ack", now=T0 + 4001).outcome is Outcome.unknown_incident


def test_prune_drops_orphans_and_timers() -> None:
    e = TriageEngine(POLICY, KEY)
    e.on_signal(cancel_signal(call_id="lost"), now=T0)
    e.on_signal(msd_signal(automatic=False), now=T0)
    assert e.prune(T0 + 7200) == 1
    assert e.due(T0 + 7200) == []
    # The orphan cancel is gone: a late MSD of that call is not cancelled by it.
    d = e.on_signal(msd_signal(call_id="lost", automatic=False), now=T0 + 7300)
    assert d.incident is not None and d.incident.status == "open"


def test_incident_ids_are_keyed_and_reproducible() -> None:
    a = TriageEngine(POLICY, KEY).on_signal(msd_signal(), now=T0).incident
    b = TriageEngine(POLICY, KEY).on_signal(msd_signal(), now=T0).incident
    c = TriageEngine(POLICY, b"another-key-of-sixteen+").on_signal(msd_signal(), now=T0).incident
    assert a and b and c
    assert a.incident_id == b.incident_id != c.incident_id
    assert "WVWZZZ" not in a.incident_id


def test_key_too_short_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        TriageEngine(POLICY, b"short")


def test_state_keys_never_hold_the_vin() -> None:
    # Privacy: dedup state is keyed by the VIN's keyed hash (checked on the engine's indexes).
    e = TriageEngine(POLICY, KEY)
    e.on_signal(msd_signal(vin="WVWZZZ1JZXW000001"), now=T0)
    for vkey, _test in e._vehicles:
        assert isinstance(vkey, bytes) and b"WVWZZZ" not in vkey and len(vkey) == 16
