"""Intake on a replica of a PostgreSQL store: validate, store in the shared journal, acknowledge.

The counterpart of `Pipeline` for replicas (docs/scaling.md): a signal over HTTP is decoded here
only to refuse and quarantine what cannot be decoded (the provider learns at once, as with one
gateway; over MQTT the sequencer quarantines it), then appended to the journal unsequenced in the
next group commit, and acknowledged once that commit is durable. Triage happens on the sequencer,
whichever replica leads. An HTTP answer and an operator action wait, bounded by
``store.decision_wait_s``, for the sequencer's decision; past that the answer says what is certain:
stored (202), decision pending.

Transport copies (an MQTT redelivery, an HTTP retry) that reach this replica are recognised by
digest like in `Pipeline`; copies that reach two replicas are recognised by the sequencer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from ecallgw.config import PipelineConfig
from ecallgw.errors import StoreError
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.pipeline import ActionResult, Ingested, Pipeline, quarantine_unit
from ecallgw.gateway.records import KINDS, ActionRecord, RawSignal, Unit
from ecallgw.gateway.store.postgres import PostgresStore

__all__ = ["Decisions", "Intake"]

log = logging.getLogger("ecallgw.intake")


class Decisions:
    """Waiters for the sequencer's decision on journal rows this replica stored."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._waiting: dict[int, list[asyncio.Future[dict[str, Any]]]] = {}
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """Rows were sequenced somewhere (a NOTIFY): look for ours."""
        self._wake.set()

    async def wait(self, journal_id: int, timeout_s: float) -> dict[str, Any] | None:
        """The decision on one row, or None if none came within ``timeout_s``."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(journal_id, []).append(fut)
        self._wake.set()
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        except TimeoutError:
            return None
        finally:
            futs = self._waiting.get(journal_id)
            if futs is not None and fut in futs:
                futs.remove(fut)
                if not futs:
                    del self._waiting[journal_id]

    async def run(self) -> None:
        """Resolve waiters as their rows are sequenced (NOTIFY, with a short poll as fallback)."""
        while True:
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            with_timeout = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait([with_timeout], timeout=0.1)
            finally:
                with_timeout.cancel()
            self._wake.clear()
            ids = list(self._waiting)
            if not ids:
                continue
            try:
                found = await self._store.results(ids)
            except StoreError as exc:
                log.warning("cannot read decisions", extra={"error": str(exc)})
                await asyncio.sleep(0.5)
                continue
            for jid, result in found.items():
                for fut in self._waiting.pop(jid, []):
                    if not fut.done():
                        fut.set_result(result)


class Intake:
    """What sources and the operator API call on a replica (the `Pipeline` entry points).

    Args:
        config: the ``[pipeline]`` table (dedup window).
        store: the PostgreSQL store.
        metrics: the gateway's metrics.
        decisions: where answers wait for the sequencer.
        decision_wait_s: how long an answer waits for a decision.
        clock: wall clock.
    """

    def __init__(
        self,
        config: PipelineConfig,
        store: PostgresStore,
        metrics: Metrics,
        decisions: Decisions,
        *,
        decision_wait_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._decisions = decisions
        self._wait_s = decision_wait_s
        self._clock = clock
        self._seen: collections.OrderedDict[bytes, asyncio.Future[Ingested]] = collections.OrderedDict()
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.processed = 0
        self.on_bcall: Callable[[RawSignal], asyncio.Future[Ingested]] | None = None  # issue 14
        # Receivers that are not a PSAP (the operator API's at_psap); the application sets the
        # policy's names (the sequencer's pipeline knows them; this replica may not lead).
        self.non_psap: tuple[str, ...] = ("operator", "test")

    async def submit(self, raw: RawSignal) -> asyncio.Future[Ingested]:
        """Store a raw signal; the future resolves once it is durable (fails if it could not be)."""
        if raw.kind == "bcall" and self.on_bcall is not None:  # a breakdown: never triaged (issue 14)
            return self.on_bcall(raw)
        m = self._metrics
        m.received(raw.transport, raw.kind if raw.kind in KINDS else "invalid")
        original = self._seen.get(raw.digest)
        failed = (
            original is not None
            and original.done()
            and (original.cancelled() or original.exception() is not None)
        )
        if original is not None and not failed:
            m.signals_duplicate.labels(raw.transport).inc()
            return asyncio.ensure_future(_copy_of(original))
        fut: asyncio.Future[Ingested] = asyncio.get_running_loop().create_future()
        self._remember(raw.digest, fut)
        self._outstanding += 1
        self._idle.clear()
        fut.add_done_callback(self._settled)
        try:
            if raw.transport == "http":
                # An HTTP provider is answered 400 for what cannot be decoded, as by one gateway;
                # over MQTT nobody waits for that, and the sequencer decodes (and quarantines)
                # anyway: decoding twice would cost every signal an MSD decode more.
                Pipeline.decode(raw)
        except Exception as exc:  # counted, logged and kept, as by Pipeline
            unit, error = quarantine_unit(raw, exc, m)
            _chain(
                self._store.commit_nowait(unit), fut, lambda _: Ingested(outcome="quarantined", error=error)
            )
            return fut
        _chain(self._store.append_nowait(raw), fut, lambda jid: Ingested(outcome="stored", journal_id=jid))
        return fut

    def _settled(self, fut: asyncio.Future[Ingested]) -> None:
        self._outstanding -= 1
        self.processed += 1
        if fut.cancelled() or fut.exception() is not None:
            for digest, value in list(self._seen.items()):
                if value is fut:
                    del self._seen[digest]
        if not self._outstanding:
            self._idle.set()

    def _remember(self, digest: bytes, fut: asyncio.Future[Ingested]) -> None:
        self._seen[digest] = fut
        self._seen.move_to_end(digest)
        if len(self._seen) > self._config.dedup_window:
            self._seen.popitem(last=False)

    @property
    def queued(self) -> int:
        """Signals waiting for their commit."""
        return self._outstanding

    async def drained(self) -> None:
        """Wait until every submitted signal is stored (or failed)."""
        await self._idle.wait()

    async def answer(self, ingested: Ingested) -> Ingested:
        """Wait (bounded) for the sequencer's decision on a stored signal, for the HTTP answer."""
        if ingested.journal_id is None or ingested.error is not None:
            return ingested
        found = await self._decisions.wait(ingested.journal_id, self._wait_s)
        if found is None:
            return ingested
        outcome = str(found.get("outcome") or "stored")
        return Ingested(
            outcome="redelivered" if ingested.outcome == "redelivered" else outcome,
            incident_id=found.get("incident_id"),
            journal_id=ingested.journal_id,
        )

    async def action(
        self, incident_id: str, action: str, *, actor: str, role: str, note: str
    ) -> ActionResult:
        """Journal an operator action for the sequencer; answer with its decision (bounded wait).

        Raises:
            StoreError: the action could not be stored.
        """
        record = ActionRecord(
            incident_id=incident_id, action=action, actor=actor, role=role, note=note, at=self._clock()
        )
        jid = await self._store.append_nowait(action=record)
        found = await self._decisions.wait(jid, self._wait_s)
        if found is None:
            return ActionResult(
                outcome="queued",
                reasons=(("decision_pending", "stored; the sequencer has not decided yet"),),
                revision=None,
            )
        return ActionResult(
            outcome=str(found.get("outcome", "")),
            reasons=tuple((str(c), str(t)) for c, t in found.get("reasons", [])),
            revision=found.get("revision"),
        )

    async def audit_view(
        self, incident_id: str, *, actor: str, role: str, action: str = "view", note: str = ""
    ) -> None:
        """Write who viewed personal data to the audit log (not journaled), as `Pipeline.audit_view`."""
        if not self._store.writable:  # a view that cannot be audited is refused, at once
            raise StoreError(f"the store is not writable: {self._store.unwritable_reason}")
        now = self._clock()
        record = ActionRecord(
            incident_id=incident_id, action=action, actor=actor, role=role, note=note, at=now
        )
        await self._store.commit(Unit(journal_type=None, at=now, action=record, audit_outcome="viewed"))


def _chain(
    stored: asyncio.Future[Any], fut: asyncio.Future[Ingested], make: Callable[[Any], Ingested]
) -> None:
    def done(s: asyncio.Future[Any]) -> None:
        if fut.done():
            return
        if s.cancelled():
            fut.cancel()
        elif (exc := s.exception()) is not None:
            fut.set_exception(exc)  # the source must not acknowledge it
        else:
            fut.set_result(make(s.result()))

    stored.add_done_callback(done)


async def _copy_of(original: asyncio.Future[Ingested]) -> Ingested:
    first = await asyncio.shield(original)
    # A copy of a quarantined payload is refused like the original (HTTP 400), not accepted.
    return Ingested(
        outcome="redelivered", incident_id=first.incident_id, error=first.error, journal_id=first.journal_id
    )
