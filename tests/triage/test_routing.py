"""Point-in-polygon, PSAP areas, fallback and distances."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecallgw.triage import TriagePolicy, parse_geometry
from ecallgw.triage.routing import PsapRouter, distance_m, point_in_polygon

SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}
HOLED = {
    "type": "Polygon",
    "coordinates": [SQUARE["coordinates"][0], [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]],
}
# A concave "U": the notch between the arms is outside although inside the bounding box.
U_SHAPE = {
    "type": "Polygon",
    "coordinates": [[[0, 0], [9, 0], [9, 9], [6, 9], [6, 3], [3, 3], [3, 9], [0, 9], [0, 0]]],
}

CASES = [
    # (geometry, lat, lon, inside, why)
    (SQUARE, 5, 5, True),  # centre
    (SQUARE, 11, 5, False),  # north of it: the bounding box already says no
    (SQUARE, 5, -0.001, False),  # just west of the western edge
    (HOLED, 5, 5, False),  # inside the hole: another PSAP's enclave
    (HOLED, 2, 2, True),  # in the ring around the hole
    (U_SHAPE, 6, 4.5, False),  # the notch: bbox says maybe, ray casting says no
    (U_SHAPE, 6, 1.5, True),  # left arm
    (U_SHAPE, 1, 4.5, True),  # the base under the notch
]


@pytest.mark.parametrize(("geometry", "lat", "lon", "inside"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_point_in_polygon(geometry: dict[str, object], lat: float, lon: float, inside: bool) -> None:
    (poly,) = parse_geometry(geometry)
    assert point_in_polygon(lat, lon, poly) is inside


def _router(*areas: tuple[str, Any]) -> PsapRouter:
    return PsapRouter(
        TriagePolicy.from_mapping({"psap_areas": [{"receiver": r, "geometry": g} for r, g in areas]})
    )


def test_first_listed_area_wins_on_overlap() -> None:
    # Overlapping configured areas must route deterministically, not by dict or set order.
    router = _router(("psap-a", SQUARE), ("psap-b", SQUARE))
    assert router.psap_for((5, 5)) == ("psap-a", False)


def test_multipolygon_and_fallback() -> None:
    multi = {
        "type": "MultiPolygon",
        "coordinates": [SQUARE["coordinates"], [[[20, 20], [21, 20], [21, 21], [20, 20]]]],
    }
    router = _router(("psap-m", multi))
    assert router.psap_for((20.2, 20.5)) == ("psap-m", False)  # second polygon of the multipolygon
    assert router.psap_for((50, 50)) == ("psap-fallback", True)  # outside every area
    assert router.psap_for(None) == ("psap-fallback", True)  # position unknown


def test_no_areas_always_fallback() -> None:
    assert PsapRouter(TriagePolicy()).psap_for((48.2, 16.4)) == ("psap-fallback", True)


def test_distance_reference_values() -> None:
    # One degree of latitude is about 111.2 km on the mean-radius sphere.
    assert distance_m(0, 0, 1, 0) == pytest.approx(111_195, rel=1e-3)
    # Vienna to Graz, about 145 km.
    assert distance_m(48.2082, 16.3738, 47.0707, 15.4395) == pytest.approx(145_000, rel=0.02)
    assert distance_m(10, 10, 10, 10) == 0.0


@given(
    st.floats(-89, 89),
    st.floats(-179, 179),
    st.floats(-89, 89),
    st.floats(-179, 179),
)
def test_distance_symmetric_and_non_negative(a: float, b: float, c: float, d: float) -> None:
    assert distance_m(a, b, c, d) == pytest.approx(distance_m(c, d, a, b), abs=1e-6)
    assert distance_m(a, b, c, d) >= 0
