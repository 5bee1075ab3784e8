"""Severity: a score 0..100, a level and the reasons, from the evidence an incident's MSDs carry.

The model (docs/triage.md "Severity") in one paragraph: evidence is collected from every MSD of an
incident and only ever grows (``Evidence.merge``); the score is the larger of an additive part
(activation type plus ordinal weights for aggravating facts) and floors set by calibrated injury
risk. Only two numbers in it are evidence-based and both come from domain.md: the URGENCY risks of
serious injury at 30 mph delta-V per impact direction, and the 20 % risk at which field triage
flags a crash (CDC 2011). Everything else is an ordinal weight that orders incidents for operators;
it claims no probability. Scores map to levels: >= 75 critical, >= 50 high, >= 25 medium.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ecallgw.model import (
    CrashInfo,
    EraAdditionalData,
    IILocations,
    IncInfo,
    Level,
    Msd,
    Reason,
    Severity,
    VehicleType,
)

__all__ = [
    "CRITICAL_RISK",
    "DELTA_V_CALIBRATION_KMH",
    "URGENCY_RISK_AT_30_MPH",
    "Evidence",
    "evidence_from_msd",
    "level_for",
    "score",
]

_frozen = {"frozen": True, "slots": True, "kw_only": True}

# --- Calibration points (domain.md "Severity: what the evidence supports") ---------------------------

DELTA_V_CALIBRATION_KMH = 30 * 1.609344
"""30 mph in km/h: the delta-V of the URGENCY calibration points."""

URGENCY_RISK_AT_30_MPH = {"frontal": 0.389, "near-side": 0.838, "far-side": 0.478, "rear": 0.199}
"""Risk of serious injury (ISS >= 15) at 30 mph delta-V by impact direction (URGENCY)."""

URGENCY_RECOMMENDED = {"frontal": 0.10, "near-side": 0.05, "far-side": 0.05, "rear": 0.10}
"""URGENCY's recommended notification thresholds: 0.10 frontal, 0.05 side (rear: the frontal one)."""

CRITICAL_RISK = 0.20
"""CDC 2011 field triage: flag a crash when the risk of ISS >= 15 is at least 20 %."""

# Ordinal weights: they order incidents for people and claim no probability (docs/triage.md).
_W_AUTOMATIC = 50  # the crash sensor fired: ~2/3 of automatic calls are genuine (UK 2024)
_W_MANUAL = 25  # the SOS button: ~1/4 of manual calls are genuine (UK 2024)
_W_ROLLOVER = 10
_W_MULTIPLE_IMPACTS = 10
_W_SIDE_IMPACT = 5
_W_BUS = 15
_W_L_CATEGORY = 15
_W_HEAVY_GOODS = 10
_W_OCCUPANTS_2 = 5
_W_OCCUPANTS_5 = 10
_W_PROPULSION_HAZARD = 5

_BUSES = frozenset({VehicleType.busesAndCoachesClassM2, VehicleType.busesAndCoachesClassM3})
_L_CATEGORY = frozenset(VehicleType(v) for v in range(7, 14))
_HEAVY_GOODS = frozenset({VehicleType.heavyDutyVehiclesClassN2, VehicleType.heavyDutyVehiclesClassN3})


@dataclass(**_frozen)
class Evidence:
    """What an incident's MSDs say about harm; merged across MSDs so it only ever grows.

    Attributes:
        automatic: some MSD was an automatic activation.
        bus: vehicle class M2/M3. l_category: L1e..L7e. heavy_goods: N2/N3.
        occupants: the largest occupant count reported, None when never reported.
        hydrogen, gas, high_voltage: propulsion storage hazards for responders (gas = CNG or LPG).
        rollover: a rollover was reported (ERA-GLONASS crashRollover or Euro NCAP rolloverDetected).
        impacts: impact directions reported ("front", "rear", "left", "right", "side",
            "driverSide", "nonDriverSide", ...), sorted.
        delta_v: per Euro NCAP impact location, the largest delta-V magnitude in km/h, sorted.
        asi15: the largest ERA-GLONASS crashSeverity (ASI15) reported.
    """

    automatic: bool = False
    bus: bool = False
    l_category: bool = False
    heavy_goods: bool = False
    occupants: int | None = None
    hydrogen: bool = False
    gas: bool = False
    high_voltage: bool = False
    rollover: bool = False
    impacts: tuple[str, ...] = ()
    delta_v: tuple[tuple[str, float], ...] = ()
    asi15: int | None = None

    def merge(self, other: Evidence) -> Evidence:
        """The union of two bodies of evidence: flags or-ed, counts and magnitudes maxed."""
        if other == self:
            return self
        dv = dict(self.delta_v)
        for loc, v in other.delta_v:
            dv[loc] = max(v, dv.get(loc, 0.0))
        return Evidence(
            automatic=self.automatic or other.automatic,
            bus=self.bus or other.bus,
            l_category=self.l_category or other.l_category,
            heavy_goods=self.heavy_goods or other.heavy_goods,
            occupants=_max_opt(self.occupants, other.occupants),
            hydrogen=self.hydrogen or other.hydrogen,
            gas=self.gas or other.gas,
            high_voltage=self.high_voltage or other.high_voltage,
            rollover=self.rollover or other.rollover,
            impacts=tuple(sorted(set(self.impacts) | set(other.impacts))),
            delta_v=tuple(sorted(dv.items())),
            asi15=_max_opt(self.asi15, other.asi15),
        )


