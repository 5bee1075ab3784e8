"""The sequencer: while this replica leads, give every journal row its place in the triage order.

Any replica stores what it receives as an unsequenced journal row (``intake.py``). The leader
(``leadership.py``) rebuilds triage state by replaying the sequenced journal (the same replay as a
single gateway's start), then loops: take the rows nobody sequenced yet, triage them in order
through the ordinary pipeline steps (`Pipeline.signal_unit`, `action_unit`, `tick_unit`,
`prune_unit`), and write the decisions with the rows' sequence numbers in one transaction fenced
by the leader's epoch. Timer ticks and prunes are the leader's own rows in the same order.

Triage runs before its commit, so a failed commit leaves the engine ahead of the store: the
sequencer then drops the engine and, if it still leads, rebuilds it from the journal. A fenced
commit (another replica leads) wrote nothing; this replica steps down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from ecallgw.config import PipelineConfig
from ecallgw.errors import StoreError
from ecallgw.gateway.leadership import Leadership
from ecallgw.gateway.pipeline import Pipeline
from ecallgw.gateway.records import OutboxItem, Unit
from ecallgw.gateway.store.postgres import DB_ERRORS, FencedError, PostgresStore
from ecallgw.triage import Decision

__all__ = ["Sequencer"]

log = logging.getLogger("ecallgw.sequencer")

_FAILED: tuple[type[BaseException], ...] = (StoreError, *DB_ERRORS)  # a commit or read that failed
_POLL_S = 0.5  # fallback when a NOTIFY is missed (listener reconnecting)
_RETRY_MIN_S = 0.5  # after a failed commit, the first pause before rebuilding (doubling while it repeats)
_RETRY_MAX_S = 5.0
_YIELD_ROWS = 100  # rows triaged between two yields to the event loop


class Sequencer:
    """Sequence the shared journal while this replica leads.

    Args:
        config: the ``[pipeline]`` table (tick and prune intervals).
        store: the PostgreSQL store.
        leadership: tells whether and under which epoch this replica leads.
        make_pipeline: a pipeline with a fresh triage engine (one per term of leadership).
        batch: most journal rows per transaction.
        clock: wall clock (epoch seconds).
    """

    def __init__(
        self,
        config: PipelineConfig,
        store: PostgresStore,
        leadership: Leadership,
        make_pipeline: Callable[[], Pipeline],
        *,
        batch: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = store
        self._leadership = leadership
        self._make_pipeline = make_pipeline
        self._batch = batch
        self._clock = clock
        self._wake = asyncio.Event()
        self.pipeline: Pipeline | None = None
        self.sequenced = 0
        self.terms = 0
        self.first_decision_s: float | None = None  # leadership won -> first decision, last term
        # Set by the replica's heartbeat: True while no other replica is alive. The sequencer then
        # claims what it writes and hands it to this replica's forwarder at once (one hop and a
        # claim query less per delivery); with others alive, entries are left for every claimer.
        self.claim_own = False
        self.deliver: Callable[[list[OutboxItem]], None] | None = None

    def wake(self) -> None:
        """New journal rows were stored (a NOTIFY): look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Lead whenever this replica is elected, until cancelled."""
        failing = ""  # the kind of the last commit failure: said once while it repeats
        sequenced_at_failure = -1
        pause = _RETRY_MIN_S
        while True:
            epoch = await self._leadership.wait_leading()
            try:
                await self._lead(epoch)
            except FencedError as exc:
                log.warning("sequencer fenced: another replica leads", extra={"error": str(exc)})
                self._leadership.step_down("fenced")
            except _FAILED as exc:
                # The engine may be ahead of the store: rebuilt from the journal on the next try.
                kind = str(
                    getattr(exc.__cause__, "sqlstate", None)
                    or getattr(exc, "sqlstate", None)
                    or type(exc).__name__
                )
                if self.sequenced != sequenced_at_failure:
                    failing = ""  # rows were sequenced since the last failure: a new episode
                sequenced_at_failure = self.sequenced
                if kind != failing:
                    log.error("sequencer commit failed; rebuilding triage state", extra={"error": str(exc)})
                    failing, pause = kind, _RETRY_MIN_S
                else:  # the same again (a full or read-only server): quieter, and less often
                    log.debug("sequencer commit failed again", extra={"error": str(exc)})
                    pause = min(_RETRY_MAX_S, pause * 2)  # each retry replays the journal window
                await asyncio.sleep(pause)
            except Exception:
                # Never the daemon's end: another replica can lead meanwhile (this one steps down).
                log.exception("sequencer failed; stepping down and rebuilding")
                self._leadership.step_down("sequencer failed")
                await asyncio.sleep(0.5)
            finally:
                self.pipeline = None
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A cancellation can surface as a driver error (a rollback on a closed
                # connection); it must still end the task, or a stop would wait for ever.
                raise asyncio.CancelledError

    async def _lead(self, epoch: int) -> None:
        pipeline = self._make_pipeline()
        t0 = time.monotonic()
        replayed = await pipeline.replay()
        self.pipeline = pipeline
        self.terms += 1
        log.info(
            "sequencer state rebuilt from the journal",
            extra={"epoch": epoch, "journal_entries": replayed, "seconds": round(time.monotonic() - t0, 3)},
        )
        won = self._leadership.since or time.monotonic()
        first = True
        last_now = 0.0
        next_tick = time.monotonic() + self._config.tick_interval_s
        next_prune = time.monotonic() + self._config.prune_interval_s
        lost = asyncio.ensure_future(self._leadership.wait_lost(epoch))
        try:
            async with self._store.pool.acquire() as conn:
                while self._leadership.epoch == epoch:
                    self._wake.clear()
                    rows = await self._store.unsequenced(conn, self._batch)
                    if self._leadership.epoch != epoch:
                        return
                    units: list[Unit] = []
                    decided: list[list[Decision]] = []
                    mono = time.monotonic()
                    if mono >= next_tick:
                        next_tick = mono + self._config.tick_interval_s
                        last_now = max(last_now, self._clock())
                        unit, ds = pipeline.tick_unit(last_now)
                        if unit is not None:
                            units.append(unit)
                            decided.append(ds)
                    for i, row in enumerate(rows, 1):
                        if i % _YIELD_ROWS == 0:
                            await asyncio.sleep(0)  # the lease renewal runs on this loop too
                        # Replicas' clocks and commit order differ a little: triage's clock only
                        # moves forward, and replay uses the same value (stored as now_at).
                        last_now = max(last_now, row.at)
                        if row.raw is not None:
                            unit, d = pipeline.signal_unit(row.raw, last_now, row.id)
                        else:
                            assert row.action is not None
                            unit, d = pipeline.action_unit(row.action, last_now, journal_id=row.id)
                        units.append(unit)
                        decided.append([d] if d is not None else [])
                    if mono >= next_prune:
                        next_prune = mono + self._config.prune_interval_s
                        last_now = max(last_now, self._clock())
                        units.append(pipeline.prune_unit(last_now))
                        decided.append([])
                    if units:
                        claim = self.claim_own and self.deliver is not None
                        results = await self._store.commit_sequenced(conn, units, epoch, claim=claim)
                        for ds, result in zip(decided, results, strict=True):
                            pipeline.committed(ds, result)
                        if claim and self.deliver is not None:
                            self.deliver([item for r in results for item in r.outbox])
                        self.sequenced += len(rows)
                        if first and rows:
                            first = False
                            self.first_decision_s = time.monotonic() - won
                            log.info(
                                "first decision as sequencer",
                                extra={
                                    "event": "first_decision",
                                    "epoch": epoch,
                                    "since_elected_s": round(self.first_decision_s, 3),
                                },
                            )
                    if len(rows) < self._batch:
                        timeout = max(0.0, min(_POLL_S, next_tick - time.monotonic()))
                        waker = asyncio.ensure_future(self._wake.wait())
                        try:
                            await asyncio.wait(
                                (waker, lost), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                            )
                        finally:
                            waker.cancel()
        finally:
            lost.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lost
