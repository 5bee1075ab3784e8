"""The store on a PostgreSQL server, shared by any number of replicas (docs/scaling.md).

The tables are SQLite's, plus what replicas need: a journal row is written by whichever replica
received the signal (``seq`` NULL: not yet sequenced) and later given its place in the triage order
(``seq``, the ``now`` triage was called with, and the decision's ``result``) by the one sequencer;
outbox entries carry a claim (``claimed_by``, ``lease_until``) so that every replica delivers and a
dead one's entries are taken over; ``sequencer_lease`` holds the leader's epoch, the fencing token
every sequencer transaction checks.

Writes of this replica (journal appends, quarantine, audit, delivery outcomes) go through one
writer task that commits whatever queued while the previous commit ran (group commit, as in
``sqlite.py``), on asyncpg, which never leaves the event loop: no thread has to win the GIL back
for each statement. The sequencer writes its decisions on a connection of its own, in transactions
fenced by its epoch, so a fenced sequencer never fails this replica's intake. Reads use the pool;
each first waits for the writes queued before it, so a read sees every write queued before it.
Timestamps of leases come from the server's clock, so replicas' clocks need not agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias, TypeVar, cast

import asyncpg
import orjson

from ecallgw.config import StoreConfig
from ecallgw.errors import StoreError
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.records import (
    ActionRecord,
    CommitResult,
    JournalRow,
    OutboxItem,
    RawSignal,
    Unit,
)
from ecallgw.gateway.snapshots import load_snapshot
from ecallgw.gateway.store.desk import (
    DESK_EVENT_COLUMNS,
    DeskEventRow,
    DeskView,
    IncidentQuery,
    QueueRow,
    counters,
    counters_sql,
    desk_view,
    find_sql,
    linked_sql,
    merge_stream,
    numbered,
    queue_row,
    queue_sql,
)
from ecallgw.gateway.store.migrations import POSTGRES, migrate_postgres
from ecallgw.gateway.store.plan import Plan, plan_units
from ecallgw.gateway.store.protocol import (
    AUDIT_KEYS,
    DEAD_LETTER_KEYS,
    QUARANTINE_KEYS,
    IncidentRow,
    RevisionRow,
    journal_row,
)
from ecallgw.model import IncidentSnapshot

__all__ = ["DB_ERRORS", "FencedError", "PostgresStore", "SequencedRow"]

log = logging.getLogger("ecallgw.store")

T = TypeVar("T")
Conn: TypeAlias = Any  # an asyncpg.Connection (asyncpg ships no type hints)

_SERVER_NOW = "extract(epoch from clock_timestamp())"
# No replica but $1 holds a live claim on a pending entry of o's (receiver, incident) pair.
_NO_LIVE_CLAIM_ELSEWHERE = f"""NOT EXISTS (
    SELECT 1 FROM outbox p
    WHERE p.receiver = o.receiver AND p.incident_id = o.incident_id
      AND p.state = 'pending' AND p.claimed_by <> $1 AND p.lease_until >= {_SERVER_NOW})"""

CHANNEL_JOURNAL = "ecallgw_journal"  # new unsequenced journal rows (wakes the sequencer)
CHANNEL_SEQUENCED = "ecallgw_sequenced"  # rows sequenced (wakes intakes waiting for a decision)
CHANNEL_OUTBOX = "ecallgw_outbox"  # new outbox entries (wakes every replica's claimer)
CHANNEL_REVISIONS = "ecallgw_revisions"  # new revisions (every replica's operator stream)
CHANNEL_REPLICAS = "ecallgw_replicas"  # a replica started (the sequencer stops claiming alone)


class FencedError(StoreError):
    """A sequencer transaction carried an epoch that is no longer the leader's: nothing was written."""


class SequencedRow:
    """A journal row waiting for the sequencer (``seq`` NULL), in the order it will be offered."""

    __slots__ = ("action", "at", "digest", "id", "raw", "type")

    def __init__(
        self,
        id: int,
        type: str,
        at: float,
        raw: RawSignal | None,
        action: ActionRecord | None,
        digest: bytes | None,
    ) -> None:
        self.id = id
        self.type = type
        self.at = at
        self.raw = raw
        self.action = action
        self.digest = digest


_Job = tuple[Callable[[Conn], Awaitable[Any]], "asyncio.Future[Any]"]


class _Append:
    """A journal append as a writer job; consecutive ones are written with one statement."""

    __slots__ = ("action", "raw")

    def __init__(self, raw: RawSignal | None, action: ActionRecord | None) -> None:
        self.raw = raw
        self.action = action

    async def __call__(self, conn: Conn) -> int:
        return (await _append_rows(conn, [self]))[0]


