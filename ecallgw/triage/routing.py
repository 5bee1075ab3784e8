"""Which receivers get an incident: PSAP areas by point-in-polygon, fallback, operator, test.

Routing rules (issue 3, §4; docs/triage.md "Routing"):

- a test call goes to the test receiver only;
- every other incident goes to the operator desk;
- an automatic one also goes at once to the PSAP responsible for its position (no grouping wait:
  90 % of eCalls reach a PSAP within 25 s in German field tests, our delay must be negligible);
- a manual one goes to that PSAP once escalated (operator action or escalation timer);
- a position outside every configured area, or unknown, goes to the fallback PSAP receiver.

Receivers only ever accumulate: whoever received one revision receives every later one, so a
cancel reaches everyone who saw the alert.
"""

from __future__ import annotations

import math

from ecallgw.triage.policy import Polygon, PsapArea, Ring, TriagePolicy

__all__ = ["PsapRouter", "distance_m", "point_in_polygon"]

_EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine), good to well under a metre at triage distances."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _in_ring(lon: float, lat: float, ring: Ring) -> bool:
    # Even-odd ray casting towards +lon. Points exactly on an edge may fall either way; area borders
    # are administrative and a border point belongs to one of two neighbouring PSAPs either way.
    inside = False
    x0, y0 = ring[-1]
    for x1, y1 in ring:
        if (y1 > lat) != (y0 > lat) and lon < (x0 - x1) * (lat - y1) / (y0 - y1) + x1:
            inside = not inside
        x0, y0 = x1, y1
    return inside


def point_in_polygon(lat: float, lon: float, polygon: Polygon) -> bool:
    """True when (lat, lon) lies inside the polygon's outer ring and outside all of its holes."""
    min_lon, min_lat, max_lon, max_lat = polygon.bbox
    if not (min_lon <= lon <= max_lon and min_lat <= lat <= max_lat):
        return False
    if not _in_ring(lon, lat, polygon.outer):
        return False
    return not any(_in_ring(lon, lat, hole) for hole in polygon.holes)


class PsapRouter:
    """Finds the PSAP receiver responsible for a position; first listed area wins on overlaps.

    Args:
        policy: supplies the areas and the fallback receiver.
    """

    __slots__ = ("_areas", "_fallback")

    def __init__(self, policy: TriagePolicy) -> None:
        self._areas: tuple[PsapArea, ...] = policy.psap_areas
        self._fallback = policy.fallback_psap_receiver

    def psap_for(self, position: tuple[float, float] | None) -> tuple[str, bool]:
        """The PSAP receiver for a (lat, lon) position, and whether it is the fallback.

        Args:
            position: decimal degrees WGS84, or None when unknown.

        Returns:
            ``(receiver, is_fallback)``.
        """
        if position is not None:
            lat, lon = position
            for area in self._areas:
                for polygon in area.polygons:
                    if point_in_polygon(lat, lon, polygon):
                        return area.receiver, False
        return self._fallback, True
