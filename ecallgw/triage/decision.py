"""What triage decided: the outcome, its reasons, the revision to deliver and to whom.

These are the values ``TriageEngine`` returns; the gateway stores them and the forwarder delivers
the routes. All frozen; ``Outcome`` values are stable (logs, metric labels, replay output).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ecallgw.model import IncidentSnapshot, Reason

__all__ = ["Decision", "Outcome", "Route"]

_frozen = {"frozen": True, "slots": True, "kw_only": True}


class Outcome(enum.StrEnum):
    """What a decision did; the values are stable (logs, metrics labels, replay output)."""

    new_incident = "new_incident"
    new_revision = "new_revision"
    duplicate = "duplicate"
    joined_incident = "joined_incident"
    cancel_requested = "cancel_requested"
    cancelled = "cancelled"
    escalated = "escalated"
    acknowledged = "acknowledged"
    resolved = "resolved"
    orphan_signal = "orphan_signal"
    unknown_incident = "unknown_incident"
    rejected = "rejected"
    # The operator desk's own actions (issue 13): decided by the gateway, never a revision.
    claimed = "claimed"
    released = "released"
    noted = "noted"


@dataclass(**_frozen)
class Route:
    """Deliver revision ``revision`` of incident ``incident_id`` to receiver ``receiver`` now."""

    receiver: str
    incident_id: str
    revision: int


@dataclass(**_frozen)
class Decision:
    """The result of one signal, operator action or timer.

    Attributes:
        outcome: what happened.
        reasons: why, with stable codes; never empty.
        incident: the new revision receivers should see, or None when nothing they see changed.
        routes: deliveries to make now (empty when ``incident`` is None).
        incident_id: the incident the input concerned (made, joined, changed or only matched), also
            when no revision came of it; None for an orphan or an unknown incident.
        also: further decisions the same input caused, in order (a storm recognised in hindsight:
            the revisions of its earlier members and of the storm's aggregate for the operator).
    """

    outcome: Outcome
    reasons: tuple[Reason, ...]
    incident: IncidentSnapshot | None = None
    routes: tuple[Route, ...] = ()
    incident_id: str | None = None
    also: tuple[Decision, ...] = ()
