"""Who sequences: one replica at a time, chosen by an advisory lock and kept honest by a lease.

The lock (``pg_try_advisory_lock`` on a connection of its own) goes with its session: a replica
that dies (kill -9, machine loss) drops its connection and the lock with it, and the next
candidate to try takes over within a poll interval. A frozen or partitioned leader keeps its
connection and its lock, so the leader also renews a lease row every ``lease_s / 5``; a candidate
that finds the lease older than ``lease_s`` terminates the old leader's sessions (all of them: one
could be inside a sequencer transaction holding the lease row) and takes the lock.

Each new leader bumps the lease's epoch. Every sequencer transaction locks the lease row and
checks that epoch first (``store/postgres.py`` ``write_units``), so a leader that wakes after it
was replaced can write nothing: the epoch is the fencing token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ecallgw.errors import StoreError
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.store.postgres import DB_ERRORS, PostgresStore

__all__ = ["LOCK_KEY", "Leadership"]

log = logging.getLogger("ecallgw.leadership")

LOCK_KEY = 0x65_63_61_6C  # "ecal": the sequencer's advisory lock (below 2**31: classid 0 in pg_locks)
_POLL_S = 0.25  # how often a candidate tries the lock: bounds the failover after a crash

_DB_ERRORS: tuple[type[BaseException], ...] = (*DB_ERRORS, StoreError)


class Leadership:
    """Campaign for the sequencer's lock; hold it with a lease; know the epoch while leading.

    Args:
        store: the PostgreSQL store (connections of its own are opened from its DSN).
        replica_id: this replica's name, written into the lease.
        lease_s: a lease not renewed for this long is taken over.
        metrics: leader gauge, renewals, takeovers.
    """

    def __init__(self, store: PostgresStore, replica_id: str, lease_s: float, metrics: Metrics) -> None:
        self._store = store
        self.replica_id = replica_id
        self.lease_s = lease_s
        self._metrics = metrics
        self._conn: Any = None
        self.epoch: int | None = None
        self.since: float | None = None  # monotonic time leadership was won
        self._changed = asyncio.Event()

    @property
    def leading(self) -> bool:
        """True while this replica holds the lock and its lease is current."""
        return self.epoch is not None

    async def wait_leading(self) -> int:
        """Wait until this replica leads; returns its epoch."""
        while self.epoch is None:
            self._changed.clear()
            await self._changed.wait()
        return self.epoch

    async def wait_lost(self, epoch: int) -> None:
        """Wait until the leadership of ``epoch`` ends."""
        while self.epoch == epoch:
            self._changed.clear()
            await self._changed.wait()

    async def run(self) -> None:
        """Campaign and renew until cancelled; lead whenever possible."""
        try:
            while True:
                if self.epoch is None:
                    try:
                        await self._campaign()
                    except _DB_ERRORS as exc:
                        log.warning("sequencer campaign failed", extra={"error": str(exc)})
                        await self._drop_conn()
                    await asyncio.sleep(_POLL_S if self.epoch is None else self.lease_s / 5)
                else:
                    try:
                        await self._renew()
                    except Exception:  # never the daemon's end: lose the lease, campaign again
                        log.exception("sequencer lease renewal failed")
                        self.step_down("renewal failed")
                    await asyncio.sleep(self.lease_s / 5)
        finally:
            self._lose("stopping")
            await self._drop_conn()

    async def _connect(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._store.connect("leader")
        return self._conn

    async def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()

    async def _campaign(self) -> None:
        conn = await self._connect()
        how = "lock"
        got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
        if not got:
            row = await conn.fetchrow(
                "SELECT leader, extract(epoch from clock_timestamp()) - renewed_at "
                "FROM sequencer_lease WHERE id = 1"
            )
            if row is None or row[1] <= self.lease_s:
                return
            # The holder is alive to PostgreSQL but has not renewed: frozen or cut off. End every
            # session of that replica (one may sit in a sequencer transaction holding the lease row).
            old = row[0]
            ended = await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND (pid IN (SELECT pid FROM pg_locks "
                "WHERE locktype = 'advisory' AND classid = 0 AND objid = $1 AND granted) "
                "OR application_name LIKE $2)",
                LOCK_KEY,
                f"ecallgw:{old}:%",
            )
            log.warning(
                "sequencer lease expired: ending the old leader's sessions",
                extra={
                    "event": "lease_expired",
                    "old_leader": old,
                    "lease_age_s": round(row[1], 2),
                    "sessions": len(ended),
                },
            )
            for _ in range(40):  # a terminated backend releases its locks as it exits
                got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
                if got:
                    break
                await asyncio.sleep(0.05)
            if not got:
                return
            how = "lease"
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '2s'")
                epoch = await conn.fetchval(
                    "UPDATE sequencer_lease SET epoch = epoch + 1, leader = $1, "
                    "renewed_at = extract(epoch from clock_timestamp()) WHERE id = 1 RETURNING epoch",
                    self.replica_id,
                )
        except BaseException:
            with contextlib.suppress(*_DB_ERRORS):
                await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
            raise
        self.epoch = int(epoch)
        self.since = time.monotonic()
        self._metrics.takeovers.labels(how).inc()
        self._metrics.sequencer_leader.set(1)
        self._changed.set()
        log.info(
            "this replica is the sequencer now", extra={"event": "leader", "epoch": self.epoch, "how": how}
        )

    async def _renew(self) -> None:
        epoch = self.epoch
        try:
            conn = await self._connect()
            async with asyncio.timeout(self.lease_s / 2):
                renewed = await conn.fetchval(
                    "UPDATE sequencer_lease SET renewed_at = extract(epoch from clock_timestamp()) "
                    "WHERE id = 1 AND epoch = $1 AND leader = $2 RETURNING epoch",
                    epoch,
                    self.replica_id,
                )
        except _DB_ERRORS as exc:
            # The lock went with the connection (or may have): another replica can lead now.
            self._metrics.lease_renewals.labels("lost").inc()
            self._lose(f"lease renewal failed: {exc}")
            await self._drop_conn()
            return
        if renewed is None:
            self._metrics.lease_renewals.labels("lost").inc()
            self._lose("another replica took the lease")
            await self._drop_conn()
            return
        self._metrics.lease_renewals.labels("ok").inc()

    def step_down(self, why: str) -> None:
        """Stop leading now (a fenced commit): the lock goes with the connection."""
        self._lose(why)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()

    def _lose(self, why: str) -> None:
        if self.epoch is None:
            return
        log.warning(
            "this replica is no longer the sequencer",
            extra={"event": "leader_lost", "epoch": self.epoch, "reason": why},
        )
        self.epoch = None
        self.since = None
        self._metrics.sequencer_leader.set(0)
        self._changed.set()