class _OneStatement:
    """A writer job that runs exactly one statement: alone in a batch, it needs no explicit transaction."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Conn], Awaitable[Any]]) -> None:
        self.fn = fn

    def __call__(self, conn: Conn) -> Awaitable[Any]:
        return self.fn(conn)


class PostgresStore:
    """The server store; use as ``async with PostgresStore(cfg.store, metrics) as store``.

    Args:
        config: the ``[store]`` table (``dsn``, ``pool_size``, ``statement_timeout_s``, ``batch_max``).
        metrics: commit latency and batch sizes are observed when given.
        replica_id: this replica's name (default ``store.replica_id``; "" takes ``{host}-{n}``, see
            `_claim_replica_id`); also the ``application_name`` of its connections.
    """

    def __init__(
        self, config: StoreConfig, metrics: Metrics | None = None, *, replica_id: str | None = None
    ) -> None:
        self._config = config
        self._metrics = metrics
        self.replica_id = config.replica_id if replica_id is None else replica_id
        self._pool: asyncpg.Pool | None = None
        self._jobs: list[_Job] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._healthy = True
        self._refusal: str | None = None  # why the last group commit failed, while it did
        self._last: asyncio.Future[Any] | None = None  # the latest queued job (read barrier)
        self._delivered: list[tuple[int, float, int, int | None, float | None]] = []
        self._delivered_fut: asyncio.Future[None] | None = None
        self._counters: dict[int, tuple[int, int, int]] = {}  # epoch -> journal, revision, outbox
        self.commits = 0

    # --- lifecycle ------------------------------------------------------------------------------

    def _server_settings(self, role: str) -> dict[str, str]:
        return {
            "application_name": f"ecallgw:{self.replica_id or 'replica'}:{role}"[:63],
            "statement_timeout": str(int(self._config.statement_timeout_s * 1000)),
            # A sequencer frozen inside a transaction must not hold the lease row for ever.
            "idle_in_transaction_session_timeout": str(int(max(self._config.lease_s, 1.0) * 1000)),
        }

    async def connect(self, role: str) -> Conn:
        """A connection of its own (leadership, LISTEN), outside the pool."""
        try:
            conn: Conn = await asyncpg.connect(
                self._config.dsn.reveal(), server_settings=self._server_settings(role), timeout=10
            )
        except _CONNECT_ERRORS as exc:
            raise StoreError(f"cannot connect to store.dsn: {exc}") from exc
        return conn

    async def __aenter__(self) -> PostgresStore:
        # Migrate and take a replica name on a connection of its own first: the pool's sessions
        # then carry the name (a lease takeover ends a frozen leader's sessions by it).
        conn = await self.connect("start")
        try:
            await migrate_postgres(conn)
            self.replica_id = await _claim_replica_id(conn, self.replica_id, self._config.lease_s)
        except DB_ERRORS as exc:
            raise StoreError(f"cannot prepare the store: {exc}") from exc
        finally:
            with contextlib.suppress(*DB_ERRORS):
                await conn.close(timeout=5)
        try:
            self._pool = await asyncpg.create_pool(
                self._config.dsn.reveal(),
                min_size=2,
                max_size=self._config.pool_size,
                server_settings=self._server_settings("pool"),
                timeout=10,
                # No session state is ever left on a pooled connection (no SET without LOCAL, no
                # session advisory locks, no LISTEN: those live on connections of their own), so
                # the default reset (UNLISTEN, RESET ALL, ...) on every release is a round trip
                # for nothing; measured as part of a 2-4x gain in bench/scale_out.py.
                reset=_no_reset,
            )
        except _CONNECT_ERRORS as exc:
            raise StoreError(f"cannot connect to store.dsn: {exc}") from exc
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self._pool is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._pool.close()
            self._pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        """The connection pool (the sequencer and the claimer borrow from it)."""
        assert self._pool is not None, "the store is not open"
        return self._pool

    @property
    def writable(self) -> bool:
        """False while the last group commit failed (the server is down or refusing writes)."""
        return self._healthy and self._writer is not None and not self._writer.done()

    @property
    def unwritable_reason(self) -> str | None:
        """Why the last group commit failed (disk full, read-only, unreachable), while it did."""
        if self._writer is None or self._writer.done():
            return "the store writer stopped"
        return None if self._healthy else self._refusal

    # --- the writer -----------------------------------------------------------------------------

    def _submit(self, fn: Callable[[Conn], Awaitable[T]]) -> asyncio.Future[T]:
        if self._closing or self._writer is None or self._writer.done():
            raise StoreError("the store is not running")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.append((fn, fut))
        self._last = fut
        self._wake.set()
        return fut

    async def _write_loop(self) -> None:
        backoff = 0.05
        while True:
            if not self._jobs:
                if self._closing:
                    return
                self._wake.clear()
                if self._healthy:
                    await self._wake.wait()
                    continue
                # Refusing writes and nothing queued to retry (ingest answers 503 meanwhile, so
                # nothing may come): a probe write tells when the server takes writes again.
                try:
                    async with asyncio.timeout(backoff):
                        await self._wake.wait()
                except TimeoutError:
                    self._health_changed(await self._probe())
                    backoff = min(1.0, backoff * 2)
                continue
            batch, self._jobs = self._jobs[: self._config.batch_max], self._jobs[self._config.batch_max :]
            if self._delivered_fut is not None and any(f is self._delivered_fut for _, f in batch):
                self._delivered_fut = None  # its rows are taken: later confirmations open a new job
            t0 = time.perf_counter()
            outcomes = await self._commit_batch(batch)
            if self._metrics is not None:
                self._metrics.store_commit.observe(time.perf_counter() - t0)
                self._metrics.store_commit_units.observe(len(batch))
            failed: BaseException | None = None
            for fut, value, exc in outcomes:
                if exc is not None:
                    failed = exc
                if fut.done():
                    continue
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(value)
            self._health_changed(failed)
            if failed:
                # The server is down or refusing writes: what failed is not acknowledged (its
                # callers retry or the broker redelivers); wait a little before the next batch.
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2)
            else:
                backoff = 0.05
                self.commits += 1

    async def _probe(self) -> BaseException | None:
        """The write intake needs, rolled back: None once the server takes journal rows again."""
        try:
            async with self.pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                try:
                    await conn.execute("INSERT INTO journal (type, at) VALUES ('probe', 0)")
                finally:
                    await tx.rollback()  # nobody ever sees the row (its id is skipped)
        except DB_ERRORS as exc:
            err = StoreError(f"probe write failed: {exc!r}")
            err.__cause__ = exc
            return err
        return None

    def _health_changed(self, failed: BaseException | None) -> None:
        """One WARNING when group commits start failing, one INFO when they succeed again."""
        if failed is not None:
            reason = pg_refusal(failed.__cause__) or str(failed)[:300]
            if self._healthy:
                log.warning(
                    "store not writable: ingest answers 503, MQTT is not acknowledged; retrying",
                    extra={"event": "store_unwritable", "reason": reason},
                )
                if self._metrics is not None:
                    self._metrics.store_writable.set(0)
            self._healthy, self._refusal = False, reason
        elif not self._healthy:
            self._healthy, self._refusal = True, None
            log.info("store writable again", extra={"event": "store_writable"})
            if self._metrics is not None:
                self._metrics.store_writable.set(1)

    async def _commit_appends(self, batch: list[_Job]) -> list[int]:
        """A batch of journal appends only: one statement, so one round trip and its own transaction.

        Every round trip costs the event loop's turn twice when it is busy (bench/pg_drivers.py:
        a three-statement commit took 30 ms beside a loop busy in 5 ms slices, one statement 10 ms).
        """
        async with self.pool.acquire() as conn:
            return await _append_rows(conn, [cast(_Append, fn) for fn, _ in batch], notify=True)

    async def _commit_batch(
        self, batch: list[_Job]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        try:
            if all(type(fn) is _Append for fn, _ in batch):
                ids = await self._commit_appends(batch)
                return [(fut, jid, None) for (_, fut), jid in zip(batch, ids, strict=True)]
            if len(batch) == 1 and type(batch[0][0]) is _OneStatement:
                # One statement is a transaction of its own: no BEGIN and COMMIT round trips.
                async with self.pool.acquire() as conn:
                    return [(batch[0][1], await batch[0][0](conn), None)]
            async with self.pool.acquire() as conn, conn.transaction():
                values: list[Any] = []
                i, n = 0, len(batch)
                appended = False
                while i < n:
                    fn = batch[i][0]
                    if type(fn) is _Append:
                        j = i + 1
                        while j < n and type(batch[j][0]) is _Append:
                            j += 1
                        values += await _append_rows(conn, [cast(_Append, f) for f, _ in batch[i:j]])
                        appended = True
                        i = j
                    else:
                        values.append(await fn(conn))
                        i += 1
                if appended:
                    await conn.execute("SELECT pg_notify($1, '')", CHANNEL_JOURNAL)
            return [(fut, value, None) for (_, fut), value in zip(batch, values, strict=True)]
        except DB_ERRORS as exc:
            err = StoreError(f"store operation failed, batch of {len(batch)} rolled back: {exc!r}")
            err.__cause__ = exc  # `pg_refusal` names a full disk or a read-only server by it
            return [(fut, None, err) for _, fut in batch]
        except StoreError as exc:
            return [(fut, None, exc) for _, fut in batch]
        except Exception as exc:  # any other failure of a job fails its batch, not the writer
            err = StoreError(f"store operation failed, batch of {len(batch)} rolled back: {exc!r}")
            err.__cause__ = exc
            return [(fut, None, err) for _, fut in batch]

    async def _barrier(self) -> None:
        """Wait until every write queued before now is committed (or failed)."""
        last = self._last
        if last is not None and not last.done():
            await asyncio.wait([last])

    async def run(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn(connection)`` inside the next group commit; returns its value once committed."""
        return await self._submit(fn)

    async def read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn(connection)`` on a pooled connection after the writes queued before it."""
        await self._barrier()
        return await self._query(fn)

    async def _query(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn(connection)`` on a pooled connection now: for what the replica's own machinery
        reads (claims, decisions, lag, the operator stream), which depends on no write of this
        replica's queue and must not wait for an unrelated group commit under load."""
        try:
            async with self.pool.acquire() as conn:
                return await fn(conn)
        except DB_ERRORS as exc:
            raise StoreError(f"store read failed: {exc!r}") from exc

    # --- writes ---------------------------------------------------------------------------------

    def append_nowait(
        self, raw: RawSignal | None = None, action: ActionRecord | None = None
    ) -> asyncio.Future[int]:
        """Queue a signal (or an operator action) for the journal, unsequenced; resolves to its row id."""
        return self._submit(_Append(raw, action))

    def commit_nowait(self, unit: Unit) -> asyncio.Future[CommitResult]:
        """Queue one unit for the next group commit (unfenced: single-writer use and quarantine/audit)."""

        async def fn(conn: Conn) -> CommitResult:
            return (await write_units(conn, [unit], epoch=None))[0]

        return self._submit(fn)

    async def commit(self, unit: Unit) -> CommitResult:
        """Write one unit of work durably; returns once committed."""
        return await self.commit_nowait(unit)

    async def commit_sequenced(
        self, conn: Conn, units: list[Unit], epoch: int, *, claim: bool = False
    ) -> list[CommitResult]:
        """The sequencer's commit: decisions of ``units`` in order, fenced by ``epoch``, in one statement.

        The sequence counters are read once per epoch (under the lease row's lock, fenced) and
        kept here: while an epoch leads, only its sequencer numbers journal rows, revisions and
        outbox entries. Any failure forgets them, so the next commit reads them again.

        With ``claim`` the new outbox entries are claimed for this replica in the same statement
        (its caller then delivers them: no NOTIFY, no claim round trip); without, every replica's
        claimer is woken to take them.

        Raises:
            FencedError: another replica leads now (or a row was sequenced already); nothing was written.
            StoreError: the server failed; nothing was written.
        """
        try:
            counters = self._counters.get(epoch)
            if counters is None:
                async with conn.transaction():
                    row = await conn.fetchrow(
                        "SELECT epoch, (SELECT coalesce(max(seq), 0) FROM journal), "
                        f"{_STREAM_SEQ}, "
                        "(SELECT coalesce(max(id), 0) FROM outbox) "
                        "FROM sequencer_lease WHERE id = 1 FOR UPDATE"
                    )
                if row[0] != epoch:
                    raise FencedError(f"fenced: this sequencer's epoch {epoch} is not the leader's {row[0]}")
                counters = self._counters[epoch] = (int(row[1]), int(row[2]), int(row[3]))
            plan = plan_units(units, *counters)
            await _write_plan(
                conn, plan, epoch, (self.replica_id, self._config.outbox_lease_s) if claim else None
            )
            self._counters = {epoch: (plan.journal_seq, plan.revision_seq, plan.outbox_id)}
            return plan.results
        except FencedError:
            self._counters.clear()
            raise
        except asyncpg.PostgresError as exc:
            self._counters.clear()
            if getattr(exc, "sqlstate", None) == "EC001":
                raise FencedError(str(exc)) from exc
            raise StoreError(f"sequencer commit failed: {exc!r}") from exc
        except DB_ERRORS as exc:
            self._counters.clear()
            raise StoreError(f"sequencer commit failed: {exc!r}") from exc

    def record_delivered_nowait(
        self, item: OutboxItem, *, at: float, attempts: int, status: int | None, sent_at: float | None = None
    ) -> asyncio.Future[None]:
        """Mark an outbox entry delivered; confirmations queued together are written together."""
        fut = self._delivered_fut
        if fut is None:
            rows: list[tuple[int, float, int, int | None, float | None]] = []

            async def fn(conn: Conn) -> None:
                await conn.execute(
                    "WITH done AS (UPDATE outbox SET state = 'delivered' "
                    "WHERE id = ANY($1::bigint[]) AND state = 'pending' RETURNING id) "
                    "INSERT INTO deliveries (outbox_id, delivered_at, attempts, status, sent_at) "
                    "SELECT * FROM unnest($1::bigint[], $2::float8[], $3::int[], $4::int[], $5::float8[]) "
                    "ON CONFLICT (outbox_id) DO NOTHING",
                    *_columns(rows, 5),
                )

            fut = self._submit(_OneStatement(fn))
            self._delivered_fut = fut
            self._delivered = rows
        self._delivered.append((item.id, at, attempts, status, sent_at))
        return fut

    async def record_delivered(
        self, item: OutboxItem, *, at: float, attempts: int, status: int | None, sent_at: float | None = None
    ) -> None:
        """Mark an outbox entry delivered (after the receiver confirmed)."""
        await self.record_delivered_nowait(item, at=at, attempts=attempts, status=status, sent_at=sent_at)

    async def record_dead_letter(
        self, item: OutboxItem, *, at: float, attempts: int, reason: str, detail: str
    ) -> None:
        """Move an outbox entry to the dead letters with its reason."""

        async def fn(conn: Conn) -> None:
            moved = await conn.execute(
                "UPDATE outbox SET state='dead' WHERE id=$1 AND state='pending'", item.id
            )
            if _rowcount(moved) == 0:
                return  # delivered already (by a replica that took it over): that outcome stands
            await conn.execute(
                "INSERT INTO dead_letters VALUES ($1,$2,$3,$4,$5) ON CONFLICT (outbox_id) DO NOTHING",
                item.id,
                at,
                attempts,
                reason,
                detail,
            )

        await self.run(fn)

    async def key(self, name: str) -> bytes:
        """A random 32-byte key kept under ``name``; every replica reads the same one."""
        value = secrets.token_bytes(32)

        async def fn(conn: Conn) -> bytes:
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", name, value
            )
            return bytes(await conn.fetchval("SELECT value FROM meta WHERE key=$1", name))

        return await self.run(fn)

    async def swap_meta(self, name: str, value: bytes) -> bytes | None:
        """Store ``value`` under ``name``; return what was stored before (None at first)."""

        async def fn(conn: Conn) -> bytes | None:
            old = await conn.fetchval("SELECT value FROM meta WHERE key=$1 FOR UPDATE", name)
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                name,
                value,
            )
            return bytes(old) if old is not None else None

        return await self.run(fn)

    async def delete_before(self, cutoff: float, *, journal_margin_s: float = 0.0) -> dict[str, int]:
        """Retention, as ``SqliteStore.delete_before``; unsequenced journal rows are never deleted."""

        async def fn(conn: Conn) -> dict[str, int]:
            counts: dict[str, int] = {}
            expired = [
                r[0]
                for r in await conn.fetch(
                    "SELECT incident_id FROM incidents i WHERE updated_at < $1 AND NOT EXISTS "
                    "(SELECT 1 FROM outbox o WHERE o.incident_id = i.incident_id AND o.state = 'pending')",
                    cutoff,
                )
            ]
            for table, sql in (
                (
                    "deliveries",
                    "DELETE FROM deliveries WHERE outbox_id IN "
                    "(SELECT id FROM outbox WHERE incident_id = ANY($1::text[]))",
                ),
                (
                    "dead_letters",
                    "DELETE FROM dead_letters WHERE outbox_id IN "
                    "(SELECT id FROM outbox WHERE incident_id = ANY($1::text[]))",
                ),
                ("outbox", "DELETE FROM outbox WHERE incident_id = ANY($1::text[])"),
                ("revisions", "DELETE FROM revisions WHERE incident_id = ANY($1::text[])"),
                ("incident_calls", "DELETE FROM incident_calls WHERE incident_id = ANY($1::text[])"),
                ("desk_events", "DELETE FROM desk_events WHERE incident_id = ANY($1::text[])"),
                ("desk", "DELETE FROM desk WHERE incident_id = ANY($1::text[])"),
                ("incidents", "DELETE FROM incidents WHERE incident_id = ANY($1::text[])"),
            ):
                counts[table] = _rowcount(await conn.execute(sql, expired))
            oldest_kept = await conn.fetchval("SELECT min(received_at) FROM incidents")
            journal_cutoff = cutoff if oldest_kept is None else min(cutoff, oldest_kept - journal_margin_s)
            counts["journal"] = _rowcount(
                await conn.execute("DELETE FROM journal WHERE at < $1 AND seq IS NOT NULL", journal_cutoff)
            )
            for table in ("quarantine", "audit"):
                counts[table] = _rowcount(await conn.execute(f"DELETE FROM {table} WHERE at < $1", cutoff))
            counts["console_sessions"] = _rowcount(
                await conn.execute("DELETE FROM console_sessions WHERE expires_at <= $1", time.time())
            )
            return counts

        return await self.run(fn)

    # --- the sequencer's reads ------------------------------------------------------------------

    async def unsequenced(self, conn: Conn, limit: int) -> list[SequencedRow]:
        """Journal rows no sequencer has taken yet, in insertion order.

        "Not yet sequenced", never "id above the last seen": ids are drawn before commit, so a
        row with a lower id can commit after a higher one.
        """
        rows = await conn.fetch(
            f"SELECT {_JOURNAL_SELECT}, digest FROM journal WHERE seq IS NULL ORDER BY id LIMIT $1", limit
        )
        out = []
        for r in rows:
            j = _journal_row(r, at_column=2)
            out.append(
                SequencedRow(
                    r[0], j.type, j.at, j.signal, j.action, bytes(r[17]) if r[17] is not None else None
                )
            )
        return out

    async def results(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The sequencer's decisions of journal rows by id (those decided so far)."""

        async def fn(conn: Conn) -> list[Any]:
            return list(
                await conn.fetch(
                    "SELECT id, result FROM journal WHERE id = ANY($1::bigint[]) AND seq IS NOT NULL",
                    list(ids),
                )
            )

        return {r[0]: json.loads(r[1]) if r[1] is not None else {} for r in await self.read(fn)}

    async def live_replicas(self) -> int:
        """Replicas that may still be at work (this one included): heartbeat younger than three
        leases, and younger than any outbox claim of theirs may last.

        A sequencer that counts itself alone claims its new entries in its commit (`Replica`), so a
        replica gone silent must count until its claims have lapsed, or the sequencer could take
        revision 2 of a pair whose revision 1 that replica still holds. Its last claim renewal came
        at most one heartbeat (``lease_s``) after its last heartbeat, and a claim holds
        ``outbox_lease_s`` after its renewal. With the defaults (5 s, 10 s) both windows are 15 s.
        """
        cfg = self._config
        window = max(3 * cfg.lease_s, cfg.outbox_lease_s + cfg.lease_s)

        async def fn(conn: Conn) -> int:
            return int(
                await conn.fetchval(
                    f"SELECT count(*) FROM replicas WHERE seen_at >= {_SERVER_NOW} - $1", window
                )
            )

        return await self._query(fn)

    async def sequencer_lag(self) -> tuple[int, float]:
        """(rows not yet sequenced, age in seconds of the oldest of them)."""

        async def fn(conn: Conn) -> tuple[int, float]:
            row = await conn.fetchrow(
                f"SELECT count(*), coalesce({_SERVER_NOW} - min(at), 0) FROM journal WHERE seq IS NULL"
            )
            assert row is not None
            return int(row[0]), max(0.0, float(row[1]))

        return await self.read(fn)

    # --- outbox claims (every replica delivers) -------------------------------------------------

    async def claim_outbox(self, receivers: Sequence[str], limit: int = 500) -> list[OutboxItem]:
        """Claim due outbox entries for this replica, with a lease, snapshots included; oldest first.

        Claims go by (receiver, incident) pair, so each pair's revisions stay in order, delivered
        by one replica at a time: a pair is taken only when no replica but this one holds a live
        claim on any of its pending entries. One transaction, two statements: the first takes a
        transaction-level advisory lock on each candidate pair, the second checks and claims in a
        snapshot taken after those locks are held. A replica claiming at the same moment holds
        the lock until its claims are committed, so the second statement either sees them or the
        pair was never locked here; one statement could not do both, since its snapshot is taken
        before its locks, and a claim committed in between went unseen (a pair split between two
        replicas, found by `test_claims_never_split_a_pair_between_replicas`). A replica that died
        (or froze) loses its claims when their leases run out; another takes them with the same
        idempotency key. The snapshots come with the claim (no load per delivery).
        """
        me, lease = self.replica_id, self._config.outbox_lease_s

        async def fn(conn: Conn) -> list[Any]:
            async with conn.transaction():
                pairs = await conn.fetch(
                    f"""
                    SELECT receiver, incident_id FROM (
                        SELECT DISTINCT receiver, incident_id FROM (
                            SELECT o.receiver, o.incident_id FROM outbox o
                            WHERE o.state = 'pending'
                              AND (o.lease_until IS NULL OR o.lease_until < {_SERVER_NOW})
                              AND o.receiver = ANY($3::text[]) AND {_NO_LIVE_CLAIM_ELSEWHERE}
                            ORDER BY o.id LIMIT $2) c) p
                    WHERE pg_try_advisory_xact_lock(hashtextextended(receiver || '/' || incident_id, 0))
                    """,
                    me,
                    limit,
                    list(receivers),
                )
                if not pairs:
                    return []
                return list(
                    await conn.fetch(
                        f"""
                        WITH now AS (SELECT {_SERVER_NOW} AS t),
                        cand AS (
                            SELECT o.id FROM outbox o, now
                            WHERE o.state = 'pending' AND (o.lease_until IS NULL OR o.lease_until < now.t)
                              AND (o.receiver, o.incident_id) IN (
                                SELECT * FROM unnest($4::text[], $5::text[]))
                              AND {_NO_LIVE_CLAIM_ELSEWHERE}
                            ORDER BY o.id LIMIT $2 FOR UPDATE OF o SKIP LOCKED)
                        UPDATE outbox o SET claimed_by = $1, lease_until = (SELECT t FROM now) + $3
                        FROM cand WHERE o.id = cand.id
                        RETURNING o.id, o.incident_id, o.revision, o.receiver, o.signal_at,
                          (SELECT r.snapshot FROM revisions r
                           WHERE r.incident_id = o.incident_id AND r.revision = o.revision)
                        """,
                        me,
                        limit,
                        lease,
                        [p[0] for p in pairs],
                        [p[1] for p in pairs],
                    )
                )

        rows = await self._query(fn)
        rows.sort(key=lambda r: r[0])
        return [
            OutboxItem(
                id=r[0],
                incident_id=r[1],
                revision=r[2],
                receiver=r[3],
                signal_at=r[4],
                snapshot=load_snapshot(bytes(r[5])) if r[5] is not None else None,
            )
            for r in rows
        ]

    async def renew_claims(self, ids: Sequence[int]) -> int:
        """Extend this replica's leases on entries it still holds; returns how many it kept."""
        me, lease = self.replica_id, self._config.outbox_lease_s

        async def fn(conn: Conn) -> int:
            return _rowcount(
                await conn.execute(
                    f"UPDATE outbox SET lease_until = {_SERVER_NOW} + $2 "
                    "WHERE id = ANY($3::bigint[]) AND claimed_by = $1 AND state = 'pending'",
                    me,
                    lease,
                    list(ids),
                )
            )

        return await self.read(fn)

    # --- reads ----------------------------------------------------------------------------------

    async def replay_after(self, since: float, margin_s: float) -> int:
        """Where a replay starts (as ``SqliteStore.replay_after``), in sequencing order."""

        async def fn(conn: Conn) -> int:
            first = await conn.fetchval(
                "SELECT min(received_at) FROM incidents WHERE updated_at >= $1", since
            )
            latest = await conn.fetchval(
                "SELECT min((SELECT received_at FROM incidents i WHERE i.tps = s.tps AND "
                "i.vehicle = s.vehicle ORDER BY i.updated_at DESC LIMIT 1)) "
                "FROM (SELECT DISTINCT tps, vehicle FROM journal WHERE now_at >= $1 AND type = 'signal' "
                "AND seq IS NOT NULL) s",
                since,
            )
            firsts = [t for t in (first, latest) if t is not None]
            start = min([since, *(t - margin_s for t in firsts)])
            seq = await conn.fetchval("SELECT max(seq) FROM journal WHERE now_at < $1", start)
            return int(seq or 0)

        return await self.read(fn)

    async def recent_revisions(self, since: float) -> dict[str, int]:
        """incident_id -> stored latest revision, for incidents updated at or after ``since``."""

        async def fn(conn: Conn) -> list[Any]:
            return list(
                await conn.fetch("SELECT incident_id, revision FROM incidents WHERE updated_at >= $1", since)
            )

        return {r[0]: int(r[1]) for r in await self.read(fn)}

    async def journal(self, after_seq: int, limit: int) -> list[JournalRow]:
        """Sequenced journal rows with ``seq > after_seq`` in triage order.

        Transport copies (``redelivered``) and what the sequencer quarantined are left out: the
        engine never saw them.
        """

        async def fn(conn: Conn) -> list[Any]:
            return list(
                await conn.fetch(
                    f"SELECT {_JOURNAL_SELECT} FROM journal WHERE seq > $1 "
                    "AND (result IS NULL OR result->>'outcome' NOT IN ('redelivered', 'quarantined')) "
                    "ORDER BY seq LIMIT $2",
                    after_seq,
                    limit,
                )
            )

        rows = await self.read(fn)
        return [_journal_row(r, at_column=15) for r in rows]

    async def last_journal_seq(self) -> int:
        """The highest sequenced journal row (0 when none)."""
        return int(await self.read(lambda c: c.fetchval("SELECT coalesce(max(seq), 0) FROM journal")))

    async def pending_outbox(self) -> list[OutboxItem]:
        """Every pending outbox entry, oldest first (whoever holds it)."""

        async def fn(conn: Conn) -> list[Any]:
            return list(
                await conn.fetch(
                    "SELECT id, incident_id, revision, receiver, signal_at FROM outbox "
                    "WHERE state='pending' ORDER BY id"
                )
            )

        return [
            OutboxItem(id=r[0], incident_id=r[1], revision=r[2], receiver=r[3], signal_at=r[4])
            for r in await self.read(fn)
        ]

    async def load_revisions(
        self, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], IncidentSnapshot]:
        """Stored snapshots by (incident_id, revision); missing keys are left out."""
        if not keys:
            return {}

        async def fn(conn: Conn) -> list[Any]:
            # Key by key on the unique index: a join with unnest() got a generic plan that scanned
            # the whole table until autovacuum first analysed it (1.6 ms at 7,000 rows vs 0.05).
            return list(
                await conn.fetch(
                    "SELECT k.incident_id, k.revision, (SELECT r.snapshot FROM revisions r "
                    "WHERE r.incident_id = k.incident_id AND r.revision = k.revision) "
                    "FROM unnest($1::text[], $2::int[]) AS k(incident_id, revision)",
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                )
            )

        return {(r[0], r[1]): load_snapshot(bytes(r[2])) for r in await self.read(fn) if r[2] is not None}

    async def first_delivery(self, incident_id: str, receiver: str) -> tuple[int, float] | None:
        """(revision, sent time) of the first revision of an incident a receiver confirmed, or None."""

        async def fn(conn: Conn) -> Any:
            return await conn.fetchrow(
                "SELECT o.revision, d.sent_at FROM outbox o JOIN deliveries d ON d.outbox_id = o.id "
                "WHERE o.incident_id=$1 AND o.receiver=$2 AND d.sent_at IS NOT NULL "
                "ORDER BY o.revision LIMIT 1",
                incident_id,
                receiver,
            )

        row = await self.read(fn)
        return (int(row[0]), float(row[1])) if row is not None else None

    async def list_incidents(
        self, *, status: str | None = None, level: str | None = None, limit: int = 100
    ) -> list[IncidentRow]:
        """The latest revision of incidents, newest first, optionally filtered."""

        async def fn(conn: Conn) -> list[Any]:
            return list(
                await conn.fetch(
                    f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE ($1::text IS NULL OR status = $1) "
                    "AND ($2::text IS NULL OR level = $2) ORDER BY updated_at DESC LIMIT $3",
                    status or None,
                    level or None,
                    limit,
                )
            )

        return [IncidentRow.from_row(r) for r in await self.read(fn)]

    async def find_incidents(
        self, *, call_id: str | None = None, vehicle: str | None = None, limit: int = 100
    ) -> list[IncidentRow]:
        """Incidents one of whose calls has this call id and/or vehicle key, newest first (issue 12)."""
        if call_id is None and vehicle is None:
            return []
        sql, args = find_sql(_INCIDENT_COLUMNS, call_id, vehicle, limit)
        rows = await self.read(lambda conn: conn.fetch(numbered(sql), *args))
        return [IncidentRow.from_row(r) for r in rows]

    async def get_incident(
        self, incident_id: str
    ) -> tuple[IncidentRow, list[RevisionRow], list[dict[str, Any]]] | None:
        """One incident with every revision (its history) and its deliveries; None when unknown."""

        async def fn(conn: Conn) -> tuple[Any, list[Any], list[Any]] | None:
            row = await conn.fetchrow(
                f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE incident_id=$1", incident_id
            )
            if row is None:
                return None
            revs = await conn.fetch(
                "SELECT seq, outcome, reasons, snapshot FROM revisions WHERE incident_id=$1 "
                "ORDER BY revision",
                incident_id,
            )
            dels = await conn.fetch(
                "SELECT o.receiver, o.revision, o.state, d.delivered_at, d.attempts, d.status, "
                "l.reason, l.at "
                "FROM outbox o LEFT JOIN deliveries d ON d.outbox_id = o.id "
                "LEFT JOIN dead_letters l ON l.outbox_id = o.id WHERE o.incident_id=$1 ORDER BY o.id",
                incident_id,
            )
            return row, list(revs), list(dels)

        found = await self.read(fn)
        if found is None:
            return None
        row, revs, dels = found
        keys = (
            "receiver",
            "revision",
            "state",
            "delivered_at",
            "attempts",
            "status",
            "dead_letter_reason",
            "dead_lettered_at",
        )
        deliveries = [dict(zip(keys, tuple(d), strict=True)) for d in dels]
        return IncidentRow.from_row(row), [RevisionRow.from_row(r) for r in revs], deliveries

    # --- the operator desk (issue 13; store/desk.py) ------------------------------------------------

    async def list_queue(self, query: IncidentQuery) -> list[QueueRow]:
        """Incidents in the queue's order, filtered (store/desk.py)."""
        sql, args = queue_sql(query)
        rows = await self.read(lambda conn: conn.fetch(numbered(sql), *args))
        return [queue_row(r) for r in rows]

    async def queue_counters(self, non_psap: Sequence[str]) -> dict[str, int]:
        """Open, unacknowledged, waiting for escalation and at a PSAP, over every open incident."""
        sql, args = counters_sql(non_psap)
        return counters(await self.read(lambda conn: conn.fetchrow(numbered(sql), *args)))

    async def desk_view(self, incident_id: str, non_psap: Sequence[str]) -> DeskView | None:
        """The desk's view of one incident: its queue row, desk changes and linked incidents."""
        sql, args = queue_sql(IncidentQuery(q=incident_id, limit=2, non_psap=tuple(non_psap)))

        async def fn(conn: Conn) -> tuple[Any, list[Any], list[Any]] | None:
            row = next((r for r in await conn.fetch(numbered(sql), *args) if r[0] == incident_id), None)
            if row is None:
                return None
            events = await conn.fetch(
                f"SELECT {DESK_EVENT_COLUMNS} FROM desk_events WHERE incident_id=$1 ORDER BY seq", incident_id
            )
            linked_query, linked_args = linked_sql(row[11], incident_id)
            linked = await conn.fetch(numbered(linked_query), *linked_args)
            return row, list(events), list(linked)

        found = await self.read(fn)
        return None if found is None else desk_view(*found)

    async def stream_after(self, seq: int, limit: int = 500) -> list[RevisionRow | DeskEventRow]:
        """The operator stream after ``seq``: revisions and desk changes in their one sequence."""

        async def fn(conn: Conn) -> tuple[list[Any], list[Any]]:
            revs = await conn.fetch(
                "SELECT seq, outcome, reasons, snapshot FROM revisions WHERE seq > $1 ORDER BY seq LIMIT $2",
                seq,
                limit,
            )
            desk = await conn.fetch(
                f"SELECT {DESK_EVENT_COLUMNS} FROM desk_events WHERE seq > $1 ORDER BY seq LIMIT $2",
                seq,
                limit,
            )
            return list(revs), list(desk)

        revs, desk = await self.read(fn)
        return merge_stream(revs, desk, limit)

    async def last_stream_seq(self) -> int:
        """The operator stream's newest sequence number (0 when empty)."""
        return int(await self.read(lambda c: c.fetchval(f"SELECT {_STREAM_SEQ}")))

    async def revisions_after(self, seq: int, limit: int = 500) -> list[RevisionRow]:
        """Revisions with a global sequence after ``seq`` (resuming the operator stream)."""

        async def fn(conn: Conn) -> list[Any]:
            return list(
                await conn.fetch(
                    "SELECT seq, outcome, reasons, snapshot FROM revisions WHERE seq > $1 "
                    "ORDER BY seq LIMIT $2",
                    seq,
                    limit,
                )
            )

        return [RevisionRow.from_row(r) for r in await self.read(fn)]

    async def last_revision_seq(self) -> int:
        """The newest revision's global sequence number (0 when none)."""
        return int(await self.read(lambda c: c.fetchval("SELECT coalesce(max(seq), 0) FROM revisions")))

    async def counts(self) -> dict[str, int]:
        """Row counts for summaries and tests."""

        async def fn(conn: Conn) -> dict[str, int]:
            out = {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in _TABLES}
            out["outbox_pending"] = int(
                await conn.fetchval("SELECT count(*) FROM outbox WHERE state='pending'")
            )
            return out

        return await self.read(fn)

    async def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest quarantined payloads with their reasons."""

        async def fn(conn: Conn) -> list[Any]:
            return list(
                await conn.fetch(
                    "SELECT id, at, transport, source, kind, tps, vehicle, payload, codec, reason, path "
                    "FROM quarantine ORDER BY id DESC LIMIT $1",
                    limit,
                )
            )

        keys = QUARANTINE_KEYS
        return [
            {k: (bytes(v) if isinstance(v, memoryview) else v) for k, v in zip(keys, tuple(r), strict=True)}
            for r in await self.read(fn)
        ]

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter with its outbox key."""

        async def fn(conn: Conn) -> list[Any]:
            return list(
                await conn.fetch(
                    "SELECT o.incident_id, o.revision, o.receiver, l.at, l.attempts, l.reason, l.detail "
                    "FROM dead_letters l JOIN outbox o ON o.id = l.outbox_id ORDER BY l.outbox_id"
                )
            )

        keys = DEAD_LETTER_KEYS
        return [dict(zip(keys, tuple(r), strict=True)) for r in await self.read(fn)]

    async def audit_log(self, incident_id: str | None = None) -> list[dict[str, Any]]:
        """Audit entries, oldest first, optionally of one incident."""

        async def fn(conn: Conn) -> list[Any]:
            return list(
                await conn.fetch(
                    "SELECT at, actor, role, action, incident_id, note, outcome FROM audit "
                    "WHERE $1::text IS NULL OR incident_id = $1 ORDER BY id",
                    incident_id,
                )
            )

        keys = AUDIT_KEYS
        return [dict(zip(keys, tuple(r), strict=True)) for r in await self.read(fn)]

    # --- operator console sessions (ecallgw/console/session.py) ------------------------------------

    async def session_put(
        self, session_id: str, *, operator: str, token_sha256: str, created_at: float, expires_at: float
    ) -> None:
        """Keep a console session (by the SHA-256 of its cookie); expired ones are dropped meanwhile."""

        async def fn(conn: Conn) -> None:
            await conn.execute("DELETE FROM console_sessions WHERE expires_at <= $1", created_at)
            await conn.execute(
                "INSERT INTO console_sessions VALUES ($1, $2, $3, $4, $5)",
                session_id,
                operator,
                token_sha256,
                created_at,
                expires_at,
            )

        await self.run(fn)

    async def session_get(self, session_id: str, *, now: float) -> tuple[str, str, float] | None:
        """(operator, token SHA-256, expires_at) of an unexpired session, or None."""

        async def fn(conn: Conn) -> Any:
            return await conn.fetchrow(
                "SELECT operator, token_sha256, expires_at FROM console_sessions "
                "WHERE id = $1 AND expires_at > $2",
                session_id,
                now,
            )

        # Not behind this replica's write queue: a session is read on every console request.
        row = await self._query(fn)
        return None if row is None else (row[0], row[1], row[2])

    async def session_delete(self, session_id: str) -> None:
        """End a session (sign-out), on every replica at once."""

        async def fn(conn: Conn) -> None:
            await conn.execute("DELETE FROM console_sessions WHERE id = $1", session_id)

        await self.run(fn)

    # --- end of console sessions ---------------------------------------------------------------------


