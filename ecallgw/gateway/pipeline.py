"""The pipeline: decode → triage → one store transaction (journal + revision + outbox) → acknowledge.

Sources `submit` raw signals into a bounded queue (they wait while it is full) and get a future that
resolves once the signal is durably stored; only then do they acknowledge (MQTT PUBACK, HTTP 202).
One consumer decodes and triages in arrival order and queues the unit of work for the store's next
group commit without waiting for it, so decoding the next signal overlaps the commit. The number of
units queued but not committed is bounded too.

Triage is called synchronously together with queueing the store write, by every caller (signals,
operator actions, timer ticks, prunes), so the journal order is exactly the order the engine saw.
That is what makes `replay` at start-up exact: a fresh engine fed the journal with each entry's stored
``now`` rebuilds the same state. Replay writes nothing: journal rows and their decisions (revisions,
outbox entries) were committed in one transaction, so nothing a replay could produce is missing,
and what it produces under a changed policy must not be sent (the receivers had their chance when
the signal came). It reads only the window triage keeps state for (`Store.replay_after`).

Transport duplicates (the same bytes under the same topic again: an MQTT redelivery after a lost
PUBACK, an HTTP client retrying) are recognised by digest and acknowledged once the original is
stored, without being triaged twice.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ecallgw.codecs.caller import LINK_POSITION, decode_link_position
from ecallgw.codecs.envelope import ENVELOPE_KEYS, MAX_ENVELOPE_BYTES, decode_envelope, decode_raw_msd
from ecallgw.config import PipelineConfig
from ecallgw.errors import DecodeError, StoreError
from ecallgw.gateway.desk import Desk, unknown_incident
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.records import (
    DESK_ACTIONS,
    ENVELOPE_KINDS,
    KINDS,
    OPERATOR_ACTIONS,
    ActionRecord,
    CommitResult,
    DecisionRecord,
    DeskRecord,
    JournalRow,
    QuarantineRecord,
    RawSignal,
    Unit,
)
from ecallgw.gateway.slots import Slots
from ecallgw.gateway.store import Store
from ecallgw.model import MsdSignal, Signal
from ecallgw.triage import Decision, TriageEngine
from ecallgw.triage.decision import Outcome

__all__ = ["ActionResult", "Ingested", "Pipeline", "codec_label", "quarantine_unit", "reason_label"]

log = logging.getLogger("ecallgw.pipeline")


@dataclass(frozen=True, slots=True, kw_only=True)
class Ingested:
    """What became of one raw signal once it is stored.

    Attributes:
        outcome: triage's outcome, "quarantined", or "redelivered" (a transport duplicate).
        incident_id: the incident the signal made or changed, when it did.
        error: the decode error of a quarantined signal.
    """

    outcome: str
    incident_id: str | None = None
    error: DecodeError | None = None
    journal_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionResult:
    """What an operator action did, once stored."""

    outcome: str
    reasons: tuple[tuple[str, str], ...]
    revision: int | None


OnCommit = Callable[[CommitResult], None]


_CODECS = frozenset({"envelope", "msd", "nmea", "topic", "internal"})
_ENVELOPE_PATHS = ENVELOPE_KEYS | {"kind", "tps", "vehicle"}
_SEGMENT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")
_INDEX = re.compile(r"\[\d+\]")


def codec_label(err: DecodeError) -> str:
    return err.codec if err.codec in _CODECS else "other"


def reason_label(err: DecodeError) -> str:
    """The ``reason`` label of a decode error: a bounded set the sender cannot extend.

    ``DecodeError.reason`` is prose with values in it. The field path is schema-bounded for the MSD
    (the decoder walks the ASN.1 schema) and NMEA (field names of the parser), once indices such as
    ``sentence[17]`` are dropped; for the envelope only the contract's keys count. Anything else
    is "other".
    """
    if not err.path:
        return "input"
    segments = _INDEX.sub("", err.path).split(".")[:2]
    if not all(_SEGMENT.fullmatch(s) for s in segments):
        return "other"
    if err.codec == "envelope" and segments[0] not in _ENVELOPE_PATHS:
        return "other"
    if err.codec not in _CODECS:
        return "other"
    return ".".join(segments)


QUARANTINE_PREFIX_BYTES = 1024
"""What quarantine keeps of a payload over ``MAX_ENVELOPE_BYTES`` (with its size in the reason)."""


def quarantine_unit(raw: RawSignal, exc: Exception, metrics: Metrics) -> tuple[Unit, DecodeError]:
    """Count and log a signal that could not be decoded (or broke triage); the unit that keeps it.

    Codecs raise only DecodeError and triage nothing, by contract; should either break it, the
    signal is kept in quarantine with the error (codec ``internal``) rather than crash-looping the
    daemon.
    """
    if not isinstance(exc, DecodeError):
        log.exception("internal error on a signal; kept in quarantine", extra={"source": raw.source})
        exc = DecodeError("internal", f"{type(exc).__name__}: {exc}"[:500])
    metrics.decode_errors.labels(codec_label(exc), reason_label(exc)).inc()
    size = len(raw.payload)
    log.warning(
        "signal quarantined",
        extra={
            "transport": raw.transport,
            "source": raw.source,
            "codec": exc.codec,
            "error": str(exc),
            "bytes": size,
        },
    )
    reason = exc.reason
    if size > MAX_ENVELOPE_BYTES:
        # Over the envelope limit: whatever it is, it is not a signal; keeping it whole would let a
        # sender fill the store. Its size and a prefix (enough to tell what was sent) are kept.
        raw = replace(raw, payload=raw.payload[:QUARANTINE_PREFIX_BYTES])
        reason = f"{reason} (payload of {size} bytes: its first {QUARANTINE_PREFIX_BYTES} kept)"
    unit = Unit(
        journal_type=None,
        at=raw.received_at,
        quarantine=QuarantineRecord(signal=raw, codec=exc.codec, reason=reason, path=exc.path),
    )
    return unit, exc


class Pipeline:
    """The stage between sources and the store.

    Args:
        config: the ``[pipeline]`` table.
        store: the store.
        engine: a fresh triage engine (rebuilt by `replay` before anything is submitted).
        metrics: the gateway's metrics.
        on_commit: called with every commit's result (the forwarder and the operator stream listen).
        clock: wall clock (epoch seconds).
        confirm_on_commit: receivers that have a revision once it is committed (operator stream).
    """

    def __init__(
        self,
        config: PipelineConfig,
        store: Store,
        engine: TriageEngine,
        metrics: Metrics,
        on_commit: OnCommit,
        *,
        clock: Callable[[], float] = time.time,
        confirm_on_commit: frozenset[str] = frozenset(),
    ) -> None:
        self._config = config
        self._at_commit = confirm_on_commit
        self._store = store
        self.engine = engine
        self._metrics = metrics
        self._on_commit = on_commit
        self._clock = clock
        self._queue: asyncio.Queue[tuple[RawSignal, asyncio.Future[Ingested]]] = asyncio.Queue(
            config.queue_size
        )
        self._uncommitted = Slots(config.queue_size)
        # digest -> the original's result (a future until it is committed)
        self._seen: collections.OrderedDict[bytes, asyncio.Future[Ingested] | Ingested] = (
            collections.OrderedDict()
        )
        self.processed = 0
        self.replayed = 0
        self._outstanding = 0  # submitted and not yet stored (or failed)
        self._task: asyncio.Task[Any] | None = None
        self._fatal: BaseException | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        # Bound methods made once for every signal's futures, not once per signal (the cyclic
        # collector walks each object still alive at its next pass: heap.py).
        self._settled_cb = self._settled
        self._stored_cb = self._stored
        # Breakdown calls (kind bcall) go to the assistance dispatcher (gateway/caller_api.py).
        self.on_bcall: Callable[[RawSignal], asyncio.Future[Ingested]] | None = None
        self._holding = False  # `run` took a signal from the queue and has not processed it yet
        self._resume = asyncio.Event()  # cleared while `swap_engine` holds triage between two signals
        self._resume.set()
        self.replayed_seq = 0  # the last journal row `replay` read
        self.desk = Desk()  # claims, acks, notes (issue 13): rebuilt by replay like triage's state

    # --- entry points ---------------------------------------------------------------------------

    async def submit(self, raw: RawSignal) -> asyncio.Future[Ingested]:
        """Queue a raw signal (waiting while the queue is full).

        Returns:
            A future resolved with `Ingested` once the signal is stored; failed with `StoreError`
            if it could not be.
        """
        if raw.kind == "bcall" and self.on_bcall is not None:  # a breakdown: never triaged (issue 14)
            return self.on_bcall(raw)
        fut: asyncio.Future[Ingested] = asyncio.get_running_loop().create_future()
        if self._fatal is not None:
            raise StoreError(f"stopping: a commit failed ({self._fatal})") from self._fatal
        task = self._task
        if (
            task is not None
            and not task.done()
            and not self._holding
            and self._resume.is_set()
            and self._queue.empty()
            and self._uncommitted.try_acquire()
        ):
            # Nothing queued ahead of it and `run` holds nothing (it may have been handed a slot
            # for its signal and not yet resumed: `_holding`): processing it here keeps the
            # arrival order and saves the queue's hand-off between two tasks.
            self._outstanding += 1
            self._idle.clear()
            fut.add_done_callback(self._settled_cb)
            try:
                self._process(raw, fut)
            except BaseException as exc:
                self._uncommitted.release()
                fut.cancel()  # not stored: never acknowledged
                self._fail(exc)  # what `run` would do: fail-stop
                raise StoreError(f"stopping: {exc!r}") from exc
            return fut
        await self._queue.put((raw, fut))
        self._outstanding += 1
        self._idle.clear()
        fut.add_done_callback(self._settled_cb)
        return fut

    def _settled(self, _: asyncio.Future[Ingested]) -> None:
        self._outstanding -= 1
        if not self._outstanding:
            self._idle.set()

    @property
    def queued(self) -> int:
        """Signals waiting for decode and triage."""
        return self._queue.qsize()

    async def drained(self) -> None:
        """Wait until every submitted signal is stored (for a graceful stop, after intake stopped)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Consume the queue until cancelled.

        Raises:
            StoreError: a commit failed. Triage has already seen what could not be stored, so the
                only consistent way on is to stop; the next start replays the journal and the broker
                redelivers what was not acknowledged (fail-stop). A full or read-only disk is not
                such a failure: the store holds those commits until they go through (sqlite.py).
        """
        self._task = asyncio.current_task()
        try:
            while True:
                raw, fut = await self._queue.get()
                self._holding = True
                try:
                    await self._uncommitted.acquire()
                    try:
                        if not self._resume.is_set():
                            await self._resume.wait()  # a policy swap (`swap_engine`) takes a moment
                        self._process(raw, fut)
                    except BaseException:
                        self._uncommitted.release()
                        raise
                finally:
                    self._holding = False
        except asyncio.CancelledError:
            if self._fatal is not None:
                raise StoreError(f"stopping: a commit failed ({self._fatal})") from self._fatal
            raise

    async def _commit_or_stop(self, unit: Unit) -> CommitResult:
        try:
            return await self._store.commit(unit)
        except StoreError as exc:
            self._fail(exc)  # triage already applied it: same fail-stop as for signals
            raise

    def _writable_or_refuse(self) -> None:
        if not self._store.writable:
            raise StoreError(f"the store is not writable: {self._store.unwritable_reason}")

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
            log.critical(
                "store commit failed: stopping (restart replays the journal)", extra={"error": str(exc)}
            )
            if self._task is not None:
                self._task.cancel()

    async def action(
        self, incident_id: str, action: str, *, actor: str, role: str, note: str
    ) -> ActionResult:
        """Apply an operator action: triage it, journal and audit it, and route any new revision.

        Returns:
            The outcome once it is stored (also for rejected actions: the audit keeps those too).

        Raises:
            StoreError: the store cannot write now (full, read-only): refused before triage sees it.
        """
        self._writable_or_refuse()
        await self._resume.wait()
        now = self._clock()
        record = ActionRecord(
            incident_id=incident_id, action=action, actor=actor, role=role, note=note, at=now
        )
        unit, decision = self.action_unit(record, now)
        result = await self._commit_or_stop(unit)
        self.committed((decision,), result)
        snap = decision.incident
        return ActionResult(
            outcome=str(decision.outcome),
            reasons=tuple((r.code, r.text) for r in decision.reasons),
            revision=snap.revision if snap is not None else None,
        )

    @property
    def non_psap(self) -> tuple[str, ...]:
        """Receivers that are not a PSAP (the operator desk, tests): the queue's ``at_psap``."""
        policy = self.engine.policy
        return (policy.operator_receiver, policy.test_receiver)

    # --- the steps a sequencer on PostgreSQL takes (gateway/sequencer.py) ------------------------

    def action_unit(
        self, record: ActionRecord, now: float, journal_id: int | None = None
    ) -> tuple[Unit, Decision]:
        """Triage an operator action: the unit that journals (or sequences) and audits it.

        Desk actions (claim, release, note; issue 13) change no revision: they are decided here
        against the desk's state (`_Desk`, rebuilt by replay like triage's) and written as desk
        changes; the others are triage's, plus the desk changes they imply (an ack, a note).
        """
        decision, desk = self._act(record, now)
        verb = record.action.partition(":")[0]
        self._metrics.operator_actions.labels(
            verb if verb in OPERATOR_ACTIONS else "other", str(decision.outcome)
        ).inc()
        unit = Unit(
            journal_type="action",
            at=now,
            action=record,
            decisions=self._records(decision, now),
            audit_outcome=str(decision.outcome),
            confirm_on_commit=self._at_commit,
            journal_id=journal_id,
            outcome=str(decision.outcome),
            desk=desk,
        )
        return unit, decision

    def _act(self, record: ActionRecord, now: float) -> tuple[Decision, tuple[DeskRecord, ...]]:
        """Decide one operator action: ``verb`` or ``verb:argument`` (``claim:NAME`` assigns,
        ``cancel:REASON`` says why), with its note (journaled as it came: replay decides alike)."""
        verb, _, arg = record.action.partition(":")
        iid, actor, note = record.incident_id, record.actor, record.note
        desk = self.desk
        if verb in DESK_ACTIONS:
            if self.engine.get(iid) is None:
                return unknown_incident(iid), ()
            return desk.act(iid, verb, arg, actor, note, now)
        decision = self.engine.on_operator_action(iid, verb, now=now, actor=actor)
        if decision.outcome in (Outcome.rejected, Outcome.unknown_incident):
            return decision, ()
        # Accepted: a human has the incident in hand (acked), and its note travels with the
        # revision the action made, and with every later one (`_record`).
        changes: list[DeskRecord] = []
        if note:
            desk.notes[iid] = note
            changes.append(desk.record(iid, "note", actor, now, text=note))
        if iid not in desk.acked:
            desk.acked.add(iid)
            changes.append(desk.record(iid, "ack", actor, now))
        return decision, tuple(changes)

    def signal_unit(self, raw: RawSignal, now: float, journal_id: int) -> tuple[Unit, Decision | None]:
        """Triage a signal an intake stored (journal row ``journal_id``): the unit that sequences it.

        A transport copy of a signal already sequenced (the same bytes received by two replicas)
        is sequenced as ``redelivered``, which replay skips; a row that does not decode (intake over
        MQTT leaves decoding to the sequencer: only an HTTP provider waits for a 400), or that
        triage fails on, as ``quarantined``: kept in quarantine by the same commit, skipped by replay.
        """
        if raw.digest in self._seen:
            self._metrics.signals_duplicate.labels(raw.transport).inc()
            return Unit(
                journal_type="signal", at=now, signal=raw, journal_id=journal_id, outcome="redelivered"
            ), None
        self._remember(raw.digest, Ingested(outcome="redelivered"))
        try:
            decision = self.engine.on_signal(self.decode(raw), now=now)
        except Exception as exc:  # kept in quarantine by the same commit; replay skips the row
            quarantined, _ = quarantine_unit(raw, exc, self._metrics)
            unit = Unit(
                journal_type="signal",
                at=now,
                signal=raw,
                journal_id=journal_id,
                outcome="quarantined",
                quarantine=quarantined.quarantine,
            )
            return unit, None
        unit = Unit(
            journal_type="signal",
            at=now,
            signal=raw,
            decisions=self._records(decision, now),
            confirm_on_commit=self._at_commit,
            journal_id=journal_id,
            outcome=str(decision.outcome),
        )
        return unit, decision

    def tick_unit(self, now: float) -> tuple[Unit | None, list[Decision]]:
        """Fire due timers; the unit journaling the tick (None when nothing was due)."""
        decisions = self.engine.due(now)
        if not decisions:
            return None, []  # a tick that changed nothing need not be replayed
        unit = Unit(
            journal_type="tick",
            at=now,
            decisions=tuple(r for d in decisions for r in self._records(d, now)),
            confirm_on_commit=self._at_commit,
        )
        return unit, decisions

    def prune_unit(self, now: float) -> Unit:
        """Forget old triage state; the unit journaling it, so that a replay forgets it at the same point."""
        self.engine.prune(now)
        self.desk.prune(self.engine)
        return Unit(journal_type="prune", at=now)

    def committed(
        self, decisions: tuple[Decision | None, ...] | list[Decision], result: CommitResult
    ) -> None:
        """What follows a commit of decisions: count them, tell the listeners."""
        for d in decisions:
            if d is not None:
                self._count(d)
        self._notify(result)

    async def audit_view(
        self, incident_id: str, *, actor: str, role: str, action: str = "view", note: str = ""
    ) -> None:
        """Write who viewed personal data, what and when, to the audit log (not journaled).

        Args:
            incident_id: the incident viewed, or "" for a view of many (list, stream, quarantine).
            actor: the token's name.
            role: the token's role.
            action: what was viewed: "view" (one incident), "list", "subscribe", "quarantine".
            note: the view's parameters and the ids it returned.

        Raises:
            StoreError: the store cannot write now: a view that cannot be audited is refused.
        """
        self._writable_or_refuse()
        now = self._clock()
        record = ActionRecord(
            incident_id=incident_id, action=action, actor=actor, role=role, note=note, at=now
        )
        await self._store.commit(Unit(journal_type=None, at=now, action=record, audit_outcome="viewed"))

    async def tick(self) -> int:
        """Fire due triage timers (escalations) and journal the tick; returns decisions made."""
        if not self._store.writable or not self._resume.is_set():
            return 0  # held commits (or a policy swap) first: the timers fire at the next tick
        unit, decisions = self.tick_unit(self._clock())
        if unit is None:
            return 0
        result = await self._commit_or_stop(unit)
        self.committed(decisions, result)
        return len(decisions)

    async def prune(self) -> int:
        """Forget old triage state, journaled so that a replay forgets it at the same point."""
        if not self._store.writable or not self._resume.is_set():
            return 0
        now = self._clock()
        dropped = self.engine.prune(now)
        await self._store.commit(Unit(journal_type="prune", at=now))
        return dropped

    async def answer(self, ingested: Ingested) -> Ingested:
        """What an HTTP provider is told: here, triage decided before the commit, so as it is."""
        return ingested

    async def run_timers(self) -> None:
        """Tick and prune on their intervals until cancelled."""
        last_prune = time.monotonic()
        while True:
            await asyncio.sleep(self._config.tick_interval_s)
            await self.tick()
            if time.monotonic() - last_prune >= self._config.prune_interval_s:
                last_prune = time.monotonic()
                await self.prune()

    # --- replay ---------------------------------------------------------------------------------

    @property
    def state_window_s(self) -> float:
        """How far back triage state can reach: its lifetime plus one prune interval."""
        return self.engine.policy.state_lifetime_s + self._config.prune_interval_s

    async def replay(self, chunk: int = 2000, *, report: bool = True) -> int:
        """Rebuild triage state from the journal (call once, before sources start).

        Only the window triage keeps state for is read (`Store.replay_after`), and nothing is
        written: journal and decisions were committed in one transaction, so no decision of a
        journaled signal can be missing, and a decision that differs now (a changed policy) must not
        be sent again. Afterwards the engine's revisions are checked against the stored ones; a
        mismatch is logged (ERROR, ``replay_mismatch``): live signals of those incidents would then
        fail to store (fail-stop) rather than overwrite history. ``report=False`` skips that check
        (`swap_engine` makes it itself, once caught up).

        Returns:
            Journal entries replayed.
        """
        now = self._clock()
        window = self.state_window_s
        after = await self._store.replay_after(now - window, window)
        while True:
            rows = await self._store.journal(after, chunk)
            if not rows:
                break
            for i, row in enumerate(rows, 1):
                after = row.seq
                self._replay_row(row)
                if i % _REPLAY_YIELD == 0:
                    # A replica replays while other tasks must run (its sequencer lease is renewed
                    # on this loop): a long replay must not starve them.
                    await asyncio.sleep(0)
            self.replayed += len(rows)
        self.replayed_seq = after
        wrong = await self._differing(now) if report else []
        if wrong:
            log.error(
                "replay rebuilt triage state that differs from the store",
                extra={"event": "replay_mismatch", "count": len(wrong), "incidents": wrong[:10]},
            )
        return self.replayed

    async def _differing(self, now: float) -> list[str]:
        """Incidents whose latest stored revision the engine does not have (a replay under another policy)."""
        stored = await self._store.recent_revisions(now - self.engine.policy.state_lifetime_s)
        return sorted(
            iid
            for iid, revision in stored.items()
            if (snap := self.engine.get(iid)) is None or snap.revision != revision
        )

    async def swap_engine(self, engine: TriageEngine) -> list[str]:
        """Hand triage to a fresh engine (a ``[triage]`` policy reloaded on SIGHUP), without a restart.

        The new engine is given what a start would give it: the journal window replayed under its
        policy, sending nothing. Then, with triage held between two signals (queued ones wait,
        sources keep reading), it replays what was committed meanwhile and takes over. So the
        state after the swap is exactly the one the next start rebuilds: replay stays exact.

        Returns:
            The incidents the new policy would rebuild differently from the store. Then nothing is
            swapped: a live revision of those would collide with a stored one (docs/operations.md,
            Policy change); a restart applies such a policy.

        Raises:
            StoreError: the store cannot be read or is not writable now.
        """
        self._writable_or_refuse()
        shadow = Pipeline(self._config, self._store, engine, self._metrics, _ignore, clock=self._clock)
        await shadow.replay(report=False)  # the bulk, while triage goes on here; compared below
        self._resume.clear()
        try:
            # A read sees every write queued before it (the Store contract): every unit triaged
            # before the hold is in what this reads.
            after = shadow.replayed_seq
            while rows := await self._store.journal(after, 2000):
                for row in rows:
                    after = row.seq
                    shadow._replay_row(row)
            wrong = await shadow._differing(self._clock())
            if not wrong:
                self.engine = engine
            return wrong
        finally:
            self._resume.set()

    def _replay_row(self, row: JournalRow) -> None:
        if row.type == "signal":
            assert row.signal is not None
            raw = row.signal
            self._remember(raw.digest, Ingested(outcome="redelivered"))
            try:
                signal = self.decode(raw)
            except DecodeError as exc:
                # Journaled signals decoded when they came; a codec change since is worth a word.
                log.error("journaled signal no longer decodes", extra={"seq": row.seq, "error": str(exc)})
                return
            self.engine.on_signal(signal, now=row.at)
        elif row.type == "action":
            a = row.action
            assert a is not None
            self._act(a, row.at)  # triage's and the desk's state alike (issue 13)
        elif row.type == "tick":
            self.engine.due(row.at)
        else:
            self.engine.prune(row.at)
            self.desk.prune(self.engine)

    # --- the hot path ---------------------------------------------------------------------------

    def _process(self, raw: RawSignal, fut: asyncio.Future[Ingested]) -> None:
        m = self._metrics
        m.received(raw.transport, raw.kind if raw.kind in KINDS else "invalid")
        original = self._seen.get(raw.digest)
        if original is not None:
            m.signals_duplicate.labels(raw.transport).inc()
            self._uncommitted.release()
            if isinstance(original, asyncio.Future):
                # Acknowledge the copy only once the original is stored (or fail it with it).
                original.add_done_callback(lambda o: _follow(o, fut))
            else:
                _set(fut, _copy_of(original))
            return
        try:
            signal = self.decode(raw)
            decision = self.engine.on_signal(signal, now=raw.received_at)
        except Exception as exc:  # counted, logged and kept (below)
            unit, error = quarantine_unit(raw, exc, m)
            self._submit_unit(unit, fut, Ingested(outcome="quarantined", error=error), None, raw.digest)
            return
        unit = Unit(
            journal_type="signal",
            at=raw.received_at,
            signal=raw,
            decisions=self._records(decision, raw.received_at),
            confirm_on_commit=self._at_commit,
        )
        snap = decision.incident
        # The incident the signal made, changed or joined, also without a revision (issue 12).
        result = Ingested(outcome=str(decision.outcome), incident_id=decision.incident_id)
        announce = None
        if (
            decision.outcome == "new_incident"
            and isinstance(signal, MsdSignal)
            and snap is not None
            and log.isEnabledFor(logging.INFO)  # not built per message for a log that drops it
        ):
            new_incident = {
                "incident": snap.incident_id,
                "tps": raw.tps,
                "severity": snap.severity.level,  # not "level": the line's own
                "score": snap.severity.score,
                "automatic": snap.automatic,
                "test": snap.test,
            }

            def announce() -> None:  # once committed: nothing is logged as done before it is
                log.info("new incident", extra=new_incident)

        self._submit_unit(unit, fut, result, decision, raw.digest, announce)

    def _submit_unit(
        self,
        unit: Unit,
        fut: asyncio.Future[Ingested],
        result: Ingested,
        decision: Decision | None,
        digest: bytes,
        announce: Callable[[], None] | None = None,
    ) -> None:
        stored = self._store.commit_nowait(unit)
        self._remember(digest, fut)
        # A partial rather than a closure: two objects per signal instead of a function and a cell
        # per captured name, all alive until the commit (heap.py).
        stored.add_done_callback(functools.partial(self._stored_cb, fut, result, decision, digest, announce))

    def _stored(
        self,
        fut: asyncio.Future[Ingested],
        result: Ingested,
        decision: Decision | None,
        digest: bytes,
        announce: Callable[[], None] | None,
        s: asyncio.Future[CommitResult],
    ) -> None:
        """The commit of one signal's unit is done (or failed): resolve the signal's future."""
        self._uncommitted.release()
        self.processed += 1
        if s.cancelled():
            fut.cancel()
            return
        exc = s.exception()
        if exc is not None:
            self._seen.pop(digest, None)
            if not fut.done():
                fut.set_exception(exc)  # the source must not acknowledge it
            self._fail(exc)
            return
        try:
            if decision is not None:
                self._count(decision)
            if announce is not None:
                announce()
            self._remember(digest, result)
            self._notify(s.result())
        finally:
            # Stored is stored: the source acknowledges whatever a listener did, or MQTT
            # intake (bounded in-flight) would stall on a future never resolved.
            _set(fut, result)

    def _notify(self, result: CommitResult) -> None:
        try:
            self._on_commit(result)
        except Exception:
            # The commit stands; what a listener missed (e.g. outbox entries for the forwarder)
            # is in the store and picked up at the next start.
            log.exception("a commit listener failed", extra={"event": "on_commit_failed"})

    @staticmethod
    def decode(raw: RawSignal) -> Signal:
        """Decode a raw signal by its kind; only `DecodeError` for bad input."""
        if raw.kind == "msd_raw":
            return decode_raw_msd(
                raw.tps, raw.vehicle, raw.call_id or "", raw.payload, sent_at=raw.received_at
            )
        if raw.kind == LINK_POSITION:  # a caller's browser position (issue 14)
            return decode_link_position(raw.tps, raw.vehicle, raw.payload)
        if raw.kind not in ENVELOPE_KINDS:
            raise DecodeError("topic", f"not an ingest topic or path: {raw.source[:100]!r}", path="kind")
        return decode_envelope(raw.kind, raw.tps, raw.vehicle, raw.payload)

    def _records(self, decision: Decision, now: float) -> tuple[DecisionRecord, ...]:
        # A decision may carry further ones the same input caused (a storm seen in hindsight).
        if not decision.also:
            return (self._record(decision, now),)
        return (self._record(decision, now), *(self._record(d, now) for d in decision.also))

    def _record(self, decision: Decision, now: float) -> DecisionRecord:
        snap = decision.incident
        due: float | None = None
        if snap is not None:
            # The desk's note travels with every revision from the one after it (issue 13).
            note = self.desk.notes.get(snap.incident_id) if self.desk.notes else None
            if note is not None and snap.operator_note != note:
                snap = replace(snap, operator_note=note)
            for r in snap.reasons:
                if r.code == _ESCALATION_PENDING:  # the engine's timer, for the operator list
                    due = snap.received_at + self.engine.policy.escalation_delay_s
        return DecisionRecord(
            outcome=str(decision.outcome),
            reasons=decision.reasons,
            snapshot=snap,
            routes=decision.routes,
            signal_at=now,
            incident_id=decision.incident_id,
            escalation_due_at=due,
        )

    def _count(self, decision: Decision) -> None:
        m = self._metrics
        m.outcome(str(decision.outcome), decision.reasons[0].code if decision.reasons else "none")
        snap = decision.incident
        if decision.outcome == "new_incident" and snap is not None:
            m.new_incident(snap.severity.level)
        for more in decision.also:  # a storm seen in hindsight: outcomes only (an aggregate is no incident)
            m.outcome(str(more.outcome), more.reasons[0].code if more.reasons else "none")

    def _remember(self, digest: bytes, value: asyncio.Future[Ingested] | Ingested) -> None:
        seen = self._seen
        seen[digest] = value
        seen.move_to_end(digest)
        if len(seen) > self._config.dedup_window:
            seen.popitem(last=False)


_REPLAY_YIELD = 200  # journal rows replayed between two yields to the event loop
_ESCALATION_PENDING = "escalation_pending"  # triage's reason while a manual call's timer runs


def _ignore(_: CommitResult) -> None:
    """A shadow pipeline's commit listener: it never commits."""


def _set(fut: asyncio.Future[Ingested], value: Ingested) -> None:
    if not fut.done():
        fut.set_result(value)


def _follow(original: asyncio.Future[Ingested], copy: asyncio.Future[Ingested]) -> None:
    if copy.done():
        return
    # The original was not stored, so neither is the copy: the source must not acknowledge it.
    if original.cancelled():
        copy.cancel()
        return
    exc = original.exception()
    if exc is not None:
        copy.set_exception(exc)
        return
    copy.set_result(_copy_of(original.result()))


def _copy_of(original: Ingested) -> Ingested:
    # A copy of a quarantined payload is refused like the original (HTTP 400), not accepted.
    return Ingested(outcome="redelivered", incident_id=original.incident_id, error=original.error)
