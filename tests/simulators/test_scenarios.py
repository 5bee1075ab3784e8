"""Scenarios: reproducible, labelled, and consistent with the EN 15722 ranges and the UK 2024 mix."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecallgw.model import POSITION_UNKNOWN, CancelSignal, MsdSignal, PositionSignal
from ecallgw.simulators import ALL_KINDS_MIX, DEFAULT_MIX, KINDS, Mix, generate, timeline
from ecallgw.simulators.drivers import build_outgoing
from ecallgw.simulators.scenarios import call_interval, injury_risk, severity_of
from ecallgw.simulators.vin import is_valid_vin


def test_same_seed_same_scenarios_and_labels() -> None:
    random.seed(1)  # the global generator must play no part: reseed it differently between runs
    a = generate(random.Random(42), 300, ALL_KINDS_MIX)
    random.seed(2)
    b = generate(random.Random(42), 300, ALL_KINDS_MIX)
    assert a == b
    # What goes on the wire, byte for byte and at the same times (Msd.raw aside, equality above
    # could miss an encoding difference).
    wire_a, wire_b = build_outgoing(a), build_outgoing(b)
    assert [(o.at, o.payload, o.raw_msd) for o in wire_a] == [(o.at, o.payload, o.raw_msd) for o in wire_b]
    assert [s.label for s in a] == [s.label for s in b]
    # Msd.raw is excluded from equality; the values and the order must still match exactly.
    assert [[(t.offset_s, t.signal) for t in s.signals] for s in a] == [
        [(t.offset_s, t.signal) for t in s.signals] for s in b
    ]


def test_different_seeds_differ() -> None:
    assert generate(random.Random(1), 50) != generate(random.Random(2), 50)


def test_default_mix_follows_uk_2024() -> None:
    scenarios = generate(random.Random(2024), 4000, DEFAULT_MIX)
    automatic = sum(s.label.automatic for s in scenarios) / len(scenarios)
    false = sum(not s.label.real for s in scenarios) / len(scenarios)
    manual = [s for s in scenarios if not s.label.automatic]
    manual_false = sum(not s.label.real for s in manual) / len(manual)
    auto = [s for s in scenarios if s.label.automatic]
    auto_false = sum(not s.label.real for s in auto) / len(auto)
    # RAC Foundation 2024: >85 % manual, ~3/4 of manual false, ~1/3 of automatic false, ~2/3 false.
    assert 0.11 < automatic < 0.16
    assert 0.70 < manual_false < 0.80
    assert 0.25 < auto_false < 0.42
    assert 0.62 < false < 0.74


def test_every_kind_appears_with_its_label() -> None:
    scenarios = generate(random.Random(5), 2 * len(KINDS), ALL_KINDS_MIX, kinds=KINDS)
    by_kind = {s.label.kind: s for s in scenarios}
    assert set(by_kind) == set(KINDS)
    assert by_kind["crash"].label.real and by_kind["crash"].label.automatic
    assert by_kind["crash"].label.severity is not None
    assert by_kind["medical"].label.real and not by_kind["medical"].label.automatic
    assert not by_kind["accidental_cancel"].label.real
    assert any(isinstance(t.signal, CancelSignal) for t in by_kind["accidental_cancel"].signals)
    test_msds = [t.signal for t in by_kind["test_call"].signals if isinstance(t.signal, MsdSignal)]
    assert test_msds and all(m.msd.test for m in test_msds)
    storm = by_kind["storm"]
    assert len({t.signal.vehicle for t in storm.signals}) == ALL_KINDS_MIX.storm_size
    assert len({t.signal.tps for t in storm.signals}) == 1
    multi = by_kind["multi_vehicle_crash"]
    assert multi.label.expected_incidents == len(multi.vehicles) >= 2
    two = by_kind["two_devices"]
    assert len({v.vin for v in two.vehicles}) == 1 and len({v.tps for v in two.vehicles}) == 2
    stale = by_kind["stale_replay"]
    first = stale.signals[0].signal
    assert stale.start - first.sent_at >= 3600


def test_overlays_redial_retransmission_untrusted() -> None:
    mix = Mix.parse("redial=1,retransmission=1,untrusted_position=1")
    (s,) = generate(random.Random(9), 1, mix, kinds=["crash"])
    assert set(s.label.modifiers) == {"redial", "retransmission", "untrusted_position"}
    msds = [(t.offset_s, t.signal) for t in s.signals if isinstance(t.signal, MsdSignal)]
    first_call = msds[0][1].call_id
    ids = [m.msd.structure.message_identifier for _, m in msds if m.call_id == first_call]
    assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 2  # retransmissions count up
    redials = [(at, m) for at, m in msds if m.call_id != first_call]
    assert len(redials) == 1 and redials[0][1].msd.structure.message_identifier == 1
    # EN 16062 §7.14.3: the redial comes within 2 minutes of the previous attempt.
    assert redials[0][0] - max(at for at, m in msds if m.call_id == first_call) <= 120
    assert not msds[0][1].msd.structure.control.position_can_be_trusted
    assert any(isinstance(t.signal, PositionSignal) for t in s.signals)


@given(seed=st.integers(0, 2**32 - 1))
def test_msd_fields_in_range(seed: int) -> None:
    for s in generate(random.Random(seed), 8, ALL_KINDS_MIX):
        assert [t.offset_s for t in s.signals] == sorted(t.offset_s for t in s.signals)
        for t in s.signals:
            sig = t.signal
            if isinstance(sig, MsdSignal):
                st_ = sig.msd.structure
                assert is_valid_vin(sig.msd.vin)
                assert 1 <= st_.message_identifier <= 255
                assert 0 <= st_.vehicle_direction <= 179 or st_.vehicle_direction == 255
                for d in (st_.recent_vehicle_location_n1, st_.recent_vehicle_location_n2):
                    if d is not None:
                        assert -512 <= d.latitude_delta <= 511 and -512 <= d.longitude_delta <= 511
                if sig.msd.version == 3:
                    assert st_.recent_vehicle_location_n1 is not None
                loc = st_.vehicle_location
                assert loc.position_latitude == POSITION_UNKNOWN or loc.is_valid
                assert abs(st_.timestamp - sig.sent_at) < 5


def test_severity_follows_urgency_calibration() -> None:
    # At 30 mph delta-V the curve passes through the published URGENCY points.
    assert injury_risk(48.3, "front") == pytest.approx(0.389)
    assert injury_risk(48.3, "driverSide") == pytest.approx(0.838)
    assert injury_risk(10, "front") < injury_risk(40, "front") < injury_risk(70, "front")
    assert severity_of(0.2) == "high" and severity_of(0.19) == "medium" and severity_of(0.6) == "critical"


def test_timeline_orders_all_signals() -> None:
    scenarios = generate(random.Random(3), 40, ALL_KINDS_MIX, mean_gap_s=5.0)
    items = list(timeline(scenarios))
    assert len(items) == sum(len(s.signals) for s in scenarios)
    assert [t for t, _, _ in items] == sorted(t for t, _, _ in items)


def test_mix_parse_rejects_unknown_and_negative() -> None:
    with pytest.raises(ValueError, match="unknown"):
        Mix.parse("crashes=1")
    with pytest.raises(ValueError, match=">= 0"):
        Mix.parse("crash=-1")
    assert Mix.parse("storm=0.5,storm_size=7").storm_size == 7


def test_kind_counts_are_spread() -> None:
    counts = Counter(s.label.kind for s in generate(random.Random(11), 500, ALL_KINDS_MIX))
    assert set(counts) == set(KINDS)


def _metres(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """(north, east) metres from a to b."""
    return (b[0] - a[0]) * 111_320, (b[1] - a[1]) * 111_320 * math.cos(math.radians(a[0]))


def test_recent_positions_match_the_motion() -> None:
    # N1/N2 decoded back to degrees describe the motion that produced them: the vehicle came from
    # N2 through N1 to the location at a road speed, heading the way vehicleDirection says
    # (2-degree steps clockwise from north: a car heading east has N1 to the west of it).
    checked = 0
    for s in generate(random.Random(4), 120, Mix.parse("untrusted_position=0"), kinds=["crash"]):
        sig = s.signals[0].signal
        assert isinstance(sig, MsdSignal)
        pos = sig.msd.position
        recent = sig.msd.recent_positions
        assert pos is not None
        for lat, _lon in recent:
            # At most 130 km/h over 2 x 5 s: never more than ~400 m from the event.
            assert abs(lat - pos[0]) * 111_320 < 450
        if len(recent) < 2:
            continue  # N1/N2 are optional before v3
        interval = call_interval(s.vehicles[0])
        n1, n2 = recent
        # The last two seconds of a crash are the stop; before that the vehicle cruised at 20-130 km/h.
        north, east = _metres(n2, n1)
        assert 20 / 3.6 * interval - 10 <= math.hypot(north, east) <= 130 / 3.6 * interval + 10
        north, east = _metres(n1, pos)
        assert math.hypot(north, east) <= 130 / 3.6 * interval + 10
        if math.hypot(north, east) < 30:
            continue  # too short a chord for the 100 mas grid to give a bearing
        bearing = math.degrees(math.atan2(east, north)) % 360
        heading = 2 * sig.msd.structure.vehicle_direction
        assert sig.msd.structure.vehicle_direction != 255  # a crash happens while moving
        assert abs((bearing - heading + 180) % 360 - 180) < 40
        checked += 1
    assert checked > 40


def test_every_signal_survives_the_wire() -> None:
    # What the simulators send is what the gateway decodes: envelopes and MSDs round-trip through
    # the real codecs, and the optional additional data bytes decode to the values we meant.
    from ecallgw.codecs.envelope import decode_envelope, encode_envelope, signal_kind
    from ecallgw.codecs.oad import decode_oad

    for s in generate(random.Random(8), 120, ALL_KINDS_MIX):
        for t in s.signals:
            sig = t.signal
            back = decode_envelope(signal_kind(sig), sig.tps, sig.vehicle, encode_envelope(sig))
            if isinstance(sig, PositionSignal):
                assert isinstance(back, PositionSignal)
                assert abs(back.position.lat - sig.position.lat) < 1e-5
                assert abs(back.position.lon - sig.position.lon) < 1e-5
                continue
            assert back == sig
            if isinstance(sig, MsdSignal) and sig.msd.msd.optional_additional_data is not None:
                oad = sig.msd.msd.optional_additional_data
                assert decode_oad(oad.oid, oad.data) == oad.decoded


def test_position_update_follows_the_vehicle() -> None:
    # The NMEA update that corrects an untrusted position comes 10-40 s after the event: a vehicle
    # that drove on is that far along its heading, at its speed; a stopped one is where it stopped.
    from ecallgw.simulators.scenarios import _position
    from ecallgw.simulators.trajectory import drive

    rng = random.Random(6)
    for ending, road in (("moving", "motorway"), ("crash", "rural")):
        traj = drive(rng, (48.137, 11.575), road, ending=ending)  # type: ignore[arg-type]
        e = traj.event
        pos = _position(traj, 1_790_000_030.0, 20.0, rng)
        north, east = _metres((e.lat, e.lon), (pos.lat, pos.lon))
        assert pos.speed_kmh == e.speed_kmh
        assert math.hypot(north, east) == pytest.approx(e.speed_kmh / 3.6 * 20.0, abs=0.5)
        if e.speed_kmh > 0:
            bearing = math.degrees(math.atan2(east, north)) % 360
            assert abs((bearing - e.heading_deg + 180) % 360 - 180) < 1.0