# --- statements -----------------------------------------------------------------------------------

DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # e.g. a connection the server ended, used before asyncpg noticed
    OSError,
    TimeoutError,
)
"""What the driver raises when the server is down, restarting or ends a session."""
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*DB_ERRORS, ValueError)  # ValueError: a bad DSN

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


_PG_REFUSALS = {
    "53100": "disk full",  # disk_full
    "53200": "out of memory",
    "25006": "read-only",  # read_only_sql_transaction (a standby, default_transaction_read_only)
    "57P01": "server shutting down",  # admin_shutdown
    "57P03": "server not accepting connections",  # cannot_connect_now (starting, recovery)
}


def pg_refusal(exc: BaseException | None) -> str | None:
    """A short reason for a write the server refused (full disk, read-only), for logs and ``/readyz``."""
    code = getattr(exc, "sqlstate", None)
    label = _PG_REFUSALS.get(code) if isinstance(code, str) else None
    if label is not None:
        return f"{label}: {exc} (SQLSTATE {code})"
    if isinstance(exc, OSError | asyncpg.exceptions.ConnectionDoesNotExistError):
        return f"server unreachable: {exc}"
    return None


async def _claim_replica_id(conn: Conn, configured: str, lease_s: float) -> str:
    """This replica's name: the configured one, else ``{host}-{n}`` with the lowest n not held.

    A name is held while its replica's heartbeat (every ``lease_s``, `Replica`) is younger than
    three leases, so two replicas on one host get distinct names, and a restarted one gets its old
    name back once the old heartbeat has aged out. Set ``store.replica_id`` for a name that never
    changes.
    """
    host = (_UNSAFE.sub("-", socket.gethostname()).strip("-") or "replica")[:48]
    candidates = [configured] if configured else [f"{host}-{n}" for n in range(1, 1000)]
    for name in candidates:
        got = await conn.fetchval(
            "INSERT INTO replicas (replica_id, host, seen_at) "
            "VALUES ($1, $2, extract(epoch from clock_timestamp())) "
            "ON CONFLICT (replica_id) DO UPDATE SET host = excluded.host, seen_at = excluded.seen_at "
            "WHERE replicas.seen_at < excluded.seen_at - $3 OR $4 RETURNING replica_id",
            name,
            host,
            3 * lease_s,
            bool(configured),
        )
        if got is not None:
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL_REPLICAS, str(got))
            return str(got)
    raise StoreError("no free replica name: set store.replica_id")


