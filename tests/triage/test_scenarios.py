"""The labelled scenario suite from the simulators, scored against triage's bars.

Every scenario (UK 2024 mix by default) is played in send order through one engine, with the
operator desk acting as the label says (escalate or cancel at the scenario's start plus
``operator_delay_s``) and escalation timers ticked before every event. Bars (issue 3):
100 % of real emergencies forwarded to a PSAP; the first forward of an automatic crash decided on its
first signal; >= 90 % of false triggers kept off PSAPs; one incident per vehicle in real crashes.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

import pytest

from ecallgw.model import MsdSignal, Signal
from ecallgw.simulators.scenarios import ALL_KINDS_MIX, DEFAULT_MIX, Mix, Scenario, generate, timeline
from ecallgw.triage import Decision, TriageEngine, TriagePolicy
from tests.triage._build import KEY

POLICY = TriagePolicy()  # every position goes to the fallback PSAP: routing by area is tested elsewhere
PSAPS = {POLICY.fallback_psap_receiver}


@dataclass
class Result:
    """What triage did with each scenario."""

    incidents: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # scenario -> ids
    psap: set[str] = field(default_factory=set)  # incident ids routed to a PSAP
    operator: set[str] = field(default_factory=set)
    first_signal_psap: dict[str, bool] = field(default_factory=dict)  # (scenario, vehicle) -> PSAP at once
    reasons: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # scenario -> codes


def play(scenarios: list[Scenario]) -> Result:
    engine = TriageEngine(POLICY, KEY)
    res = Result()
    owner: dict[str, str] = {}  # incident id -> scenario id
    seen_vehicle: set[tuple[str, str]] = set()
    events: list[tuple[float, int, Scenario, Signal | None]] = []
    for at, scenario, timed in timeline(scenarios):
        events.append((at, 0, scenario, timed.signal))
    for s in scenarios:
        if s.label.operator_action and s.label.operator_delay_s is not None:
            events.append((s.start + s.label.operator_delay_s, 1, s, None))
    events.sort(key=lambda e: (e[0], e[1]))

    def record(scenario_id: str, d: Decision) -> None:
        if d.incident is not None:
            owner.setdefault(d.incident.incident_id, scenario_id)
            res.incidents[owner[d.incident.incident_id]].add(d.incident.incident_id)
        for r in d.routes:
            if r.receiver in PSAPS:
                res.psap.add(r.incident_id)
            if r.receiver == POLICY.operator_receiver:
                res.operator.add(r.incident_id)
        res.reasons[scenario_id] |= {r.code for r in d.reasons}

    acted: set[str] = set()

    def operator(scenario: Scenario, at: float) -> None:
        # Like simulators.psap.OperatorBot: the desk acts on every incident of the scenario it
        # received, at the scenario's start plus operator_delay_s, or at once when it came later.
        action, delay = scenario.label.operator_action, scenario.label.operator_delay_s
        if action is None or delay is None or at < scenario.start + delay:
            return
        for iid in sorted(res.incidents[scenario.id] & res.operator - acted):
            acted.add(iid)
            record(scenario.id, engine.on_operator_action(iid, action, now=at, actor="bot"))

    for at, _, scenario, item in events:
        for d in engine.due(at):
            assert d.incident is not None
            record(owner[d.incident.incident_id], d)
        if item is None:
            operator(scenario, at)
            continue
        d = engine.on_signal(item, now=at)
        record(scenario.id, d)
        operator(scenario, at)
        if isinstance(item, MsdSignal) and (scenario.id, item.vehicle) not in seen_vehicle:
            seen_vehicle.add((scenario.id, item.vehicle))
            res.first_signal_psap[f"{scenario.id}/{item.vehicle}"] = any(
                r.receiver in PSAPS for r in d.routes
            )
    last = max(e[0] for e in events)
    for d in engine.due(last + 3600):
        assert d.incident is not None
        record(owner[d.incident.incident_id], d)
    return res


def _score(scenarios: list[Scenario], res: Result) -> dict[str, float]:
    real = [s for s in scenarios if s.label.real]
    false = [s for s in scenarios if not s.label.real]
    forwarded = [s for s in real if res.incidents[s.id] and res.incidents[s.id] <= res.psap]
    kept_off = [s for s in false if not (res.incidents[s.id] & res.psap)]
    return {
        "real": len(real),
        "recall": len(forwarded) / len(real),
        "false": len(false),
        "kept_off": len(kept_off) / len(false),
    }


@pytest.fixture(scope="module")
def uk_suite() -> tuple[list[Scenario], Result]:
    scenarios = generate(random.Random(2024), 1500, DEFAULT_MIX)
    return scenarios, play(scenarios)


def test_every_real_emergency_reaches_a_psap(uk_suite: tuple[list[Scenario], Result]) -> None:
    scenarios, res = uk_suite
    score = _score(scenarios, res)
    missed = [
        s.id
        for s in scenarios
        if s.label.real and not (res.incidents[s.id] and res.incidents[s.id] <= res.psap)
    ]
    assert score["real"] > 300, "the suite must hold enough real emergencies to mean something"
    assert missed == []
    assert score["recall"] == 1.0


def test_false_triggers_kept_off_psaps(
    uk_suite: tuple[list[Scenario], Result], capsys: pytest.CaptureFixture[str]
) -> None:
    scenarios, res = uk_suite
    score = _score(scenarios, res)
    with capsys.disabled():
        print(f"\nUK 2024 suite: {score}")
    # UK 2024: automatic false calls (~7 % of false ones) reach a PSAP by the safety invariant.
    assert score["kept_off"] >= 0.90, score
    assert score["kept_off"] >= 997 / 1070, score  # issue 12: no lower than before (93.2 %)
    for s in scenarios:
        if s.label.kind in ("accidental_cancel", "test_call", "press_no_cancel", "dealer_demo"):
            assert not (res.incidents[s.id] & res.psap), s.id


def test_automatic_crashes_forwarded_on_their_first_signal(uk_suite: tuple[list[Scenario], Result]) -> None:
    scenarios, res = uk_suite
    checked = 0
    for s in scenarios:
        if s.label.real and s.label.automatic:
            for key, at_once in res.first_signal_psap.items():
                if key.startswith(s.id + "/"):
                    # A second device joining the first one's incident is already at the PSAP.
                    assert at_once or s.label.kind == "two_devices", key
                    checked += 1
    assert checked > 100


def test_incident_counts_match_the_labels(uk_suite: tuple[list[Scenario], Result]) -> None:
    scenarios, res = uk_suite
    wrong = {
        s.id: (s.label.kind, len(res.incidents[s.id]), s.label.expected_incidents)
        for s in scenarios
        if s.label.real and len(res.incidents[s.id]) != s.label.expected_incidents
    }
    # Real crashes: exactly one incident per vehicle (redials and second devices folded in).
    assert wrong == {}


def test_all_kinds_suite(capsys: pytest.CaptureFixture[str]) -> None:
    # Every kind equally often, with storms and stale replays: real ones still all reach a PSAP,
    # storms and stale MSDs are flagged, and manual stale replays stay with the operator.
    scenarios = generate(random.Random(7), 400, ALL_KINDS_MIX, mean_gap_s=30.0)
    res = play(scenarios)
    score = _score(scenarios, res)
    assert score["recall"] == 1.0
    assert score["kept_off"] >= 169 / 251, score  # issue 12: no lower than before (67.3 %)
    for s in scenarios:
        if s.label.kind == "stale_replay":
            assert "msd_timestamp_stale" in res.reasons[s.id], s.id
            if not s.label.automatic:
                assert not (res.incidents[s.id] & res.psap), s.id
    storms = [s for s in scenarios if s.label.kind == "storm"]
    assert storms and all("provider_storm" in res.reasons[s.id] for s in storms)
    with capsys.disabled():
        print(f"\nall-kinds suite: {score}")


def test_uk_mix_shares_stay_in_the_expected_range() -> None:
    # Guards the suite itself: if the simulator's mix changes, the bars above must be re-judged.
    mix = Mix()
    assert mix.shares["false_automatic"] < 0.1
