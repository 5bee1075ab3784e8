"""The triage engine: signals and operator actions in, explained decisions out; pure and deterministic.

``TriageEngine`` holds in-memory state only. Time arrives as ``now`` (the receipt time), the key of
the VIN pseudonyms as ``key``, thresholds as a ``TriagePolicy``; nothing reads a clock, a random
source or a file, so replaying the journal through a fresh engine yields the same decisions
(docs/architecture.md "Triage contract"; every rule is in docs/triage.md).

Safety invariant: an automatic, non-test activation is routed to a PSAP by the decision on its
first signal, whatever the false-trigger checks say. Suspicions (cancel, storm, stale time) are
reasons for the operator, who alone can cancel what a PSAP has seen.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections import deque
from collections.abc import Hashable

from ecallgw.model import (
    Activation,
    Call,
    CancelSignal,
    IncidentSnapshot,
    Msd,
    MsdSignal,
    Position,
    PositionSignal,
    Reason,
    Severity,
    Signal,
    Status,
)
from ecallgw.triage import keys
from ecallgw.triage.decision import Decision, Outcome, Route
from ecallgw.triage.dedup import CallKey, fingerprint, msd_changes, msd_position, position_changes
from ecallgw.triage.false_triggers import (
    StormDetector,
    manual_burst_reason,
    msd_time_reasons,
    position_reasons,
)
from ecallgw.triage.policy import TriagePolicy
from ecallgw.triage.reasons import ReasonCode
from ecallgw.triage.routing import PsapRouter, distance_m
from ecallgw.triage.scoring import Evidence, evidence_from_msd, score

__all__ = ["ACTIONS", "Decision", "Outcome", "Route", "TriageEngine"]


ACTIONS = ("ack", "cancel", "escalate", "resolve", "confirm_storm", "dismiss_storm")
"""Operator actions ``on_operator_action`` understands (the last two on a storm's aggregate)."""

STORM_PREFIX = "storm-"
"""Ids of storm aggregates (the operator desk's view of a provider storm) start with this."""


def _r(code: str, text: str) -> Reason:
    return Reason(code=code, text=text)


def _plain(outcome: Outcome, reasons: tuple[Reason, ...], incident_id: str | None = None) -> Decision:
    """A decision without a revision (nothing receivers see changed)."""
    return Decision(outcome=outcome, reasons=reasons, incident_id=incident_id)


def _about(d: Decision, incident_id: str) -> Decision:
    """A shared constant decision, naming the incident it concerned (the ingest answer says it)."""
    return Decision(outcome=d.outcome, reasons=d.reasons, incident_id=incident_id)


def _activation(msd: Msd) -> Activation:
    c = msd.msd.msd_structure.control
    return "test" if c.test_call else "automatic" if c.automatic_activation else "manual"


# Reasons without parameters are built once: most decisions are duplicates and should cost little.
_EXACT_REPEAT = (_r("exact_repeat", "exact repeat of a signal already handled"),)
_RESEND_UNCHANGED = (_r("msd_resend_unchanged", "MSD resent without a change receivers should see"),)
_OUT_OF_ORDER = (_r("msd_out_of_order", "older MSD of the call (lower messageIdentifier) arrived late"),)
_CLOSED = _r("incident_closed", "the incident is already closed")
_ORPHAN = (_r("no_incident_for_call", "no MSD seen for this call yet; kept until it arrives"),)
_POS_OLDER = (_r("position_older", "position older than the one the incident holds"),)
_POS_UNTRUSTED = (_r("position_untrusted_ignored", "untrusted position does not replace a trusted one"),)
_POS_SAME = (_r("position_unchanged", "position did not move enough to matter"),)
_CANCEL_REPEAT = (_r("cancel_repeat", "cancel already requested for this incident"),)
_NEW_CALL = _r("new_call", "first MSD of a new call")
_REDIAL = _r("redial_joined", "new call of the same vehicle within the redial window, near the same place")
_PROVIDER_JOINED = _r(
    "provider_joined",
    "a call of the same vehicle (VIN) via another provider joined the incident, near the same place",
)
_CALLBACK_ADDED = _r("callback_added", "a joined call brings another call-back number")
_CALLBACK_CHANGED = _r("callback_changed", "call-back number changed")
_REDIAL_AFTER_CLOSE = _r(
    "redial_after_close", "the vehicle called again within the redial window after its incident was closed"
)
_SCENE_LINKED = _r("scene_linked", "another incident close in time and place: same scene")
_TEST = _r("test_call", "test call: routed to the test receiver only")
_AUTO_PSAP = _r("automatic_to_psap", "automatic activation: forwarded to the PSAP at once")
_UPGRADED = _r("upgraded_to_automatic", "an automatic activation joined a manual incident")
_NOT_TEST = _r("test_flag_cleared", "a non-test MSD arrived for a test incident")
# Codes the engine names without building the reason (flag keys): the plain str value, since a reason
# code is a str, and a dict whose keys are all exact str is the smaller kind of dict.
_ESC_PENDING = ReasonCode.escalation_pending.value
_ESC_HELD = _r(
    "escalation_held", "manual call with a false-trigger suspicion: escalation waits for an operator"
)
_HOLDING = frozenset(
    {
        ReasonCode.manual_burst,
        ReasonCode.provider_storm,
        ReasonCode.msd_timestamp_stale,
        ReasonCode.msd_timestamp_missing,
    }
)
_CANCEL_IN_GRACE = ReasonCode.cancelled_in_grace.value
# Receiver-visible: the operator's name stays in the gateway's audit trail, not in documents.
_BY_OPERATOR = {
    "escalate": _r("escalated_by_operator", "escalated to the PSAP by an operator"),
    "cancel": _r("cancelled_by_operator", "cancelled by an operator"),
    "resolve": _r("resolved_by_operator", "resolved by an operator"),
}
_CANCEL_REQ = ReasonCode.cancel_requested.value
_HOLDING_OR_CANCEL = _HOLDING | {_CANCEL_REQ}
_CANCEL_REQUESTED_TEXT = "an operator must confirm before receivers are told"
_CANCEL_REQUESTED = _r(_CANCEL_REQ, f"the vehicle cancelled: {_CANCEL_REQUESTED_TEXT}")
_CLOSED_STATUSES = frozenset({"cancelled", "resolved"})
_STORM = ReasonCode.provider_storm.value
_STORM_HINDSIGHT = _r(
    _STORM,
    "provider storm recognised after this incident opened: escalation waits for an operator",
)
_STORM_SEVERITY = Severity(
    level="low",
    score=0,
    reasons=(_r("storm_aggregate", "a provider storm: its members carry their own severity"),),
)
_STORM_EVERY = 64
_STORM_MEMBER = _r("storm_member_added", "another incident of the provider joined the storm")
_STORM_CONFIRMED = _r("storm_confirmed", "an operator confirmed the provider storm")
_STORM_DISMISSED = _r("storm_dismissed", "an operator dismissed the provider storm: not a storm")
_STORM_CANCELLED = _r(
    "storm_confirmed", "an operator confirmed the provider storm: cancelled as a false trigger"
)
_STORM_RELEASED = _r(
    "storm_dismissed", "an operator dismissed the provider storm: escalation by timer resumes"
)
_STORM_ONLY = _plain(
    Outcome.rejected,
    (_r("storm_action_only", "a storm takes confirm_storm or dismiss_storm; act on members one by one"),),
)
_NOT_A_STORM = _plain(
    Outcome.rejected, (_r("not_a_storm", "confirm_storm and dismiss_storm act on a storm aggregate"),)
)


# Decisions are frozen: the common constant ones are built once and shared.
_DUP_RESEND = _plain(Outcome.duplicate, _RESEND_UNCHANGED)
_ORPHAN_DECISION = _plain(Outcome.orphan_signal, _ORPHAN)
_UNKNOWN_INCIDENT = _plain(
    Outcome.unknown_incident, (_r("unknown_incident", "no such incident (unknown or pruned)"),)
)
_ALREADY_ACKED = _plain(Outcome.acknowledged, (_r("already_acknowledged", "already acknowledged"),))
_ACKED_TEXT = "the operator handles it, no timer escalation"
_ACKED = _plain(Outcome.acknowledged, (_r("acknowledged", f"acknowledged: {_ACKED_TEXT}"),))
_TEST_NOT_ESCALATED = _plain(
    Outcome.rejected, (_r("test_call_not_escalated", "a test call is never forwarded to a PSAP"),)
)
_ALREADY_AT_PSAP = _plain(Outcome.rejected, (_r("already_at_psap", "already forwarded to a PSAP"),))
_DUP_CLOSED_RESEND = _plain(Outcome.duplicate, (_CLOSED, *_RESEND_UNCHANGED))


class _Call:
    """Mutable per-call state: one provider's call of an incident (receivers see ``Call``)."""

    __slots__ = (
        "activation",
        "call_id",
        "callback",
        "first_at",
        "lang",
        "last_at",
        "mid",
        "shown",
        "tps",
        "vehicle",
        "version",
    )

    def __init__(self, sig: MsdSignal, now: float) -> None:
        self.tps = sig.tps
        self.vehicle = sig.vehicle
        self.call_id = sig.call_id
        self.callback = sig.callback
        self.lang = sig.lang
        msd = sig.msd
        self.activation: Activation = _activation(msd)
        self.first_at = now
        self.last_at = now
        self.version: int = msd.version
        # The latest messageIdentifier of the call: a lower one is a late older MSD.
        self.mid: int = msd.msd.msd_structure.message_identifier
        self.shown: Call | None = None  # the frozen view, until a field changes

    def frozen(self) -> Call:
        shown = self.shown
        if shown is not None:
            return shown
        shown = self.shown = Call(
            tps=self.tps,
            vehicle=self.vehicle,
            call_id=self.call_id,
            activation=self.activation,
            first_at=self.first_at,
            last_at=self.last_at,
            msd_version=self.version,
            callback=self.callback,
            lang=self.lang,
        )
        return shown


class _Incident:
    """Mutable per-incident state; receivers see it only through ``IncidentSnapshot``."""

    __slots__ = (
        "acked",
        "automatic",
        "calls",
        "closed",
        "escalated",
        "escalation_due",
        "evidence",
        "flags",
        "fp0",
        "generation",
        "id",
        "is_test",
        "last_at",
        "msd",
        "position",
        "position_sent_at",
        "received_at",
        "receivers",
        "revision",
        "scene_id",
        "scored",
        "scored_test",
        "seen",
        "severity",
        "shown",
        "shown_calls",
        "status",
        "tps",
        "updated_at",
        "vkey",
    )

    def __init__(
        self, iid: str, vkey: bytes, sig: MsdSignal, now: float, generation: int, evidence: Evidence
    ) -> None:
        # Positional arguments: one of these is built per new incident, a tenth of all inputs.
        self.id = iid
        self.generation = generation
        self.vkey = vkey
        self.tps = sig.tps  # the opening call's provider (its storm detector)
        # Every call of the incident, the primary first (the opening one, or the first automatic
        # call that joined a manual incident): documents' call block is the primary's alone.
        self.calls: list[_Call] = [_Call(sig, now)]
        self.shown_calls: tuple[Call, ...] = ()
        self.received_at = now
        self.last_at = now
        msd = self.msd = sig.msd
        s = msd.msd.msd_structure
        control = s.control
        self.automatic = control.automatic_activation
        self.is_test = control.test_call
        position: Position | None = msd_position(msd)
        self.position = position
        self.position_sent_at: float | None = sig.sent_at if position is not None else None
        self.evidence: Evidence = evidence
        self.severity: Severity | None = None
        # The evidence object and test flag the severity was computed from (no tuple per incident).
        self.scored: Evidence | None = None
        self.scored_test = False
        # The latest revision is not kept as an object (~190 B per incident): its reasons and time
        # are, and get() rebuilds an equal snapshot from them and the fields below, which change
        # only together with a new revision (the properties check get() after every step).
        self.shown: tuple[Reason, ...] = ()
        self.updated_at = now
        self.revision = 0
        self.status: Status = "open"
        self.receivers: list[str] = []
        self.flags: dict[str, Reason] = {}
        self.fp0: Hashable = msd.raw or msd  # the fingerprint of the opening MSD (dedup.fingerprint)
        self.seen: set[Hashable] | None = None
        self.scene_id: str = iid
        self.acked = False
        self.escalated = False
        self.escalation_due: float | None = None
        self.closed = False


class _Storm:
    """A recognised provider storm: one aggregate of its member incidents for the operator desk."""

    __slots__ = ("closed", "id", "last_at", "members", "received_at", "revision", "shown", "status", "tps")

    def __init__(self, sid: str, tps: str, now: float) -> None:
        self.id = sid
        self.tps = tps
        self.received_at = now
        self.last_at = now  # when the latest member joined
        self.members: list[str] = []
        self.revision = 0
        self.status: Status = "open"
        self.closed = False
        self.shown: IncidentSnapshot | None = None


class _Vehicle:
    """Per-vehicle state under its pseudonym: its latest incident and recent manual incidents."""

    __slots__ = ("incident", "manual_times")

    def __init__(self, incident: _Incident) -> None:
        self.incident = incident
        self.manual_times: tuple[float, ...] = ()


_Cell = int | tuple[int, int]
_CELL_SPAN = 1 << 32
_CELL_HALF = _CELL_SPAN // 2


def _cell(row: int, col: int) -> _Cell:
    """The grid key of a scene cell: one int (no tuple and two ints per incident), injective.

    Columns within ±2**31 (every real longitude at any allowed scene radius) pack into one int;
    any other falls back to the tuple, which never equals an int.
    """
    if -_CELL_HALF <= col < _CELL_HALF:
        return row * _CELL_SPAN + col + _CELL_HALF
    return (row, col)


_SEEN_LIMIT = 64  # fingerprints kept per incident; beyond it content comparison still dedups
_METRES_PER_DEGREE = 111_320.0


class TriageEngine:
    """In-memory, deterministic triage of eCall signals.

    Args:
        policy: thresholds and receiver names.
        key: secret key of the VIN pseudonyms and incident ids (at least 16 bytes); the same key
            must be used when the journal is replayed, or the incident ids change.

    Raises:
        ValueError: when the key is shorter than 16 bytes.
    """

    def __init__(self, policy: TriagePolicy, key: bytes) -> None:
        self.policy = policy
        self._key = keys.check_key(key)
        self._vehicle_key = keys.VehicleKeys(key)
        self._id_key = keys.incident_key(key)
        self._router = PsapRouter(policy)
        self._incidents: dict[str, _Incident] = {}
        self._calls: dict[CallKey, _Incident] = {}
        self._vehicles: dict[tuple[bytes, bool], _Vehicle] = {}
        self._orphans: dict[CallKey, list[tuple[Signal, float]]] = {}
        self._storms: dict[str, StormDetector] = {}
        self._storm_of: dict[str, _Storm] = {}  # provider -> its latest storm aggregate
        self._storm_ids: dict[str, _Storm] = {}
        self._storm_quiet: dict[str, float] = {}  # provider -> no storm flags until (dismissed)
        # provider -> its non-test incidents of the last storm window, oldest first: what a storm
        # recognised now looks back at (a window's worth per provider, not an index of everything)
        self._recent: dict[str, deque[_Incident]] = {}
        self._timers: list[tuple[float, int, str]] = []
        self._timer_seq = 0
        self._grid: dict[_Cell, list[_Incident]] = {}
        self._cell_deg = 2 * policy.scene_distance_m / _METRES_PER_DEGREE
        self._row_widths: dict[int, float] = {}
        # Reasons that depend only on the policy or a receiver name are built once.
        self._esc_pending = _r(
            _ESC_PENDING,
            f"manual call: to the operator first, to the PSAP if no operator acts within "
            f"{policy.escalation_delay_s:.0f} s",
        )
        self._route_reasons: dict[tuple[str, bool], Reason] = {}
        self._cancel_in_grace = _r(
            _CANCEL_IN_GRACE, f"cancelled by the vehicle within {policy.cancel_grace_s:.0f} s"
        )
        self._non_psap = (policy.operator_receiver, policy.test_receiver)
        self._severity_cache: dict[tuple[Evidence, bool], Severity] = {}
        self._evidence_cache: dict[tuple[object, ...], tuple[Evidence, Severity, Severity]] = {}

    # --- public API -------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of incidents held (open and closed, until pruned)."""
        return len(self._incidents)

    def get(self, incident_id: str) -> IncidentSnapshot | None:
        """The latest revision of an incident, or None when unknown or pruned."""
        inc = self._incidents.get(incident_id)
        if inc is None or inc.revision == 0:
            storm = self._storm_ids.get(incident_id)
            return None if storm is None else storm.shown
        return self._snapshot(inc, inc.shown, inc.updated_at)

    def on_signal(self, signal: Signal, *, now: float) -> Decision:
        """Triage one decoded signal received at ``now`` (epoch seconds).

        Args:
            signal: an MSD, cancel or position signal.
            now: its receipt time as stored in the journal.

        Returns:
            The decision, never None; bad combinations give reasons, not exceptions.
        """
        if type(signal) is MsdSignal or isinstance(signal, MsdSignal):
            return self._on_msd(signal, now)
        if isinstance(signal, CancelSignal):
            return self._on_cancel(signal, now)
        return self._on_position(signal, now)

    def on_operator_action(self, incident_id: str, action: str, *, now: float, actor: str = "") -> Decision:
        """Apply an operator's ``ack``, ``cancel``, ``escalate`` or ``resolve``.

        Args:
            incident_id: the incident acted on.
            action: one of ``ACTIONS``.
            now: when the action was taken.
            actor: who acted; named only in an ``ack`` decision's text (revisions go to receivers, so
                they say "an operator"; the gateway audits who).

        Returns:
            The decision; ``unknown_incident`` for an unknown id and ``rejected`` for an unknown
            action or one the incident's state does not allow.
        """
        inc = self._incidents.get(incident_id)
        if inc is None:
            if incident_id.startswith(STORM_PREFIX):
                return self._storm_action(incident_id, action, now)
            return _UNKNOWN_INCIDENT
        iid = inc.id
        if action in ("confirm_storm", "dismiss_storm"):
            return _about(_NOT_A_STORM, iid)
        if action not in ACTIONS:
            return _plain(Outcome.rejected, (_r("unknown_action", f"unknown action {action!r}"),), iid)
        if inc.closed:
            return _plain(Outcome.rejected, (_CLOSED,), iid)
        if now > inc.last_at:  # noqa: PLR1730 - max() without the call
            inc.last_at = now
        if action == "ack":
            inc.escalation_due = None
            inc.flags.pop(_ESC_PENDING, None)
            inc.flags.pop(_ESC_HELD.code, None)
            if inc.acked:
                return _about(_ALREADY_ACKED, iid)
            inc.acked = True
            if not actor:
                return _about(_ACKED, iid)
            return _plain(
                Outcome.acknowledged,
                (_r("acknowledged", f"acknowledged by {actor}: {_ACKED_TEXT}"),),
                iid,
            )
        if action == "escalate":
            if inc.is_test:
                return _about(_TEST_NOT_ESCALATED, iid)
            if self._has_psap(inc):
                return _about(_ALREADY_AT_PSAP, iid)
            inc.escalated = True
            inc.escalation_due = None
            reason = _BY_OPERATOR["escalate"]
            inc.flags.pop(_ESC_PENDING, None)
            inc.flags.pop(_ESC_HELD.code, None)
            return self._emit(inc, Outcome.escalated, [reason], now)
        if action == "cancel":
            return self._close(inc, "cancelled", Outcome.cancelled, _BY_OPERATOR["cancel"], now)
        return self._close(inc, "resolved", Outcome.resolved, _BY_OPERATOR["resolve"], now)

    def due(self, now: float) -> list[Decision]:
        """Escalate every manual incident whose timer expired at or before ``now``, oldest first."""
        out: list[Decision] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            due_at, _, iid = heapq.heappop(timers)
            inc = self._incidents.get(iid)
            # Stale entries (acked, held, escalated, pruned, re-armed) are skipped, not removed early.
            if inc is None or inc.closed or inc.escalation_due != due_at:
                continue
            inc.escalation_due = None
            inc.escalated = True
            inc.flags.pop(_ESC_PENDING, None)
            reason = _r(
                "escalation_timeout",
                f"no operator action within {self.policy.escalation_delay_s:.0f} s: escalated to the PSAP",
            )
            out.append(self._emit(inc, Outcome.escalated, [reason], now))
        return out

    def prune(self, now: float) -> int:
        """Forget incidents, calls and orphans untouched for ``state_lifetime_s``.

        Returns:
            The number of incidents dropped.
        """
        cutoff = now - self.policy.state_lifetime_s
        dead = [iid for iid, inc in self._incidents.items() if inc.last_at < cutoff]
        for iid in dead:
            del self._incidents[iid]
        if dead:
            gone = set(dead)
            self._calls = {k: v for k, v in self._calls.items() if v.id not in gone}
            self._vehicles = {k: v for k, v in self._vehicles.items() if v.incident.id not in gone}
            grid: dict[_Cell, list[_Incident]] = {}
            for cell, incs in self._grid.items():
                kept = [i for i in incs if i.id not in gone]
                if kept:
                    grid[cell] = kept
            self._grid = grid
            self._timers = [t for t in self._timers if t[2] not in gone]
            heapq.heapify(self._timers)
        self._orphans = {
            k: live for k, v in self._orphans.items() if (live := [(s, t) for s, t in v if t >= cutoff])
        }
        if self._storm_ids:
            self._storm_ids = {k: v for k, v in self._storm_ids.items() if v.last_at >= cutoff}
            self._storm_of = {k: v for k, v in self._storm_of.items() if v.last_at >= cutoff}
        for recent in self._recent.values():
            while recent and recent[0].received_at < cutoff:
                recent.popleft()
        return len(dead)

    # --- MSD --------------------------------------------------------------------------------------

    def _on_msd(self, sig: MsdSignal, now: float) -> Decision:
        ck: CallKey = (sig.tps, sig.vehicle, sig.call_id)
        inc = self._calls.get(ck)
        if inc is not None:
            # The hot path (redeliveries, resends): an inlined fingerprint of the MSD bytes.
            msd = sig.msd
            fp = msd.raw or msd
            seen = inc.seen
            if fp == inc.fp0 or (seen is not None and fp in seen):
                return Decision(outcome=Outcome.duplicate, reasons=_EXACT_REPEAT, incident_id=inc.id)
            # _remember(), inlined
            if inc.fp0 is None:  # pragma: no cover - an incident starts with its MSD's fingerprint
                inc.fp0 = fp
            elif seen is None:
                inc.seen = {fp}
            elif len(seen) < _SEEN_LIMIT:
                seen.add(fp)
            return self._msd_in_call(inc, sig, now)
        vkey = self._vehicle_key(sig.msd.vin)
        test = sig.msd.test
        veh = self._vehicles.get((vkey, test))
        near = veh is not None and self._near(veh.incident, sig.msd, now)
        if veh is not None and near and veh.incident.closed:
            # A redial after the incident was closed (a confirmed false alarm, or resolved): a new
            # incident, since it may be a new emergency, with the history for the operator.
            return self._new_incident(sig, ck, vkey, now, veh, after_close=True)
        if veh is not None and near:
            return self._join(veh.incident, sig, ck, now)
        return self._new_incident(sig, ck, vkey, now, veh)

    def _join(self, inc: _Incident, sig: MsdSignal, ck: CallKey, now: float) -> Decision:
        """A new call of the vehicle joins its open incident: a redial, or another provider's call.

        Always a revision, so the operator desk and the incident's history show the call; it goes
        to the other receivers (a PSAP) only when what they were told changed (position, occupants,
        flags, a new call-back number...).
        """
        self._calls[ck] = inc
        self._remember(inc, fingerprint(sig))
        calls = inc.calls
        same_provider = any(c.tps == sig.tps for c in calls)
        callbacks = {c.callback for c in calls}
        call = _Call(sig, now)
        calls.append(call)
        reasons = [_REDIAL if same_provider else _PROVIDER_JOINED]
        visible = self._apply_msd(inc, call, sig, now, reasons)
        if sig.callback and sig.callback not in callbacks:
            reasons.append(_CALLBACK_ADDED)
            visible = True
        self._fold_orphans(inc, ck, now, reasons)
        everyone = visible or len(reasons) > 1
        return self._emit(inc, Outcome.joined_incident, reasons, now, everyone=everyone)

    @staticmethod
    def _call_of(inc: _Incident, tps: str, vehicle: str, call_id: str) -> _Call:
        calls = inc.calls
        if len(calls) == 1:  # a call maps only to an incident that holds it
            return calls[0]
        for c in calls:
            if c.call_id == call_id and c.vehicle == vehicle and c.tps == tps:
                return c
        raise AssertionError("a call mapped to an incident that does not hold it")  # pragma: no cover

    def _near(self, inc: _Incident, msd: Msd, now: float) -> bool:
        # EN 16062 §7.14.3: a dropped call is redialled within 2 minutes from (nearly) the same place.
        if now - inc.last_at > self.policy.redial_window_s:
            return False
        new = msd.position
        old = inc.position
        if new is None or old is None or not old.trusted or not msd.structure.control.position_can_be_trusted:
            # Place unknown or not to be trusted (it may be kilometres off): the same vehicle
            # within the window is the likelier truth.
            return True
        return distance_m(old.lat, old.lon, new[0], new[1]) <= self.policy.redial_distance_m

    def _msd_in_call(self, inc: _Incident, sig: MsdSignal, now: float) -> Decision:
        """A new MSD (not an exact repeat, already remembered) of a call with an incident."""
        if inc.closed:
            if not msd_changes(inc.msd, sig.msd, self.policy.position_change_m) and (
                inc.automatic or not sig.msd.automatic
            ):
                return _about(_DUP_CLOSED_RESEND, inc.id)
            # The vehicle raised something new after the incident was closed: a new incident, so a
            # cancelled alert is never silently reopened and a new activation is never swallowed.
            ck: CallKey = (sig.tps, sig.vehicle, sig.call_id)
            vkey = self._vehicle_key(sig.msd.vin)
            veh = self._vehicles.get((vkey, sig.msd.test))
            return self._new_incident(sig, ck, vkey, now, veh, generation=inc.generation + 1)
        reasons: list[Reason] = []
        call = self._call_of(inc, sig.tps, sig.vehicle, sig.call_id)
        visible = self._apply_msd(inc, call, sig, now, reasons)
        if visible:
            return self._emit(inc, Outcome.new_revision, reasons, now)
        if reasons:
            return Decision(outcome=Outcome.duplicate, reasons=tuple(reasons), incident_id=inc.id)
        return _about(_DUP_RESEND, inc.id)

    def _apply_msd(
        self, inc: _Incident, call: _Call, sig: MsdSignal, now: float, reasons: list[Reason]
    ) -> bool:
        """Fold an MSD of one of the incident's calls into it; True when receivers should see a revision."""
        msd = sig.msd
        visible = False
        if now > inc.last_at:  # noqa: PLR1730 - max() without the call
            inc.last_at = now
        if now > call.last_at:  # noqa: PLR1730 - max() without the call
            call.last_at = now
        call.shown = None  # any field of the call may change below
        mid = msd.msd.msd_structure.message_identifier
        last_mid = call.mid
        min_move = self.policy.position_change_m
        # Most MSDs of an open call are plain retransmissions: compare first, derive only on change.
        changes = msd_changes(inc.msd, msd, min_move)
        if changes:
            evidence = inc.evidence.merge(self._evidence(msd)[0])
            if evidence != inc.evidence:
                inc.evidence = evidence
                visible = True  # the severity may change; _emit rescores
        if msd.automatic and not inc.automatic:
            inc.automatic = True
            inc.escalation_due = None
            inc.flags.pop(_ESC_PENDING, None)
            inc.flags.pop(_ESC_HELD.code, None)
            reasons.append(_UPGRADED)
            visible = True
            calls = inc.calls
            if call is not calls[0]:
                # The automatic call becomes the primary: the call block says automatic, from one call.
                calls.remove(call)
                calls.insert(0, call)
        if inc.is_test and not msd.test:
            inc.is_test = False
            reasons.append(_NOT_TEST)
            self._vehicles.setdefault((inc.vkey, False), _Vehicle(inc))
            if not inc.automatic:
                self._arm_escalation(inc, now)
            visible = True
        if sig.callback and sig.callback != call.callback:
            # Only this call's number changes: another provider's never leaks into the primary's.
            call.callback = sig.callback
            reasons.append(_CALLBACK_CHANGED)
            visible = True
        if mid < last_mid:
            # A late older MSD: its evidence is kept (above), its position and fields are not.
            reasons.extend(_OUT_OF_ORDER)
            return visible
        call.mid = mid
        call.version = msd.version
        if sig.lang:
            call.lang = sig.lang
        act = _activation(msd)
        if act not in (call.activation, "test") and (act == "automatic" or call.activation == "test"):
            call.activation = act  # an automatic call stays automatic in a later manual MSD
        if changes:
            inc.msd = msd
            reasons.extend(changes)
            visible = True
            new_pos = msd_position(msd)
            newer = inc.position_sent_at is None or sig.sent_at >= inc.position_sent_at
            trust_ok = inc.position is None or new_pos is None or new_pos.trusted or not inc.position.trusted
            moved = new_pos is not None and bool(position_changes(inc.position, new_pos, min_move))
            if moved and newer and trust_ok:
                inc.position = new_pos
                inc.position_sent_at = sig.sent_at
        elif visible:
            inc.msd = msd
        return visible

    def _new_incident(
        self,
        sig: MsdSignal,
        ck: CallKey,
        vkey: bytes,
        now: float,
        veh: _Vehicle | None,
        *,
        generation: int = 0,
        after_close: bool = False,
    ) -> Decision:
        policy = self.policy
        # The generation tells apart two incidents of one call opened at the same receipt time.
        iid = keys.incident_id(self._id_key, vkey, sig.tps, sig.call_id, now, generation)
        msd = sig.msd
        evidence, sev_real, sev_test = self._evidence(msd)
        inc = _Incident(iid, vkey, sig, now, generation, evidence)
        test = inc.is_test
        sev = sev_test if test else sev_real
        if sev is not None:
            inc.severity = sev
            inc.scored = evidence
            inc.scored_test = test
        self._incidents[iid] = inc
        self._calls[ck] = inc
        reasons: list[Reason] = [_NEW_CALL]
        storm_reason: Reason | None = None
        if after_close:
            reasons.append(_REDIAL_AFTER_CLOSE)
        if test:
            reasons.append(_TEST)
        else:
            # False-trigger checks: each is a reason; none drops the activation. Every rule decides
            # itself whether it applies (false_triggers.py).
            flags = inc.flags
            for r in msd_time_reasons(msd, now, policy):
                flags[r.code] = r
            for r in position_reasons(msd):
                flags[r.code] = r
            times = veh.manual_times if veh is not None else ()
            if not inc.automatic:
                if times:
                    window = policy.manual_burst_window_s
                    times = (*(t for t in times if now - t <= window), now)
                else:
                    times = (now,)
                for r in manual_burst_reason(len(times), policy):
                    flags[r.code] = r
            storm = self._storms.get(sig.tps)
            if storm is None:
                storm = self._storms[sig.tps] = StormDetector(policy)
            stormy = storm.observe(now)
            recent = self._recent.get(sig.tps)
            if recent is None:
                recent = self._recent[sig.tps] = deque()
            horizon = now - policy.storm_window_s
            while recent and recent[0].received_at < horizon:
                recent.popleft()
            recent.append(inc)
            if stormy and self._storm_quiet.get(sig.tps, -math.inf) < now:
                storm_reason = stormy[0]
                flags[_STORM] = storm_reason
            self._link_scene(inc, now)
            if inc.automatic:
                reasons.append(_AUTO_PSAP)
            else:
                self._arm_escalation(inc, now)
            if veh is None:
                veh = self._vehicles[(vkey, False)] = _Vehicle(inc)
            veh.incident = inc
            veh.manual_times = times
        if test:
            if veh is None:
                self._vehicles[(vkey, True)] = _Vehicle(inc)
            else:
                veh.incident = inc
        self._fold_orphans(inc, ck, now, reasons)
        # The decision shows every suspicion and the escalation plan, not only the snapshot.
        d = self._emit(inc, Outcome.new_incident, reasons, now, with_flags=True)
        if storm_reason is None:
            return d
        also = self._storm_join(inc, storm_reason, now)
        # Most members of a long storm cause nothing further (the aggregate's throttle).
        return dataclasses.replace(d, also=also) if also else d

    # --- storms -------------------------------------------------------------------------------------

    def _storm_join(self, inc: _Incident, reason: Reason, now: float) -> tuple[Decision, ...]:
        """``inc`` is flagged as part of a provider storm: add it to the provider's aggregate.

        When the storm is new, it is seen in hindsight too: the provider's incidents of the storm
        window opened before it was recognised join it, and those still waiting for an operator
        (manual, not at a PSAP) are held like later members. An automatic one is only flagged: it is
        at its PSAP already (safety invariant), the operator decides.
        """
        tps = inc.tps
        window = self.policy.storm_window_s
        storm = self._storm_of.get(tps)
        out: list[Decision] = []
        if storm is None or storm.closed or now - storm.last_at > window:
            generation = 0
            sid = self._storm_id(tps, now, generation)
            while sid in self._storm_ids:  # one closed at this very time: unique, still deterministic
                generation += 1
                sid = self._storm_id(tps, now, generation)
            storm = self._storm_of[tps] = self._storm_ids[sid] = _Storm(sid, tps, now)
            horizon = now - window
            incidents = self._incidents
            for other in self._recent.get(tps, ()):
                if (
                    other is inc
                    or other.closed
                    or other.received_at < horizon
                    or _STORM in other.flags  # a member of an earlier storm
                    or incidents.get(other.id) is not other  # pruned meanwhile
                ):
                    continue
                storm.members.append(other.id)
                other.flags[_STORM] = _STORM_HINDSIGHT
                if other.automatic or other.escalated or self._has_psap(other):
                    continue  # flagged for its next revision; it is where it must be
                self._arm_escalation(other, now)
                out.append(self._emit(other, Outcome.new_revision, [_STORM_HINDSIGHT], now))
            first = True
        else:
            first = False
        members = storm.members
        members.append(inc.id)
        storm.last_at = now
        n = len(members)
        if first or n <= _STORM_EVERY or n & (n - 1) == 0:
            # Each member revises the aggregate up to 64 members, then each doubling does: a flood of
            # thousands would otherwise rewrite an ever longer list per member. Every member's own
            # revision carries the storm flag meanwhile, and the actions act on every member.
            outcome = Outcome.new_incident if first else Outcome.new_revision
            out.append(self._storm_emit(storm, outcome, [reason] if first else [_STORM_MEMBER, reason], now))
        return tuple(out)

    def _storm_id(self, tps: str, now: float, generation: int) -> str:
        # Keyed like incident ids, from the provider and the time the storm was recognised.
        return STORM_PREFIX + keys.incident_id(self._id_key, b"storm", tps, "", now, generation)[4:]

    def _storm_emit(self, storm: _Storm, outcome: Outcome, reasons: list[Reason], now: float) -> Decision:
        # The aggregate goes to the operator desk only: it is the desk's tool, no PSAP's business.
        storm.revision += 1
        if storm.status not in _CLOSED_STATUSES:
            storm.status = "open" if storm.revision == 1 else "updated"
        rs = tuple(reasons)
        snap = storm.shown = IncidentSnapshot(
            incident_id=storm.id,
            revision=storm.revision,
            status=storm.status,
            severity=_STORM_SEVERITY,
            tps=storm.tps,
            vehicle="",
            call_id="",
            automatic=False,
            test=False,
            received_at=storm.received_at,
            updated_at=now,
            reasons=rs,
            members=tuple(storm.members),
        )
        route = Route(receiver=self.policy.operator_receiver, incident_id=storm.id, revision=storm.revision)
        return Decision(outcome=outcome, reasons=rs, incident=snap, routes=(route,), incident_id=storm.id)

    def _storm_action(self, sid: str, action: str, now: float) -> Decision:
        """``confirm_storm``: the held members (manual, not at a PSAP) are cancelled as false
        triggers; ``dismiss_storm``: the members lose the storm flag, held ones escalate by timer
        again, and the provider is not flagged for one storm window. Automatic members are never
        touched: they are at their PSAP, and an operator cancels them one by one."""
        storm = self._storm_ids.get(sid)
        if storm is None:
            return _UNKNOWN_INCIDENT
        if action not in ("confirm_storm", "dismiss_storm"):
            return _about(_STORM_ONLY, sid)
        if storm.closed:
            return _plain(Outcome.rejected, (_CLOSED,), sid)
        storm.closed = True
        out: list[Decision] = []
        confirm = action == "confirm_storm"
        if not confirm:
            self._storm_quiet[storm.tps] = now + self.policy.storm_window_s
        for mid in storm.members:
            m = self._incidents.get(mid)
            if m is None or m.closed:
                continue
            if not confirm:
                m.flags.pop(_STORM, None)
            if m.automatic or m.is_test or self._has_psap(m):
                continue
            if confirm:
                out.append(self._close(m, "cancelled", Outcome.cancelled, _STORM_CANCELLED, now))
            else:
                m.flags.pop(_ESC_HELD.code, None)
                self._arm_escalation(m, now)  # held still if another suspicion holds it
                out.append(self._emit(m, Outcome.new_revision, [_STORM_RELEASED], now))
        storm.status = "resolved" if confirm else "cancelled"
        d = self._storm_emit(
            storm,
            Outcome.resolved if confirm else Outcome.cancelled,
            [_STORM_CONFIRMED if confirm else _STORM_DISMISSED],
            now,
        )
        return dataclasses.replace(d, also=tuple(out))

    def _arm_escalation(self, inc: _Incident, now: float) -> None:
        if inc.acked or inc.escalated or inc.automatic or inc.is_test:
            return
        flags = inc.flags
        if flags and any(c in _HOLDING_OR_CANCEL for c in flags):
            inc.escalation_due = None
            inc.flags.pop(_ESC_PENDING, None)
            inc.flags[_ESC_HELD.code] = _ESC_HELD
            return
        due_at = inc.received_at + self.policy.escalation_delay_s
        inc.escalation_due = due_at
        inc.flags[_ESC_PENDING] = self._esc_pending
        self._timer_seq += 1
        heapq.heappush(self._timers, (due_at, self._timer_seq, inc.id))

    def _link_scene(self, inc: _Incident, now: float) -> None:
        # Several vehicles (or devices) reporting one crash: same scene, each its own incident.
        pos = inc.position
        if pos is None:
            return
        lat, lon = pos.lat, pos.lon
        # Cells are twice the scene radius on each side, so the disc around the point lies in the
        # point's cell and the neighbours on the sides of the nearer edges: 2 x 2 cells to look at.
        y = lat / self._cell_deg
        ci = math.floor(y)
        grid = self._grid
        best: _Incident | None = None
        horizon = now - self.policy.scene_window_s
        limit = self.policy.scene_distance_m
        widths = self._row_widths
        home: _Cell | None = None
        for row in (ci, ci - 1 if y - ci < 0.5 else ci + 1):
            x = lon / (widths.get(row) or self._row_width(row))
            cj = math.floor(x)
            cn = cj - 1 if x - cj < 0.5 else cj + 1
            if -_CELL_HALF < cj < _CELL_HALF - 1:  # _cell(), inlined: both columns pack into an int
                base = row * _CELL_SPAN + _CELL_HALF
                cells: tuple[_Cell, _Cell] = (base + cj, base + cn)
            else:
                cells = (_cell(row, cj), _cell(row, cn))
            if home is None:  # the first cell looked at is the point's own
                home = cells[0]
            for cell in cells:
                for other in grid.get(cell, ()):
                    op = other.position
                    if other.closed or other.last_at < horizon or op is None:
                        continue
                    if distance_m(lat, lon, op.lat, op.lon) > limit:
                        continue
                    if best is None or (other.received_at, other.id) < (best.received_at, best.id):
                        best = other
        if home is None:  # pragma: no cover - the loop above always runs
            return
        cell_list = grid.get(home)
        if cell_list is None:
            grid[home] = [inc]
        else:
            cell_list.append(inc)
        if best is not None:
            inc.scene_id = best.scene_id
            inc.flags["scene_linked"] = _SCENE_LINKED

    def _row_width(self, row: int) -> float:
        """Longitude width in degrees of one latitude row's cells (at least twice the scene radius).

        Longitudes are not wrapped at ±180°: scenes across the antimeridian are not linked.
        """
        w = self._row_widths.get(row)
        if w is None:
            cd = self._cell_deg
            # The pole-ward edge is the narrowest: size the row's cells for it.
            edge = max(abs(row * cd), abs((row + 1) * cd))
            w = self._row_widths[row] = min(360.0, cd / max(math.cos(math.radians(min(edge, 90.0))), 1e-6))
        return w

    # --- cancel and position ------------------------------------------------------------------------

    def _on_cancel(self, sig: CancelSignal, now: float) -> Decision:
        ck: CallKey = (sig.tps, sig.vehicle, sig.call_id)
        inc = self._calls.get(ck)
        if inc is None:
            self._orphans.setdefault(ck, []).append((sig, now))
            return _ORPHAN_DECISION
        fp = ("cancel", sig.sent_at, sig.reason)  # dedup.fingerprint, inlined
        if fp == inc.fp0 or (inc.seen is not None and fp in inc.seen):
            return Decision(outcome=Outcome.duplicate, reasons=_EXACT_REPEAT, incident_id=inc.id)
        self._remember(inc, fp)
        self._touch(inc, sig, now)
        reasons: list[Reason] = []
        outcome = self._apply_cancel(inc, sig, now, reasons)
        if outcome is None:
            return Decision(outcome=Outcome.duplicate, reasons=tuple(reasons), incident_id=inc.id)
        return self._emit(inc, outcome, reasons, now)

    def _apply_cancel(
        self, inc: _Incident, sig: CancelSignal, now: float, reasons: list[Reason]
    ) -> Outcome | None:
        """Fold a vehicle cancel into an incident; the outcome, or None when nothing changed."""
        if now > inc.last_at:  # noqa: PLR1730 - max() without the call
            inc.last_at = now
        if inc.closed:
            reasons.append(_CLOSED)
            return None
        if _CANCEL_REQ in inc.flags:
            reasons.extend(_CANCEL_REPEAT)
            return None
        why = f" ({sig.reason})" if sig.reason else ""
        in_grace = now - inc.received_at <= self.policy.cancel_grace_s
        if inc.is_test or (not inc.automatic and not self._has_psap(inc) and in_grace):
            # A mistaken press cancelled at once, never seen by a PSAP: close without an operator.
            inc.status = "cancelled"
            inc.closed = True
            inc.escalation_due = None
            reasons.append(
                self._cancel_in_grace
                if not why
                else _r(
                    _CANCEL_IN_GRACE,
                    f"cancelled by the vehicle within {self.policy.cancel_grace_s:.0f} s{why}",
                )
            )
            return Outcome.cancelled
        # Automatic, already at a PSAP, or late: automation does not retract it; an operator decides.
        req = inc.flags[_CANCEL_REQ] = (
            _CANCEL_REQUESTED
            if not why
            else _r(_CANCEL_REQ, f"the vehicle cancelled{why}: {_CANCEL_REQUESTED_TEXT}")
        )
        reasons.append(req)
        if not inc.automatic and not self._has_psap(inc):
            self._arm_escalation(inc, now)
        return Outcome.cancel_requested

    def _on_position(self, sig: PositionSignal, now: float) -> Decision:
        ck: CallKey = (sig.tps, sig.vehicle, sig.call_id)
        inc = self._calls.get(ck)
        if inc is None:
            self._orphans.setdefault(ck, []).append((sig, now))
            return _ORPHAN_DECISION
        p = sig.position
        fp = ("position", sig.sent_at, p.lat, p.lon, p.trusted, p.at)  # dedup.fingerprint, inlined
        if fp == inc.fp0 or (inc.seen is not None and fp in inc.seen):
            return Decision(outcome=Outcome.duplicate, reasons=_EXACT_REPEAT, incident_id=inc.id)
        self._remember(inc, fp)
        self._touch(inc, sig, now)
        reasons: list[Reason] = []
        if self._apply_position(inc, sig, now, reasons):
            return self._emit(inc, Outcome.new_revision, reasons, now)
        return Decision(outcome=Outcome.duplicate, reasons=tuple(reasons), incident_id=inc.id)

    def _touch(self, inc: _Incident, sig: Signal, now: float) -> None:
        # The signal belongs to its call: the call's last signal time follows it.
        call = self._call_of(inc, sig.tps, sig.vehicle, sig.call_id)
        if now > call.last_at:
            call.last_at = now
            call.shown = None

    def _apply_position(self, inc: _Incident, sig: PositionSignal, now: float, reasons: list[Reason]) -> bool:
        if now > inc.last_at:  # noqa: PLR1730 - max() without the call
            inc.last_at = now
        if inc.closed:
            reasons.append(_CLOSED)
            return False
        if inc.position_sent_at is not None and sig.sent_at < inc.position_sent_at:
            reasons.extend(_POS_OLDER)
            return False
        new = sig.position
        if inc.position is not None and inc.position.trusted and not new.trusted:
            reasons.extend(_POS_UNTRUSTED)
            return False
        changes = position_changes(inc.position, new, self.policy.position_change_m)
        if not changes:
            reasons.extend(_POS_SAME)
            return False
        inc.position = new
        inc.position_sent_at = sig.sent_at
        reasons.extend(changes)
        return True

    def _fold_orphans(self, inc: _Incident, ck: CallKey, now: float, reasons: list[Reason]) -> None:
        # Cancels and positions that overtook their call's MSD are applied now, in arrival order.
        pending = self._orphans.pop(ck, None)
        if not pending:
            return
        for sig, at in pending:
            fp = fingerprint(sig)
            if self._was_seen(inc, fp):
                continue
            self._remember(inc, fp)
            self._touch(inc, sig, max(at, now))
            if isinstance(sig, CancelSignal):
                self._apply_cancel(inc, sig, max(at, now), reasons)
            elif isinstance(sig, PositionSignal):
                self._apply_position(inc, sig, max(at, now), reasons)

    # --- revisions and routes -----------------------------------------------------------------------

    def _close(
        self, inc: _Incident, status: Status, outcome: Outcome, reason: Reason, now: float
    ) -> Decision:
        inc.status = status
        inc.closed = True
        inc.escalation_due = None
        inc.flags.pop(_ESC_PENDING, None)
        inc.flags.pop(_ESC_HELD.code, None)
        return self._emit(inc, outcome, [reason], now)

    def _has_psap(self, inc: _Incident) -> bool:
        special = self._non_psap
        return any(r not in special for r in inc.receivers)

    def _route(self, inc: _Incident, reasons: list[Reason]) -> None:
        policy = self.policy
        receivers = inc.receivers
        # Receivers are added in the order test | operator, PSAP; the lists are short.
        if inc.is_test:
            name = policy.test_receiver
            if name not in receivers:
                receivers.append(name)
            return
        operator = policy.operator_receiver
        if inc.automatic or inc.escalated:
            pos = inc.position
            psap, fallback = self._router.psap_for(None if pos is None else (pos.lat, pos.lon))
            if psap not in receivers:
                reason = self._route_reasons.get((psap, fallback))
                if reason is None:
                    reason = self._route_reasons[(psap, fallback)] = (
                        _r("routed_psap_fallback", f"position outside every PSAP area or unknown: {psap}")
                        if fallback
                        else _r("routed_psap_area", f"PSAP responsible for the position: {psap}")
                    )
                reasons.append(reason)
                if operator not in receivers:
                    receivers.append(operator)
                if psap not in receivers:  # the PSAP may be named like the operator desk
                    receivers.append(psap)
                return
        if operator not in receivers:
            receivers.append(operator)

    def _emit(
        self,
        inc: _Incident,
        outcome: Outcome,
        reasons: list[Reason],
        now: float,
        *,
        with_flags: bool = False,
        everyone: bool = True,
    ) -> Decision:
        """A new revision of ``inc``, to every receiver that has it (or only to the operator desk
        when ``everyone`` is false: what the others were told did not change)."""
        if inc.status not in _CLOSED_STATUSES:
            inc.status = "open" if inc.revision == 0 else "updated"
        inc.revision += 1
        if now > inc.last_at:  # noqa: PLR1730 - max() without the call, on every revision
            inc.last_at = now
        if not inc.closed or not inc.receivers:
            # A closed incident keeps its receivers; one closed at birth (its cancel came first)
            # still goes to the operator, so nothing disappears unseen.
            had = len(inc.receivers)
            self._route(inc, reasons)
            if len(inc.receivers) != had:
                everyone = True  # a receiver that is new to the incident gets it
        if inc.severity is None or inc.scored is not inc.evidence or inc.scored_test != inc.is_test:
            # Rescore only when the evidence object changed (merge returns the same one otherwise).
            key = (inc.evidence, inc.is_test)
            sev = self._severity_cache.get(key)
            if sev is None:
                if len(self._severity_cache) > 4096:
                    self._severity_cache.clear()
                sev = self._severity_cache[key] = score(
                    inc.evidence, test=inc.is_test, asi15_high=self.policy.asi15_high
                )
            inc.severity = sev
            inc.scored = inc.evidence
            inc.scored_test = inc.is_test
        flags = inc.flags
        if with_flags and flags:
            if len(reasons) == 1:
                code = reasons[0].code
                reasons.extend([r for c, r in flags.items() if c != code])
            else:
                codes = {r.code for r in reasons}
                reasons.extend([r for c, r in flags.items() if c not in codes])
            rs = tuple(reasons)
            shown = rs  # every flag is among the reasons already
        else:
            rs = tuple(reasons)
            if flags:
                codes = {r.code for r in rs}
                shown = rs + tuple([r for c, r in flags.items() if c not in codes])
            else:
                shown = rs
        inc.shown = shown
        inc.updated_at = now
        inc.shown_calls = tuple([c.frozen() for c in inc.calls])
        snap = self._snapshot(inc, shown, now)
        iid, rev = inc.id, inc.revision
        receivers = inc.receivers
        if not everyone and self.policy.operator_receiver in receivers:
            receivers = [self.policy.operator_receiver]
        routes = tuple([Route(receiver=r, incident_id=iid, revision=rev) for r in receivers])
        return Decision(outcome=outcome, reasons=rs, incident=snap, routes=routes, incident_id=iid)

    @staticmethod
    def _snapshot(inc: _Incident, shown: tuple[Reason, ...], updated_at: float) -> IncidentSnapshot:
        sev = inc.severity
        if sev is None:  # pragma: no cover - every emitted incident was scored
            raise AssertionError("incident emitted without a severity")
        calls = inc.shown_calls
        primary = calls[0]  # the snapshot's call fields are the primary call's, all of them
        return IncidentSnapshot(
            incident_id=inc.id,
            revision=inc.revision,
            status=inc.status,
            severity=sev,
            tps=primary.tps,
            vehicle=primary.vehicle,
            call_id=primary.call_id,
            automatic=inc.automatic,
            test=inc.is_test,
            received_at=inc.received_at,
            updated_at=updated_at,
            msd=inc.msd,
            position=inc.position,
            callback=primary.callback,
            lang=primary.lang,
            scene_id=inc.scene_id,
            reasons=shown,
            calls=calls,
        )

    @staticmethod
    def _remember(inc: _Incident, fp: Hashable) -> None:
        # Most incidents see one signal: the first fingerprint lives in a slot, a set comes later.
        if inc.fp0 is None:
            inc.fp0 = fp
        elif inc.seen is None:
            inc.seen = {fp}
        elif len(inc.seen) < _SEEN_LIMIT:
            inc.seen.add(fp)

    @staticmethod
    def _was_seen(inc: _Incident, fp: Hashable) -> bool:
        return fp == inc.fp0 or (inc.seen is not None and fp in inc.seen)

    def _evidence(self, msd: Msd) -> tuple[Evidence, Severity | None, Severity | None]:
        """Evidence of one MSD, with its severities (non-test, test) when they come from the cache.

        The common case (no additional data) depends on six fields only: evidence and severity
        are shared from a small cache, which spares most new incidents the scoring.
        """
        m = msd.msd
        if m.optional_additional_data is not None:
            return evidence_from_msd(msd), None, None
        s = m.msd_structure
        p = s.vehicle_propulsion_storage_type
        key = (
            s.control.automatic_activation,
            s.control.vehicle_type,
            s.number_of_passengers,
            p.hydrogen_storage,
            p.compressed_natural_gas or p.liquid_propane_gas,
            p.electric_energy_storage,
        )
        hit = self._evidence_cache.get(key)
        if hit is None:
            if len(self._evidence_cache) > 4096:
                self._evidence_cache.clear()
            e = evidence_from_msd(msd)
            asi = self.policy.asi15_high
            hit = self._evidence_cache[key] = (
                e,
                score(e, asi15_high=asi),
                score(e, test=True, asi15_high=asi),
            )
        return hit