def _max_opt(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


_CRASH_FLAGS = (
    ("crash_front", "front"),
    ("crash_left", "left"),
    ("crash_right", "right"),
    ("crash_rear", "rear"),
    ("crash_side", "side"),
    ("crash_front_or_side", "frontOrSide"),
    ("crash_another_type", "anotherType"),
)


def evidence_from_msd(msd: Msd) -> Evidence:
    """Collect the harm evidence of one MSD (EN 15722 fields and known optional additional data)."""
    s = msd.msd.msd_structure
    vt = s.control.vehicle_type
    p = s.vehicle_propulsion_storage_type
    occupants = s.number_of_passengers
    rollover = False
    impacts: list[str] = []
    delta_v: tuple[tuple[str, float], ...] = ()
    asi15: int | None = None
    oad = msd.msd.optional_additional_data
    decoded = oad.decoded if oad is not None else None
    if isinstance(decoded, EraAdditionalData):
        # ERA-GLONASS (GOST 33464) ERAAdditionalData: ASI15 and crash-type flags.
        asi15 = decoded.crash_severity
        info: CrashInfo | None = decoded.crash_info
        if info is not None:
            rollover = bool(info.crash_rollover)
            impacts = [name for attr, name in _CRASH_FLAGS if getattr(info, attr)]
    elif isinstance(decoded, IncInfo):
        # Euro NCAP TB 040 INCINFO: impact location, rollover, delta-V along X and Y.
        rollover = bool(decoded.rollover_detected)
        loc = decoded.location_of_impact
        if loc not in (IILocations.none, IILocations.unknown):
            impacts = [loc.name]
        magnitude = math.hypot(decoded.delta_v.delta_vx, decoded.delta_v.delta_vy)
        if magnitude > 0:
            delta_v = ((loc.name, float(magnitude)),)
    return Evidence(
        automatic=s.control.automatic_activation,
        bus=vt in _BUSES,
        l_category=vt in _L_CATEGORY,
        heavy_goods=vt in _HEAVY_GOODS,
        occupants=None if occupants is None or occupants == 255 else occupants,
        hydrogen=p.hydrogen_storage,
        gas=p.compressed_natural_gas or p.liquid_propane_gas,
        high_voltage=p.electric_energy_storage,
        rollover=rollover,
        impacts=tuple(sorted(set(impacts))),
        delta_v=delta_v,
        asi15=asi15,
    )


def level_for(score_value: int) -> Level:
    """The level of a score: >= 75 critical, >= 50 high, >= 25 medium, else low."""
    if score_value >= 75:
        return "critical"
    if score_value >= 50:
        return "high"
    if score_value >= 25:
        return "medium"
    return "low"


def _direction(location: str, occupants: int | None) -> str | None:
    # Euro NCAP impact location -> URGENCY direction. The driver always sits on the driver side, so
    # a driver-side impact is near-side. A non-driver-side impact is near-side for a passenger there:
    # unless the MSD says the driver is alone, assume one may be (the higher, safer risk).
    if location == "front":
        return "frontal"
    if location == "rear":
        return "rear"
    if location == "driverSide":
        return "near-side"
    if location == "nonDriverSide":
        return "far-side" if occupants == 1 else "near-side"
    return None  # unknown, none, other: direction not known


def _risk_floor(e: Evidence) -> tuple[float, str, str] | None:
    """The largest calibrated lower bound of injury risk, with its direction and delta-V text."""
    best: tuple[float, str, str] | None = None
    for location, kmh in e.delta_v:
        if kmh < DELTA_V_CALIBRATION_KMH:
            continue  # below 30 mph no published point bounds the risk from below
        direction = _direction(location, e.occupants)
        # Unknown direction: the smallest of the four calibrated risks is still a lower bound.
        risk = URGENCY_RISK_AT_30_MPH[direction] if direction else min(URGENCY_RISK_AT_30_MPH.values())
        label = direction or "unknown direction"
        if best is None or risk > best[0]:
            best = (risk, label, f"{kmh:.0f} km/h")
    return best


def score(e: Evidence, *, test: bool = False, asi15_high: int | None = None) -> Severity:
    """Score the evidence of one incident.

    Args:
        e: the merged evidence.
        test: a test call: level low, score 0, whatever else the MSD says.
        asi15_high: ``TriagePolicy.asi15_high`` (None: ASI15 is reported but not scored).

    Returns:
        The severity; its reasons list every fact that contributed, in a fixed order.
    """
    if test:
        return Severity(
            level="low", score=0, reasons=(Reason(code="test_call", text="test call: not scored"),)
        )
    reasons: list[Reason] = []
    if e.automatic:
        points = _W_AUTOMATIC
        reasons.append(Reason(code="activation_automatic", text="automatic activation (crash sensor)"))
    else:
        points = _W_MANUAL
        reasons.append(Reason(code="activation_manual", text="manual activation (SOS button)"))
    floor = 0
    risk = _risk_floor(e)
    if risk is not None:
        p, direction, dv = risk
        if p >= CRITICAL_RISK:
            # Map the calibrated risk into the critical band, growing with the risk.
            floor = 75 + round(25 * (p - CRITICAL_RISK) / (1 - CRITICAL_RISK))
            above = f"at or above the {CRITICAL_RISK:.0%} field-triage threshold (CDC 2011)"
        else:
            # Below the CDC threshold but above URGENCY's: high, never critical.
            floor = (
                min(74, 50 + round(25 * p / CRITICAL_RISK))
                if p >= URGENCY_RECOMMENDED.get(direction, 0.10)
                else 0
            )
            above = "above URGENCY's recommended notification threshold"
        reasons.append(
            Reason(
                code="delta_v_high",
                text=f"delta-V {dv} {direction} >= 30 mph: risk of serious injury >= {p:.1%} "
                f"(URGENCY), {above}",
            )
        )
    elif e.delta_v:
        kmh = max(v for _, v in e.delta_v)
        reasons.append(
            Reason(code="delta_v_reported", text=f"delta-V {kmh:.0f} km/h reported, below 30 mph calibration")
        )
    if e.rollover:
        points += _W_ROLLOVER
        floor = max(floor, 50)
        reasons.append(Reason(code="rollover", text="rollover reported"))
    directions = set(e.impacts) - {"anotherType", "other"}
    if len(directions) >= 2:
        points += _W_MULTIPLE_IMPACTS
        reasons.append(Reason(code="multiple_impacts", text="impacts from several directions"))
    if directions & {"left", "right", "side", "frontOrSide", "driverSide", "nonDriverSide"}:
        points += _W_SIDE_IMPACT
        reasons.append(Reason(code="side_impact", text="side impact (highest risk per delta-V, URGENCY)"))
    if e.asi15 is not None:
        if asi15_high is not None and e.asi15 >= asi15_high:
            floor = max(floor, 50)
            reasons.append(Reason(code="asi15_high", text=f"crash severity ASI15 {e.asi15} >= {asi15_high}"))
        else:
            reasons.append(Reason(code="asi15_reported", text=f"crash severity ASI15 {e.asi15} reported"))
    if e.bus:
        points += _W_BUS
        reasons.append(Reason(code="vehicle_bus", text="bus or coach (M2/M3): many possible victims"))
    if e.l_category:
        points += _W_L_CATEGORY
        reasons.append(Reason(code="vehicle_l_category", text="L-category vehicle: unprotected rider"))
    if e.heavy_goods:
        points += _W_HEAVY_GOODS
        reasons.append(
            Reason(code="vehicle_heavy_goods", text="N2/N3 goods vehicle: possible dangerous goods")
        )
    if e.occupants is not None and e.occupants >= 2:
        points += _W_OCCUPANTS_5 if e.occupants >= 5 else _W_OCCUPANTS_2
        reasons.append(Reason(code="occupants_multiple", text=f"{e.occupants} occupants"))
    hazards = [
        name
        for flag, name in (
            (e.hydrogen, "hydrogen"),
            (e.gas, "CNG/LPG"),
            (e.high_voltage, "high-voltage storage"),
        )
        if flag
    ]
    if hazards:
        points += _W_PROPULSION_HAZARD
        reasons.append(
            Reason(code="propulsion_hazard", text=f"propulsion hazard for responders: {', '.join(hazards)}")
        )
    value = min(100, max(points, floor))
    return Severity(level=level_for(value), score=value, reasons=tuple(reasons))