_TABLES = ("journal", "incidents", "revisions", "outbox", "deliveries", "dead_letters", "quarantine", "audit")
_JOURNAL_SELECT = (
    "id, type, at, transport, kind, tps, vehicle, call_id, payload, source, incident_id, action, actor, "
    "role, note, now_at, seq"
)
_INCIDENT_COLUMNS = "incident_id, revision, status, level, score, tps, vehicle, received_at, updated_at"
_INCIDENT_ALL = _INCIDENT_COLUMNS + ", call_id, kind, scene_id, escalation_due_at, level_rank"
_INCIDENT_SET = ", ".join(
    f"{c} = excluded.{c}"
    for c in _INCIDENT_ALL.split(", ")
    if c not in ("incident_id", "received_at")  # tps, vehicle, call_id: the primary call's, which may switch
)
# The operator stream's sequence: revisions and desk changes share it (issue 13).
_STREAM_SEQ = (
    "GREATEST((SELECT coalesce(max(seq), 0) FROM revisions), (SELECT coalesce(max(seq), 0) FROM desk_events))"
)


async def _no_reset(conn: Conn) -> None:
    """The pool's reset on release: nothing to reset (see `PostgresStore.__aenter__`)."""


def _rowcount(status: str) -> int:
    """The row count of a command status such as ``DELETE 3`` or ``UPDATE 0``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def _append_rows(conn: Conn, appends: list[_Append], *, notify: bool = False) -> list[int]:
    """Insert journal rows (unsequenced) in one statement; returns each append's id, in order.

    The ids are drawn in a CTE of their own (evaluated once) and joined to the rows by ordinal,
    so each caller learns its own id whatever order the insert runs in. With ``notify`` the same
    statement wakes the sequencer (delivered at commit).
    """
    cols: list[list[Any]] = [[] for _ in range(15)]
    for ap in appends:
        s, a = ap.raw, ap.action
        if s is not None:
            row: tuple[Any, ...] = (
                "signal",
                s.received_at,
                s.transport,
                s.kind,
                s.tps,
                s.vehicle,
                s.call_id,
                s.payload,
                s.source,
                s.digest,
                None,
                None,
                None,
                None,
                None,
            )
        else:
            assert a is not None
            row = (
                "action",
                a.at,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                a.incident_id,
                a.action,
                a.actor,
                a.role,
                a.note,
            )
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    rows = await conn.fetch(
        "WITH u AS (SELECT * FROM unnest($1::text[], $2::float8[], $3::text[], $4::text[], $5::text[], "
        "$6::text[], $7::text[], $8::bytea[], $9::text[], $10::bytea[], $11::text[], $12::text[], "
        "$13::text[], $14::text[], $15::text[]) WITH ORDINALITY AS u(type, at, transport, kind, tps, "
        "vehicle, call_id, payload, source, digest, incident_id, action, actor, role, note, ord)), "
        "ids AS MATERIALIZED (SELECT ord, nextval('journal_id_seq') AS id FROM u), "
        "ins AS (INSERT INTO journal (id, type, at, transport, kind, tps, vehicle, call_id, payload, source, "
        "digest, incident_id, action, actor, role, note) SELECT ids.id, u.type, u.at, u.transport, u.kind, "
        "u.tps, u.vehicle, u.call_id, u.payload, u.source, u.digest, u.incident_id, u.action, u.actor, "
        "u.role, u.note FROM u JOIN ids USING (ord)), "
        "n AS (SELECT CASE WHEN $16 THEN pg_notify($17, '') END) "
        "SELECT ids.id FROM ids, n ORDER BY ids.ord",
        *cols,
        notify,
        CHANNEL_JOURNAL,
    )
    return [int(r[0]) for r in rows]


async def write_units(conn: Conn, units: Sequence[Unit], *, epoch: int | None) -> list[CommitResult]:
    """Write units in order inside the open transaction; fenced by ``epoch`` when given.

    The lease row is locked first, whether fenced or not: sequence numbers (journal ``seq``,
    revision ``seq``, outbox ids) are drawn from the tables' maxima under that lock, so they are
    assigned in commit order by exactly one writer at a time, and a new leader's epoch bump
    (which needs the same lock) waits for an old leader's transaction in flight to end.
    """
    decided = [u for u in units if u.journal_type is not None or u.decisions or u.desk]
    if decided or epoch is not None:  # a fenced transaction writes nothing, not even an audit row
        # One round trip: lock the lease row, check the fence, read the counters under the lock.
        current, journal_seq, revision_seq, outbox_id = await conn.fetchrow(
            "SELECT epoch, (SELECT coalesce(max(seq), 0) FROM journal), "
            f"{_STREAM_SEQ}, (SELECT coalesce(max(id), 0) FROM outbox) "
            "FROM sequencer_lease WHERE id = 1 FOR UPDATE"
        )
        if epoch is not None and current != epoch:
            raise FencedError(f"fenced: this sequencer's epoch {epoch} is not the leader's {current}")
    else:
        journal_seq = revision_seq = outbox_id = 0
    plan = plan_units(units, journal_seq, revision_seq, outbox_id)
    journal_new: list[tuple[Any, ...]] = []
    journal_seqd: list[tuple[Any, ...]] = []
    for seq, unit in plan.journal:
        result = _result_json(unit)
        if unit.journal_id is not None:
            journal_seqd.append((unit.journal_id, seq, unit.at, result))
            continue
        s, a = unit.signal, unit.action
        journal_new.append(
            (
                seq,
                unit.journal_type,
                s.received_at if s else unit.at,
                unit.at,
                s.transport if s else None,
                s.kind if s else None,
                s.tps if s else None,
                s.vehicle if s else None,
                s.call_id if s else None,
                s.payload if s else None,
                s.source if s else None,
                s.digest if s else None,
                a.incident_id if a else None,
                a.action if a else None,
                a.actor if a else None,
                a.role if a else None,
                a.note if a else None,
                result,
            )
        )
    revisions, incidents, audits, quarantined = plan.revisions, plan.incidents, plan.audit, plan.quarantine
    outbox_rows, delivered_rows, results = plan.outbox, plan.delivered, plan.results
    revision_seq, journal_seq = plan.revision_seq, plan.journal_seq
    notes: list[tuple[str, str]] = []
    if journal_new:
        await conn.executemany(
            "INSERT INTO journal (seq, type, at, now_at, transport, kind, tps, vehicle, call_id, payload, "
            "source, digest, incident_id, action, actor, role, note, result) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18::jsonb)",
            journal_new,
        )
    if journal_seqd:
        status = await conn.execute(
            "UPDATE journal j SET seq = v.seq, now_at = v.now_at, result = v.result::jsonb "
            "FROM unnest($1::bigint[], $2::bigint[], $3::float8[], $4::text[]) AS v(id, seq, now_at, result) "
            "WHERE j.id = v.id AND j.seq IS NULL",
            [r[0] for r in journal_seqd],
            [r[1] for r in journal_seqd],
            [r[2] for r in journal_seqd],
            [r[3] for r in journal_seqd],
        )
        if _rowcount(status) != len(journal_seqd):
            # Another sequencer took some of these rows: the fence should have stopped us first.
            raise FencedError("journal rows already sequenced by another sequencer")
    if audits:
        await conn.executemany(
            "INSERT INTO audit (at, actor, role, action, incident_id, note, outcome) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7)",
            audits,
        )
    if quarantined:
        await conn.executemany(
            "INSERT INTO quarantine (at, transport, source, kind, tps, vehicle, payload, codec, reason, "
            "path) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
            quarantined,
        )
    if revisions:
        await conn.executemany(
            "INSERT INTO revisions (seq, incident_id, revision, at, outcome, reasons, snapshot) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7)",
            revisions,
        )
        notes.append((CHANNEL_REVISIONS, str(revision_seq)))
    if incidents:
        await conn.executemany(
            f"INSERT INTO incidents ({_INCIDENT_ALL}) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) "
            f"ON CONFLICT (incident_id) DO UPDATE SET {_INCIDENT_SET} "
            "WHERE excluded.revision >= incidents.revision",
            incidents,
        )
    if outbox_rows:
        await conn.executemany(
            "INSERT INTO outbox (id, incident_id, revision, receiver, created_at, signal_at, state) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7)",
            outbox_rows,
        )
        if any(r[6] == "pending" for r in outbox_rows):
            notes.append((CHANNEL_OUTBOX, ""))
    if delivered_rows:
        await conn.executemany(
            "INSERT INTO deliveries (outbox_id, delivered_at, attempts) VALUES ($1,$2,$3)", delivered_rows
        )
    if plan.calls:  # the calls a revision brought (issue 12)
        await conn.executemany(
            "INSERT INTO incident_calls (incident_id, tps, vehicle, call_id) VALUES ($1,$2,$3,$4) "
            "ON CONFLICT DO NOTHING",
            plan.calls,
        )
    if plan.desk_events:  # operator desk changes (issue 13)
        await conn.executemany(
            "INSERT INTO desk_events (seq, incident_id, at, operator, kind, claimed_by, acked, text) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
            plan.desk_events,
        )
        await conn.executemany(
            "INSERT INTO desk (incident_id, acked, claimed_by) VALUES ($1,$2,$3) ON CONFLICT (incident_id) "
            "DO UPDATE SET acked = excluded.acked, claimed_by = excluded.claimed_by",
            plan.desk,
        )
        if not revisions:
            notes.append((CHANNEL_REVISIONS, str(revision_seq)))
    if journal_seqd or journal_new:
        notes.append((CHANNEL_SEQUENCED, str(journal_seq)))
    if notes:  # delivered at commit, all in one round trip
        calls = ", ".join(f"pg_notify(${2 * i + 1}, ${2 * i + 2})" for i in range(len(notes)))
        await conn.execute(f"SELECT {calls}", *(v for note in notes for v in note))
    return results


async def _write_plan(conn: Conn, plan: Plan, epoch: int, claim: tuple[str, float] | None) -> None:
    """The sequencer's batch in one statement (one round trip, its own transaction).

    Every insert draws from ``fence``, the lease row locked when it carries this epoch, so a
    replaced leader inserts nothing; ``checked`` then aborts the statement (``ecallgw_fenced``,
    SQLSTATE EC001), with everything in it, when the fence failed or a journal row had been
    sequenced already. A round trip beside a busy event loop costs about two of its turns
    (bench/pg_drivers.py): the transactional version of this took eight.
    """
    jn: list[list[Any]] = [[] for _ in range(18)]
    js: list[list[Any]] = [[] for _ in range(4)]
    for seq, unit in plan.journal:
        result = _result_json(unit)
        if unit.journal_id is not None:
            for col, v in zip(js, (unit.journal_id, seq, unit.at, result), strict=True):
                col.append(v)
            continue
        s, a = unit.signal, unit.action
        row = (
            seq, unit.journal_type, s.received_at if s else unit.at, unit.at,
            s.transport if s else None, s.kind if s else None, s.tps if s else None,
            s.vehicle if s else None, s.call_id if s else None, s.payload if s else None,
            s.source if s else None, s.digest if s else None,
            a.incident_id if a else None, a.action if a else None, a.actor if a else None,
            a.role if a else None, a.note if a else None, result,
        )  # fmt: skip
        for col, v in zip(jn, row, strict=True):
            col.append(v)
    latest: dict[str, tuple[Any, ...]] = {}
    for inc in plan.incidents:  # one row per incident: an upsert may not touch a row twice
        latest[inc[0]] = inc
    notes = [CHANNEL_SEQUENCED] if plan.journal else []
    if plan.revisions or plan.desk_events:  # both are the operator stream's events
        notes.append(CHANNEL_REVISIONS)
    incidents = _columns(list(latest.values()), 14)
    if claim is None and any(r[6] == "pending" for r in plan.outbox):
        notes.append(CHANNEL_OUTBOX)
    await conn.fetchval(_SEQUENCED_SQL, epoch, *js, *jn, *_columns(plan.revisions, 7),
                        *incidents[:9], *_columns(plan.outbox, 7),
                        *_columns(plan.delivered, 3), *_columns(plan.audit, 7), notes,
                        *_columns(plan.quarantine, 10), *(claim or (None, None)),
                        *incidents[9:], *_columns(plan.desk_events, 8), *_columns(plan.desk, 3),
                        *_columns(plan.calls, 4))  # fmt: skip


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as ``width`` column lists (unnest's arguments)."""
    cols: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for col, v in zip(cols, row, strict=True):
            col.append(v)
    return cols


