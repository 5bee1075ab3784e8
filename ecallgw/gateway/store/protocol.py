"""What the gateway needs from a store, whichever database holds it.

`SqliteStore` (``store/sqlite.py``) is the embedded default: one process, one file.
`PostgresStore` (``store/postgres.py``) holds the same tables on a PostgreSQL server, so that
several replicas share one truth (docs/scaling.md). Both pass the same contract tests
(``tests/gateway/store/``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from ecallgw.gateway.records import ActionRecord, CommitResult, JournalRow, OutboxItem, RawSignal, Unit
from ecallgw.gateway.snapshots import load_snapshot
from ecallgw.model import IncidentSnapshot

if TYPE_CHECKING:  # store/desk.py builds on RevisionRow below
    from ecallgw.gateway.store.desk import DeskEventRow, DeskView, IncidentQuery, QueueRow

__all__ = [
    "AUDIT_KEYS",
    "DEAD_LETTER_KEYS",
    "QUARANTINE_KEYS",
    "IncidentRow",
    "RevisionRow",
    "Store",
    "journal_row",
]


# The keys of the dicts the read API returns, in the order both stores select the columns.
QUARANTINE_KEYS = (
    "id",
    "at",
    "transport",
    "source",
    "kind",
    "tps",
    "vehicle",
    "payload",
    "codec",
    "reason",
    "path",
)
DEAD_LETTER_KEYS = ("incident_id", "revision", "receiver", "at", "attempts", "reason", "detail")
AUDIT_KEYS = ("at", "actor", "role", "action", "incident_id", "note", "outcome")


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentRow:
    """The latest state of one incident, for the operator list."""

    incident_id: str
    revision: int
    status: str
    level: str
    score: int
    tps: str
    vehicle: str
    received_at: float
    updated_at: float

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> IncidentRow:
        """From a row of the ``incidents`` table (its columns in table order)."""
        return cls(
            incident_id=r[0],
            revision=r[1],
            status=r[2],
            level=r[3],
            score=r[4],
            tps=r[5],
            vehicle=r[6],
            received_at=r[7],
            updated_at=r[8],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RevisionRow:
    """One stored revision with its global sequence number (the operator stream's event id)."""

    seq: int
    outcome: str
    reasons: tuple[tuple[str, str], ...]
    snapshot: IncidentSnapshot

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> RevisionRow:
        """From (seq, outcome, reasons JSON, snapshot blob) of the ``revisions`` table."""
        return cls(
            seq=r[0],
            outcome=r[1],
            reasons=tuple((c, t) for c, t in json.loads(r[2])),
            snapshot=load_snapshot(bytes(r[3])),
        )


class Store(Protocol):
    """What the gateway needs from a store; `SqliteStore` implements it, a server database could.

    Ordering contract: units are committed in the order `commit_nowait` was called (the journal order
    is the triage order), and a read sees every write queued before it. Delivery confirmations of
    one loop turn are written together at the place of the turn's first one; they only ever refer
    to outbox entries committed before, so no read can tell.
    """

    @property
    def writable(self) -> bool:
        """False while the store cannot write (full, read-only, down) or for good (``/readyz``)."""
        ...

    @property
    def unwritable_reason(self) -> str | None:
        """Why the store cannot write now (``/readyz`` says it); None while it can."""
        ...

    def commit_nowait(self, unit: Unit) -> asyncio.Future[CommitResult]:
        """Queue one unit of work; the future resolves once it is durable."""
        ...

    async def commit(self, unit: Unit) -> CommitResult:
        """Write one unit of work durably; returns once committed."""
        ...

    async def journal(self, after_seq: int, limit: int) -> list[JournalRow]:
        """Journal rows after ``after_seq`` in order, for replay."""
        ...

    async def pending_outbox(self) -> list[OutboxItem]:
        """Every undelivered outbox entry, in insertion order (without snapshots)."""
        ...

    async def load_revisions(
        self, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], IncidentSnapshot]:
        """Stored revisions by (incident_id, revision)."""
        ...

    def record_delivered_nowait(
        self, item: OutboxItem, *, at: float, attempts: int, status: int | None, sent_at: float | None = None
    ) -> asyncio.Future[None]:
        """Mark an outbox entry delivered (after the receiver confirmed)."""
        ...

    async def first_delivery(self, incident_id: str, receiver: str) -> tuple[int, float] | None:
        """(revision, sent time) of the first revision of an incident a receiver confirmed."""
        ...

    async def record_dead_letter(
        self, item: OutboxItem, *, at: float, attempts: int, reason: str, detail: str
    ) -> None:
        """Move an outbox entry to the dead letters."""
        ...

    async def key(self, name: str) -> bytes:
        """A random key kept under ``name``, created on first use."""
        ...

    async def delete_before(self, cutoff: float, *, journal_margin_s: float = 0.0) -> dict[str, int]:
        """Retention: delete incident data older than ``cutoff``; rows deleted per table."""
        ...

    async def replay_after(self, since: float, margin_s: float) -> int:
        """The journal sequence number after which a replay must start to rebuild state since ``since``."""
        ...

    async def recent_revisions(self, since: float) -> dict[str, int]:
        """Stored latest revision of every incident updated at or after ``since``."""
        ...

    async def swap_meta(self, name: str, value: bytes) -> bytes | None:
        """Store ``value`` under ``name``; return what was stored before (None at first)."""
        ...

    async def counts(self) -> dict[str, int]:
        """Row counts per table (and ``outbox_pending``), for summaries and tests."""
        ...

    async def list_incidents(
        self, *, status: str | None = None, level: str | None = None, limit: int = 100
    ) -> list[IncidentRow]:
        """Latest revisions of incidents, newest first."""
        ...

    async def find_incidents(
        self, *, call_id: str | None = None, vehicle: str | None = None, limit: int = 100
    ) -> list[IncidentRow]:
        """Incidents one of whose calls (any provider's) has this call id and/or vehicle key."""
        ...

    async def get_incident(
        self, incident_id: str
    ) -> tuple[IncidentRow, list[RevisionRow], list[dict[str, Any]]] | None:
        """One incident with its history and deliveries."""
        ...

    async def revisions_after(self, seq: int, limit: int = 500) -> list[RevisionRow]:
        """Revisions after a global sequence number (the operator stream)."""
        ...

    async def list_queue(self, query: IncidentQuery) -> list[QueueRow]:
        """The operator queue: incidents filtered and in the queue's order (store/desk.py)."""
        ...

    async def queue_counters(self, non_psap: Sequence[str]) -> dict[str, int]:
        """Open, unacknowledged, waiting for escalation and at a PSAP, over every open incident."""
        ...

    async def desk_view(self, incident_id: str, non_psap: Sequence[str]) -> DeskView | None:
        """One incident as the operator desk sees it (None when unknown)."""
        ...

    async def stream_after(self, seq: int, limit: int = 500) -> list[RevisionRow | DeskEventRow]:
        """The operator stream after ``seq``: revisions and desk changes, in their one sequence."""
        ...

    async def last_stream_seq(self) -> int:
        """The operator stream's newest sequence number (0 when empty)."""
        ...

    async def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest quarantined payloads."""
        ...

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter."""
        ...

    async def audit_log(self, incident_id: str | None = None) -> list[dict[str, Any]]:
        """Audit entries, oldest first."""
        ...

    # --- operator console sessions (ecallgw/console/session.py) ------------------------------------

    async def session_put(
        self, session_id: str, *, operator: str, token_sha256: str, created_at: float, expires_at: float
    ) -> None:
        """Keep a console session (by the SHA-256 of its cookie); expired ones are dropped meanwhile."""
        ...

    async def session_get(self, session_id: str, *, now: float) -> tuple[str, str, float] | None:
        """(operator, token SHA-256, expires_at) of an unexpired session, or None."""
        ...

    async def session_delete(self, session_id: str) -> None:
        """End a session (sign-out)."""
        ...

    # --- end of console sessions ---------------------------------------------------------------------


def journal_row(r: Sequence[Any], *, seq: int, at: float) -> JournalRow:
    """A stored journal row for replay, from its columns in the tables' order (``type`` at 1,
    ``at`` (received) at 2, the signal's columns 3–9, the action's 10–14); ``at`` is the ``now``
    triage was given for it (on SQLite the same as received, on PostgreSQL the sequencer's)."""
    typ = cast(Literal["signal", "action", "tick", "prune"], r[1])
    received = r[2]
    signal = None
    action = None
    if typ == "signal":
        signal = RawSignal(
            transport=r[3],
            kind=r[4],
            tps=r[5],
            vehicle=r[6],
            call_id=r[7],
            payload=bytes(r[8]),
            source=r[9] or "",
            received_at=received,
        )
    elif typ == "action":
        action = ActionRecord(
            incident_id=r[10], action=r[11], actor=r[12], role=r[13], note=r[14] or "", at=received
        )
    return JournalRow(seq=seq, type=typ, at=at, signal=signal, action=action)
