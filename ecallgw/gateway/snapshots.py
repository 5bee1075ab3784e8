"""Serialise incident revisions for the store (msgpack; the MSD kept as the bytes the vehicle sent).

The MSD is stored as its raw bytes and decoded again on load, so the stored form does not depend on
the layout of our dataclasses and a receiver always gets the original bytes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack

from ecallgw.model import Call, IncidentSnapshot, Msd, Position, Reason, Severity

__all__ = ["dump_snapshot", "load_snapshot"]

_VERSION = 1


def _reasons(reasons: tuple[Reason, ...]) -> list[list[str]]:
    return [[r.code, r.text] for r in reasons]


_POSITION_FIELDS = tuple(f.name for f in dataclasses.fields(Position))


def _position(p: Position) -> dict[str, Any]:
    # Position holds scalars only: a shallow dict is what dataclasses.asdict gives, without its
    # recursive deepcopy (~15 us per revision in the store thread, under the GIL).
    return {name: getattr(p, name) for name in _POSITION_FIELDS}


def _call(c: Call) -> list[Any]:
    return [
        *(c.tps, c.vehicle, c.call_id, c.activation),
        *(c.first_at, c.last_at, c.msd_version, c.callback, c.lang),
    ]


def _load_call(r: list[Any]) -> Call:
    tps, vehicle, call_id, activation, first_at, last_at, version, callback, lang = r
    return Call(
        tps=tps,
        vehicle=vehicle,
        call_id=call_id,
        activation=activation,
        first_at=first_at,
        last_at=last_at,
        msd_version=version,
        callback=callback,
        lang=lang,
    )


def dump_snapshot(snapshot: IncidentSnapshot) -> bytes:
    """Serialise one revision.

    Args:
        snapshot: the revision.

    Returns:
        msgpack bytes that `load_snapshot` turns back into an equal snapshot.
    """
    msd_raw: bytes | None = None
    if snapshot.msd is not None:
        msd_raw = snapshot.msd.raw
        if not msd_raw:  # built in memory rather than decoded: store the canonical encoding
            from ecallgw.codecs import msd as msd_codec

            msd_raw = msd_codec.encode(snapshot.msd)
    record: dict[str, Any] = {
        "v": _VERSION,
        "incident_id": snapshot.incident_id,
        "revision": snapshot.revision,
        "status": snapshot.status,
        "severity": [snapshot.severity.level, snapshot.severity.score, _reasons(snapshot.severity.reasons)],
        "tps": snapshot.tps,
        "vehicle": snapshot.vehicle,
        "call_id": snapshot.call_id,
        "automatic": snapshot.automatic,
        "test": snapshot.test,
        "received_at": snapshot.received_at,
        "updated_at": snapshot.updated_at,
        "msd": msd_raw,
        "position": _position(snapshot.position) if snapshot.position is not None else None,
        "callback": snapshot.callback,
        "lang": snapshot.lang,
        "scene_id": snapshot.scene_id,
        "reasons": _reasons(snapshot.reasons),
        # Issue 12; absent in revisions stored before (loaded as empty).
        "calls": [_call(c) for c in snapshot.calls],
        "members": list(snapshot.members),
        # Issue 13; absent in revisions stored before (loaded as None).
        "operator_note": snapshot.operator_note,
    }
    packed: bytes = msgpack.packb(record, use_bin_type=True)
    return packed


def load_snapshot(data: bytes) -> IncidentSnapshot:
    """Load a revision written by `dump_snapshot`.

    Args:
        data: the stored bytes.

    Returns:
        The revision, with its MSD decoded again from the stored bytes.
    """
    r = msgpack.unpackb(data, raw=False)
    msd: Msd | None = None
    if r["msd"] is not None:
        from ecallgw.codecs import msd as msd_codec

        msd = msd_codec.decode(r["msd"])
    level, score, sev_reasons = r["severity"]
    return IncidentSnapshot(
        incident_id=r["incident_id"],
        revision=r["revision"],
        status=r["status"],
        severity=Severity(
            level=level, score=score, reasons=tuple(Reason(code=c, text=t) for c, t in sev_reasons)
        ),
        tps=r["tps"],
        vehicle=r["vehicle"],
        call_id=r["call_id"],
        automatic=r["automatic"],
        test=r["test"],
        received_at=r["received_at"],
        updated_at=r["updated_at"],
        msd=msd,
        position=Position(**r["position"]) if r["position"] is not None else None,
        callback=r["callback"],
        lang=r["lang"],
        scene_id=r["scene_id"],
        reasons=tuple(Reason(code=c, text=t) for c, t in r["reasons"]),
        calls=tuple(_load_call(c) for c in r.get("calls", [])),
        members=tuple(r.get("members", [])),
        operator_note=r.get("operator_note"),
    )
