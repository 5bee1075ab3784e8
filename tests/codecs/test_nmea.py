"""NMEA 0183 positions: every sentence type from two talkers, void fixes, checksums, dates, fuzzing."""

from __future__ import annotations

import datetime as dt
import doctest
import functools
import operator
from dataclasses import replace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ecallgw.codecs import nmea as nmea_module
from ecallgw.codecs.document import iso_time
from ecallgw.codecs.nmea import (
    GNSS_TALKERS,
    MAX_SENTENCES,
    decode_nmea,
    encode_gga,
    encode_gll,
    encode_gns,
    encode_nmea,
    encode_rmc,
)
from ecallgw.errors import DecodeError, EncodeError
from ecallgw.model import Position


def sentence(body: str) -> str:
    """Frame a sentence body with '$' and its checksum, computed here independently of the codec."""
    return f"${body}*{functools.reduce(operator.xor, body.encode(), 0):02X}"


def epoch(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC).timestamp()


# 1994-03-23 12:35:19 UTC, the fix time of the classic NMEA reference sentences below.
REF = epoch(1994, 3, 23, 12, 35, 19)
MUNICH = (48 + 7.038 / 60, 11 + 31.0 / 60)


# --- Every sentence type, at least two talkers each ------------------------------------------------

CASES = [
    # The NMEA reference examples, published with their checksums (not recomputed here).
    ("$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A", "gps", REF),
    ("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47", "gps", REF),
    # Same fixes from multi-constellation, GLONASS, Galileo and BeiDou receivers (NMEA 2.3+ mode fields).
    (sentence("GNRMC,123519.00,A,4807.038,N,01131.000,E,022.4,084.4,230394,,,D"), "dgps", REF),
    (sentence("GLRMC,123519,A,4807.038,N,01131.000,E,,,230394,,,A,V"), "gps", REF),
    (sentence("GNGGA,123519.00,4807.038,N,01131.000,E,4,12,0.6,545.4,M,46.9,M,1.0,0000"), "rtk", REF),
    (sentence("GAGGA,123519,4807.038,N,01131.000,E,2,08,0.9,545.4,M,46.9,M,,"), "dgps", REF),
    (sentence("GNGNS,123519.00,4807.038,N,01131.000,E,AAN,14,0.8,545.4,46.9,,"), "gps", REF),
    (sentence("BDGNS,123519.00,4807.038,N,01131.000,E,R,09,0.7,545.4,46.9,,"), "rtk", REF),
    (sentence("GBGNS,123519.00,4807.038,N,01131.000,E,NE,05,2.0,545.4,46.9,,"), "estimated", REF),
    (sentence("GPGLL,4807.038,N,01131.000,E,123519,A"), "gps", REF),  # NMEA 2.0: no mode field
    (sentence("GNGLL,4807.038,N,01131.000,E,123519.00,A,D"), "dgps", REF),
    (sentence("BDGLL,4807.038,N,01131.000,E,123519.00,A,A"), "gps", REF),
]


@pytest.mark.parametrize(("text", "quality", "at"), CASES, ids=[c[0][1:6] for c in CASES])
def test_each_type_and_talker_gives_the_position(text: str, quality: str, at: float) -> None:
    p = decode_nmea(text, reference_time=REF + 7)
    assert (p.lat, p.lon) == pytest.approx(MUNICH, abs=1e-9)
    assert p.source == "nmea"
    assert p.quality == quality
    assert p.trusted == (quality != "estimated")
    assert p.at == at


def test_every_type_is_covered_by_two_talkers() -> None:
    seen: dict[str, set[str]] = {}
    for text, _, _ in CASES:
        seen.setdefault(text[3:6], set()).add(text[1:3])
    assert set(seen) == {"RMC", "GGA", "GNS", "GLL"}
    assert all(len(talkers) >= 2 for talkers in seen.values()), seen


