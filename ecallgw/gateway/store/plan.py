"""The rows a batch of units becomes, the same for both backends (each then writes them its way).

Sequence numbers (journal ``seq``, revision ``seq``, outbox ids) are assigned here, in unit order,
from the counters the caller read under its write lock; an INSERT with an explicit key either gets
exactly that key or fails the batch, so an outbox entry can never be confused with another.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ecallgw.gateway.records import CommitResult, DeskRecord, OutboxItem, Unit
from ecallgw.gateway.snapshots import dump_snapshot
from ecallgw.model import IncidentSnapshot

__all__ = ["LEVEL_RANK", "Plan", "plan_units"]

Row = tuple[Any, ...]

LEVEL_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}
"""The operator queue's order of severity levels (``incidents.level_rank``)."""


@dataclass(slots=True)
class Plan:
    """Rows to insert, per table, in unit order, and what each unit created.

    Attributes:
        journal: (seq, unit) of every unit that has a journal entry.
        revisions: (seq, incident_id, revision, at, outcome, reasons JSON, snapshot blob).
        incidents: the incidents upsert (incident_id, revision, status, level, score, tps, vehicle,
            received_at, updated_at, call_id, kind, scene_id, escalation_due_at, level_rank); a later
            revision of one incident in the batch comes later.
        outbox: (id, incident_id, revision, receiver, created_at, signal_at, state).
        delivered: (outbox_id, delivered_at, attempts) of entries confirmed by the commit itself.
        calls: (incident_id, tps, vehicle, call_id) of every call of an incident that has more than
            one (issue 12), written when a call joins it. An incident of one call is found by its
            own row (``incidents.call_id``, ``tps``, ``vehicle``: the primary call's), which spares
            most incidents four index insertions (docs/performance.md).
        audit: (at, actor, role, action, incident_id, note, outcome).
        quarantine: (at, transport, source, kind, tps, vehicle, payload, codec, reason, path).
        desk_events: (seq, incident_id, at, operator, kind, claimed_by, acked, text), numbered in the
            revisions' sequence.
        desk: the desk upsert (incident_id, acked, claimed_by), the latest state of each incident.
        results: one `CommitResult` per unit.
        journal_seq, revision_seq, outbox_id: the counters after the batch.
    """

    journal: list[tuple[int, Unit]] = field(default_factory=list)
    revisions: list[Row] = field(default_factory=list)
    incidents: list[Row] = field(default_factory=list)
    outbox: list[Row] = field(default_factory=list)
    delivered: list[Row] = field(default_factory=list)
    calls: list[Row] = field(default_factory=list)
    audit: list[Row] = field(default_factory=list)
    quarantine: list[Row] = field(default_factory=list)
    desk_events: list[Row] = field(default_factory=list)
    desk: list[Row] = field(default_factory=list)
    results: list[CommitResult] = field(default_factory=list)
    journal_seq: int = 0
    revision_seq: int = 0
    outbox_id: int = 0


_CALL_OUTCOMES = frozenset({"new_incident", "joined_incident"})


def plan_units(units: Sequence[Unit], journal_seq: int, revision_seq: int, outbox_id: int) -> Plan:
    """The rows of ``units``, numbered on from the counters given (the tables' current maxima)."""
    now = time.time()
    plan = Plan()
    desk: dict[str, Row] = {}
    for unit in units:
        seq: int | None = None
        if unit.journal_type is not None:
            journal_seq += 1
            seq = journal_seq
            plan.journal.append((seq, unit))
        a = unit.action
        if a is not None:
            plan.audit.append((a.at, a.actor, a.role, a.action, a.incident_id, a.note, unit.audit_outcome))
        q = unit.quarantine
        if q is not None:
            r = q.signal
            plan.quarantine.append(
                (
                    r.received_at,
                    r.transport,
                    r.source,
                    r.kind,
                    r.tps,
                    r.vehicle,
                    r.payload,
                    q.codec,
                    q.reason,
                    q.path,
                )
            )
        outbox: list[OutboxItem] = []
        confirmed: list[OutboxItem] = []
        revision_seqs: list[tuple[int, IncidentSnapshot]] = []
        for d in unit.decisions:
            snap = d.snapshot
            if snap is not None:
                revision_seq += 1
                # A plain INSERT: a revision already stored means triage and store disagree (a
                # replay gone wrong, a policy change); failing the batch loudly beats silently
                # keeping the old revision while the engine goes on from a different one.
                plan.revisions.append(
                    (
                        revision_seq,
                        snap.incident_id,
                        snap.revision,
                        snap.updated_at,
                        d.outcome,
                        orjson.dumps([[r.code, r.text] for r in d.reasons]).decode(),
                        dump_snapshot(snap),
                    )
                )
                revision_seqs.append((revision_seq, snap))
                if d.outcome in _CALL_OUTCOMES and len(snap.calls) > 1:
                    # Calls come only with a new incident or a call joining one, and are kept once
                    # an incident has a second one: all of them then (ON CONFLICT DO NOTHING keeps
                    # those already there), as the primary may switch to the newcomer.
                    iid = snap.incident_id
                    plan.calls.extend([(iid, c.tps, c.vehicle, c.call_id) for c in snap.calls])
                plan.incidents.append(
                    (
                        snap.incident_id,
                        snap.revision,
                        snap.status,
                        snap.severity.level,
                        snap.severity.score,
                        snap.tps,
                        snap.vehicle,
                        snap.received_at,
                        snap.updated_at,
                        snap.call_id,
                        "test" if snap.test else "automatic" if snap.automatic else "manual",
                        snap.scene_id,
                        d.escalation_due_at,
                        LEVEL_RANK.get(snap.severity.level, 3),
                    )
                )
            for route in d.routes:
                receiver, incident_id, revision = route.receiver, route.incident_id, route.revision
                outbox_id += 1
                delivered = receiver in unit.confirm_on_commit
                plan.outbox.append(
                    (
                        outbox_id,
                        incident_id,
                        revision,
                        receiver,
                        unit.at,
                        d.signal_at,
                        "delivered" if delivered else "pending",
                    )
                )
                if delivered:
                    # Committed is delivered for this receiver (the operator stream): recorded
                    # now, not by a second write after a round through the forwarder.
                    plan.delivered.append((outbox_id, now, 1))
                matches = snap is not None and snap.incident_id == incident_id and snap.revision == revision
                (confirmed if delivered else outbox).append(
                    OutboxItem(
                        id=outbox_id,
                        incident_id=incident_id,
                        revision=revision,
                        receiver=receiver,
                        signal_at=d.signal_at,
                        snapshot=snap if matches else None,
                    )
                )
        desk_seqs: list[tuple[int, DeskRecord]] = []
        for k in unit.desk:
            revision_seq += 1
            plan.desk_events.append(
                (revision_seq, k.incident_id, k.at, k.operator, k.kind, k.claimed_by, int(k.acked), k.text)
            )
            desk_seqs.append((revision_seq, k))
            desk[k.incident_id] = (k.incident_id, int(k.acked), k.claimed_by)
        plan.results.append(
            CommitResult(
                journal_seq=seq,
                outbox=tuple(outbox),
                revision_seqs=tuple(revision_seqs),
                confirmed=tuple(confirmed),
                desk_seqs=tuple(desk_seqs),
            )
        )
    plan.desk = list(desk.values())  # one row per incident: an upsert may not touch a row twice
    plan.journal_seq, plan.revision_seq, plan.outbox_id = journal_seq, revision_seq, outbox_id
    return plan
