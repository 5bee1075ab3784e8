"""Triage thresholds and receivers: one frozen policy, loaded from the ``[triage]`` TOML table.

Every threshold has a default and the reason for it in ``docs/triage.md``; the defaults that rest on
a published fact cite it (EN 16062 redial window, EN 16102 call-back window). The policy is plain
data: the engine reads it, nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from ecallgw.errors import ConfigError

__all__ = ["Polygon", "PsapArea", "TriagePolicy", "parse_geometry"]

_frozen = {"frozen": True, "slots": True, "kw_only": True}

Ring = tuple[tuple[float, float], ...]
"""A closed GeoJSON linear ring as (lon, lat) pairs; first point equals last."""


@dataclass(**_frozen)
class Polygon:
    """One GeoJSON polygon: an outer ring and holes, plus its bounding box for a cheap first test.

    Attributes:
        outer: the outer ring, (lon, lat) pairs in decimal degrees WGS84.
        holes: inner rings; a point inside a hole is outside the polygon.
        bbox: (min_lon, min_lat, max_lon, max_lat) of the outer ring.
    """

    outer: Ring
    holes: tuple[Ring, ...] = ()
    bbox: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


@dataclass(**_frozen)
class PsapArea:
    """The area a PSAP receiver is responsible for.

    Attributes:
        receiver: the receiver name incidents in this area are routed to.
        polygons: the area as polygons (a GeoJSON Polygon gives one, a MultiPolygon several).
    """

    receiver: str
    polygons: tuple[Polygon, ...]


@dataclass(**_frozen)
class TriagePolicy:
    """Every triage threshold and receiver name; see ``docs/triage.md`` for each default's reason.

    Attributes:
        redial_window_s: a new call from the same vehicle this soon after the last signal of its open
            incident joins that incident (EN 16062 §7.14.3: the vehicle may redial for 2 minutes).
        redial_distance_m: ... and only when within this distance of the incident's position (either
            position unknown: the time window alone decides).
        position_change_m: a position update moves the incident (new revision) only beyond this.
        scene_window_s: incidents of other vehicles whose last signal is this recent ...
        scene_distance_m: ... and this close are linked into one scene (same ``scene_id``).
        cancel_grace_s: a vehicle cancel of a manual call this soon after its first receipt closes
            it without an operator (a mistaken press); later cancels wait for an operator.
        manual_burst_count: the N-th manual incident of one vehicle within ``manual_burst_window_s``
            (and every later one) is a burst: its escalation to a PSAP waits for an operator.
        manual_burst_window_s: see ``manual_burst_count``.
        storm_window_s: window over which a provider's new incidents are counted for storms.
        storm_factor: a window count above this multiple of the provider's baseline is a storm ...
        storm_min_count: ... and never below this absolute count (a cold start has no baseline).
        storm_baseline_s: time constant of the baseline (exponential average of window counts).
        msd_stale_s: an MSD whose timestamp differs from its receipt by more than this is stale
            (clock fault, replayed recording); a timestamp of 0 is always flagged.
        escalation_delay_s: a manual call that no operator acted on within this is escalated to
            the PSAP responsible for its position.
        state_lifetime_s: state untouched for this long is pruned (EN 16102: a PSAP may call back
            for 60 minutes after the start).
        asi15_high: ERA-GLONASS crashSeverity (ASI15) at or above this raises the level to high;
            None (the default) because no reachable source calibrates ASI15 against injury.
        operator_receiver: receiver name of the operator desk.
        test_receiver: receiver name for test calls.
        fallback_psap_receiver: PSAP receiver for positions outside every area, or unknown.
        psap_areas: PSAP areas, first match wins where they overlap.
    """

    redial_window_s: float = 120.0
    redial_distance_m: float = 1000.0
    position_change_m: float = 50.0
    scene_window_s: float = 600.0
    scene_distance_m: float = 300.0
    cancel_grace_s: float = 60.0
    manual_burst_count: int = 3
    manual_burst_window_s: float = 1800.0
    storm_window_s: float = 600.0
    storm_factor: float = 10.0
    storm_min_count: int = 20
    storm_baseline_s: float = 86400.0
    msd_stale_s: float = 600.0
    escalation_delay_s: float = 60.0
    state_lifetime_s: float = 3600.0
    asi15_high: int | None = None
    operator_receiver: str = "operator"
    test_receiver: str = "test"
    fallback_psap_receiver: str = "psap-fallback"
    psap_areas: tuple[PsapArea, ...] = ()

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], *, prefix: str = "triage") -> TriagePolicy:
        """Build a policy from the ``[triage]`` table of the TOML configuration.

        Args:
            m: the table as ``tomllib`` parsed it; missing keys keep their defaults.
            prefix: dotted prefix of the table, used in error keys.

        Returns:
            The validated policy.

        Raises:
            ConfigError: naming the dotted key (``triage.redial_window_s``) of an unknown key or a bad
                value.
        """
        if not isinstance(m, Mapping):
            raise ConfigError(prefix, m, "must be a table")
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in m.items():
            dotted = f"{prefix}.{key}"
            if key not in known:
                raise ConfigError(dotted, value, f"unknown key; known keys: {', '.join(sorted(known))}")
            kwargs[key] = _convert(key, dotted, value)
        policy = cls(**kwargs)
        _check_relations(policy, prefix)
        return policy

    def receivers(self) -> tuple[str, ...]:
        """Every receiver name the policy can route to, for the gateway to check against its config."""
        names = [self.operator_receiver, self.test_receiver, self.fallback_psap_receiver]
        names += [a.receiver for a in self.psap_areas]
        return tuple(dict.fromkeys(names))


# --- validation -----------------------------------------------------------------------------------

_POSITIVE_FLOATS = {
    "redial_window_s",
    "redial_distance_m",
    "manual_burst_window_s",
    "scene_window_s",
    "scene_distance_m",
    "storm_window_s",
    "storm_baseline_s",
    "msd_stale_s",
    "state_lifetime_s",
}
_NON_NEGATIVE_FLOATS = {"position_change_m", "cancel_grace_s", "escalation_delay_s"}
_POSITIVE_INTS = {"manual_burst_count", "storm_min_count"}
_NAMES = {"operator_receiver", "test_receiver", "fallback_psap_receiver"}


def _convert(key: str, dotted: str, value: Any) -> Any:
    if key in _POSITIVE_FLOATS or key in _NON_NEGATIVE_FLOATS or key == "storm_factor":
        # bool is an int subclass; `true` for a duration is a mistake, not 1 second.
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(dotted, value, "must be a finite number")
        f = float(value)
        if key in _NON_NEGATIVE_FLOATS and f < 0:
            raise ConfigError(dotted, value, "must be >= 0")
        if key in _POSITIVE_FLOATS and f <= 0:
            raise ConfigError(dotted, value, "must be > 0")
        if key == "storm_factor" and f < 1:
            raise ConfigError(dotted, value, "must be >= 1 (a storm is a rate above the baseline)")
        return f
    if key in _POSITIVE_INTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(dotted, value, "must be an integer >= 1")
        return value
    if key == "asi15_high":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2047:
            raise ConfigError(dotted, value, "must be an integer in 0..2047 (ASI15 range)")
        return value
    if key in _NAMES:
        return _name(dotted, value)
    if key == "psap_areas":
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise ConfigError(dotted, value, "must be an array of tables {receiver, geometry}")
        return tuple(_area(f"{dotted}[{i}]", a) for i, a in enumerate(value))
    raise AssertionError(f"unhandled policy key {key}")  # pragma: no cover - fields and table agree


def _name(dotted: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        raise ConfigError(dotted, value, "must be a non-empty receiver name (at most 128 characters)")
    return value


def _area(dotted: str, value: Any) -> PsapArea:
    if not isinstance(value, Mapping):
        raise ConfigError(dotted, value, "must be a table {receiver, geometry}")
    extra = set(value) - {"receiver", "geometry"}
    if extra:
        k = sorted(extra)[0]
        raise ConfigError(f"{dotted}.{k}", value[k], "unknown key; known keys: geometry, receiver")
    if "receiver" not in value:
        raise ConfigError(f"{dotted}.receiver", None, "is required")
    if "geometry" not in value:
        raise ConfigError(f"{dotted}.geometry", None, "is required")
    receiver = _name(f"{dotted}.receiver", value["receiver"])
    return PsapArea(receiver=receiver, polygons=parse_geometry(value["geometry"], key=f"{dotted}.geometry"))


def parse_geometry(geometry: Any, *, key: str = "geometry") -> tuple[Polygon, ...]:
    """Parse a GeoJSON (RFC 7946) Polygon or MultiPolygon, or a Feature holding one.

    Args:
        geometry: the GeoJSON object as parsed from TOML or JSON.
        key: dotted configuration key used in errors.

    Returns:
        The polygons, each with its bounding box.

    Raises:
        ConfigError: when the object is not a valid Polygon/MultiPolygon (rings must be closed, have
            at least four positions, and lie within ±180° / ±90°).
    """
    if not isinstance(geometry, Mapping):
        raise ConfigError(key, geometry, "must be a GeoJSON Polygon or MultiPolygon object")
    kind = geometry.get("type")
    if kind == "Feature":
        return parse_geometry(geometry.get("geometry"), key=f"{key}.geometry")
    coords = geometry.get("coordinates")
    if kind == "Polygon":
        return (_polygon(f"{key}.coordinates", coords),)
    if kind == "MultiPolygon":
        if not isinstance(coords, Sequence) or isinstance(coords, str) or not coords:
            raise ConfigError(f"{key}.coordinates", coords, "must be a non-empty array of polygons")
        return tuple(_polygon(f"{key}.coordinates[{i}]", p) for i, p in enumerate(coords))
    raise ConfigError(f"{key}.type", kind, "must be 'Polygon', 'MultiPolygon' or 'Feature'")


def _polygon(key: str, rings: Any) -> Polygon:
    if not isinstance(rings, Sequence) or isinstance(rings, str) or not rings:
        raise ConfigError(key, rings, "must be a non-empty array of linear rings")
    parsed = tuple(_ring(f"{key}[{i}]", r) for i, r in enumerate(rings))
    outer = parsed[0]
    lons = [p[0] for p in outer]
    lats = [p[1] for p in outer]
    return Polygon(outer=outer, holes=parsed[1:], bbox=(min(lons), min(lats), max(lons), max(lats)))


def _ring(key: str, ring: Any) -> Ring:
    if not isinstance(ring, Sequence) or isinstance(ring, str) or len(ring) < 4:
        raise ConfigError(key, ring, "a linear ring needs at least 4 positions (RFC 7946 §3.1.6)")
    points: list[tuple[float, float]] = []
    for i, p in enumerate(ring):
        ok = (
            isinstance(p, Sequence)
            and not isinstance(p, str)
            and len(p) >= 2
            and all(
                isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) for c in p[:2]
            )
        )
        if not ok or not (-180 <= p[0] <= 180 and -90 <= p[1] <= 90):
            raise ConfigError(f"{key}[{i}]", p, "must be [longitude, latitude] within ±180 / ±90")
        points.append((float(p[0]), float(p[1])))
    if points[0] != points[-1]:
        raise ConfigError(key, ring, "a linear ring must be closed (first position equals last)")
    return tuple(points)


def _check_relations(policy: TriagePolicy, prefix: str) -> None:
    # Receivers must stay distinct: a test call routed to a PSAP because two names coincide would
    # break the test-receiver-only rule silently.
    special = {
        "operator_receiver": policy.operator_receiver,
        "test_receiver": policy.test_receiver,
    }
    psaps = {policy.fallback_psap_receiver, *(a.receiver for a in policy.psap_areas)}
    for key, name in special.items():
        if name in psaps:
            raise ConfigError(f"{prefix}.{key}", name, "must differ from every PSAP receiver name")
    if policy.operator_receiver == policy.test_receiver:
        raise ConfigError(
            f"{prefix}.test_receiver", policy.test_receiver, "must differ from operator_receiver"
        )
    if policy.storm_baseline_s < policy.storm_window_s:
        raise ConfigError(f"{prefix}.storm_baseline_s", policy.storm_baseline_s, "must be >= storm_window_s")
