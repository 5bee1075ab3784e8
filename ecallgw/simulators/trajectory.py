"""Plausible road motion: positions, heading and speed, and the MSD fields derived from them.

A trajectory is a list of one-second fixes ending at the event (t = 0): a crash ends in a hard stop,
a manual call usually after pulling over, a false trigger anywhere. The MSD's vehicleLocation is
the last fix, vehicleDirection its heading, and recentVehicleLocationN1/N2 the fixes ``interval_s``
and ``2 * interval_s`` earlier, as deltas of 100 milliarcseconds (N1 from the location, N2 from N1;
EN 15722, docs/msd.md §3.2), so decoded MSDs describe the motion that produced them.

Speeds per road class are our assumption (typical European limits: urban 30-50 km/h, rural 70-100,
motorway 100-130). Places are European cities and a few mountain resorts; the vehicle starts within
25 km of one of them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

from ecallgw.model import MAS_PER_DEGREE, VehicleLocation, VehicleLocationDelta

__all__ = [
    "PLACES",
    "Fix",
    "Road",
    "Trajectory",
    "drive",
    "offset_position",
    "random_place",
]

Road = Literal["urban", "rural", "motorway"]

_EARTH_M_PER_DEG = 111_320.0
_DELTA_MIN, _DELTA_MAX = -512, 511

# (name, lat, lon): capitals and large cities across Europe's latitudes, plus two ski resorts
# (domain.md: ski counties see bursts of automated calls) and Tromsø, where a degree of
# longitude is short and N1/N2 longitude deltas are largest.
PLACES: tuple[tuple[str, float, float], ...] = (
    ("London", 51.507, -0.128),
    ("Manchester", 53.480, -2.242),
    ("Dublin", 53.350, -6.260),
    ("Paris", 48.857, 2.352),
    ("Lyon", 45.764, 4.836),
    ("Brussels", 50.850, 4.352),
    ("Amsterdam", 52.370, 4.895),
    ("Berlin", 52.520, 13.405),
    ("Hamburg", 53.551, 9.994),
    ("Munich", 48.137, 11.575),
    ("Vienna", 48.208, 16.373),
    ("Innsbruck", 47.263, 11.394),
    ("Prague", 50.075, 14.437),
    ("Warsaw", 52.230, 21.012),
    ("Budapest", 47.498, 19.040),
    ("Bucharest", 44.426, 26.103),
    ("Athens", 37.984, 23.728),
    ("Rome", 41.903, 12.496),
    ("Milan", 45.464, 9.190),
    ("Madrid", 40.417, -3.704),
    ("Barcelona", 41.385, 2.173),
    ("Lisbon", 38.722, -9.139),
    ("Copenhagen", 55.676, 12.568),
    ("Stockholm", 59.329, 18.069),
    ("Oslo", 59.914, 10.752),
    ("Helsinki", 60.170, 24.938),
    ("Tromsø", 69.649, 18.956),
    ("Val Thorens", 45.298, 6.580),
)

_SPEED_KMH: dict[Road, tuple[float, float]] = {
    "urban": (20.0, 50.0),
    "rural": (60.0, 100.0),
    "motorway": (90.0, 130.0),
}
# Standard deviation of the heading change per second (degrees): town streets bend, motorways don't.
_TURN_SD: dict[Road, float] = {"urban": 6.0, "rural": 3.0, "motorway": 0.8}


@dataclass(frozen=True, slots=True, kw_only=True)
class Fix:
    """One position fix: ``t`` seconds relative to the event (negative before it)."""

    t: float
    lat: float
    lon: float
    heading_deg: float
    speed_kmh: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Trajectory:
    """Fixes one second apart, in time order, the last one at the event (t = 0)."""

    road: Road
    fixes: tuple[Fix, ...]

    @property
    def event(self) -> Fix:
        """The fix at the event."""
        return self.fixes[-1]

    def at(self, t: float) -> Fix:
        """The fix at or just before ``t`` (clamped to the first fix)."""
        index = len(self.fixes) - 1 + math.floor(t)
        return self.fixes[max(0, min(index, len(self.fixes) - 1))]

    def vehicle_location(self) -> VehicleLocation:
        """The event position in EN 15722 milliarcseconds."""
        return _to_location(self.event.lat, self.event.lon)

    def vehicle_direction(self) -> int:
        """EN 15722 vehicleDirection: heading in 2-degree steps, 0..179."""
        return round(self.event.heading_deg / 2.0) % 180

    def recent_deltas(self, interval_s: int) -> tuple[VehicleLocationDelta, VehicleLocationDelta]:
        """N1 and N2 as EN 15722 deltas: the fixes ``interval_s`` and ``2 * interval_s`` before.

        N1 is relative to the location, N2 to N1, in units of 100 mas, clamped to -512..511
        (the clamp never bites for intervals up to 10 s below 160 km/h south of 70° N).
        """
        loc = self.vehicle_location()
        n1 = self.at(-interval_s)
        n2 = self.at(-2 * interval_s)
        p1 = _to_location(n1.lat, n1.lon)
        p2 = _to_location(n2.lat, n2.lon)
        return _delta(p1, loc), _delta(p2, p1)


def _to_location(lat: float, lon: float) -> VehicleLocation:
    return VehicleLocation(
        position_latitude=round(lat * MAS_PER_DEGREE), position_longitude=round(lon * MAS_PER_DEGREE)
    )


def _clamp(v: int) -> int:
    return max(_DELTA_MIN, min(_DELTA_MAX, v))


def _delta(to: VehicleLocation, base: VehicleLocation) -> VehicleLocationDelta:
    return VehicleLocationDelta(
        latitude_delta=_clamp(round((to.position_latitude - base.position_latitude) / 100)),
        longitude_delta=_clamp(round((to.position_longitude - base.position_longitude) / 100)),
    )


def offset_position(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The point ``north_m`` metres north and ``east_m`` metres east of (lat, lon)."""
    return (
        lat + north_m / _EARTH_M_PER_DEG,
        lon + east_m / (_EARTH_M_PER_DEG * math.cos(math.radians(lat))),
    )


