"""The operator desk's state: who holds which incident, which an operator acked, the latest note.

Claims, releases and notes (issue 13) are operator actions like ack or cancel: journaled, decided in
journal order (by the sequencer on replicas), and rebuilt by replay, so every replica answers a
claim alike and two operators claiming at once get one winner. They change no revision: receivers
never see a claim or an ack; the latest note travels with the incident's next revision
(`IncidentSnapshot.operator_note`, set by `Pipeline._record`). State is kept for the incidents
triage knows (pruned with them), which are the only ones actions apply to.
"""

from __future__ import annotations

from typing import Literal

from ecallgw.gateway.records import DeskRecord
from ecallgw.model import Reason
from ecallgw.triage import Decision, TriageEngine
from ecallgw.triage.decision import Outcome

__all__ = ["Desk", "unknown_incident"]

DeskKind = Literal["claim", "release", "ack", "note"]


class Desk:
    """Per-incident desk state (mutable; the pipeline's, like triage's engine)."""

    def __init__(self) -> None:
        self.claimed: dict[str, str] = {}  # incident id -> the operator who holds it
        self.acked: set[str] = set()
        self.notes: dict[str, str] = {}  # incident id -> the latest note

    def record(self, iid: str, kind: DeskKind, operator: str, now: float, *, text: str = "") -> DeskRecord:
        """A desk change with the incident's whole desk state after it."""
        return DeskRecord(
            incident_id=iid,
            kind=kind,
            operator=operator,
            at=now,
            claimed_by=self.claimed.get(iid),
            acked=iid in self.acked,
            text=text,
        )

    def act(
        self, iid: str, verb: str, arg: str, actor: str, note: str, now: float
    ) -> tuple[Decision, tuple[DeskRecord, ...]]:
        """Decide ``claim`` (``arg``: the assignee, else the actor), ``release`` or ``note``."""
        holder = self.claimed.get(iid)
        if verb == "claim":
            to = arg or actor
            if not arg and holder not in (None, actor):
                # Taking over another operator's incident is an assignment, said so on purpose.
                return _decision(
                    Outcome.rejected, "claimed_by_other", f"{holder} has it: assign it to take it over", iid
                ), ()
            self.claimed[iid] = to
            text = f"claimed by {to}" if to == actor else f"assigned to {to} by {actor}"
            changes = [self.record(iid, "claim", actor, now, text=text)]
        elif verb == "release":
            if holder is None:
                return _decision(Outcome.rejected, "not_claimed", "nobody has it", iid), ()
            del self.claimed[iid]
            changes = [
                self.record(iid, "release", actor, now, text=f"released by {actor} (held by {holder})")
            ]
        else:  # note
            self.notes[iid] = note
            return _decision(Outcome.noted, "noted", "note added", iid), (
                self.record(iid, "note", actor, now, text=note),
            )
        if note:  # a claim or release may carry a note too
            self.notes[iid] = note
            changes.append(self.record(iid, "note", actor, now, text=note))
        outcome = Outcome.claimed if verb == "claim" else Outcome.released
        return _decision(
            outcome, verb + "ed" if verb == "claim" else "released", changes[0].text, iid
        ), tuple(changes)

    def prune(self, engine: TriageEngine) -> None:
        """Forget the incidents triage forgot."""
        for iid in {*self.claimed, *self.acked, *self.notes}:
            if engine.get(iid) is None:
                self.claimed.pop(iid, None)
                self.acked.discard(iid)
                self.notes.pop(iid, None)


def _decision(outcome: Outcome, code: str, text: str, iid: str) -> Decision:
    return Decision(outcome=outcome, reasons=(Reason(code=code, text=text),), incident_id=iid)


def unknown_incident(iid: str) -> Decision:
    """The answer to a desk action on an incident triage does not know (or no longer)."""
    return Decision(
        outcome=Outcome.unknown_incident, reasons=(Reason(code="unknown_incident", text="no such incident"),)
    )
