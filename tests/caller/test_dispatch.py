"""The dispatch choice (pure): nearest available provider with the capability, within its radius."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ecallgw.caller.dispatch import Candidate, distance_km, inside, ranked
from ecallgw.caller.texts import pick_lang

CAPS = ("tow", "repair", "taxi", "replacement_car")
lats = st.floats(-80, 80)
lons = st.floats(-179, 179)
candidates = st.lists(
    st.builds(
        Candidate,
        name=st.text("abcdef", min_size=1, max_size=4),
        lat=lats,
        lon=lons,
        radius_km=st.floats(0.1, 20000),
        capabilities=st.frozensets(st.sampled_from(CAPS), min_size=1),
        available=st.booleans(),
    ),
    max_size=12,
)


@given(candidates, lats, lons, st.sampled_from(CAPS), st.sets(st.text("abcdef", min_size=1, max_size=4)))
def test_ranked_is_exactly_the_qualifying_providers_nearest_first(
    cands: list[Candidate], lat: float, lon: float, cap: str, exclude: set[str]
) -> None:
    out = ranked(cands, lat=lat, lon=lon, capability=cap, exclude=exclude)
    qualifying = [
        c
        for c in cands
        if c.available
        and cap in c.capabilities
        and c.name not in exclude
        and distance_km(lat, lon, c.lat, c.lon) <= c.radius_km
    ]
    assert sorted(id(c) for _, c in out) == sorted(id(c) for c in qualifying)
    distances = [d for d, _ in out]
    assert distances == sorted(distances)
    if out:  # the first is the nearest of all that qualify
        assert out[0][0] == min(distance_km(lat, lon, c.lat, c.lon) for c in qualifying)


@given(lats, lons, lats, lons)
def test_distance_is_a_symmetric_bounded_metric(a: float, b: float, c: float, d: float) -> None:
    ab = distance_km(a, b, c, d)
    assert abs(ab - distance_km(c, d, a, b)) < 1e-6
    assert 0 <= ab <= 20015.1  # half the circumference
    assert distance_km(a, b, a, b) < 1e-6


def test_distance_known_value() -> None:
    assert abs(distance_km(50.8503, 4.3517, 48.8566, 2.3522) - 264) < 1.0  # Brussels - Paris


@given(st.text(max_size=60))
def test_language_choice_is_always_one_of_ours(header: str) -> None:
    assert pick_lang(None, header, None) in ("en", "fr", "nl", "de")


def test_language_by_quality_then_switch() -> None:
    assert pick_lang(None, "de-CH;q=0.4, nl-BE;q=0.9, en;q=0.8", "fr") == "nl"
    assert pick_lang("de", "nl-BE", "fr") == "de"
    assert pick_lang(None, "es-ES, it", "fr") == "fr"
    assert pick_lang(None, None, None) == "en"


boxes = st.tuples(st.floats(-60, 60), st.floats(-170, 170), st.floats(0.01, 5), st.floats(0.01, 5))


@given(boxes, st.floats(0, 1), st.floats(0, 1))
def test_a_point_of_a_rectangle_is_inside_and_one_beyond_it_is_not(
    box: tuple[float, float, float, float], fy: float, fx: float
) -> None:
    lat0, lon0, h, w = box
    ring = ((lon0, lat0), (lon0 + w, lat0), (lon0 + w, lat0 + h), (lon0, lat0 + h), (lon0, lat0))
    lat, lon = lat0 + h * (0.001 + 0.998 * fy), lon0 + w * (0.001 + 0.998 * fx)
    assert inside(lat, lon, ring)
    assert not inside(lat0 + h * 1.5 + 0.01, lon, ring)
    assert not inside(lat, lon0 - 0.01 - w * fx, ring)


def test_an_area_replaces_the_radius() -> None:
    brussels = ((4.2, 50.7), (4.5, 50.7), (4.5, 50.95), (4.2, 50.95), (4.2, 50.7))
    far_base = Candidate(
        name="a",
        lat=0.0,
        lon=0.0,
        radius_km=1.0,
        capabilities=frozenset({"tow"}),
        available=True,
        area=brussels,
    )
    near_base_elsewhere = Candidate(
        name="b",
        lat=50.86,
        lon=4.36,
        radius_km=100.0,
        capabilities=frozenset({"tow"}),
        available=True,
        area=((5.0, 51.0), (5.1, 51.0), (5.1, 51.1), (5.0, 51.0)),
    )
    [(_, chosen)] = ranked([far_base, near_base_elsewhere], lat=50.85, lon=4.35, capability="tow")
    assert chosen.name == "a"
