"""Decode NMEA 0183 position sentences (RMC, GGA, GNS, GLL) into a Position, and build them.

pynmea2 frames each sentence and verifies its checksum; the fields are then read here, strictly,
because pynmea2's field accessors return the raw text when a conversion fails instead of raising.

Rules (docs/documents.md §NMEA):

- every sentence must start with ``$``, be printable ASCII, at most ``MAX_SENTENCE_CHARS`` long and
  carry a checksum that matches; a payload holds at most ``MAX_SENTENCES`` sentences;
- talkers accepted: GP (GPS), GN (multi-constellation), GL (GLONASS), GA (Galileo), GB and BD
  (BeiDou), GQ (QZSS), GI (NavIC); other sentence types from these talkers (GSA, GSV, VTG, ...) are
  checked and ignored;
- a sentence that is well formed but reports no fix (RMC status V or mode N, GGA quality 0, GLL
  status V or mode N, GNS mode all N) or a simulated one (GGA quality 8, mode S) gives no position;
  when no sentence of the payload gives one, the payload is refused with each sentence's reason;
- a malformed sentence (bad checksum, bad field) refuses the whole payload: it is the sender's
  fault and the gateway keeps the payload in quarantine, rather than silently using part of it;
- the RMC's two-digit year takes the century nearest ``reference_time`` (no fixed pivot year);
- the fix time is the sentence's UTC time of day on the RMC date when the payload has an RMC,
  otherwise on the date (the day before, of, or after ``reference_time``) that puts it nearest
  ``reference_time``, which handles fixes taken just before midnight and sent just after;
- several usable sentences merge into one position: the latest fix time wins; sentences of that
  same fix complete each other (coordinates from the best quality, speed and course from RMC,
  altitude, satellites and HDOP from GGA or GNS).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import pynmea2

from ecallgw.errors import DecodeError, EncodeError
from ecallgw.model import Position

__all__ = [
    "GNSS_TALKERS",
    "MAX_NMEA_CHARS",
    "MAX_SENTENCES",
    "MAX_SENTENCE_CHARS",
    "decode_nmea",
    "encode_gga",
    "encode_gll",
    "encode_gns",
    "encode_nmea",
    "encode_rmc",
]

_CODEC = "nmea"
_T = TypeVar("_T")

GNSS_TALKERS = frozenset({"GP", "GN", "GL", "GA", "GB", "BD", "GQ", "GI"})
"""Talker identifiers of GNSS receivers (NMEA 0183 v4.11); others are refused."""

MAX_NMEA_CHARS = 4096
"""Longest NMEA payload accepted, in characters (about 50 full sentences)."""

MAX_SENTENCES = 32
"""Most sentences accepted in one payload."""

MAX_SENTENCE_CHARS = 128
"""Longest sentence accepted, without line ending. NMEA 0183 says 82 with CR LF; receivers with many
constellations exceed it in GNS and GSV, so the bound is looser and only guards the parser."""

_MAX_TIME = 253402214400.0  # 9999-12-31T00:00Z, the bound of envelope sent_at and document times

KNOT_KMH = 1.852
"""Kilometres per hour in one knot (speed over ground in RMC is in knots)."""


# GGA fix quality indicator -> our quality name (NMEA 0183 v4.11, GGA field 6).
_GGA_QUALITY = {
    1: "gps",
    2: "dgps",
    3: "pps",
    4: "rtk",
    5: "float_rtk",
    6: "estimated",
    7: "manual",
}
# Mode indicator (RMC, GLL, GNS per constellation) -> our quality name.
_MODE_QUALITY = {
    "A": "gps",
    "D": "dgps",
    "P": "pps",
    "R": "rtk",
    "F": "float_rtk",
    "E": "estimated",
    "M": "manual",
}
# Quality names that come from satellites; estimated (dead reckoning) and manual input do not.
_TRUSTED = frozenset({"gps", "dgps", "pps", "rtk", "float_rtk"})
# Higher is better when several sentences of one fix disagree on quality.
_RANK = {"rtk": 7, "float_rtk": 6, "pps": 5, "dgps": 4, "gps": 3, "estimated": 2, "manual": 1}

_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_TIME = re.compile(r"(\d{2})(\d{2})(\d{2}(?:\.\d{1,6})?)")
_DATE = re.compile(r"(\d{2})(\d{2})(\d{2})")
_LAT = re.compile(r"(\d{2})(\d{2}(?:\.\d{1,10})?)")
_LON = re.compile(r"(\d{3})(\d{2}(?:\.\d{1,10})?)")
_DECIMAL = re.compile(r"-?\d{1,7}(?:\.\d{1,6})?")
_UNSIGNED = re.compile(r"\d{1,7}(?:\.\d{1,6})?")
_COUNT = re.compile(r"\d{1,3}")


class _NoFixError(Exception):
    """A well-formed sentence that reports no usable fix (internal; never leaves this module)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Fix:
    """One sentence's contribution, before merging."""

    kind: str
    lat: float
    lon: float
    seconds_of_day: float | None
    date: dt.date | None
    quality: str
    heading_deg: float | None = None
    speed_kmh: float | None = None
    altitude_m: float | None = None
    satellites: int | None = None
    hdop: float | None = None


