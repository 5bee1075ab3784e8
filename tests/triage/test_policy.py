"""TriagePolicy: defaults, the [triage] table, and errors that name the dotted key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from ecallgw.errors import ConfigError
from ecallgw.triage import TriagePolicy, parse_geometry

SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}


def test_defaults_match_the_documented_sources() -> None:
    p = TriagePolicy()
    assert p.redial_window_s == 120.0  # EN 16062 §7.14.3: redial within 2 minutes
    assert p.state_lifetime_s == 3600.0  # EN 16102: PSAP call-back up to 60 minutes
    assert (p.operator_receiver, p.test_receiver, p.fallback_psap_receiver) == (
        "operator",
        "test",
        "psap-fallback",
    )
    assert p.asi15_high is None  # no source calibrates ASI15
    assert p.psap_areas == ()


def test_empty_table_is_the_default_policy() -> None:
    assert TriagePolicy.from_mapping({}) == TriagePolicy()


def test_table_overrides_and_areas() -> None:
    p = TriagePolicy.from_mapping(
        {
            "redial_window_s": 90,
            "manual_burst_count": 4,
            "asi15_high": 1500,
            "operator_receiver": "desk",
            "psap_areas": [{"receiver": "psap-a", "geometry": SQUARE}],
        }
    )
    assert p.redial_window_s == 90.0 and isinstance(p.redial_window_s, float)
    assert p.manual_burst_count == 4
    assert p.asi15_high == 1500
    assert p.psap_areas[0].receiver == "psap-a"
    assert p.psap_areas[0].polygons[0].bbox == (0.0, 0.0, 1.0, 1.0)
    assert p.receivers() == ("desk", "test", "psap-fallback", "psap-a")


def test_shipped_example_policy_loads() -> None:
    # The example in the package must stay valid as the policy evolves.
    path = Path(__file__).parents[2] / "ecallgw" / "triage" / "default_policy.toml"
    table = tomllib.loads(path.read_text())["triage"]
    p = TriagePolicy.from_mapping(table)
    assert p.psap_areas, "the example shows at least one PSAP area"
    assert p.redial_window_s == TriagePolicy().redial_window_s


BAD: list[tuple[str, dict[str, Any], str]] = [
    # A typo must not silently fall back to a default.
    ("unknown", {"redial_window": 120}, "triage.redial_window"),
    # Durations are numbers; a string from a careless TOML edit is refused.
    ("string-duration", {"redial_window_s": "2m"}, "triage.redial_window_s"),
    # `true` is an int in Python but never a duration.
    ("bool-duration", {"cancel_grace_s": True}, "triage.cancel_grace_s"),
    # A zero window would make every redial a new incident.
    ("zero-window", {"redial_window_s": 0}, "triage.redial_window_s"),
    ("negative-grace", {"cancel_grace_s": -1}, "triage.cancel_grace_s"),
    ("nan", {"escalation_delay_s": float("nan")}, "triage.escalation_delay_s"),
    ("inf", {"msd_stale_s": float("inf")}, "triage.msd_stale_s"),
    # A storm is a rate above the baseline: a factor below 1 would flag normal traffic.
    ("storm-factor", {"storm_factor": 0.5}, "triage.storm_factor"),
    ("count-float", {"manual_burst_count": 2.5}, "triage.manual_burst_count"),
    ("count-zero", {"storm_min_count": 0}, "triage.storm_min_count"),
    ("asi-range", {"asi15_high": 5000}, "triage.asi15_high"),
    ("empty-name", {"operator_receiver": " "}, "triage.operator_receiver"),
    # The test receiver must never coincide with a PSAP: test calls would reach it.
    ("test-is-psap", {"test_receiver": "psap-fallback"}, "triage.test_receiver"),
    ("operator-is-test", {"operator_receiver": "x", "test_receiver": "x"}, "triage.test_receiver"),
    ("baseline-short", {"storm_window_s": 600, "storm_baseline_s": 60}, "triage.storm_baseline_s"),
    ("areas-not-list", {"psap_areas": "psap-a"}, "triage.psap_areas"),
    ("area-no-geometry", {"psap_areas": [{"receiver": "a"}]}, "triage.psap_areas[0].geometry"),
    ("area-no-receiver", {"psap_areas": [{"geometry": SQUARE}]}, "triage.psap_areas[0].receiver"),
    ("area-extra", {"psap_areas": [{"receiver": "a", "geometry": SQUARE, "x": 1}]}, "triage.psap_areas[0].x"),
    (
        "area-is-operator",
        {"operator_receiver": "a", "psap_areas": [{"receiver": "a", "geometry": SQUARE}]},
        "triage.operator_receiver",
    ),
    (
        "open-ring",
        {
            "psap_areas": [
                {
                    "receiver": "a",
                    "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]},
                }
            ]
        },
        "triage.psap_areas[0].geometry.coordinates[0]",
    ),
    (
        "lat-out-of-range",
        {
            "psap_areas": [
                {
                    "receiver": "a",
                    "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 91], [0, 0]]]},
                }
            ]
        },
        "triage.psap_areas[0].geometry.coordinates[0][2]",
    ),
    (
        "point-geometry",
        {"psap_areas": [{"receiver": "a", "geometry": {"type": "Point", "coordinates": [0, 0]}}]},
        "triage.psap_areas[0].geometry.type",
    ),
]


@pytest.mark.parametrize(("table", "key"), [(t, k) for _, t, k in BAD], ids=[i for i, _, _ in BAD])
def test_bad_values_name_the_dotted_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        TriagePolicy.from_mapping(table)
    assert info.value.key == key


def test_not_a_table() -> None:
    with pytest.raises(ConfigError) as info:
        TriagePolicy.from_mapping([1, 2])  # type: ignore[arg-type]
    assert info.value.key == "triage"


def test_geometry_forms() -> None:
    multi = {"type": "MultiPolygon", "coordinates": [SQUARE["coordinates"], SQUARE["coordinates"]]}
    assert len(parse_geometry(multi)) == 2
    feature = {"type": "Feature", "properties": {}, "geometry": SQUARE}
    assert parse_geometry(feature) == parse_geometry(SQUARE)
    with_hole = {
        "type": "Polygon",
        "coordinates": [SQUARE["coordinates"][0], [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.4]]],
    }
    (poly,) = parse_geometry(with_hole)
    assert len(poly.holes) == 1


def test_every_field_is_accepted_from_the_table() -> None:
    # Each dataclass field must be loadable from TOML, with its default value round-tripping.
    from dataclasses import fields

    default = TriagePolicy()
    table = {
        f.name: getattr(default, f.name)
        for f in fields(TriagePolicy)
        if f.name not in ("psap_areas", "asi15_high")
    }
    assert TriagePolicy.from_mapping(table) == default
