"""VINs, fleet shares and trajectories."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import get_args

from hypothesis import given
from hypothesis import strategies as st

from ecallgw.model import (
    MAS_PER_DEGREE,
    CoordinateSystemType,
    CrashInfo,
    DiagnosticResult,
    EraAdditionalData,
    IIDeltaV,
    IILocations,
    IncInfo,
    VehicleType,
)
from ecallgw.simulators._oad import encode_era, encode_incinfo
from ecallgw.simulators.fleet import random_vehicle
from ecallgw.simulators.trajectory import drive, random_place
from ecallgw.simulators.vin import (
    ALPHABET,
    MODEL_YEAR_CODES,
    WMIS,
    Segment,
    check_digit,
    is_valid_vin,
    random_vin,
    uses_check_digit,
)


def test_check_digit_of_the_49_cfr_565_example() -> None:
    assert check_digit("1M8GDM9AXKP042788") == "X"
    assert check_digit("11111111111111111") == "1"


@given(seed=st.integers(0, 2**32 - 1))
def test_random_vins_are_valid(seed: int) -> None:
    rng = random.Random(seed)
    for wmi in WMIS:
        year = rng.randint(2018, 2026)
        vin = random_vin(rng, wmi.code, year)
        assert len(vin) == 17 and not set(vin) & set("IOQ") and set(vin) <= set(ALPHABET)
        assert is_valid_vin(vin)
        assert vin[:3] == wmi.code and vin[9] == MODEL_YEAR_CODES[year] and vin[9] not in "UZ0"
        if uses_check_digit(wmi.code):
            assert vin[8] == check_digit(vin)


def test_wmi_table() -> None:
    # Unique three-character codes from the VIN alphabet, and a maker for every segment the fleet
    # draws (an empty segment would crash random_vehicle).
    codes = [w.code for w in WMIS]
    assert len(codes) == len(set(codes)) and all(len(c) == 3 and set(c) <= set(ALPHABET) for c in codes)
    assert {seg for w in WMIS for seg in w.segments} == set(get_args(Segment))
    # Check digits exactly where the region requires one: North America (1-5) and China (L).
    assert {w.code for w in WMIS if uses_check_digit(w.code)} == {"5YJ", "LRW"}


def test_check_digit_detects_a_typo() -> None:
    vin = random_vin(random.Random(1), "5YJ", 2024)
    wrong = vin[:12] + ("1" if vin[12] != "1" else "2") + vin[13:]
    assert not is_valid_vin(wrong)


def test_fleet_shares() -> None:
    rng = random.Random(7)
    fleet = [random_vehicle(rng) for _ in range(5000)]
    classes = Counter(v.vehicle_type for v in fleet)
    assert classes[VehicleType.passengerVehicleClassM1] / len(fleet) > 0.8
    assert classes[VehicleType.busesAndCoachesClassM3] > 0 and classes[VehicleType.motorcyclesClassL3e] > 0
    props = Counter(v.propulsion for v in fleet)
    assert props["petrol"] > props["diesel"] > props["electric"] > 0 and props["lpg"] > 0
    # Classes that only EN 15722:2020 can name force MSD v3.
    assert all(v.msd_version == 3 for v in fleet if v.vehicle_type >= VehicleType.trailersClassO)
    assert all(v.oad != "euroncap" for v in fleet if v.msd_version == 1)
    h2 = random_vehicle(random.Random(3))
    assert h2.storage().hydrogen_storage == (h2.propulsion == "hydrogen")


@given(seed=st.integers(0, 2**32 - 1), road=st.sampled_from(["urban", "rural", "motorway"]))
def test_trajectory_speed_and_deltas(seed: int, road: str) -> None:
    rng = random.Random(seed)
    traj = drive(rng, random_place(rng), road, ending="crash")  # type: ignore[arg-type]
    assert traj.event.speed_kmh == 0.0
    for a, b in zip(traj.fixes, traj.fixes[1:], strict=False):
        # The distance between fixes one second apart matches the speed (no teleporting).
        dy = (b.lat - a.lat) * 111_320
        dx = (b.lon - a.lon) * 111_320 * math.cos(math.radians(a.lat))
        assert math.hypot(dx, dy) <= max(a.speed_kmh, b.speed_kmh) / 3.6 + 0.5
    n1, _ = traj.recent_deltas(5)
    loc = traj.vehicle_location()
    back = traj.at(-5)
    assert abs(loc.position_latitude + n1.latitude_delta * 100 - back.lat * MAS_PER_DEGREE) <= 51
    assert abs(loc.position_longitude + n1.longitude_delta * 100 - back.lon * MAS_PER_DEGREE) <= 51
    assert 0 <= traj.vehicle_direction() <= 179


def test_oad_bit_plans_match_docs_msd() -> None:
    # docs/msd.md §6.1: severity 1024, all 29 flags TRUE and pz90 -> 7C00FFFFFFFFFFFFFFE0 (Legato).
    flags = dict.fromkeys(DiagnosticResult.__dataclass_fields__, True)
    era = EraAdditionalData(
        format=2,
        crash_severity=1024,
        diagnostic_result=DiagnosticResult(**flags),
        crash_info=CrashInfo(**dict.fromkeys(CrashInfo.__dataclass_fields__, True)),
        coordinate_system_type=CoordinateSystemType.pz90,
    )
    assert encode_era(era).hex().upper() == "7C00FFFFFFFFFFFFFFE0"
    v1 = EraAdditionalData(
        format=1,
        crash_severity=1024,
        diagnostic_result=DiagnosticResult(**flags),
        crash_info=CrashInfo(**dict.fromkeys(CrashInfo.__dataclass_fields__, True)),
    )
    assert encode_era(v1).hex().upper() == "7801FFFFFFFFFFFFFF80"
    inc = IncInfo(
        location_of_impact=IILocations.front, delta_v=IIDeltaV(range_limit=100, delta_vx=0, delta_vy=0)
    )
    assert len(encode_incinfo(inc)) == 5
