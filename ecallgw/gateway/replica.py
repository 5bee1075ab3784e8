"""What every replica on a PostgreSQL store runs beside intake (docs/scaling.md).

- **Listener**: one connection LISTENing to the store's channels; a NOTIFY wakes the sequencer (new
  journal rows), the decision waiters (rows sequenced), the claimer (new outbox entries) and the
  operator stream's fan-out (new revisions). After a reconnect everything is woken once, and each
  also polls, so a NOTIFY lost in between only delays.
- **Claimer**: claims due outbox entries with a lease and hands them to this replica's forwarder;
  renews the leases of what it still holds.
- **Fan-out**: new revisions, whichever replica's sequencer wrote them, to this replica's SSE
  subscribers, in their global order.
- **Heartbeat and lag**: the replica's row in ``replicas``; the sequencer lag gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ecallgw.errors import StoreError
from ecallgw.gateway.forwarder import Forwarder
from ecallgw.gateway.intake import Decisions
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.sequencer import Sequencer
from ecallgw.gateway.sinks.operator_stream import OperatorStream
from ecallgw.gateway.store.postgres import (
    CHANNEL_JOURNAL,
    CHANNEL_OUTBOX,
    CHANNEL_REPLICAS,
    CHANNEL_REVISIONS,
    CHANNEL_SEQUENCED,
    PostgresStore,
)
from ecallgw.gateway.store.protocol import RevisionRow

__all__ = ["Replica"]

log = logging.getLogger("ecallgw.replica")


class Replica:
    """The replica's background work; run `run` in the application's TaskGroup.

    Args:
        store: the PostgreSQL store.
        forwarder: this replica's forwarder (claimed entries go there).
        stream: this replica's operator stream (SSE).
        sequencer: woken by new journal rows.
        decisions: woken by sequenced rows.
        metrics: lag gauges and claim counters.
        receivers: names of the receivers this replica delivers to.
        lease_s: the sequencer lease (the heartbeat's period).
        outbox_lease_s: the claims' lease (renewed every third of it).
    """

    def __init__(
        self,
        store: PostgresStore,
        forwarder: Forwarder,
        stream: OperatorStream,
        sequencer: Sequencer,
        decisions: Decisions,
        metrics: Metrics,
        *,
        receivers: list[str],
        lease_s: float,
        outbox_lease_s: float,
    ) -> None:
        self._store = store
        self._forwarder = forwarder
        self._stream = stream
        self._sequencer = sequencer
        self._decisions = decisions
        self._metrics = metrics
        self._receivers = receivers
        self._lease_s = lease_s
        self._outbox_lease_s = outbox_lease_s
        self._outbox = asyncio.Event()
        self._revisions = asyncio.Event()
        self._replicas = asyncio.Event()
        self.listening = asyncio.Event()
        self.claimed = 0

    async def run(self) -> None:
        """Run every loop until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._listen(), name="listen")
            tg.create_task(self._decisions.run(), name="decisions")
            tg.create_task(self._loop(self._claim, self._outbox, 1.0), name="claim")
            tg.create_task(self._loop(self._renew, None, self._outbox_lease_s / 3), name="renew")
            tg.create_task(self._fan_out(), name="fan-out")
            tg.create_task(self._loop(self._heartbeat, None, self._lease_s), name="heartbeat")
            tg.create_task(self._loop(self._lag, None, 1.0), name="lag")
            tg.create_task(self._loop(self._count_replicas, self._replicas, 1.0), name="replicas")

    def _wake_all(self) -> None:
        self._sequencer.wake()
        self._decisions.notify()
        self._outbox.set()
        self._revisions.set()
        self._replicas.set()

    async def _listen(self) -> None:
        handlers: dict[str, Callable[[], None]] = {
            CHANNEL_JOURNAL: self._sequencer.wake,
            CHANNEL_SEQUENCED: self._decisions.notify,
            CHANNEL_OUTBOX: self._outbox.set,
            CHANNEL_REVISIONS: self._revisions.set,
            CHANNEL_REPLICAS: self._replicas.set,
        }
        delay = 0.1
        while True:
            conn: Any = None
            lost = asyncio.Event()
            try:
                conn = await self._store.connect("listen")
                conn.add_termination_listener(lambda _c, ev=lost: ev.set())
                for channel, handler in handlers.items():
                    await conn.add_listener(channel, lambda _c, _pid, _ch, _payload, h=handler: h())
                self.listening.set()
                delay = 0.1
                self._wake_all()  # catch up with what was committed while not listening
                while not lost.is_set():
                    # A connection killed under us may not say so until it is used.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(2.0):
                            await lost.wait()
                    if not lost.is_set():
                        await conn.fetchval("SELECT 1")
            except Exception as exc:  # the server went away: listen again after a pause
                log.warning("store listener lost its connection", extra={"error": str(exc)})
            finally:
                self.listening.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)

    async def _loop(self, step: Callable[[], Any], event: asyncio.Event | None, period_s: float) -> None:
        """Run ``step`` when ``event`` is set or every ``period_s``; store errors only delay it."""
        while True:
            try:
                again = await step()
            except StoreError as exc:
                log.warning("replica task failed; retrying", extra={"task": step.__name__, "error": str(exc)})
                again = False
            if again:
                continue
            if event is None:
                await asyncio.sleep(period_s)
                continue
            # NOTIFYs that arrive while a round runs set the event once: they make one round.
            # (A 5 ms pause to gather more cost 5 ms of latency per delivery and saved nothing
            # measurable: bench/scale_out.py.)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period_s):
                    await event.wait()
            event.clear()

    async def _claim(self) -> bool:
        items = await self._store.claim_outbox(self._receivers, 500)
        if items:
            self.claimed += len(items)
            self._metrics.outbox_claimed.inc(len(items))
            self._forwarder.add(items)
        return len(items) == 500

    async def _renew(self) -> bool:
        ids = self._forwarder.pending_ids()
        if ids:
            await self._store.renew_claims(ids)
        return False

    async def _heartbeat(self) -> bool:
        async def fn(conn: Any) -> None:
            await conn.execute(
                "UPDATE replicas SET seen_at = extract(epoch from clock_timestamp()) WHERE replica_id = $1",
                self._store.replica_id,
            )

        await self._store.run(fn)
        return False

    async def _count_replicas(self) -> bool:
        # Alone, the sequencer here delivers what it decides without a claim round (Sequencer);
        # a replica that starts says so (NOTIFY), one that died ages out once its claims may have
        # lapsed (`PostgresStore.live_replicas`).
        self._sequencer.claim_own = await self._store.live_replicas() <= 1
        return False

    async def _lag(self) -> bool:
        rows, age = await self._store.sequencer_lag()
        self._metrics.sequencer_lag_rows.set(rows)
        self._metrics.sequencer_lag_seconds.set(age)
        self.lag_s = age
        return False

    lag_s = 0.0

    async def _fan_out(self) -> None:
        last: int | None = None
        while True:
            try:
                if last is None or not self._stream.subscribers:
                    # Nobody listens here: skip the revisions (decoding their snapshots costs CPU
                    # per revision per replica); a client that subscribes reads its backlog itself.
                    last = await self._store.last_stream_seq()
                while self._stream.subscribers:
                    events = await self._store.stream_after(last, 500)  # revisions and desk changes
                    for event in events:
                        if isinstance(event, RevisionRow):
                            self._stream.publish(event.seq, event.snapshot)
                        else:
                            self._stream.publish_desk(event.seq, event.record)
                        last = event.seq
                    if len(events) < 500:
                        break
            except StoreError as exc:
                log.warning("operator stream fan-out failed; retrying", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._revisions.wait()
            self._revisions.clear()
