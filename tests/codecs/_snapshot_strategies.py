"""Hypothesis strategies for incident snapshots, the input of the JSON and CAP documents.

``snapshots()`` draws any ``IncidentSnapshot`` a triage engine could produce, and some it should not
(awkward text: control characters, XML specials, non-BMP characters, long strings), so that the
documents' validity does not rest on triage being polite. MSDs come from the MSD codec's strategy;
some carry their canonical bytes zero-filled to a 140-octet frame as ``raw``, as in-band modems
send them.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import strategies as st

from ecallgw.codecs import msd as msd_codec
from ecallgw.model import Call, IncidentSnapshot, Msd, Position, Reason, Severity
from tests.codecs._strategies import msds

__all__ = ["calls", "positions", "reasons", "snapshots", "times"]

# 2001-09-09 .. 2100: epoch seconds with sub-millisecond parts, as the gateway's clock gives them.
times = st.floats(1e9, 4.1e9, allow_nan=False)
texts = st.text(max_size=60) | st.sampled_from(["", "<&>\"'", "a\x00b\x1fc", "\ud7ff\ue000\U0001f697", "]]>"])
names = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
codes = st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True)

reasons = st.builds(Reason, code=codes, text=texts)


def _framed(msd: Msd) -> Msd:
    raw = msd_codec.encode(msd)
    return replace(msd, raw=raw + bytes(max(0, 140 - len(raw))))


msd_values = msds() | msds().map(_framed)

positions = st.builds(
    Position,
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    trusted=st.booleans(),
    source=st.sampled_from(["msd", "nmea", "caller_link"]),
    at=st.none() | times,
    quality=st.none() | st.sampled_from(["msd", "gps", "dgps", "rtk", "estimated"]),
    heading_deg=st.none() | st.floats(0, 360),
    speed_kmh=st.none() | st.floats(0, 500),
    altitude_m=st.none() | st.floats(-500, 9000),
    satellites=st.none() | st.integers(0, 99),
    hdop=st.none() | st.floats(0, 99),
    accuracy_m=st.none() | st.floats(0, 100_000),  # a caller's browser position (issue 14)
)


callbacks = st.none() | st.from_regex(r"\+[1-9][0-9]{1,14}", fullmatch=True)
langs = st.none() | st.sampled_from(["de", "en-GB", "ro-RO", "sr-Latn-RS"])


@st.composite
def calls(draw: st.DrawFn) -> Call:
    """A call that joined an incident (a redial, another provider's call)."""
    first = draw(times)
    return Call(
        tps=draw(names),
        vehicle=draw(names),
        call_id=draw(st.text(min_size=1, max_size=40)),
        activation=draw(st.sampled_from(["automatic", "manual", "test"])),
        first_at=first,
        last_at=first + draw(st.floats(0, 600)),
        msd_version=draw(st.none() | st.sampled_from([1, 2, 3])),
        callback=draw(callbacks),
        lang=draw(langs),
    )


@st.composite
def snapshots(draw: st.DrawFn) -> IncidentSnapshot:
    """Any incident snapshot: every status and level, with or without MSD and position, one call or
    several (the primary's fields are the snapshot's), or none (stored before calls were kept)."""
    snap = draw(_snapshots())
    shape = draw(st.sampled_from(["none", "one", "more"]))
    if shape == "none":
        return snap
    primary = Call(
        tps=snap.tps,
        vehicle=snap.vehicle,
        call_id=snap.call_id,
        activation="test" if snap.test else "automatic" if snap.automatic else "manual",
        first_at=snap.received_at,
        last_at=snap.updated_at,
        msd_version=None if snap.msd is None else snap.msd.version,
        callback=snap.callback,
        lang=snap.lang,
    )
    others = draw(st.lists(calls(), min_size=1, max_size=3)) if shape == "more" else []
    return replace(snap, calls=(primary, *others))


@st.composite
def _snapshots(draw: st.DrawFn) -> IncidentSnapshot:
    received_at = draw(times)
    return IncidentSnapshot(
        incident_id=draw(
            st.from_regex(r"inc-[0-9a-f]{24}", fullmatch=True) | st.text(min_size=1, max_size=40)
        ),
        revision=draw(st.integers(1, 1000)),
        status=draw(st.sampled_from(["open", "updated", "cancelled", "resolved"])),
        severity=Severity(
            level=draw(st.sampled_from(["critical", "high", "medium", "low"])),
            score=draw(st.integers(0, 100)),
            reasons=tuple(draw(st.lists(reasons, max_size=4))),
        ),
        tps=draw(names),
        vehicle=draw(names),
        call_id=draw(st.text(min_size=1, max_size=40)),
        automatic=draw(st.booleans()),
        test=draw(st.booleans()),
        received_at=received_at,
        updated_at=received_at + draw(st.floats(0, 7200)),
        msd=draw(st.none() | msd_values),
        position=draw(st.none() | positions),
        callback=draw(callbacks),
        lang=draw(langs),
        scene_id=draw(st.none() | st.text(min_size=1, max_size=20)),
        reasons=tuple(draw(st.lists(reasons, max_size=3))),
    )