def random_place(rng: random.Random, radius_m: float = 25_000.0) -> tuple[float, float]:
    """A point within ``radius_m`` of a random place in ``PLACES``."""
    _, lat, lon = rng.choice(PLACES)
    r = radius_m * math.sqrt(rng.random())
    a = rng.uniform(0.0, 2.0 * math.pi)
    return offset_position(lat, lon, r * math.cos(a), r * math.sin(a))


def drive(
    rng: random.Random,
    start: tuple[float, float],
    road: Road,
    *,
    duration_s: int = 60,
    ending: Literal["crash", "pull_over", "moving"] = "moving",
) -> Trajectory:
    """Drive for ``duration_s`` seconds from ``start`` and end as ``ending`` says.

    Args:
        rng: the seeded source of randomness.
        start: (lat, lon) where the drive begins.
        road: the road class, which sets speed and how much the road bends.
        duration_s: number of one-second steps; the event is the last fix.
        ending: "crash" stops within a second or two from speed (the crash pulse), "pull_over"
            brakes gently over the last ~15 s and stands for a while, "moving" keeps going.

    Returns:
        The trajectory; its last fix is the event.
    """
    lo, hi = _SPEED_KMH[road]
    cruise = rng.uniform(lo, hi)
    heading = rng.uniform(0.0, 360.0)
    lat, lon = start
    speed = cruise
    stand_s = rng.randint(5, 30) if ending == "pull_over" else 0
    brake_s = 15 if ending == "pull_over" else 0
    fixes: list[Fix] = []
    for step in range(duration_s + 1):
        t = float(step - duration_s)
        remaining = duration_s - step
        if ending == "crash" and remaining <= 1:
            speed = 0.0 if remaining == 0 else speed * 0.3
        elif ending == "pull_over" and remaining <= stand_s:
            speed = 0.0
        elif ending == "pull_over" and remaining <= stand_s + brake_s:
            speed = cruise * (remaining - stand_s) / brake_s
        else:
            speed = min(hi, max(lo, speed + rng.gauss(0.0, 1.5)))
        if step > 0:
            metres = speed / 3.6
            rad = math.radians(heading)
            lat, lon = offset_position(lat, lon, metres * math.cos(rad), metres * math.sin(rad))
            if speed > 0:
                heading = (heading + rng.gauss(0.0, _TURN_SD[road])) % 360.0
        fixes.append(Fix(t=t, lat=lat, lon=lon, heading_deg=heading, speed_kmh=round(speed, 1)))
    return Trajectory(road=road, fixes=tuple(fixes))