def test_rmc_gives_speed_and_course_and_gga_altitude_satellites_hdop() -> None:
    rmc = decode_nmea(CASES[0][0], reference_time=REF)
    assert rmc.speed_kmh == pytest.approx(22.4 * 1.852)
    assert rmc.heading_deg == pytest.approx(84.4)
    gga = decode_nmea(CASES[1][0], reference_time=REF)
    assert (gga.altitude_m, gga.satellites, gga.hdop) == (545.4, 8, 0.9)
    # Southern and western hemispheres are negative.
    sw = decode_nmea(sentence("GPGLL,3351.000,S,07038.500,W,010203,A,A"), reference_time=REF)
    assert (sw.lat, sw.lon) == pytest.approx((-(33 + 51 / 60), -(70 + 38.5 / 60)))


# --- Fixes that are not positions: refused with a reason --------------------------------------------

VOID = [
    # (sentence, words the reason must contain) - each is well formed but says "no usable fix"
    (sentence("GPRMC,123519,V,4807.038,N,01131.000,E,,,230394,,"), "status V"),
    (sentence("GPRMC,123519,V,,,,,,,230394,,,N"), "status V"),  # receivers leave coordinates empty
    (sentence("GNRMC,123519,A,4807.038,N,01131.000,E,,,230394,,,N"), "mode N"),  # status A but mode N
    (sentence("GPGGA,123519,4807.038,N,01131.000,E,0,00,99.9,,,,,,"), "fix quality 0"),
    (sentence("GPGGA,123519,,,,,0,00,,,,,,,"), "fix quality 0"),
    (sentence("GPGGA,123519,4807.038,N,01131.000,E,8,00,1.0,,,,,,"), "simulator"),
    (sentence("GPGLL,4807.038,N,01131.000,E,123519,V,N"), "status V"),
    (sentence("GNGLL,4807.038,N,01131.000,E,123519,A,N"), "mode N"),
    (sentence("GNGNS,123519.00,,,,,NNN,00,,,,,"), "no fix"),
    (sentence("GNGNS,123519.00,4807.038,N,01131.000,E,SS,04,1.0,,,,"), "simulator"),
]