class _Fields:
    """Strict readers for the fields of one sentence; errors name the sentence and the field."""

    def __init__(self, index: int, ident: str, data: Sequence[str], *, reference_year: int) -> None:
        self.index = index
        self.ident = ident
        self.data = data
        self.reference_year = reference_year

    def error(self, field: str, reason: str) -> DecodeError:
        return DecodeError(_CODEC, f"{self.ident}: {reason}", path=f"sentence[{self.index}].{field}")

    def text(self, i: int) -> str:
        return self.data[i] if i < len(self.data) else ""

    def need(self, i: int, field: str) -> str:
        value = self.text(i)
        if not value:
            raise self.error(field, "required field is empty")
        return value

    def time(self, i: int) -> float | None:
        value = self.text(i)
        if not value:
            return None
        m = _TIME.fullmatch(value)
        if not m:
            raise self.error("time", f"UTC time {value!r} is not hhmmss[.ss]")
        h, mi, s = int(m[1]), int(m[2]), float(m[3])
        # Second 60 is a leap second; it is counted as the next second (epoch time has no leap seconds).
        if h > 23 or mi > 59 or s >= 61:
            raise self.error("time", f"UTC time {value!r} is out of range")
        return h * 3600 + mi * 60 + s

    def date(self, i: int) -> dt.date:
        value = self.need(i, "date")
        m = _DATE.fullmatch(value)
        if not m:
            raise self.error("date", f"date {value!r} is not ddmmyy")
        # NMEA years have two digits: take the century that puts the year nearest the reference's.
        year = min(
            (self.reference_year // 100 * 100 + c + int(m[3]) for c in (-100, 0, 100)),
            key=lambda y: abs(y - self.reference_year),
        )
        try:
            return dt.date(year, int(m[2]), int(m[1]))
        except ValueError as exc:
            raise self.error("date", f"date {value!r} does not exist") from exc

    def latlon(self, i: int) -> tuple[float, float]:
        lat_s, lat_h = self.need(i, "lat"), self.need(i + 1, "lat_dir")
        lon_s, lon_h = self.need(i + 2, "lon"), self.need(i + 3, "lon_dir")
        m = _LAT.fullmatch(lat_s)
        if not m:
            raise self.error("lat", f"latitude {lat_s!r} is not ddmm.mmmm")
        if float(m[2]) >= 60:
            raise self.error("lat", f"latitude {lat_s!r} has minutes ≥ 60")
        lat = int(m[1]) + float(m[2]) / 60
        m = _LON.fullmatch(lon_s)
        if not m:
            raise self.error("lon", f"longitude {lon_s!r} is not dddmm.mmmm")
        if float(m[2]) >= 60:
            raise self.error("lon", f"longitude {lon_s!r} has minutes ≥ 60")
        lon = int(m[1]) + float(m[2]) / 60
        if lat > 90:
            raise self.error("lat", f"latitude {lat_s!r} is beyond 90°")
        if lon > 180:
            raise self.error("lon", f"longitude {lon_s!r} is beyond 180°")
        if lat_h not in ("N", "S"):
            raise self.error("lat_dir", f"latitude hemisphere {lat_h!r} is not N or S")
        if lon_h not in ("E", "W"):
            raise self.error("lon_dir", f"longitude hemisphere {lon_h!r} is not E or W")
        return (-lat if lat_h == "S" else lat, -lon if lon_h == "W" else lon)

    def number(self, i: int, field: str, *, signed: bool = False) -> float | None:
        value = self.text(i)
        if not value:
            return None
        if not (_DECIMAL if signed else _UNSIGNED).fullmatch(value):
            raise self.error(field, f"{field} {value!r} is not a decimal number")
        return float(value)

    def count(self, i: int, field: str) -> int | None:
        value = self.text(i)
        if not value:
            return None
        if not _COUNT.fullmatch(value):
            raise self.error(field, f"{field} {value!r} is not a count")
        return int(value)

    def require_valid_status(self, i: int) -> None:
        """Check an RMC/GLL status field: A is a valid fix, V (void) gives no position."""
        status = self.text(i)
        if status not in ("A", "V"):
            raise self.error("status", f"status {status!r} is not A or V")
        if status == "V":
            raise _NoFixError(f"{self.ident}: status V (void, no valid fix)")

    def mode(self, i: int, field: str = "mode") -> str | None:
        """The quality named by a one-letter mode indicator; None when absent (before NMEA 2.3)."""
        value = self.text(i)
        if not value:
            return None
        if value in ("N", "V"):
            raise _NoFixError(f"{self.ident}: mode {value} (no fix)")
        if value == "S":
            raise _NoFixError(f"{self.ident}: mode S (simulator)")
        if value not in _MODE_QUALITY:
            raise self.error(field, f"mode indicator {value!r} is unknown")
        return _MODE_QUALITY[value]


# --- One reader per sentence type (field positions after the address field) ------------------------


def _read_rmc(f: _Fields) -> _Fix:
    # RMC: time, status, lat, N/S, lon, E/W, speed (knots), course, date, magvar, E/W, mode, nav status
    seconds = f.time(0)
    f.require_valid_status(1)
    quality = f.mode(11)
    lat, lon = f.latlon(2)
    speed = f.number(6, "speed")
    course = f.number(7, "course")
    if course is not None and course > 360:
        raise f.error("course", f"course {course} is beyond 360°")
    return _Fix(
        kind="RMC",
        lat=lat,
        lon=lon,
        seconds_of_day=seconds,
        date=f.date(8),
        quality=quality or "gps",
        heading_deg=None if course is None else course % 360,
        speed_kmh=None if speed is None else speed * KNOT_KMH,
    )


def _read_gga(f: _Fields) -> _Fix:
    # GGA: time, lat, N/S, lon, E/W, quality, satellites, HDOP, altitude, M, geoid sep., M, age, station
    seconds = f.time(0)
    q = f.count(5, "quality")
    if q is None:
        raise f.error("quality", "required field is empty")
    if q == 0:
        raise _NoFixError(f"{f.ident}: fix quality 0 (no fix)")
    if q == 8:
        raise _NoFixError(f"{f.ident}: fix quality 8 (simulator)")
    if q not in _GGA_QUALITY:
        raise f.error("quality", f"fix quality {q} is unknown")
    lat, lon = f.latlon(1)
    return _Fix(
        kind="GGA",
        lat=lat,
        lon=lon,
        seconds_of_day=seconds,
        date=None,
        quality=_GGA_QUALITY[q],
        satellites=f.count(6, "satellites"),
        hdop=f.number(7, "hdop"),
        altitude_m=f.number(8, "altitude", signed=True),
    )


def _read_gns(f: _Fields) -> _Fix:
    # GNS: time, lat, N/S, lon, E/W, mode (one letter per constellation), satellites, HDOP, altitude, ...
    seconds = f.time(0)
    modes = f.need(5, "mode")
    if not re.fullmatch(r"[A-Z]{1,8}", modes) or any(c not in "ADPRFEMNS" for c in modes):
        raise f.error("mode", f"mode indicator {modes!r} is unknown")
    usable = [c for c in modes if c in _MODE_QUALITY]
    if not usable:
        kind = "simulator" if "S" in modes else "no fix"
        raise _NoFixError(f"{f.ident}: mode {modes} ({kind})")
    quality = max((_MODE_QUALITY[c] for c in usable), key=_RANK.__getitem__)
    lat, lon = f.latlon(1)
    return _Fix(
        kind="GNS",
        lat=lat,
        lon=lon,
        seconds_of_day=seconds,
        date=None,
        quality=quality,
        satellites=f.count(6, "satellites"),
        hdop=f.number(7, "hdop"),
        altitude_m=f.number(8, "altitude", signed=True),
    )


def _read_gll(f: _Fields) -> _Fix:
    # GLL: lat, N/S, lon, E/W, time, status, mode
    seconds = f.time(4)
    f.require_valid_status(5)
    quality = f.mode(6)
    lat, lon = f.latlon(0)
    return _Fix(kind="GLL", lat=lat, lon=lon, seconds_of_day=seconds, date=None, quality=quality or "gps")


_READERS = {"RMC": _read_rmc, "GGA": _read_gga, "GNS": _read_gns, "GLL": _read_gll}


# --- Decoding --------------------------------------------------------------------------------------


def _split(text: str) -> list[str]:
    if not isinstance(text, str):
        raise DecodeError(_CODEC, f"NMEA payload must be text, not {type(text).__name__}")
    if len(text) > MAX_NMEA_CHARS:
        raise DecodeError(_CODEC, f"NMEA payload of {len(text)} characters exceeds {MAX_NMEA_CHARS}")
    lines = [line.strip(" ") for line in re.split(r"\r\n|\r|\n", text)]
    lines = [line for line in lines if line]
    if not lines:
        raise DecodeError(_CODEC, "NMEA payload holds no sentence")
    if len(lines) > MAX_SENTENCES:
        raise DecodeError(_CODEC, f"NMEA payload holds {len(lines)} sentences, more than {MAX_SENTENCES}")
    return lines


def _frame(index: int, line: str) -> tuple[str, str, list[str]]:
    """Check one sentence's framing and checksum; return (talker, type, data fields)."""
    path = f"sentence[{index}]"
    if len(line) > MAX_SENTENCE_CHARS:
        raise DecodeError(
            _CODEC,
            f"sentence of {len(line)} characters exceeds {MAX_SENTENCE_CHARS}",
            path=path,
        )
    if not _PRINTABLE.fullmatch(line):
        raise DecodeError(_CODEC, "sentence holds characters that are not printable ASCII", path=path)
    if not line.startswith("$"):
        raise DecodeError(_CODEC, f"sentence does not start with '$': {line[:12]!r}", path=path)
    star = line.rfind("*")
    if star < 0:
        raise DecodeError(_CODEC, "checksum missing (no '*hh' at the end)", path=path)
    body, given = line[1:star], line[star + 1 :]
    if not re.fullmatch(r"[0-9A-Fa-f]{2}", given):
        raise DecodeError(_CODEC, f"checksum {given!r} is not two hex digits", path=path)
    # NMEA reserves '*', '$' and '!' as delimiters: inside the body they mean a mangled sentence.
    if "*" in body or "$" in body or "!" in body:
        raise DecodeError(_CODEC, "sentence body holds a reserved character ('$', '!' or '*')", path=path)
    expected = pynmea2.NMEASentence.checksum(body)
    if int(given, 16) != expected:
        reason = f"checksum mismatch: sentence says {given.upper()}, content gives {expected:02X}"
        raise DecodeError(_CODEC, reason, path=path)
    head = body.split(",", 1)[0]
    if "," not in body or not re.fullmatch(r"[A-Z]{2}[A-Z0-9]{3}", head):
        reason = f"address field {head[:12]!r} is not a talker and a sentence type"
        raise DecodeError(_CODEC, reason, path=path)
    talker, kind = head[:2], head[2:]
    if talker not in GNSS_TALKERS:
        raise DecodeError(_CODEC, f"talker {talker!r} is not a GNSS receiver", path=path)
    if kind not in _READERS:
        # Other sentences of a GNSS receiver (GSA, GSV, VTG, ZDA, ...) are checked above and skipped.
        return talker, kind, []
    try:
        sentence = pynmea2.parse(line, check=True)
    except (pynmea2.ParseError, ValueError) as exc:  # pragma: no cover - framing verified above
        raise DecodeError(_CODEC, f"sentence is not NMEA 0183: {exc}", path=path) from exc
    return talker, kind, [str(d) for d in sentence.data]


def _epoch(date: dt.date, seconds_of_day: float) -> float:
    days = (date - dt.date(1970, 1, 1)).days
    return days * 86400 + seconds_of_day


def _nearest_date(seconds_of_day: float, reference_time: float) -> dt.date:
    """The UTC date, among the reference's day and its neighbours, nearest ``reference_time``."""
    ref_day = dt.datetime.fromtimestamp(reference_time, tz=dt.UTC).date()
    candidates = [ref_day + dt.timedelta(days=d) for d in (-1, 0, 1)]
    return min(candidates, key=lambda day: abs(_epoch(day, seconds_of_day) - reference_time))


def _first(values: Sequence[_T | None]) -> _T | None:
    return next((v for v in values if v is not None), None)


def _merge(fixes: list[tuple[float | None, _Fix]]) -> Position:
    # The latest fix is the vehicle's current position; sentences without a time rank last.
    latest = max((at for at, _ in fixes if at is not None), default=None)
    group = [fix for at, fix in fixes if at == latest]
    order = {"GGA": 0, "GNS": 1, "RMC": 2, "GLL": 3}
    group.sort(key=lambda fx: (-_RANK[fx.quality], order[fx.kind]))
    best = group[0]

    quality = best.quality
    return Position(
        lat=best.lat,
        lon=best.lon,
        trusted=quality in _TRUSTED,
        source="nmea",
        at=latest,
        quality=quality,
        heading_deg=_first([fx.heading_deg for fx in group]),
        speed_kmh=_first([fx.speed_kmh for fx in group]),
        altitude_m=_first([fx.altitude_m for fx in group]),
        satellites=_first([fx.satellites for fx in group]),
        hdop=_first([fx.hdop for fx in group]),
    )


def decode_nmea(text: str, *, reference_time: float) -> Position:
    """Decode one or more NMEA 0183 sentences into the best position they give.

    Args:
        text: the sentences, separated by CR LF, LF or CR.
        reference_time: epoch seconds (UTC) near the fix, normally the envelope's ``sent_at``; it
            supplies the date of sentences that carry only a time of day.

    Returns:
        A Position with ``source="nmea"``; ``trusted`` is True for satellite fixes (not for
        estimated or manual positions).

    Raises:
        DecodeError: (codec "nmea") for a malformed payload or sentence, a checksum mismatch, a talker
            that is not a GNSS receiver, or when no sentence reports a usable fix (the reason lists
            why each one did not).

    >>> p = decode_nmea("$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A",
    ...                 reference_time=764426119.0)
    >>> round(p.lat, 4), round(p.lon, 4), p.at
    (48.1173, 11.5167, 764426119.0)
    """
    if not isinstance(reference_time, (int, float)) or not math.isfinite(reference_time):
        raise DecodeError(_CODEC, "reference time is not a finite number")
    if not 0 <= reference_time < 253402214400:  # 1970-01-01 .. 9999-12-31 (datetime's range)
        raise DecodeError(_CODEC, f"reference time {reference_time} is out of range")
    lines = _split(text)
    reference_year = dt.datetime.fromtimestamp(reference_time, tz=dt.UTC).year
    parsed: list[tuple[int, str, _Fix]] = []
    voids: list[str] = []
    for index, line in enumerate(lines):
        talker, kind, data = _frame(index, line)
        reader = _READERS.get(kind)
        if reader is None:
            continue
        try:
            parsed.append(
                (index, kind, reader(_Fields(index, f"{talker}{kind}", data, reference_year=reference_year)))
            )
        except _NoFixError as void:
            voids.append(str(void))
    if not parsed:
        if voids:
            raise DecodeError(_CODEC, "no valid fix: " + "; ".join(voids))
        raise DecodeError(_CODEC, "no position sentence (RMC, GGA, GNS or GLL) in the payload")

    # The RMC date anchors the others: an RMC and a GGA of one fix then get the same time.
    anchor = reference_time
    rmc_times = [
        _epoch(fx.date, fx.seconds_of_day) for _, _, fx in parsed if fx.date and fx.seconds_of_day is not None
    ]
    if rmc_times:
        anchor = max(rmc_times)
    fixes: list[tuple[float | None, _Fix]] = []
    for index, kind, fx in parsed:
        if fx.seconds_of_day is None:
            at = None
        elif fx.date is not None:
            at = _epoch(fx.date, fx.seconds_of_day)
        else:
            at = _epoch(_nearest_date(fx.seconds_of_day, anchor), fx.seconds_of_day)
        # A date in 1950 or a time just before midnight of 1970-01-01 is the sender's error; left
        # through, it would make every document of the incident unrenderable (times are ISO 8601).
        if at is not None and not 0 <= at < _MAX_TIME:
            path = f"sentence[{index}].{'date' if fx.date is not None else 'time'}"
            raise DecodeError(_CODEC, f"{kind}: fix time {at:.0f} is outside 1970..9999-12-30", path=path)
        fixes.append((at, fx))
    return _merge(fixes)


# --- Encoding (simulators and tests) ----------------------------------------------------------------


def _check_talker(talker: str) -> None:
    if talker not in GNSS_TALKERS:
        raise EncodeError(f"talker {talker!r} is not one of {sorted(GNSS_TALKERS)}")


def _hms(at: float | None) -> str:
    if at is None:
        return ""
    if not math.isfinite(at) or not 0 <= at < 253402214400:
        raise EncodeError(f"fix time {at!r} is out of range")
    centis = round(at * 100)
    t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=centis // 100)
    return f"{t:%H%M%S}.{centis % 100:02d}"


def _dmy(at: float) -> str:
    t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=round(at * 100) // 100)
    return f"{t:%d%m%y}"


def _coords(lat: float, lon: float) -> list[str]:
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        raise EncodeError(f"position ({lat!r}, {lon!r}) is outside ±90°/±180°")

    def dm(value: float, width: int) -> str:
        # Round in units of 1e-5 minutes first so that 59.999996 minutes carries into the degrees.
        units = round(abs(value) * 60 * 100_000)
        deg, rest = divmod(units, 60 * 100_000)
        return f"{deg:0{width}d}{rest // 100_000:02d}.{rest % 100_000:05d}"

    return [dm(lat, 2), "S" if lat < 0 else "N", dm(lon, 3), "W" if lon < 0 else "E"]


def _opt(value: float | int | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _render(talker: str, kind: str, fields: list[str]) -> str:
    _check_talker(talker)
    rendered: str = pynmea2.TalkerSentence.sentence_types[kind](talker, kind, fields).render()
    return rendered


def encode_rmc(
    position: Position, *, at: float, talker: str = "GP", status: str = "A", mode: str | None = "A"
) -> str:
    """Build an RMC sentence (time, status, position, speed, course, date, mode) with its checksum.

    Args:
        position: lat/lon, and optionally ``speed_kmh`` and ``heading_deg``.
        at: the fix time in epoch seconds UTC (gives both the time and the date fields).
        talker: the talker identifier, one of ``GNSS_TALKERS``.
        status: ``A`` (valid) or ``V`` (void, to build invalid fixes in tests).
        mode: the NMEA 2.3 mode indicator, or None to leave the field out (older receivers).

    Raises:
        EncodeError: for a talker, time or position out of range.
    """
    speed = None if position.speed_kmh is None else position.speed_kmh / KNOT_KMH
    fields = [
        _hms(at),
        status,
        *_coords(position.lat, position.lon),
        _opt(speed, ".2f"),
        _opt(position.heading_deg, ".1f"),
        _dmy(at),
        "",
        "",
    ]
    if mode is not None:
        fields.append(mode)
    return _render(talker, "RMC", fields)


def encode_gga(position: Position, *, at: float | None, talker: str = "GP", quality: int = 1) -> str:
    """Build a GGA sentence (time, position, fix quality, satellites, HDOP, altitude) with its checksum.

    Args:
        position: lat/lon, and optionally ``satellites``, ``hdop`` and ``altitude_m``.
        at: the fix time in epoch seconds UTC (only the time of day is sent), or None for an empty time.
        talker: the talker identifier, one of ``GNSS_TALKERS``.
        quality: the GGA fix quality indicator (0 = no fix, 1 = GPS, 2 = DGPS, 4 = RTK, ...).

    Raises:
        EncodeError: for a talker, time or position out of range.
    """
    fields = [
        _hms(at),
        *_coords(position.lat, position.lon),
        str(quality),
        _opt(position.satellites, "02d"),
        _opt(position.hdop, ".1f"),
        _opt(position.altitude_m, ".1f"),
        "M" if position.altitude_m is not None else "",
        "",
        "",
        "",
        "",
    ]
    return _render(talker, "GGA", fields)


def encode_gns(position: Position, *, at: float | None, talker: str = "GN", mode: str = "AA") -> str:
    """Build a GNS sentence (time, position, per-constellation mode, satellites, HDOP, altitude).

    Args:
        position: lat/lon, and optionally ``satellites``, ``hdop`` and ``altitude_m``.
        at: the fix time in epoch seconds UTC, or None for an empty time.
        talker: the talker identifier, one of ``GNSS_TALKERS``.
        mode: one mode letter per constellation (``N`` = no fix for that constellation).

    Raises:
        EncodeError: for a talker, time or position out of range.
    """
    fields = [
        _hms(at),
        *_coords(position.lat, position.lon),
        mode,
        _opt(position.satellites, "02d"),
        _opt(position.hdop, ".1f"),
        _opt(position.altitude_m, ".1f"),
        "",
        "",
        "",
    ]
    return _render(talker, "GNS", fields)


def encode_gll(
    position: Position, *, at: float | None, talker: str = "GP", status: str = "A", mode: str | None = "A"
) -> str:
    """Build a GLL sentence (position, time, status, mode) with its checksum.

    Args:
        position: lat/lon.
        at: the fix time in epoch seconds UTC, or None for an empty time.
        talker: the talker identifier, one of ``GNSS_TALKERS``.
        status: ``A`` (valid) or ``V`` (void).
        mode: the NMEA 2.3 mode indicator, or None to leave the field out.

    Raises:
        EncodeError: for a talker, time or position out of range.
    """
    fields = [*_coords(position.lat, position.lon), _hms(at), status]
    if mode is not None:
        fields.append(mode)
    return _render(talker, "GLL", fields)


def encode_nmea(position: Position, *, at: float, talker: str = "GP") -> str:
    """Build the RMC and GGA pair a receiver emits for one fix, separated by CR LF.

    The GGA fix quality follows ``position.quality`` (GPS when unknown), so that decoding gives the
    same quality back.

    Args:
        position: the position to send.
        at: the fix time in epoch seconds UTC.
        talker: the talker identifier, one of ``GNSS_TALKERS``.

    Raises:
        EncodeError: for a talker, time or position out of range.
    """
    by_name = {name: q for q, name in _GGA_QUALITY.items()}
    quality = by_name.get(position.quality or "gps", 1)
    mode = {v: k for k, v in _MODE_QUALITY.items()}[_GGA_QUALITY[quality]]
    return "\r\n".join(
        (
            encode_rmc(position, at=at, talker=talker, mode=mode),
            encode_gga(position, at=at, talker=talker, quality=quality),
        )
    )
