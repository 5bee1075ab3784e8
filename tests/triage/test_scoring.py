"""Severity: table of evidence -> level and reasons, and the monotonicity and determinism properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecallgw.model import (
    CrashInfo,
    EraAdditionalData,
    IIDeltaV,
    IILocations,
    IncInfo,
    VehiclePropulsionStorageType,
    VehicleType,
)
from ecallgw.triage.scoring import (
    DELTA_V_CALIBRATION_KMH,
    Evidence,
    evidence_from_msd,
    level_for,
    score,
)
from tests.codecs._strategies import msds
from tests.triage._build import make_msd


def _ncap(location: IILocations, vx: int, vy: int = 0, rollover: bool | None = None) -> IncInfo:
    return IncInfo(
        location_of_impact=location,
        delta_v=IIDeltaV(range_limit=150, delta_vx=vx, delta_vy=vy),
        rollover_detected=rollover,
    )


def _era(asi15: int | None = None, **flags: bool) -> EraAdditionalData:
    return EraAdditionalData(format=2, crash_severity=asi15, crash_info=CrashInfo(**flags) if flags else None)


CASES: list[tuple[str, dict[str, object], str, set[str]]] = [
    # The base of the model: a crash sensor firing is high, an SOS press medium (UK 2024 false shares).
    ("automatic-plain", {}, "high", {"activation_automatic"}),
    ("manual-plain", {"automatic": False}, "medium", {"activation_manual"}),
    # Test calls are never scored, whatever else they say.
    ("test", {"test": True, "vehicle_type": VehicleType.busesAndCoachesClassM3}, "low", {"test_call"}),
    # URGENCY: 30 mph frontal -> 38.9 % >= 20 % (CDC 2011): critical.
    ("frontal-50kmh", {"oad": _ncap(IILocations.front, -50)}, "critical", {"delta_v_high"}),
    # Rear at 30 mph is 19.9 %: above URGENCY's 10 %, just below CDC's 20 %: high, not critical.
    ("rear-50kmh", {"oad": _ncap(IILocations.rear, 50)}, "high", {"delta_v_high"}),
    # Below 30 mph no published point bounds the risk: reported, not scored as critical.
    ("frontal-30kmh", {"oad": _ncap(IILocations.front, -30)}, "high", {"delta_v_reported"}),
    # A manual call with a 30 mph near-side impact is critical regardless of the button.
    (
        "manual-near-side",
        {"automatic": False, "oad": _ncap(IILocations.driverSide, 0, 49)},
        "critical",
        {"delta_v_high"},
    ),
    # Unknown impact location at >= 30 mph: the smallest calibrated risk (rear, 19.9 %) is still a bound.
    ("unknown-direction", {"oad": _ncap(IILocations.unknown, 55)}, "high", {"delta_v_high"}),
    # Rollover floors at high even for a manual call.
    (
        "manual-rollover",
        {"automatic": False, "oad": _ncap(IILocations.none, 0, 0, True)},
        "high",
        {"rollover"},
    ),
    ("era-rollover-front", {"oad": _era(crash_rollover=True, crash_front=True)}, "high", {"rollover"}),
    # Impacts from two directions (Kononen 2011: multiple impacts) and side impacts add weight.
    (
        "era-front-left",
        {"oad": _era(crash_front=True, crash_left=True)},
        "high",
        {"multiple_impacts", "side_impact"},
    ),
    # ASI15 is reported but not scored without a calibrated threshold.
    ("asi15-unscored", {"automatic": False, "oad": _era(asi15=1800)}, "medium", {"asi15_reported"}),
    # Vehicle classes that matter to responders.
    ("bus", {"vehicle_type": VehicleType.busesAndCoachesClassM2}, "high", {"vehicle_bus"}),
    (
        "motorcycle-manual",
        {"automatic": False, "vehicle_type": VehicleType.motorcyclesClassL3e},
        "medium",
        {"vehicle_l_category"},
    ),
    ("truck", {"vehicle_type": VehicleType.heavyDutyVehiclesClassN3}, "high", {"vehicle_heavy_goods"}),
    # Bus + rollover + full: the weights reach critical without any delta-V.
    (
        "bus-rollover-full",
        {
            "vehicle_type": VehicleType.busesAndCoachesClassM3,
            "occupants": 40,
            "oad": _era(crash_rollover=True),
        },
        "critical",
        {"vehicle_bus", "rollover", "occupants_multiple"},
    ),
    ("occupants-unknown", {"occupants": 255}, "high", {"activation_automatic"}),
    (
        "hydrogen",
        {"propulsion": VehiclePropulsionStorageType(hydrogen_storage=True)},
        "high",
        {"propulsion_hazard"},
    ),
]


@pytest.mark.parametrize(("kwargs", "level", "codes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_severity_table(kwargs: dict[str, object], level: str, codes: set[str]) -> None:
    msd = make_msd(**kwargs)  # type: ignore[arg-type]
    sev = score(evidence_from_msd(msd), test=msd.test)
    assert sev.level == level
    assert codes <= {r.code for r in sev.reasons}
    assert 0 <= sev.score <= 100
    assert level_for(sev.score) == sev.level


def test_asi15_threshold_from_policy() -> None:
    e = evidence_from_msd(make_msd(automatic=False, oad=_era(asi15=1800)))
    assert score(e, asi15_high=1000).level == "high"
    assert score(e, asi15_high=1900).level == "medium"


def test_near_side_outranks_frontal_at_same_delta_v() -> None:
    # URGENCY: 83.8 % near-side vs 38.9 % frontal at 30 mph; the score keeps that order.
    near = score(evidence_from_msd(make_msd(oad=_ncap(IILocations.driverSide, 0, 60))))
    front = score(evidence_from_msd(make_msd(oad=_ncap(IILocations.front, -60))))
    assert near.score > front.score >= 75


def test_lone_driver_non_driver_side_is_far_side() -> None:
    # A passenger-side impact is near-side for a passenger; with the driver alone it is far-side.
    alone = score(evidence_from_msd(make_msd(occupants=1, oad=_ncap(IILocations.nonDriverSide, 0, 60))))
    two = score(evidence_from_msd(make_msd(occupants=2, oad=_ncap(IILocations.nonDriverSide, 0, 60))))
    assert "far-side" in next(r.text for r in alone.reasons if r.code == "delta_v_high")
    assert two.score > alone.score


def test_calibration_constant() -> None:
    assert pytest.approx(48.28, abs=0.01) == DELTA_V_CALIBRATION_KMH


# --- properties ---------------------------------------------------------------------------------------

evidence = st.builds(
    Evidence,
    automatic=st.booleans(),
    bus=st.booleans(),
    l_category=st.booleans(),
    heavy_goods=st.booleans(),
    occupants=st.none() | st.integers(0, 254),
    hydrogen=st.booleans(),
    gas=st.booleans(),
    high_voltage=st.booleans(),
    rollover=st.booleans(),
    impacts=st.lists(
        st.sampled_from(["front", "rear", "left", "right", "side", "driverSide", "nonDriverSide", "other"]),
        unique=True,
    ).map(lambda xs: tuple(sorted(xs))),
    delta_v=st.dictionaries(
        st.sampled_from(["front", "rear", "driverSide", "nonDriverSide", "unknown", "other"]),
        st.floats(0, 360, allow_nan=False),
        max_size=3,
    ).map(lambda d: tuple(sorted(d.items()))),
    asi15=st.none() | st.integers(0, 2047),
)


@given(evidence, evidence, st.none() | st.integers(0, 2047))
def test_more_evidence_never_lowers_the_score(a: Evidence, b: Evidence, asi: int | None) -> None:
    merged = a.merge(b)
    assert score(merged, asi15_high=asi).score >= score(a, asi15_high=asi).score
    assert score(merged, asi15_high=asi).score >= score(b, asi15_high=asi).score


@given(evidence, evidence)
def test_merge_is_commutative_and_idempotent(a: Evidence, b: Evidence) -> None:
    # Order-independence of evidence: which MSD of an incident came first does not change severity.
    assert a.merge(b) == b.merge(a)
    assert a.merge(a) == a
    assert a.merge(b).merge(b) == a.merge(b)


@given(msds())
def test_any_msd_scores_deterministically(msd: object) -> None:
    from ecallgw.model import Msd

    assert isinstance(msd, Msd)
    e = evidence_from_msd(msd)
    first = score(e, test=msd.test)
    assert first == score(evidence_from_msd(msd), test=msd.test)
    assert 0 <= first.score <= 100
    assert first.reasons, "every severity explains itself"
