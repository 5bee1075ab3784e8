"""Scenario generators with ground-truth labels: what a provider's gateway really sees.

A scenario is one situation on the road (a crash, a medical emergency, a mistaken SOS press, a
firmware storm, ...): a timed list of signals, as the model types the gateway decodes them into,
plus a ``Label`` saying what really happened and what a perfect triage would do. The same seed
gives the same scenarios, signals and labels (no global randomness, no clock).

The default mix follows the UK 2024 figures (RAC Foundation, August 2025; docs/simulators.md):
over 85 % of eCalls manual, about three quarters of manual and about a third of automatic calls
false, about two thirds of all calls false. How the false ones split between causes, and the
rates of dropped calls, retransmissions and untrusted positions, are our assumptions. Every share is
configurable (``Mix.parse``).

Use::

    rng = random.Random(7)
    for scenario in generate(rng, 100):
        for timed in scenario.signals:
            timed.offset_s, timed.signal          # model Signal, sent_at = scenario.start + offset
        scenario.label.real, scenario.label.severity
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from ecallgw.model import (
    POSITION_UNKNOWN,
    AdditionalData,
    CancelSignal,
    ControlType,
    CoordinateSystemType,
    CrashInfo,
    DiagnosticResult,
    EraAdditionalData,
    IIDeltaV,
    IILocations,
    IncInfo,
    Level,
    Msd,
    MsdMessage,
    MsdSignal,
    MsdStructure,
    Position,
    PositionSignal,
    Signal,
    VehicleIdentificationNumber,
    VehicleLocation,
    VehicleType,
)
from ecallgw.simulators._oad import encode_era, encode_incinfo
from ecallgw.simulators.fleet import TPS_NAMES, Vehicle, random_vehicle, weighted_choice
from ecallgw.simulators.trajectory import Road, Trajectory, drive, offset_position, random_place

__all__ = [
    "ALL_KINDS_MIX",
    "DEFAULT_MIX",
    "DEFAULT_START",
    "KINDS",
    "CrashPhysics",
    "Kind",
    "Label",
    "Mix",
    "OperatorAction",
    "Scenario",
    "TimedSignal",
    "generate",
    "injury_risk",
    "severity_of",
    "timeline",
]

Kind = Literal[
    "crash",
    "multi_vehicle_crash",
    "two_devices",
    "medical",
    "accidental_cancel",
    "press_no_cancel",
    "test_call",
    "dealer_demo",
    "false_automatic",
    "storm",
    "stale_replay",
]
KINDS: tuple[Kind, ...] = get_args(Kind)
OperatorAction = Literal["escalate", "cancel"]
Impact = Literal["front", "rear", "driverSide", "nonDriverSide", "rollover"]

DEFAULT_START = 1_790_000_000.0
"""2026-09-21T14:13:20Z: a fixed epoch so that generated values do not depend on the clock."""

_REAL: frozenset[Kind] = frozenset({"crash", "multi_vehicle_crash", "two_devices", "medical"})
_AUTOMATIC: frozenset[Kind] = frozenset(
    {"crash", "multi_vehicle_crash", "two_devices", "false_automatic", "storm"}
)

# UK 2024 (RAC Foundation): manual 86 %, of which 75 % false; automatic 14 %, of which a third false.
# manual false 64.5 % split by cause (our assumption), manual real 21.5 %, automatic false 4.67 %,
# automatic real 9.33 % split into single crashes, multi-vehicle crashes and two-device reports.
_UK_2024: Mapping[Kind, float] = {
    "accidental_cancel": 0.25,
    "press_no_cancel": 0.28,
    "dealer_demo": 0.06,
    "test_call": 0.055,
    "medical": 0.215,
    "false_automatic": 0.0467,
    "crash": 0.08,
    "multi_vehicle_crash": 0.008,
    "two_devices": 0.0053,
    "stale_replay": 0.0,
    "storm": 0.0,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Mix:
    """Scenario shares and modifier probabilities.

    Attributes:
        shares: relative weight of each kind (need not sum to 1).
        redial: probability that a real or unanswered call drops and the vehicle redials
            (EN 16062 §7.14.3: within 2 minutes) as a new call.
        retransmission: probability that the unit resends the MSD with increasing messageIdentifier.
        untrusted_position: probability that the first MSD's position is off and flagged untrusted,
            corrected later by an NMEA position update.
        storm_size: vehicles fired by one provider's firmware fault in a ``storm`` scenario.
        storm_window_s: the seconds over which a storm's vehicles fire.
    """

    shares: Mapping[Kind, float] = field(default_factory=lambda: dict(_UK_2024))
    redial: float = 0.05
    retransmission: float = 0.10
    untrusted_position: float = 0.05
    storm_size: int = 200
    storm_window_s: float = 60.0

    @classmethod
    def parse(cls, text: str, base: Mix | None = None) -> Mix:
        """Override a mix from ``"crash=0.2,storm=0.01,redial=0.1,storm_size=500"``.

        Raises:
            ValueError: for an unknown name or a negative value.
        """
        mix = base if base is not None else cls()
        shares: dict[str, float] = {str(k): v for k, v in mix.shares.items()}
        overrides: dict[str, float] = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = item.partition("=")
            name = name.strip()
            number = float(value)
            if number < 0 or not math.isfinite(number):
                raise ValueError(f"mix value for {name!r} must be a finite number >= 0, got {value!r}")
            if name in KINDS:
                shares[name] = number
            elif name in ("redial", "retransmission", "untrusted_position", "storm_window_s"):
                overrides[name] = number
            elif name == "storm_size":
                overrides[name] = int(number)
            else:
                raise ValueError(f"unknown mix entry {name!r}; kinds: {', '.join(KINDS)}")
        if sum(shares.values()) <= 0:
            raise ValueError("the mix needs at least one kind with a positive share")
        return cls(
            shares=shares,  # type: ignore[arg-type]  # keys checked against KINDS above
            redial=overrides.get("redial", mix.redial),
            retransmission=overrides.get("retransmission", mix.retransmission),
            untrusted_position=overrides.get("untrusted_position", mix.untrusted_position),
            storm_size=int(overrides.get("storm_size", mix.storm_size)),
            storm_window_s=overrides.get("storm_window_s", mix.storm_window_s),
        )


DEFAULT_MIX = Mix()
"""The UK 2024 mix without storms or stale replays."""

ALL_KINDS_MIX = Mix(
    shares={k: 1.0 for k in KINDS},
    redial=0.2,
    retransmission=0.2,
    untrusted_position=0.2,
    storm_size=20,
    storm_window_s=30.0,
)
"""Every kind equally often, small storms: a labelled suite for triage tests."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CrashPhysics:
    """What the crash did to the vehicle (ground truth; only OAD-equipped units report it)."""

    delta_v_kmh: float
    impact: Impact
    injury_risk: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Label:
    """Ground truth for one scenario.

    Attributes:
        kind: the scenario kind.
        real: a real emergency: emergency services (a PSAP) must get it.
        automatic: raised by the crash sensors rather than the SOS button.
        severity: ground-truth level for real emergencies (from crash physics or the medical case);
            None for false calls.
        expected_incidents: incidents a perfect triage opens (a redial or a second device folds into
            the first call's incident; each vehicle of a multi-vehicle crash has its own).
        scene: shared by all vehicles at one scene (multi-vehicle crash, two devices, storm id).
        operator_action: what the operator does after talking to the occupants, or None when the
            vehicle cancels itself or no operator is involved (test call, stale replay).
        operator_delay_s: seconds after the first signal the operator acts.
        modifiers: "redial", "retransmission", "untrusted_position" where applied.
        physics: per vehicle key, the crash physics of real crashes.
    """

    kind: Kind
    real: bool
    automatic: bool
    severity: Level | None
    expected_incidents: int
    scene: str | None = None
    operator_action: OperatorAction | None = None
    operator_delay_s: float | None = None
    modifiers: tuple[str, ...] = ()
    physics: tuple[tuple[str, CrashPhysics], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TimedSignal:
    """One signal and when it is sent: ``offset_s`` seconds after the scenario's start."""

    offset_s: float
    signal: Signal

    @property
    def kind(self) -> Literal["msd", "cancel", "position"]:
        """The topic suffix: msd, cancel or position."""
        if isinstance(self.signal, MsdSignal):
            return "msd"
        if isinstance(self.signal, CancelSignal):
            return "cancel"
        return "position"


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A labelled, timed list of signals from one or more vehicles."""

    id: str
    start: float
    label: Label
    signals: tuple[TimedSignal, ...]
    vehicles: tuple[Vehicle, ...]

    @property
    def calls(self) -> frozenset[tuple[str, str, str]]:
        """Every (tps, vehicle, call_id) the scenario uses."""
        return frozenset((t.signal.tps, t.signal.vehicle, t.signal.call_id) for t in self.signals)

    @property
    def duration_s(self) -> float:
        """Offset of the last signal."""
        return max((t.offset_s for t in self.signals), default=0.0)


# --- Crash physics -------------------------------------------------------------------------------

# URGENCY calibration points (docs/domain.md): risk of serious injury at 30 mph (48.3 km/h) delta-V.
# A logistic curve through each point with a common slope (our assumption: 0.08 per km/h).
_RISK_AT_30MPH: Mapping[Impact, float] = {
    "front": 0.389,
    "driverSide": 0.838,  # near-side for the driver
    "nonDriverSide": 0.478,  # far-side
    "rear": 0.199,
    "rollover": 0.838,  # our assumption: as bad as a near-side impact
}
_RISK_SLOPE = 0.08
_IMPACT_SHARES: Mapping[Impact, float] = {
    "front": 0.55,
    "rear": 0.15,
    "driverSide": 0.12,
    "nonDriverSide": 0.12,
    "rollover": 0.06,
}


def injury_risk(delta_v_kmh: float, impact: Impact) -> float:
    """Risk of serious injury (ISS >= 15) for a delta-V and impact direction, 0..1."""
    p = _RISK_AT_30MPH[impact]
    intercept = math.log(p / (1 - p)) - _RISK_SLOPE * 48.3
    return 1.0 / (1.0 + math.exp(-(intercept + _RISK_SLOPE * delta_v_kmh)))


def severity_of(risk: float) -> Level:
    """Ground-truth level of an injury risk: >= 50 % critical, >= 20 % high (the CDC field-triage
    target), >= 5 % medium, else low."""
    if risk >= 0.5:
        return "critical"
    if risk >= 0.2:
        return "high"
    if risk >= 0.05:
        return "medium"
    return "low"


def _physics(rng: random.Random) -> CrashPhysics:
    # Most police-reported crashes are low delta-V: lognormal, median 20 km/h (our assumption).
    dv = min(150.0, rng.lognormvariate(math.log(20.0), 0.6))
    impact = weighted_choice(rng, _IMPACT_SHARES)
    return CrashPhysics(delta_v_kmh=round(dv, 1), impact=impact, injury_risk=injury_risk(dv, impact))


_LEVEL_ORDER: Mapping[Level, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}


def _worst(levels: Sequence[Level]) -> Level:
    return max(levels, key=lambda level: _LEVEL_ORDER[level])


# --- Optional additional data ----------------------------------------------------------------------


def _era_oad(vehicle: Vehicle, physics: CrashPhysics | None, *, battery_low: bool) -> AdditionalData:
    crash_info = None
    severity = None
    if physics is not None:
        # ASI15 from delta-V: our assumption (12 units per km/h), clipped to the field's 0..2047.
        severity = min(2047, round(physics.delta_v_kmh * 12))
        crash_info = CrashInfo(
            crash_front=physics.impact == "front",
            crash_left=physics.impact == "driverSide",
            crash_right=physics.impact == "nonDriverSide",
            crash_rear=physics.impact == "rear",
            crash_rollover=physics.impact == "rollover",
            crash_side=physics.impact in ("driverSide", "nonDriverSide"),
        )
    diag = DiagnosticResult(battery_voltage_low=battery_low, crash_sensor_failure=False)
    fmt: Literal[1, 2] = 1 if vehicle.msd_version == 1 else 2
    era = EraAdditionalData(
        format=fmt,
        crash_severity=severity,
        diagnostic_result=diag,
        crash_info=crash_info,
        coordinate_system_type=CoordinateSystemType.wgs84 if fmt == 2 else None,
    )
    return AdditionalData(oid=f"1.4.{fmt}", data=encode_era(era), decoded=era)


_IMPACT_LOCATION: Mapping[Impact, IILocations] = {
    "front": IILocations.front,
    "rear": IILocations.rear,
    "driverSide": IILocations.driverSide,
    "nonDriverSide": IILocations.nonDriverSide,
    "rollover": IILocations.other,
}


def _euroncap_oad(physics: CrashPhysics | None, rng: random.Random) -> AdditionalData:
    if physics is None:  # a bump: a tiny pulse the sensor still reports
        dv, impact = rng.uniform(1.0, 6.0), "front"
    else:
        dv, impact = physics.delta_v_kmh, physics.impact
    v = min(150, round(dv))
    # Sign convention (our assumption): vehicle X forward, Y to the driver's side; the delta-V points
    # away from the impact.
    dvx = {"front": -v, "rear": v}.get(impact, 0)
    dvy = {"driverSide": -v, "nonDriverSide": v}.get(impact, 0)
    if impact == "rollover":
        dvx, dvy = -v // 2, v // 2
    inc = IncInfo(
        location_of_impact=_IMPACT_LOCATION[impact],  # type: ignore[index]
        delta_v=IIDeltaV(range_limit=150, delta_vx=dvx, delta_vy=dvy),
        rollover_detected=impact == "rollover",
    )
    return AdditionalData(oid="8.1", data=encode_incinfo(inc), decoded=inc)


# --- MSD and signal builders -----------------------------------------------------------------------


@dataclass(slots=True)
class _Call:
    """A call in progress while building a scenario (mutable scratch, never returned)."""

    vehicle: Vehicle
    call_id: str
    message_identifier: int = 0


def _new_call_id(rng: random.Random) -> str:
    return f"c{rng.getrandbits(64):016x}"


def _msd(
    call: _Call,
    traj: Trajectory,
    *,
    sent_at: float,
    automatic: bool,
    test: bool = False,
    trusted: bool = True,
    location: VehicleLocation | None = None,
    occupants: int | None,
    oad: AdditionalData | None,
    with_recent: bool,
) -> Msd:
    v = call.vehicle
    call.message_identifier += 1
    n1 = n2 = None
    if with_recent or v.msd_version == 3:
        n1, n2 = traj.recent_deltas(interval_s=call_interval(v))
    vtype = v.vehicle_type
    structure = MsdStructure(
        message_identifier=min(255, call.message_identifier),
        control=ControlType(
            automatic_activation=automatic,
            test_call=test,
            position_can_be_trusted=trusted,
            vehicle_type=vtype,
        ),
        vehicle_identification_number=VehicleIdentificationNumber.from_vin(v.vin),
        vehicle_propulsion_storage_type=v.storage(),
        timestamp=int(sent_at) - 1,
        vehicle_location=location if location is not None else traj.vehicle_location(),
        vehicle_direction=traj.vehicle_direction() if traj.fixes[-2].speed_kmh > 0 else 255,
        recent_vehicle_location_n1=n1,
        recent_vehicle_location_n2=n2,
        number_of_passengers=occupants,
    )
    return Msd(version=v.msd_version, msd=MsdMessage(msd_structure=structure, optional_additional_data=oad))


def call_interval(vehicle: Vehicle) -> int:
    """Seconds between the unit's recent-position samples (our assumption: 2-5 s, fixed per unit)."""
    return 2 + int(vehicle.vin[-1]) % 4


def _callback(rng: random.Random) -> str:
    # E.164 numbers from the UK's Ofcom drama range (07700 900000-900999): never a real subscriber.
    return f"+447700900{rng.randrange(1000):03d}"


def _position(traj: Trajectory, sent_at: float, after_s: float, rng: random.Random) -> Position:
    """The NMEA fix ``after_s`` seconds after the event: a stopped vehicle is where it stopped, a
    moving one has gone on along its heading at its speed (a straight road for under a minute)."""
    fix = traj.event
    metres = fix.speed_kmh / 3.6 * after_s
    rad = math.radians(fix.heading_deg)
    lat, lon = offset_position(fix.lat, fix.lon, metres * math.cos(rad), metres * math.sin(rad))
    return Position(
        lat=round(lat, 6),
        lon=round(lon, 6),
        trusted=True,
        source="nmea",
        at=float(int(sent_at)),
        quality="gps",
        heading_deg=round(fix.heading_deg, 1),
        speed_kmh=fix.speed_kmh,
        satellites=rng.randint(6, 14),
        hdop=round(rng.uniform(0.6, 1.6), 1),
    )


class _Builder:
    """Accumulates one scenario's signals."""

    def __init__(self, rng: random.Random, mix: Mix, start: float) -> None:
        self.rng = rng
        self.mix = mix
        self.start = start
        self.signals: list[TimedSignal] = []
        self.modifiers: set[str] = set()

    def add(self, offset_s: float, signal: Signal) -> None:
        self.signals.append(TimedSignal(offset_s=round(offset_s, 3), signal=signal))

    def sent_at(self, offset_s: float) -> float:
        return round(self.start + offset_s, 3)

    def call(
        self,
        vehicle: Vehicle,
        traj: Trajectory,
        *,
        offset_s: float,
        automatic: bool,
        test: bool = False,
        physics: CrashPhysics | None = None,
        battery_low: bool = False,
        allow_redial: bool = True,
        allow_untrusted: bool = True,
    ) -> _Call:
        """One eCall: the MSD, maybe retransmissions, an untrusted position fixed by NMEA, a redial."""
        rng = self.rng
        call = _Call(vehicle=vehicle, call_id=_new_call_id(rng))
        lo, hi = vehicle.seats()
        occupants: int | None = rng.randint(lo, min(hi, 5 if hi < 10 else hi))
        if rng.random() < 0.1:
            occupants = 255  # unknown: belt sensors not wired to the unit
        if rng.random() < 0.15 and vehicle.msd_version != 3:
            occupants = None
        oad: AdditionalData | None = None
        if vehicle.oad == "era":
            oad = _era_oad(vehicle, physics, battery_low=battery_low)
        elif vehicle.oad == "euroncap" and automatic:
            oad = _euroncap_oad(physics, rng)
        with_recent = rng.random() < 0.9
        untrusted = allow_untrusted and rng.random() < self.mix.untrusted_position
        location = None
        if untrusted:
            self.modifiers.add("untrusted_position")
            if rng.random() < 0.2:
                location = VehicleLocation(
                    position_latitude=POSITION_UNKNOWN, position_longitude=POSITION_UNKNOWN
                )
            else:  # a multipath or dead-reckoning error of a few hundred metres
                e = traj.event
                off = offset_position(e.lat, e.lon, rng.uniform(-1500, 1500), rng.uniform(-1500, 1500))
                location = Trajectory(
                    road=traj.road, fixes=(replace(e, lat=off[0], lon=off[1]),)
                ).vehicle_location()
        callback = _callback(rng) if rng.random() < 0.8 else None
        lang = rng.choice(("en-GB", "de-DE", "fr-FR", "it-IT", "es-ES", "pl-PL", "nl-NL", "sv-SE"))

        def msd_signal(at: float) -> MsdSignal:
            sent = self.sent_at(at)
            return MsdSignal(
                tps=vehicle.tps,
                vehicle=vehicle.key,
                call_id=call.call_id,
                sent_at=sent,
                msd=_msd(
                    call,
                    traj,
                    sent_at=sent,
                    automatic=automatic,
                    test=test,
                    trusted=not untrusted,
                    location=location,
                    occupants=occupants,
                    oad=oad,
                    with_recent=with_recent,
                ),
                callback=callback,
                lang=lang,
            )

        self.add(offset_s, msd_signal(offset_s))
        at = offset_s
        if rng.random() < self.mix.retransmission:
            self.modifiers.add("retransmission")
            for _ in range(rng.randint(1, 3)):
                at += rng.uniform(2.0, 8.0)
                self.add(at, msd_signal(at))
        if untrusted:
            fix_at = offset_s + rng.uniform(10.0, 40.0)
            self.add(
                fix_at,
                PositionSignal(
                    tps=vehicle.tps,
                    vehicle=vehicle.key,
                    call_id=call.call_id,
                    sent_at=self.sent_at(fix_at),
                    position=_position(traj, self.sent_at(fix_at), fix_at - offset_s, rng),
                ),
            )
        if allow_redial and rng.random() < self.mix.redial:
            # EN 16062 §7.14.3: the vehicle redials within 2 minutes as a new call, same place.
            self.modifiers.add("redial")
            redial_at = at + rng.uniform(15.0, 110.0)
            call.call_id = _new_call_id(rng)
            call.message_identifier = 0
            untrusted, location = False, None
            self.add(redial_at, msd_signal(redial_at))
        return call

    def cancel(self, call: _Call, offset_s: float, reason: str) -> None:
        self.add(
            offset_s,
            CancelSignal(
                tps=call.vehicle.tps,
                vehicle=call.vehicle.key,
                call_id=call.call_id,
                sent_at=self.sent_at(offset_s),
                reason=reason,
            ),
        )


def _road(rng: random.Random) -> Road:
    # Where calls happen (our assumption): towns and rural roads alike, motorways less often.
    return weighted_choice(rng, {"urban": 0.4, "rural": 0.4, "motorway": 0.2})


def _one(rng: random.Random, kind: Kind, index: int, start: float, mix: Mix) -> Scenario:
    b = _Builder(rng, mix, start)
    sid = f"s{index:06d}"
    vehicles: list[Vehicle] = []
    physics: list[tuple[str, CrashPhysics]] = []
    scene: str | None = None
    action: OperatorAction | None = None
    delay: float | None = None
    severity: Level | None = None
    expected = 1

    if kind == "crash":
        v = random_vehicle(rng)
        p = _physics(rng)
        traj = drive(rng, v.home, _road(rng), ending="crash")
        b.call(v, traj, offset_s=0.0, automatic=True, physics=p)
        vehicles, physics, severity = [v], [(v.key, p)], severity_of(p.injury_risk)
        action, delay = "escalate", rng.uniform(15.0, 45.0)
    elif kind == "multi_vehicle_crash":
        scene = f"scene-{sid}"
        place = random_place(rng)
        scene_road = _road(rng)
        for i in range(rng.randint(2, 4)):
            v = random_vehicle(rng, vehicle_type=VehicleType.passengerVehicleClassM1 if i else None)
            p = _physics(rng)
            here = offset_position(place[0], place[1], rng.uniform(-25, 25), rng.uniform(-25, 25))
            traj = drive(rng, here, scene_road, ending="crash", duration_s=30)
            b.call(v, traj, offset_s=rng.uniform(0.0, 3.0) if i else 0.0, automatic=True, physics=p)
            vehicles.append(v)
            physics.append((v.key, p))
        expected = len(vehicles)
        severity = severity_of(max(p.injury_risk for _, p in physics))
        action, delay = "escalate", rng.uniform(15.0, 45.0)
    elif kind == "two_devices":
        # The car's own eCall unit and an aftermarket device (another provider) report one crash.
        scene = f"scene-{sid}"
        v = random_vehicle(rng, vehicle_type=VehicleType.passengerVehicleClassM1)
        other_tps = rng.choice([t for t in TPS_NAMES if t != v.tps])
        aftermarket = replace(v, tps=other_tps, key=f"v{rng.getrandbits(48):012x}", oad="none", msd_version=2)
        p = _physics(rng)
        traj = drive(rng, v.home, _road(rng), ending="crash")
        b.call(v, traj, offset_s=0.0, automatic=True, physics=p, allow_redial=False)
        b.call(
            aftermarket,
            traj,
            offset_s=rng.uniform(0.5, 5.0),
            automatic=True,
            physics=p,
            allow_redial=False,
            allow_untrusted=False,
        )
        vehicles, physics, severity = (
            [v, aftermarket],
            [(v.key, p), (aftermarket.key, p)],
            severity_of(p.injury_risk),
        )
        action, delay = "escalate", rng.uniform(15.0, 45.0)
    elif kind == "medical":
        v = random_vehicle(rng)
        traj = drive(rng, v.home, _road(rng), ending="pull_over")
        b.call(v, traj, offset_s=0.0, automatic=False)
        vehicles, severity = [v], "high"
        action, delay = "escalate", rng.uniform(20.0, 60.0)
    elif kind == "accidental_cancel":
        v = random_vehicle(rng)
        traj = drive(rng, v.home, _road(rng), ending=rng.choice(("moving", "pull_over")))
        call = b.call(v, traj, offset_s=0.0, automatic=False, allow_redial=False)
        b.cancel(call, b.signals[-1].offset_s + rng.uniform(2.0, 20.0), "occupant_cancelled")
        vehicles = [v]
    elif kind in ("press_no_cancel", "dealer_demo"):
        v = random_vehicle(rng)
        ending: Literal["moving", "pull_over"] = (
            "pull_over" if kind == "dealer_demo" else rng.choice(("moving", "pull_over"))
        )
        road: Road = "urban" if kind == "dealer_demo" else _road(rng)
        traj = drive(rng, v.home, road, ending=ending)
        b.call(v, traj, offset_s=0.0, automatic=False)
        vehicles = [v]
        # Within the escalation delay (60 s by default): the operator learns it was a mistake first.
        action, delay = "cancel", rng.uniform(10.0, 45.0)
    elif kind == "test_call":
        v = random_vehicle(rng)
        traj = drive(rng, v.home, "urban", ending="pull_over")
        b.call(v, traj, offset_s=0.0, automatic=False, test=True, allow_redial=False, allow_untrusted=False)
        vehicles = [v]
    elif kind == "false_automatic":
        # A harsh speed bump (the car drives on) or a failing battery (the car is parked).
        v = random_vehicle(rng)
        battery = rng.random() < 0.5
        traj = drive(rng, v.home, "urban", ending="pull_over" if battery else "moving")
        b.call(v, traj, offset_s=0.0, automatic=True, battery_low=battery)
        vehicles = [v]
        action, delay = "cancel", rng.uniform(20.0, 60.0)
    elif kind == "storm":
        # A provider's firmware fault fires many vehicles at once, all over the map.
        scene = f"storm-{sid}"
        tps = rng.choice(TPS_NAMES)
        for _ in range(mix.storm_size):
            v = random_vehicle(rng, tps=tps)
            traj = drive(rng, v.home, _road(rng), ending="moving", duration_s=20)
            b.call(
                v,
                traj,
                offset_s=rng.uniform(0.0, mix.storm_window_s),
                automatic=True,
                allow_redial=False,
                allow_untrusted=False,
            )
            vehicles.append(v)
        expected = len(vehicles)
        action, delay = "cancel", rng.uniform(60.0, 180.0)
    elif kind == "stale_replay":
        # A provider's backlog replays a call from hours ago: old sent_at and MSD timestamp.
        v = random_vehicle(rng)
        traj = drive(rng, v.home, _road(rng), ending="pull_over")
        age = rng.uniform(3600.0, 12 * 3600.0)
        b.start = start - age
        b.call(v, traj, offset_s=0.0, automatic=rng.random() < 0.3, allow_redial=False, allow_untrusted=False)
        b.start = start
        vehicles = [v]
        # Triage cannot tell a replayed backlog from a real call whose clock failed: it opens one
        # incident flagged stale; an automatic one still reaches a PSAP (docs/triage.md, safety).
        expected = 1
    else:  # pragma: no cover - Kind is closed
        raise ValueError(kind)

    signals = tuple(sorted(b.signals, key=lambda t: t.offset_s))
    label = Label(
        kind=kind,
        real=kind in _REAL,
        automatic=kind in _AUTOMATIC
        or (
            kind == "stale_replay"
            and any(isinstance(t.signal, MsdSignal) and t.signal.msd.automatic for t in signals)
        ),
        severity=severity,
        expected_incidents=expected,
        scene=scene,
        operator_action=action,
        operator_delay_s=round(delay, 3) if delay is not None else None,
        modifiers=tuple(sorted(b.modifiers)),
        physics=tuple(physics),
    )
    return Scenario(id=sid, start=round(start, 3), label=label, signals=signals, vehicles=tuple(vehicles))


def generate(
    rng: random.Random,
    n: int,
    mix: Mix | None = None,
    *,
    start: float = DEFAULT_START,
    mean_gap_s: float = 60.0,
    kinds: Sequence[Kind] | None = None,
) -> list[Scenario]:
    """Generate ``n`` labelled scenarios.

    Args:
        rng: the seeded source of randomness; the same seed gives the same list.
        n: number of scenarios.
        mix: shares and modifier probabilities; the UK 2024 mix when None.
        start: epoch seconds of the first scenario.
        mean_gap_s: mean time between scenario starts (exponential gaps, so arrivals are Poisson);
            0 starts them all at ``start``.
        kinds: when given, use these kinds in this order (cycled) instead of drawing from the mix.

    Returns:
        Scenarios in start order with ids ``s000000``, ``s000001``, ...
    """
    mix = mix if mix is not None else DEFAULT_MIX
    shares = {k: v for k, v in mix.shares.items() if v > 0}
    out: list[Scenario] = []
    t = start
    for i in range(n):
        kind = kinds[i % len(kinds)] if kinds else weighted_choice(rng, shares)
        out.append(_one(rng, kind, i, t, mix))
        if mean_gap_s > 0:
            t += rng.expovariate(1.0 / mean_gap_s)
    return out


def timeline(scenarios: Sequence[Scenario]) -> Iterator[tuple[float, Scenario, TimedSignal]]:
    """Every signal of every scenario as (epoch send time, scenario, signal), in send order.

    Stale replays are sent at their scenario's start (they arrive now, with old contents).
    """
    items = [(s.start + t.offset_s, s, t) for s in scenarios for t in s.signals]
    items.sort(key=lambda x: x[0])
    return iter(items)