@pytest.mark.parametrize(("text", "why"), VOID, ids=[f"{v[0][1:6]}-{v[1]}" for v in VOID])
def test_void_fix_is_refused_with_its_reason(text: str, why: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_nmea(text, reference_time=REF)
    assert err.value.codec == "nmea"
    assert "no valid fix" in err.value.reason
    assert why in err.value.reason


def test_void_sentence_beside_a_valid_one_leaves_the_valid_position() -> None:
    text = "\r\n".join([VOID[0][0], CASES[1][0]])
    assert decode_nmea(text, reference_time=REF).quality == "gps"


def test_reason_lists_every_void_sentence() -> None:
    with pytest.raises(DecodeError) as err:
        decode_nmea("\n".join([VOID[0][0], VOID[3][0]]), reference_time=REF)
    assert "status V" in err.value.reason
    assert "fix quality 0" in err.value.reason


# --- Malformed input: refused, naming the sentence and the field ----------------------------------


MALFORMED = [
    # (text, path, words in the reason)
    (CASES[0][0][:-2] + "6B", "sentence[0]", "checksum mismatch"),
    (CASES[0][0][:-3], "sentence[0]", "checksum missing"),
    (CASES[0][0][1:], "sentence[0]", "does not start with '$'"),
    (CASES[0][0][:-2] + "G1", "sentence[0]", "not two hex digits"),
    (sentence("IIGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), "sentence[0]", "talker"),
    (sentence("GPRMC,123519,A,48x7.038,N,01131.000,E,,,230394,,"), "sentence[0].lat", "latitude"),
    (sentence("GPRMC,123519,A,4867.038,N,01131.000,E,,,230394,,"), "sentence[0].lat", "minutes"),
    (sentence("GPRMC,123519,A,9107.038,N,01131.000,E,,,230394,,"), "sentence[0].lat", "beyond 90"),
    (sentence("GPRMC,123519,A,4807.038,N,18131.000,E,,,230394,,"), "sentence[0].lon", "beyond 180"),
    (sentence("GPRMC,123519,A,4807.038,X,01131.000,E,,,230394,,"), "sentence[0].lat_dir", "hemisphere"),
    (sentence("GPRMC,123519,A,4807.038,N,01131.000,E,,,310294,,"), "sentence[0].date", "does not exist"),
    (sentence("GPRMC,123519,A,4807.038,N,01131.000,E,,,,,"), "sentence[0].date", "empty"),
    (sentence("GPRMC,253519,A,4807.038,N,01131.000,E,,,230394,,"), "sentence[0].time", "out of range"),
    (sentence("GPRMC,123519,X,4807.038,N,01131.000,E,,,230394,,"), "sentence[0].status", "not A or V"),
    (sentence("GPRMC,123519,A,4807.038,N,01131.000,E,fast,,230394,,"), "sentence[0].speed", "decimal"),
    (sentence("GPRMC,123519,A,4807.038,N,01131.000,E,1.0,361.0,230394,,"), "sentence[0].course", "360"),
    (sentence("GPGGA,123519,4807.038,N,01131.000,E,9,08,0.9,545.4,M,,,,"), "sentence[0].quality", "unknown"),
    (sentence("GPGGA,123519,4807.038,N,01131.000,E,,08,0.9,545.4,M,,,,"), "sentence[0].quality", "empty"),
    (sentence("GPGGA,123519,4807.038,N,01131.000,E,1,many,0.9,,,,,,"), "sentence[0].satellites", "count"),
    (sentence("GPGGA,123519,,N,01131.000,E,1,08,0.9,,,,,,"), "sentence[0].lat", "empty"),
    (sentence("GNGNS,123519.00,4807.038,N,01131.000,E,AZ,14,0.8,,,,"), "sentence[0].mode", "unknown"),
    (sentence("GPGLL,4807.038,N,01131.000,E,123519,A,Q"), "sentence[0].mode", "unknown"),
    (sentence("gpgga,123519,4807.038,N,01131.000,E,1,08,0.9,,,,,,"), "sentence[0]", "address field"),
    (sentence("GPRMC"), "sentence[0]", "address field"),
    ("$GPRMC,1*2*00", "sentence[0]", "reserved character"),
    ("$GPRMC,123519,A,4807.038,N,01131.000,E,,,230394,,\u00e9*00", "sentence[0]", "ASCII"),
    ("$GP" + "X" * 200 + "*00", "sentence[0]", "exceeds"),
    ("", "", "no sentence"),
    ("\r\n\r\n", "", "no sentence"),
    ("\n".join([CASES[1][0]] * (MAX_SENTENCES + 1)), "", "more than"),
    (sentence("GPGSV,1,1,00"), "", "no position sentence"),
    # One bad sentence refuses the payload even when another one is good.
    (CASES[1][0] + "\n" + CASES[0][0][:-2] + "00", "sentence[1]", "checksum mismatch"),
]


@pytest.mark.parametrize(("text", "path", "why"), MALFORMED, ids=[f"{m[1]}-{m[2]}" for m in MALFORMED])
def test_malformed_input_is_refused_with_path_and_reason(text: str, path: str, why: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_nmea(text, reference_time=REF)
    assert err.value.codec == "nmea"
    assert err.value.path == path
    assert why in err.value.reason


def test_other_sentence_types_are_checked_and_skipped() -> None:
    gsv = sentence("GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00")
    gsa = sentence("GNGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1")
    assert decode_nmea("\r\n".join([gsv, gsa, CASES[1][0]]), reference_time=REF).satellites == 8
    with pytest.raises(DecodeError, match="checksum"):
        decode_nmea("\r\n".join([gsv[:-1] + "0", CASES[1][0]]), reference_time=REF)


def test_non_numeric_reference_time_is_refused() -> None:
    for bad in (float("nan"), float("inf"), -1.0, 1e13):
        with pytest.raises(DecodeError, match="reference time"):
            decode_nmea(CASES[1][0], reference_time=bad)


# --- Dates: RMC date, reference date, midnight --------------------------------------------------------


@pytest.mark.parametrize(
    ("time_field", "reference", "expected"),
    [
        # fix just before midnight, sent just after: the fix belongs to the previous day
        ("235958.00", epoch(2026, 1, 1, 0, 0, 3), epoch(2025, 12, 31, 23, 59, 58)),
        # the sender's clock is a little behind the receiver's, across midnight: next day
        ("000001.00", epoch(2025, 12, 31, 23, 59, 59), epoch(2026, 1, 1, 0, 0, 1)),
        # an old fix of the same day
        ("080000.50", epoch(2026, 6, 1, 12, 0, 0), epoch(2026, 6, 1, 8, 0, 0) + 0.5),
        # leap second 60 counts as the next second (epoch time has none)
        ("235960.00", epoch(2016, 12, 31, 23, 59, 59), epoch(2017, 1, 1, 0, 0, 0)),
    ],
    ids=["before-midnight", "after-midnight", "same-day", "leap-second"],
)
def test_time_of_day_takes_the_date_nearest_the_reference(
    time_field: str, reference: float, expected: float
) -> None:
    text = sentence(f"GPGGA,{time_field},4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
    assert decode_nmea(text, reference_time=reference).at == expected


@pytest.mark.parametrize(
    ("text", "reference", "path"),
    [
        # An RMC date of 1950 taken nearest a reference in 1970: before the epoch.
        (sentence("GPRMC,000001,A,4807.038,N,01131.000,E,022.4,084.4,010150,003.1,W"), 0.0, "date"),
        # Just before midnight, sent 10 s into 1970-01-01: the day before the epoch.
        (sentence("GPGGA,235959,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), 10.0, "time"),
        # Just after midnight, sent on 9999-12-30: 9999-12-31, past what documents render.
        (sentence("GPGGA,000010,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), 253402214399.0, "time"),
    ],
    ids=["rmc-1950", "before-1970", "after-9999-12-30"],
)
def test_fix_time_outside_the_renderable_range_is_refused(text: str, reference: float, path: str) -> None:
    # Otherwise the Position decodes and every later document of the incident fails to render.
    with pytest.raises(DecodeError, match="outside 1970") as info:
        decode_nmea(text, reference_time=reference)
    assert info.value.path == f"sentence[0].{path}"


@given(
    st.sampled_from(["000000", "000001.5", "120000", "235959.99"]),
    st.sampled_from(["", "010170", "311299", "010150", "311269"]),
    st.floats(0, 253402214399.0),
)
def test_any_decoded_fix_time_is_renderable(time_field: str, date: str, reference: float) -> None:
    kind = (
        f"RMC,{time_field},A,4807.038,N,01131.000,E,,,{date},,"
        if date
        else f"GGA,{time_field},4807.038,N,01131.000,E,1,08,0.9,,,,,,"
    )
    try:
        p = decode_nmea(sentence("GP" + kind), reference_time=reference)
    except DecodeError:
        return
    assert p.at is not None and 0 <= p.at < 253402214400.0
    iso_time(p.at)  # EncodeError here would make the incident's documents unrenderable


def test_rmc_date_is_used_over_the_reference_date() -> None:
    # The envelope was sent two days later; the RMC says when the fix was.
    p = decode_nmea(CASES[0][0], reference_time=REF + 2 * 86400)
    assert p.at == REF


def test_rmc_date_anchors_a_gga_of_the_same_fix() -> None:
    text = "\r\n".join([CASES[0][0], CASES[1][0]])
    p = decode_nmea(text, reference_time=REF + 2 * 86400)
    assert p.at == REF
    # merged: RMC's speed and course, GGA's altitude, satellites and HDOP
    assert (p.speed_kmh is not None, p.heading_deg, p.altitude_m, p.satellites, p.hdop) == (
        True,
        84.4,
        545.4,
        8,
        0.9,
    )


def test_latest_fix_wins_and_best_quality_within_a_fix() -> None:
    older = sentence("GPGGA,123500,4800.000,N,01100.000,E,4,08,0.9,545.4,M,46.9,M,,")
    newer_gps = sentence("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
    newer_rtk = sentence("GNGNS,123519,4807.040,N,01131.000,E,RN,10,0.5,545.4,46.9,,")
    p = decode_nmea("\n".join([newer_gps, older, newer_rtk]), reference_time=REF)
    assert p.at == REF
    assert p.quality == "rtk"
    assert p.lat == pytest.approx(48 + 7.040 / 60)
    # details come first from the best sentence of the fix, then from the others
    assert (p.satellites, p.hdop) == (10, 0.5)
    untimed = sentence("GPGLL,4700.000,N,01100.000,E,,A,A")
    assert decode_nmea("\n".join([untimed, newer_gps]), reference_time=REF).at == REF
    only_untimed = decode_nmea(untimed, reference_time=REF)
    assert only_untimed.at is None
    assert only_untimed.lat == 47.0


# --- Round trips through the encoders and fuzzing --------------------------------------------------

positions = st.builds(
    Position,
    lat=st.floats(-90, 90, allow_nan=False),
    lon=st.floats(-180, 180, allow_nan=False),
    trusted=st.just(True),
    source=st.just("nmea"),
    quality=st.sampled_from(["gps", "dgps", "pps", "rtk", "float_rtk", "estimated", "manual"]),
    speed_kmh=st.none() | st.floats(0, 400),
    heading_deg=st.none() | st.floats(0, 359.9),
    altitude_m=st.none() | st.floats(-400, 9000),
    satellites=st.none() | st.integers(0, 99),
    hdop=st.none() | st.floats(0, 99),
)
times = st.floats(epoch(1990, 1, 1), epoch(2079, 1, 1))
talkers = st.sampled_from(sorted(GNSS_TALKERS))


@given(positions, times, talkers)
def test_encode_nmea_round_trips(position: Position, at: float, talker: str) -> None:
    p = decode_nmea(encode_nmea(position, at=at, talker=talker), reference_time=at)
    # NMEA carries 1e-5 minutes (2e-7 degrees) and centiseconds.
    assert p.lat == pytest.approx(position.lat, abs=2e-7)
    assert p.lon == pytest.approx(position.lon, abs=2e-7)
    assert p.at == pytest.approx(at, abs=0.006)
    assert p.quality == position.quality
    assert p.trusted == (position.quality not in ("estimated", "manual"))
    assert p.satellites == position.satellites
    if position.speed_kmh is not None:
        assert p.speed_kmh == pytest.approx(position.speed_kmh, abs=0.01)
    if position.altitude_m is not None:
        assert p.altitude_m == pytest.approx(position.altitude_m, abs=0.05)


@given(positions, times, talkers, st.sampled_from(["RMC", "GGA", "GNS", "GLL"]), st.floats(-40000, 40000))
def test_each_encoder_round_trips_with_a_nearby_reference(
    position: Position, at: float, talker: str, kind: str, skew: float
) -> None:
    text = {
        "RMC": lambda: encode_rmc(position, at=at, talker=talker),
        "GGA": lambda: encode_gga(position, at=at, talker=talker),
        "GNS": lambda: encode_gns(position, at=at, talker=talker),
        "GLL": lambda: encode_gll(position, at=at, talker=talker),
    }[kind]()
    # Within ±11 h of the fix, a time of day resolves to the right date.
    p = decode_nmea(text, reference_time=at + skew)
    assert p.at == pytest.approx(at, abs=0.006)
    assert (p.lat, p.lon) == pytest.approx((position.lat, position.lon), abs=2e-7)


@given(positions, times, talkers, st.data())
def test_corrupted_character_is_refused(
    position: Position, at: float, talker: str, data: st.DataObject
) -> None:
    text = encode_nmea(position, at=at, talker=talker)
    i = data.draw(st.integers(1, len(text) - 4), label="index")
    assume(text[i] not in "\r\n")
    # Hex checksums are accepted in either case, so a change of case only is no corruption.
    c = data.draw(st.characters(codec="ascii").filter(lambda ch: ch.upper() != text[i].upper()), label="char")
    with pytest.raises(DecodeError) as err:
        decode_nmea(text[:i] + c + text[i + 1 :], reference_time=at)
    assert err.value.codec == "nmea"


@given(positions, times, talkers, st.sampled_from("0123456789ABCDEF"))
def test_corrupted_checksum_is_refused(position: Position, at: float, talker: str, digit: str) -> None:
    text = encode_rmc(position, at=at, talker=talker)
    assume(text[-1] != digit)
    with pytest.raises(DecodeError, match="checksum mismatch"):
        decode_nmea(text[:-1] + digit, reference_time=at)


@given(st.text(max_size=300), times)
def test_random_text_raises_only_decode_error(text: str, at: float) -> None:
    try:
        decode_nmea(text, reference_time=at)
    except DecodeError as exc:
        assert exc.codec == "nmea"


@given(st.lists(st.sampled_from([c[0] for c in CASES + VOID] + [m[0] for m in MALFORMED[:20]]), max_size=4))
def test_mixtures_of_sentences_raise_only_decode_error(lines: list[str]) -> None:
    try:
        p = decode_nmea("\r\n".join(lines), reference_time=REF)
    except DecodeError:
        return
    assert -90 <= p.lat <= 90 and -180 <= p.lon <= 180


@given(st.binary(max_size=200), times)
def test_random_bytes_as_latin1_raise_only_decode_error(data: bytes, at: float) -> None:
    try:
        decode_nmea("$GP" + data.decode("latin-1"), reference_time=at)
    except DecodeError as exc:
        assert exc.codec == "nmea"


def test_encoders_refuse_what_cannot_be_sent() -> None:
    p = Position(lat=1.0, lon=2.0, trusted=True, source="nmea")
    with pytest.raises(EncodeError):
        encode_nmea(p, at=REF, talker="II")
    with pytest.raises(EncodeError):
        encode_nmea(replace(p, lat=91.0), at=REF)
    with pytest.raises(EncodeError):
        encode_gga(p, at=float("nan"))


def test_encoders_build_void_fixes_for_tests() -> None:
    p = Position(lat=1.0, lon=2.0, trusted=True, source="nmea")
    for text in (
        encode_rmc(p, at=REF, status="V", mode="N"),
        encode_gga(p, at=REF, quality=0),
        encode_gns(p, at=REF, mode="NN"),
        encode_gll(p, at=REF, status="V"),
    ):
        with pytest.raises(DecodeError, match="no valid fix"):
            decode_nmea(text, reference_time=REF)


def test_docstring_examples() -> None:
    result = doctest.testmod(nmea_module)
    assert (result.failed, result.attempted > 0) == (0, True)


def test_encoded_minutes_never_reach_sixty() -> None:
    # 0.9999999999° is 59.999999994 minutes: it must carry into the degrees, not print "60.00000".
    p = Position(lat=0.9999999999, lon=-179.9999999999, trusted=True, source="nmea")
    text = encode_gga(p, at=REF)
    assert ",0100.00000,N,18000.00000,W," in text
    assert decode_nmea(text, reference_time=REF).lat == 1.0
