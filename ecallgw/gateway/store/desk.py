"""The operator desk's reads, the same SQL for both backends (issue 13).

The queue (`GET /v1/incidents`) is filtered and ordered in SQL: not acknowledged first, then by
level (critical .. low, ``incidents.level_rank``), then oldest received first, the incident id last
so that the order is total and a keyset cursor (the sort key of a page's last row) pages through it
with neither gaps nor repeats. Counters are over every open incident, whatever the filters.
SQL is written with ``?`` placeholders; `numbered` turns them into PostgreSQL's ``$n``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ecallgw.gateway.records import DeskRecord
from ecallgw.gateway.snapshots import load_snapshot
from ecallgw.gateway.store.protocol import RevisionRow
from ecallgw.model import IncidentSnapshot

__all__ = [
    "DESK_EVENT_COLUMNS",
    "OPEN_STATUSES",
    "DeskEventRow",
    "DeskView",
    "IncidentQuery",
    "QueueRow",
    "counters",
    "counters_sql",
    "desk_view",
    "find_sql",
    "linked_sql",
    "merge_stream",
    "numbered",
    "queue_row",
    "queue_sql",
]

OPEN_STATUSES = ("open", "updated")
QueueKey = tuple[int, int, float, str]
"""(acked, level_rank, received_at, incident_id): a row's place in the queue."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentQuery:
    """The list's filters; every one optional (empty: no filter)."""

    statuses: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()
    tps: str | None = None
    vehicle: str | None = None
    kind: str | None = None  # automatic | manual | test
    since: float | None = None  # received_at >= since
    until: float | None = None  # received_at < until
    q: str | None = None  # an incident id or a call id, exact
    limit: int = 100
    after: QueueKey | None = None  # the cursor: rows after this key
    non_psap: tuple[str, ...] = ("operator", "test")  # receivers that are not a PSAP (at_psap)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueRow:
    """One incident of the queue: its row, its desk state and its latest revision."""

    incident_id: str
    revision: int
    status: str
    level: str
    score: int
    tps: str
    vehicle: str
    received_at: float
    updated_at: float
    call_id: str | None
    kind: str | None
    scene_id: str | None
    escalation_due_at: float | None
    level_rank: int
    acked: bool
    claimed_by: str | None
    at_psap: bool
    outcome: str
    reasons: tuple[tuple[str, str], ...]
    snapshot: IncidentSnapshot | None

    @property
    def key(self) -> QueueKey:
        """The row's sort key (what a cursor holds)."""
        return (int(self.acked), self.level_rank, self.received_at, self.incident_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeskEventRow:
    """A stored desk change with its place in the operator stream."""

    seq: int
    record: DeskRecord


def _at_psap(non_psap: Sequence[str]) -> tuple[str, list[Any]]:
    marks = ",".join("?" * len(non_psap)) or "NULL"
    sql = (
        "EXISTS (SELECT 1 FROM outbox o JOIN deliveries d ON d.outbox_id = o.id "
        f"WHERE o.incident_id = i.incident_id AND o.receiver NOT IN ({marks}))"
    )
    return sql, list(non_psap)


_ACKED = "coalesce(k.acked, 0)"
_CALLS = "SELECT incident_id FROM incident_calls"


def queue_sql(query: IncidentQuery) -> tuple[str, list[Any]]:
    """The queue's SELECT (columns in `QueueRow` order, then the revision's outcome, reasons and
    snapshot blob) and its arguments."""
    psap, psap_args = _at_psap(query.non_psap)
    args: list[Any] = [*psap_args]
    where: list[str] = []
    if query.statuses:
        where.append(f"i.status IN ({','.join('?' * len(query.statuses))})")
        args += query.statuses
    if query.levels:
        where.append(f"i.level IN ({','.join('?' * len(query.levels))})")
        args += query.levels
    for column, value in (("i.tps", query.tps), ("i.kind", query.kind)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if query.vehicle is not None:
        # Any of its calls' vehicle keys (a second provider's, issue 12); old incidents: the primary's.
        where.append(f"(i.vehicle = ? OR i.incident_id IN ({_CALLS} WHERE vehicle = ?))")
        args += [query.vehicle, query.vehicle]
    if query.since is not None:
        where.append("i.received_at >= ?")
        args.append(query.since)
    if query.until is not None:
        where.append("i.received_at < ?")
        args.append(query.until)
    if query.q is not None:
        # The incident id, or the id of any of its calls (a redial's too).
        where.append(f"(i.incident_id = ? OR i.call_id = ? OR i.incident_id IN ({_CALLS} WHERE call_id = ?))")
        args += [query.q, query.q, query.q]
    if query.after is not None:
        # Row values: "after this key" in the queue's order, whichever column decides.
        where.append(f"({_ACKED}, i.level_rank, i.received_at, i.incident_id) > (?, ?, ?, ?)")
        args += list(query.after)
    sql = (
        "SELECT i.incident_id, i.revision, i.status, i.level, i.score, i.tps, i.vehicle, i.received_at, "
        f"i.updated_at, i.call_id, i.kind, i.scene_id, i.escalation_due_at, i.level_rank, {_ACKED}, "
        f"k.claimed_by, {psap}, r.outcome, r.reasons, r.snapshot "
        "FROM incidents i LEFT JOIN desk k ON k.incident_id = i.incident_id "
        "LEFT JOIN revisions r ON r.incident_id = i.incident_id AND r.revision = i.revision"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {_ACKED}, i.level_rank, i.received_at, i.incident_id LIMIT ?"
    args.append(query.limit)
    return sql, args


def find_sql(columns: str, call_id: str | None, vehicle: str | None, limit: int) -> tuple[str, list[Any]]:
    """Incidents one of whose calls has this call id and/or vehicle key, newest first (issue 12).

    An incident of one call is found by its own row (the primary call's ``call_id``, ``tps``,
    ``vehicle``); ``incident_calls`` holds every call of those with more than one (store/plan.py).
    Incidents stored before calls were kept have no ``call_id``: their vehicle key finds them.
    """
    where = [c for c, v in (("call_id = ?", call_id), ("vehicle = ?", vehicle)) if v is not None]
    args = [v for v in (call_id, vehicle) if v is not None]
    match = " AND ".join(where)
    sql = (
        f"SELECT {columns} FROM incidents WHERE ({match}) OR incident_id IN "
        f"({_CALLS} WHERE {match}) ORDER BY updated_at DESC LIMIT ?"
    )
    return sql, [*args, *args, limit]


def linked_sql(scene_id: str | None, incident_id: str) -> tuple[str, list[Any]]:
    """Incidents of the same scene as ``incident_id``, oldest first.

    A scene is named for its first incident; only the incidents linked to it have a ``scene_id``
    other than their own id, so the index holds those alone (``incidents_linked``) and the first
    one is read by its key: most incidents are alone, and index no scene at all.
    """
    sql = (
        "SELECT incident_id FROM (SELECT incident_id, received_at FROM incidents "
        "WHERE scene_id = ? AND scene_id <> incident_id AND incident_id <> ? "
        "UNION ALL SELECT incident_id, received_at FROM incidents "
        "WHERE incident_id = ? AND incident_id <> ?) AS scene ORDER BY received_at"
    )
    return sql, [scene_id, incident_id, scene_id, incident_id]


def counters_sql(non_psap: Sequence[str]) -> tuple[str, list[Any]]:
    """Counters over every open incident: open, unacknowledged, waiting for escalation, at a PSAP."""
    psap, psap_args = _at_psap(non_psap)
    sql = (
        f"SELECT count(*), coalesce(sum(CASE WHEN {_ACKED} = 0 THEN 1 ELSE 0 END), 0), "
        f"coalesce(sum(CASE WHEN {_ACKED} = 0 AND i.escalation_due_at IS NOT NULL THEN 1 ELSE 0 END), 0), "
        f"coalesce(sum(CASE WHEN {psap} THEN 1 ELSE 0 END), 0) "
        "FROM incidents i LEFT JOIN desk k ON k.incident_id = i.incident_id "
        "WHERE i.status IN ('open', 'updated')"
    )
    return sql, psap_args


_MARK = re.compile(r"\?")


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1``, ``$2``, ... (no literal ``?`` in our SQL)."""
    n = 0

    def repl(_: re.Match[str]) -> str:
        nonlocal n
        n += 1
        return f"${n}"

    return _MARK.sub(repl, sql)


def desk_event(r: Sequence[Any]) -> DeskEventRow:
    """From (seq, incident_id, at, operator, kind, claimed_by, acked, text) of ``desk_events``."""
    return DeskEventRow(
        seq=int(r[0]),
        record=DeskRecord(
            incident_id=r[1],
            at=float(r[2]),
            operator=r[3],
            kind=r[4],
            claimed_by=r[5],
            acked=bool(r[6]),
            text=r[7] or "",
        ),
    )


DESK_EVENT_COLUMNS = "seq, incident_id, at, operator, kind, claimed_by, acked, text"


def queue_row(r: Sequence[Any]) -> QueueRow:
    """From a row of `queue_sql` (the latest revision's snapshot decoded here, off the writer)."""
    blob = r[19]
    return QueueRow(
        incident_id=r[0],
        revision=int(r[1]),
        status=r[2],
        level=r[3],
        score=int(r[4]),
        tps=r[5],
        vehicle=r[6],
        received_at=float(r[7]),
        updated_at=float(r[8]),
        call_id=r[9],
        kind=r[10],
        scene_id=r[11],
        escalation_due_at=None if r[12] is None else float(r[12]),
        level_rank=int(r[13]),
        acked=bool(r[14]),
        claimed_by=r[15],
        at_psap=bool(r[16]),
        outcome=r[17] or "",
        reasons=tuple((c, t) for c, t in json.loads(r[18])) if r[18] else (),
        snapshot=None if blob is None else load_snapshot(bytes(blob)),
    )


def counters(r: Sequence[Any]) -> dict[str, int]:
    """The counters' row as the API's dict."""
    keys = ("open", "unacknowledged", "waiting_escalation", "at_psap")
    return {k: int(v or 0) for k, v in zip(keys, r, strict=True)}


@dataclass(frozen=True, slots=True, kw_only=True)
class DeskView:
    """One incident as the desk sees it: its queue row, its desk changes (oldest first), and the
    other incidents of its scene."""

    row: QueueRow
    events: tuple[DeskEventRow, ...]
    linked: tuple[str, ...]


def desk_view(
    row: Sequence[Any], events: Sequence[Sequence[Any]], linked: Sequence[Sequence[Any]]
) -> DeskView:
    """From the rows `desk_view` of a store read."""
    return DeskView(
        row=queue_row(row), events=tuple(desk_event(e) for e in events), linked=tuple(r[0] for r in linked)
    )


def merge_stream(
    revisions: Sequence[Sequence[Any]], desk: Sequence[Sequence[Any]], limit: int
) -> list[RevisionRow | DeskEventRow]:
    """Revisions and desk changes, each read ``limit`` after one seq, merged into the first ``limit``."""
    merged: list[RevisionRow | DeskEventRow] = [RevisionRow.from_row(r) for r in revisions]
    merged += [desk_event(r) for r in desk]
    merged.sort(key=lambda e: e.seq)
    return merged[:limit]
