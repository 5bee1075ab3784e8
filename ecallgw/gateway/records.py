"""Frozen records that move between the gateway's stages (sources, pipeline, store, forwarder)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from ecallgw.codecs.envelope import KINDS as ENVELOPE_KINDS
from ecallgw.model import IncidentSnapshot, Reason
from ecallgw.triage import ACTIONS as TRIAGE_ACTIONS
from ecallgw.triage.decision import Route

__all__ = [
    "DESK_ACTIONS",
    "ENVELOPE_KINDS",
    "KINDS",
    "OPERATOR_ACTIONS",
    "ActionRecord",
    "CommitResult",
    "DecisionRecord",
    "DeskRecord",
    "JournalRow",
    "OutboxItem",
    "QuarantineRecord",
    "RawSignal",
    "Unit",
]

_frozen = {"frozen": True, "slots": True, "kw_only": True}

KINDS = frozenset({*ENVELOPE_KINDS, "msd_raw", "link_position"})
"""Signal kinds triage decides: the envelope kinds (``codecs.envelope.KINDS``: msd, cancel,
position), ``msd_raw`` for an RFC 8147 body over HTTP, and ``link_position`` for a caller's position
through a location link (transport ``link``). Breakdown requests (``bcall``) are not triaged."""

DESK_ACTIONS = ("claim", "release", "note")
"""Operator actions on the desk only (who has it, notes): no triage decision, no PSAP revision."""

OPERATOR_ACTIONS = ("ack", *DESK_ACTIONS, *(a for a in TRIAGE_ACTIONS if a != "ack"))
"""Every action ``POST /v1/incidents/{id}/actions`` accepts: triage's and the desk's."""


@dataclass(**_frozen)
class RawSignal:
    """One signal as a source received it, before decoding.

    Attributes:
        transport: "mqtt" or "http".
        kind: msd, cancel, position, or msd_raw (raw UPER MSD over HTTP with ``call_id``).
        tps: the provider as named in the topic or path.
        vehicle: the provider's key for the vehicle.
        payload: the body exactly as received.
        received_at: when the gateway received it (epoch seconds UTC).
        source: the topic or path, kept with a quarantined payload.
        call_id: the ``Call-Id`` header of a raw MSD.
    """

    transport: Literal["mqtt", "http", "link"]
    kind: str
    tps: str
    vehicle: str
    payload: bytes
    received_at: float
    source: str = ""
    call_id: str | None = None
    digest: bytes = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Transport duplicates (an MQTT redelivery after a lost PUBACK, an HTTP retry) carry the
        # same bytes under the same name; a vehicle's own resend differs at least in sent_at.
        h = hashlib.blake2b(digest_size=16)
        for part in (self.kind, self.tps, self.vehicle, self.call_id or ""):
            h.update(part.encode())
            h.update(b"\x00")
        h.update(self.payload)
        object.__setattr__(self, "digest", h.digest())


@dataclass(**_frozen)
class ActionRecord:
    """An operator action as journaled and audited."""

    incident_id: str
    action: str
    actor: str
    role: str
    note: str
    at: float


@dataclass(**_frozen)
class QuarantineRecord:
    """A payload that could not be decoded, kept with why (never dropped)."""

    signal: RawSignal
    codec: str
    reason: str
    path: str = ""


@dataclass(**_frozen)
class DecisionRecord:
    """What one triage decision contributes to a unit of work.

    Attributes:
        outcome: triage's outcome code.
        reasons: triage's reasons.
        snapshot: the new incident revision, or None.
        routes: triage's routes, the deliveries to make.
        signal_at: receipt time of what caused it (start of the end-to-end latency clock).
        incident_id: the incident the input concerned, also without a revision (a redial
            joined, a resend): what the ingest answer names.
    """

    outcome: str
    reasons: tuple[Reason, ...]
    snapshot: IncidentSnapshot | None
    routes: tuple[Route, ...]
    signal_at: float
    incident_id: str | None = None
    escalation_due_at: float | None = None  # the snapshot's escalation timer, for the operator list


@dataclass(**_frozen)
class DeskRecord:
    """A change at the operator desk (issue 13): who holds an incident, its ack, a note.

    Receivers never see one (no revision); operators see it live on the event stream, numbered in
    the revisions' sequence so that one ``Last-Event-ID`` resumes both.

    Attributes:
        incident_id: the incident.
        kind: ``claim`` (also an assignment), ``release``, ``ack`` or ``note``.
        operator: who did it (a token's name).
        at: when.
        claimed_by: who holds the incident after it (None when nobody).
        acked: whether an operator acked it (or escalated, cancelled or resolved it), after it.
        text: a note's text.

    ``claimed_by`` and ``acked`` are the incident's whole desk state after the change (the
    pipeline's, rebuilt by replay like triage's), so the store keeps the latest one as it is.
    """

    incident_id: str
    kind: Literal["claim", "release", "ack", "note"]
    operator: str
    at: float
    claimed_by: str | None = None
    acked: bool = False
    text: str = ""


@dataclass(**_frozen)
class Unit:
    """Everything one input changes, committed in one transaction.

    Attributes:
        journal_type: signal, action, tick or prune; None writes no journal row (quarantine only).
        at: the ``now`` triage was called with (replayed as-is after a restart).
        signal: the raw signal of a ``signal`` entry, or the quarantined one.
        action: the operator action of an ``action`` entry (also written to the audit log).
        quarantine: set when the signal could not be decoded.
        decisions: triage decisions to record.
        audit_outcome: for actions, what triage made of it (written to the audit log).
        confirm_on_commit: receivers whose sink is confirmed at commit (`Sink.confirmed_at_commit`,
            listed by `Forwarder.confirmed_at_commit`): their outbox entries are written
            delivered, in the same transaction.
        journal_id: a journal row already stored by an intake (PostgreSQL replicas): the unit
            sequences it (assigns its place in the triage order) instead of writing a new row.
        outcome: what the sequencer made of that row, kept with it for the waiting intake
            ("redelivered" rows are skipped by replay).
        desk: the operator-desk changes of an action (claim, release, ack, note), in order.
    """

    journal_type: Literal["signal", "action", "tick", "prune"] | None
    at: float
    signal: RawSignal | None = None
    action: ActionRecord | None = None
    quarantine: QuarantineRecord | None = None
    decisions: tuple[DecisionRecord, ...] = ()
    audit_outcome: str = ""
    confirm_on_commit: frozenset[str] = frozenset()
    journal_id: int | None = None
    outcome: str = ""
    desk: tuple[DeskRecord, ...] = ()


@dataclass(**_frozen)
class OutboxItem:
    """One pending delivery of one revision to one receiver."""

    id: int
    incident_id: str
    revision: int
    receiver: str
    signal_at: float
    snapshot: IncidentSnapshot | None = None


@dataclass(**_frozen)
class CommitResult:
    """What a committed unit created.

    Attributes:
        journal_seq: the journal row, when one was written.
        outbox: the outbox rows the unit inserted (a key stored twice fails the whole batch).
        revision_seqs: (seq, snapshot) of newly inserted revisions, for the operator stream.
        confirmed: entries written delivered by the commit itself (``Unit.confirm_on_commit``).
        desk_seqs: (seq, record) of the unit's desk changes, numbered in the revisions' sequence.
    """

    journal_seq: int | None
    outbox: tuple[OutboxItem, ...] = ()
    confirmed: tuple[OutboxItem, ...] = ()
    revision_seqs: tuple[tuple[int, IncidentSnapshot], ...] = ()
    desk_seqs: tuple[tuple[int, DeskRecord], ...] = ()


@dataclass(**_frozen)
class JournalRow:
    """A stored journal row, replayed through a fresh triage engine at start."""

    seq: int
    type: Literal["signal", "action", "tick", "prune"]
    at: float
    signal: RawSignal | None = None
    action: ActionRecord | None = None
