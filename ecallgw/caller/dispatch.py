"""Which assistance provider gets a case: the nearest available one with the capability (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["EARTH_RADIUS_KM", "Candidate", "distance_km", "inside", "ranked"]

EARTH_RADIUS_KM = 6371.0088
"""The IUGG mean Earth radius: the haversine distance is within 0.5 % of the ellipsoid's."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A provider as dispatch sees it."""

    name: str
    lat: float
    lon: float
    radius_km: float
    capabilities: frozenset[str]
    available: bool
    area: tuple[tuple[float, float], ...] = ()  # a GeoJSON polygon's outer ring (lon, lat); () : radius_km


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance in km between two WGS84 positions in degrees.

    >>> round(distance_km(50.8503, 4.3517, 48.8566, 2.3522))  # Brussels - Paris
    264
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def inside(lat: float, lon: float, ring: tuple[tuple[float, float], ...]) -> bool:
    """Whether (lat, lon) lies inside a polygon ring of (lon, lat) vertices (even-odd rule, planar:
    service areas are small enough that edges are taken as straight in degrees).

    >>> inside(50.85, 4.35, ((4.2, 50.7), (4.5, 50.7), (4.5, 50.95), (4.2, 50.95)))
    True
    """
    hit = False
    n = len(ring)
    for i in range(n):
        x1, y1 = ring[i]
        x2, y2 = ring[(i + 1) % n]
        if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
            hit = not hit
    return hit


def ranked(
    candidates: Iterable[Candidate], *, lat: float, lon: float, capability: str, exclude: Iterable[str] = ()
) -> list[tuple[float, Candidate]]:
    """The providers that may take a case at (lat, lon), nearest first (ties by name).

    A provider qualifies when it is available, has the capability, was not asked before
    (``exclude``) and the case lies in its service area (its polygon when it has one, else within
    its service radius).
    """
    skip = set(exclude)
    out = []
    for c in candidates:
        if not c.available or capability not in c.capabilities or c.name in skip:
            continue
        d = distance_km(lat, lon, c.lat, c.lon)
        if inside(lat, lon, c.area) if c.area else d <= c.radius_km:
            out.append((d, c))
    out.sort(key=lambda dc: (dc[0], dc[1].name))
    return out