_SEQUENCED_SQL = """
WITH fence AS (SELECT epoch FROM sequencer_lease WHERE id = 1 AND epoch = $1 FOR UPDATE),
js AS (
    UPDATE journal j SET seq = v.seq, now_at = v.now_at, result = v.result::jsonb
    FROM unnest($2::bigint[], $3::bigint[], $4::float8[], $5::text[]) AS v(id, seq, now_at, result),
         fence
    WHERE j.id = v.id AND j.seq IS NULL RETURNING 1),
jn AS (
    INSERT INTO journal (seq, type, at, now_at, transport, kind, tps, vehicle, call_id, payload, source,
                         digest, incident_id, action, actor, role, note, result)
    SELECT v.seq, v.type, v.at, v.now_at, v.transport, v.kind, v.tps, v.vehicle, v.call_id, v.payload,
           v.source, v.digest, v.incident_id, v.action, v.actor, v.role, v.note, v.result::jsonb
    FROM unnest($6::bigint[], $7::text[], $8::float8[], $9::float8[], $10::text[], $11::text[], $12::text[],
                $13::text[], $14::text[], $15::bytea[], $16::text[], $17::bytea[], $18::text[], $19::text[],
                $20::text[], $21::text[], $22::text[], $23::text[])
         AS v(seq, type, at, now_at, transport, kind, tps, vehicle, call_id, payload, source, digest,
              incident_id, action, actor, role, note, result), fence
    RETURNING 1),
rev AS (
    INSERT INTO revisions (seq, incident_id, revision, at, outcome, reasons, snapshot)
    SELECT v.* FROM unnest($24::bigint[], $25::text[], $26::int[], $27::float8[], $28::text[], $29::text[],
                           $30::bytea[]) AS v, fence
    RETURNING 1),
inc AS (
    INSERT INTO incidents (incident_id, revision, status, level, score, tps, vehicle, received_at, updated_at,
                           call_id, kind, scene_id, escalation_due_at, level_rank)
    SELECT v.* FROM unnest($31::text[], $32::int[], $33::text[], $34::text[], $35::int[], $36::text[],
                           $37::text[], $38::float8[], $39::float8[], $70::text[], $71::text[], $72::text[],
                           $73::float8[], $74::int[]) AS v, fence
    ON CONFLICT (incident_id) DO UPDATE SET revision = excluded.revision, status = excluded.status,
        level = excluded.level, score = excluded.score, updated_at = excluded.updated_at,
        tps = excluded.tps, vehicle = excluded.vehicle, call_id = excluded.call_id, kind = excluded.kind,
        scene_id = excluded.scene_id,
        escalation_due_at = excluded.escalation_due_at, level_rank = excluded.level_rank
        WHERE excluded.revision >= incidents.revision
    RETURNING 1),
de AS (
    INSERT INTO desk_events (seq, incident_id, at, operator, kind, claimed_by, acked, text)
    SELECT v.* FROM unnest($75::bigint[], $76::text[], $77::float8[], $78::text[], $79::text[], $80::text[],
                           $81::int[], $82::text[]) AS v, fence
    RETURNING 1),
dk AS (
    INSERT INTO desk (incident_id, acked, claimed_by)
    SELECT v.* FROM unnest($83::text[], $84::int[], $85::text[]) AS v, fence
    ON CONFLICT (incident_id) DO UPDATE SET acked = excluded.acked, claimed_by = excluded.claimed_by
    RETURNING 1),
ob AS (
    INSERT INTO outbox (id, incident_id, revision, receiver, created_at, signal_at, state, claimed_by,
                        lease_until)
    SELECT v.*, $68::text, CASE WHEN $68::text IS NULL THEN NULL
                                ELSE extract(epoch from clock_timestamp()) + $69::float8 END
    FROM unnest($40::bigint[], $41::text[], $42::int[], $43::text[], $44::float8[], $45::float8[],
                $46::text[]) AS v, fence
    RETURNING 1),
dl AS (
    INSERT INTO deliveries (outbox_id, delivered_at, attempts)
    SELECT v.* FROM unnest($47::bigint[], $48::float8[], $49::int[]) AS v, fence
    RETURNING 1),
au AS (
    INSERT INTO audit (at, actor, role, action, incident_id, note, outcome)
    SELECT v.* FROM unnest($50::float8[], $51::text[], $52::text[], $53::text[], $54::text[], $55::text[],
                           $56::text[]) AS v, fence
    RETURNING 1),
qu AS (
    INSERT INTO quarantine (at, transport, source, kind, tps, vehicle, payload, codec, reason, path)
    SELECT v.* FROM unnest($58::float8[], $59::text[], $60::text[], $61::text[], $62::text[], $63::text[],
                           $64::bytea[], $65::text[], $66::text[], $67::text[]) AS v, fence
    RETURNING 1),
ca AS (
    INSERT INTO incident_calls (incident_id, tps, vehicle, call_id)
    SELECT v.* FROM unnest($86::text[], $87::text[], $88::text[], $89::text[]) AS v, fence
    ON CONFLICT DO NOTHING
    RETURNING 1),
nt AS (SELECT pg_notify(c, '') FROM unnest($57::text[]) AS c, fence),
checked AS (
    SELECT CASE
        WHEN NOT EXISTS (SELECT 1 FROM fence)
            THEN ecallgw_fenced('fenced: epoch ' || $1 || ' is not the leader''s')
        WHEN (SELECT count(*) FROM js) <> cardinality($2::bigint[])
            THEN ecallgw_fenced('journal rows already sequenced by another sequencer')
        ELSE 0 END AS ok)
SELECT ok + (SELECT count(*) FROM nt) FROM checked
"""


def _result_json(unit: Unit) -> str:
    """The decision kept with a journal row: what an intake waiting for it answers."""
    d = unit.decisions[0] if unit.decisions else None
    snap = d.snapshot if d is not None else None
    incident = (
        None
        if d is None
        else d.incident_id  # also when no revision came of it (issue 12)
        or (snap.incident_id if snap is not None else (d.routes[0].incident_id if d.routes else None))
    )
    if incident is None and unit.action is not None:
        incident = unit.action.incident_id
    return orjson.dumps(
        {
            "outcome": unit.outcome or unit.audit_outcome or (d.outcome if d is not None else ""),
            "incident_id": incident,
            "revision": snap.revision if snap is not None else None,
            "reasons": [[r.code, r.text] for r in d.reasons] if d is not None else [],
        }
    ).decode()


def _journal_row(r: Sequence[Any], *, at_column: int) -> JournalRow:
    """A journal row for replay: ``at`` is the ``now`` the sequencer used (column ``at_column``)."""
    at = r[at_column] if r[at_column] is not None else r[2]
    return journal_row(r, seq=r[16] if r[16] is not None else r[0], at=at)  # seq: the triage order


POSTGRES_SCHEMA_VERSION = len(POSTGRES)
