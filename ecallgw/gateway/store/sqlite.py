"""The store: every signal, incident revision, delivery and audit entry, in SQLite (WAL, group commit).

One thread owns the connection. Work arrives as jobs on a queue; the thread takes whatever is queued
(up to ``batch_max``), runs the jobs in one transaction, commits once, and only then resolves the
jobs' futures on the event loop. A batch commits whole or not at all: should one job fail, the whole
transaction is rolled back and every job of the batch fails (triage already applied every unit of
it in order, so committing and acknowledging the units after a failed one would store a history
the journal cannot replay). So a caller that awaited a job knows it is
durable, and throughput does not pay one commit (or one fsync with ``synchronous=full``) per message.
There is no grouping wait: a batch is whatever queued up while the previous commit ran.

`SqliteStore` is the embedded implementation of `Store` (``protocol.py``): one process, one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from ecallgw.config import StoreConfig
from ecallgw.errors import StoreError, StorePathError
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.records import (
    CommitResult,
    JournalRow,
    OutboxItem,
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
    queue_row,
    queue_sql,
)
from ecallgw.gateway.store.migrations import SQLITE, migrate_sqlite
from ecallgw.gateway.store.plan import plan_units
from ecallgw.gateway.store.protocol import (
    AUDIT_KEYS,
    DEAD_LETTER_KEYS,
    QUARANTINE_KEYS,
    IncidentRow,
    RevisionRow,
    journal_row,
)
from ecallgw.model import IncidentSnapshot

__all__ = ["SCHEMA", "SqliteStore", "create_private"]

log = logging.getLogger("ecallgw.store")

T = TypeVar("T")

_WAL_WARN_PAGES = 250_000  # ~1 GB of WAL (4 KiB pages) not checkpointed: say so
_WAL_BACKSTOP_PAGES = 10_000  # the writer checkpoints itself past this many WAL pages (~40 MB)

_Job = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]
"""A function the writer thread runs inside a group commit, and the future it resolves."""
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]

SCHEMA = SQLITE[0]  # the schema as first released (later migrations alter it: migrate_sqlite)


class SqliteStore:
    """The embedded store: SQLite in WAL mode, one writer thread, group commit.

    Use as an async context manager::

        async with SqliteStore(cfg.store, metrics) as store:
            result = await store.commit(unit)
    """

    def __init__(self, config: StoreConfig, metrics: Metrics | None = None) -> None:
        self._config = config
        self._metrics = metrics
        # Each queue item is the list of jobs of one event-loop turn: one hand-off to the writer
        # thread per turn instead of one per job (a lock, a wake-up and a GIL switch each).
        self._jobs: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._turn: list[_Job] = []  # jobs of the current loop turn, not yet handed over
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed: BaseException | None = None
        self._delivered: list[tuple[int, float, int, int | None, float | None]] = []
        self._delivered_fut: asyncio.Future[None] | None = None  # set while _delivered collects
        self._running = False  # the writer thread is up (a flag: Thread.is_alive per job costs ~5 us)
        self._batch: list[_Job] = []
        self._checkpointer: threading.Thread | None = None
        self._closing = False
        self._stop_checkpoints = threading.Event()
        self._unwritable: str | None = None  # why commits are held (disk full, read-only), if they are
        self.checkpoints = 0
        self.commits = 0

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> SqliteStore:
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="ecallgw-store", daemon=True)
        self._thread.start()
        await ready
        if self._config.path != ":memory:" and self._config.checkpoint_interval_s > 0:
            self._checkpointer = threading.Thread(
                target=self._checkpoints, name="ecallgw-checkpoint", daemon=True
            )
            self._checkpointer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._hand_over()  # the last loop turn's jobs go in before the stop
        self._closing = True  # a job queued behind the stop marker would never be answered
        self._jobs.put(None)
        self._stop_checkpoints.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.join)

    def _checkpoints(self) -> None:
        """Copy the WAL into the database file from a connection of its own, off the commit path.

        With SQLite's automatic checkpoint, the commit that crosses 1,000 WAL pages copies them
        and fsyncs the database file itself: a stall of tens of milliseconds for the signals
        waiting on that commit, several times a second under load. A PASSIVE checkpoint here
        runs beside the writer (WAL mode lets it) and never blocks it; committed data is durable
        in the WAL either way.
        """
        interval = self._config.checkpoint_interval_s
        try:
            conn = sqlite3.connect(self._config.path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            log.error("checkpointer cannot open the store", extra={"error": str(exc)})
            return
        failing = ""  # the error of the last failed checkpoint: said once, not every interval
        try:
            while not self._stop_checkpoints.wait(interval):
                try:
                    busy, wal_pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    if self._unwritable is None and str(exc) != failing:  # else the writer said it
                        log.warning("checkpoint failed", extra={"error": str(exc)})
                    failing = str(exc)
                    continue
                failing = ""
                self.checkpoints += 1
                if wal_pages > _WAL_WARN_PAGES and copied < wal_pages:
                    log.warning(
                        "the WAL keeps growing: checkpoints cannot catch up",
                        extra={"wal_pages": wal_pages, "checkpointed": copied, "busy": busy},
                    )
        finally:
            conn.close()

    @property
    def writable(self) -> bool:
        """False once the writer thread died, or while commits are held (`unwritable_reason`)."""
        return (
            self._failed is None
            and self._unwritable is None
            and self._thread is not None
            and self._thread.is_alive()
        )

    @property
    def unwritable_reason(self) -> str | None:
        """Why the store cannot write now (``/readyz`` says it), or None while it can."""
        if self._failed is not None:
            return f"the store writer stopped: {self._failed!r}"
        return self._unwritable

    def _open(self) -> sqlite3.Connection:
        path = Path(self._config.path)
        if str(path) != ":memory:":
            create_private(path)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=True, cached_statements=512)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._config.synchronous.upper()}")
        if str(path) != ":memory:" and self._config.checkpoint_interval_s > 0:
            # The checkpointer thread copies the WAL (_checkpoints); the writer keeps a backstop,
            # because SQLite rewinds the WAL only when a checkpoint finishes while no transaction
            # is open, which a writer that is never idle (a backlog) does not allow: without it
            # the WAL grew past 1 GB in 8 s. By 10,000 pages most are copied, so it is short.
            conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_BACKSTOP_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit={_WAL_BACKSTOP_PAGES * 4096}")
        conn.execute("PRAGMA foreign_keys=OFF")
        # Retention deletes personal data: overwrite it on disk instead of leaving it in free pages.
        conn.execute("PRAGMA secure_delete=ON")
        migrate_sqlite(conn, str(path))
        return conn

    def _run(self, ready: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            conn = self._open()
        except StoreError as exc:
            loop.call_soon_threadsafe(_set_exception, ready, exc)
            return
        except (sqlite3.Error, OSError) as exc:
            err: StoreError = StorePathError("store.path", self._config.path, f"cannot open the store: {exc}")
            loop.call_soon_threadsafe(_set_exception, ready, err)
            return
        self._running = True
        loop.call_soon_threadsafe(_set_result, ready, None)
        try:
            self._loop_jobs(conn, loop)
        except BaseException as exc:  # the writer must never die silently: fail every waiter
            self._failed = exc
            self._running = False
            waiting = [fut for _, fut in self._batch] + [fut for _, fut in self._take_queued()]
            err = StoreError(f"the store writer stopped: {exc!r}")
            failed: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = [
                (fut, None, err) for fut in waiting
            ]
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                loop.call_soon_threadsafe(_resolve_all, failed)
            log.critical("the store writer stopped", exc_info=exc)
        finally:
            self._running = False
            conn.close()

    def _loop_jobs(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        batch_max = self._config.batch_max
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = self._batch = first
            stop = False
            while len(batch) < batch_max:
                try:
                    jobs = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if jobs is None:
                    stop = True
                    break
                batch.extend(jobs)
            t0 = time.perf_counter()
            outcomes = self._commit_batch(conn, batch)
            self.commits += 1
            if self._metrics is not None:
                self._metrics.store_commit.observe(time.perf_counter() - t0)
                self._metrics.store_commit_units.observe(len(batch))
            reason = _refused(outcomes)
            if reason is not None:
                stop = self._hold(conn, loop, batch, reason) or stop
            else:
                loop.call_soon_threadsafe(_resolve_all, outcomes)
            self._batch = []
            if stop:
                return

    def _hold(
        self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop, batch: list[_Job], refusal: str
    ) -> bool:
        """Degraded mode: the disk is full or read-only. Hold the batch's units until they commit.

        Triage has applied every unit already, in order, so failing them would leave a history the
        journal cannot replay (the fail-stop this replaces). Instead the batch (and every unit
        queued after it, in order) is retried as one batch, with backoff, until space or write
        access returns; nothing of it is resolved, so nothing is acknowledged meanwhile. Other
        jobs run alone at once: a read answers; a write the disk refuses (a delivery record, the
        retention job) joins the held ones. ``writable`` is False throughout (``/readyz``). The
        failed transaction was rolled back (`_commit_batch`); a retry plans the rows afresh.

        Returns:
            True when a stop was asked meanwhile (held units not committed by then are cancelled:
            not stored, not acknowledged; the broker redelivers them).
        """
        started = time.monotonic()
        self._set_unwritable(refusal)
        held = list(batch)
        delay, stop = _HOLD_MIN_S, False
        retry_at = time.monotonic() + delay
        while True:
            wait = retry_at - time.monotonic()
            if wait > 0 and not stop:
                try:
                    jobs = self._jobs.get(timeout=wait)
                except queue.Empty:
                    continue
                if jobs is None:
                    stop = True  # one last try, then give up what is still held
                else:
                    for job in jobs:
                        if type(job[0]) is _UnitJob or not self._run_alone(conn, loop, job):
                            held.append(job)  # behind the held ones: the journal order stays
                continue
            self._batch = held  # failed, not lost, should the writer die
            outcomes = self._commit_batch(conn, held)  # the retry is the probe
            reason = _refused(outcomes)
            if reason is None:
                # Committed; or failed otherwise (a bug, not the disk): the pipeline stops on that.
                loop.call_soon_threadsafe(_resolve_all, outcomes)
                self._unwritable = None
                if self._metrics is not None:
                    self._metrics.store_writable.set(1)
                log.info(
                    "store writable again: held commits written",
                    extra={
                        "event": "store_writable",
                        "units": len(held),
                        "seconds": round(time.monotonic() - started, 3),
                    },
                )
                return stop
            if stop:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_cancel_all, [fut for _, fut in held])
                # DEBUG: the gateway said so while its log was up (app.py); this is past its end.
                log.debug(
                    "stopping with commits held: not stored, not acknowledged",
                    extra={"units": len(held), "reason": reason},
                )
                return True
            self._unwritable = reason
            delay = min(_HOLD_MAX_S, delay * 2)
            retry_at = time.monotonic() + delay

    def _set_unwritable(self, reason: str) -> None:
        self._unwritable = reason
        if self._metrics is not None:
            self._metrics.store_writable.set(0)
        log.warning(
            "store not writable: holding commits until it is; ingest answers 503, MQTT is not acknowledged",
            extra={"event": "store_unwritable", "reason": reason},
        )

    def _run_alone(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop, job: _Job) -> bool:
        """A job that is no unit, while held: its own deferred transaction (a read needs no space).

        Returns:
            False when the disk refused it (the caller holds it); True when it was answered.
        """
        fn, fut = job
        try:
            conn.execute("BEGIN")
            value = fn(conn)
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if store_refusal(exc) is not None:
                return False
            failed: _Outcome = (fut, None, StoreError(f"store operation failed: {exc!r}"))
            loop.call_soon_threadsafe(_resolve_all, [failed])
            return True
        done: _Outcome = (fut, value, None)
        loop.call_soon_threadsafe(_resolve_all, [done])
        return True

    @staticmethod
    def _commit_batch(
        conn: sqlite3.Connection,
        batch: list[_Job],
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        """Run a batch's jobs in one transaction: all commit, or all fail with `StoreError`."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            values: list[Any] = []
            i, n = 0, len(batch)
            while i < n:
                fn = batch[i][0]
                if type(fn) is _UnitJob:
                    j = i + 1
                    while j < n and type(batch[j][0]) is _UnitJob:
                        j += 1
                    values += _write_units(conn, [cast(_UnitJob, job).unit for job, _ in batch[i:j]])
                    i = j
                else:
                    values.append(fn(conn))
                    i += 1
            conn.execute("COMMIT")
            return [(fut, value, None) for (_, fut), value in zip(batch, values, strict=True)]
        except Exception as exc:
            if conn.in_transaction:
                # After SQLITE_FULL the transaction may still be open (a failed COMMIT leaves it
                # so): roll it back so that the retry starts clean (a failing ROLLBACK too).
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            err = StoreError(f"store operation failed, batch of {len(batch)} rolled back: {exc!r}")
            err.__cause__ = exc  # `_refused` tells a full or read-only disk by it
            return [(fut, None, err) for _, fut in batch]

    def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn`` behind every job queued before it; handed to the writer at the end of the turn."""
        if self._failed is not None or not self._running or self._closing:
            raise StoreError("the store is not running") from self._failed
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[T] = loop.create_future()
        turn = self._turn
        if not turn:
            loop.call_soon(self._hand_over)
        turn.append((fn, fut))
        return fut

    def _hand_over(self) -> None:
        """Give the writer thread the jobs of this loop turn, in order, as one queue item."""
        self._delivered_fut = None  # later confirmations start a new job (this one is closed)
        jobs, self._turn = self._turn, []
        if not jobs:
            return
        if self._failed is not None or not self._running:
            _fail_jobs(jobs)
            return
        self._jobs.put(jobs)
        if self._failed is not None:
            # The writer died between the check and the put, after draining the queue in its
            # last words: nobody else will answer these.
            _fail_jobs(self._take_queued())

    def _take_queued(self) -> list[_Job]:
        """Empty the writer's queue (it is gone): the jobs nobody will run."""
        jobs: list[_Job] = []
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return jobs
            if item is not None:
                jobs += item

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in the writer thread inside the next group commit.

        Args:
            fn: a function of the connection; it runs in the group commit's one transaction, after
                the jobs queued before it, and must not commit. If it raises, the whole batch is
                rolled back and every job of it fails.

        Returns:
            What ``fn`` returned, once its transaction committed.

        Raises:
            StoreError: the function or the commit failed.
        """
        return await self._submit(fn)

    # --- writes ---------------------------------------------------------------------------------

    def commit_nowait(self, unit: Unit) -> asyncio.Future[CommitResult]:
        """Queue one unit for the next group commit; the future resolves once it is durable."""
        return self._submit(_UnitJob(unit))

    async def commit(self, unit: Unit) -> CommitResult:
        """Write one unit of work (journal, revisions, outbox, quarantine, audit) in one transaction."""
        return await self.commit_nowait(unit)

    async def record_delivered(
        self, item: OutboxItem, *, at: float, attempts: int, status: int | None, sent_at: float | None = None
    ) -> None:
        """Mark an outbox entry delivered.

        Args:
            item: the entry.
            at: when the receiver confirmed.
            attempts: requests sent.
            status: the receiver's status code, when it has one.
            sent_at: the send time written into the document (CAP updates reference it).
        """

        await self.record_delivered_nowait(item, at=at, attempts=attempts, status=status, sent_at=sent_at)

    def record_delivered_nowait(
        self, item: OutboxItem, *, at: float, attempts: int, status: int | None, sent_at: float | None = None
    ) -> asyncio.Future[None]:
        """`record_delivered` without waiting: the future resolves once it is committed.

        Confirmations coalesce: those of one event-loop turn become one job (two ``executemany``)
        instead of a job, a future and a thread hand-off each. The job is queued at the end of the
        turn, or before any other job, so the store's order (a read sees every write queued before
        it) holds.
        """
        fut = self._delivered_fut
        if fut is None:
            # The first confirmation of this turn opens a job at this place in the order; the
            # ones after it join its rows until the turn is handed over. They all refer to outbox
            # rows committed earlier, so writing them together here keeps every read after them.
            rows: list[tuple[int, float, int, int | None, float | None]] = []

            def fn(conn: sqlite3.Connection) -> None:
                for start in range(0, len(rows), _CHUNK):  # a statement per chunk: see _insert_rows
                    ids = [r[0] for r in rows[start : start + _CHUNK]]
                    conn.execute(
                        f"UPDATE outbox SET state='delivered' WHERE id IN ({','.join('?' * len(ids))})", ids
                    )
                _insert_rows(conn, "INSERT OR REPLACE INTO deliveries", 5, rows)

            fut = self._delivered_fut = self._submit(fn)
            self._delivered = rows
        self._delivered.append((item.id, at, attempts, status, sent_at))
        return fut

    async def first_delivery(self, incident_id: str, receiver: str) -> tuple[int, float] | None:
        """(revision, sent time) of the first revision of an incident a receiver confirmed, or None."""

        def fn(conn: sqlite3.Connection) -> tuple[int, float] | None:
            row = conn.execute(
                "SELECT o.revision, d.sent_at FROM outbox o JOIN deliveries d ON d.outbox_id = o.id "
                "WHERE o.incident_id=? AND o.receiver=? AND d.sent_at IS NOT NULL "
                "ORDER BY o.revision LIMIT 1",
                (incident_id, receiver),
            ).fetchone()
            return (int(row[0]), float(row[1])) if row is not None else None

        return await self.run(fn)

    async def record_dead_letter(
        self, item: OutboxItem, *, at: float, attempts: int, reason: str, detail: str
    ) -> None:
        """Move an outbox entry to the dead letters with its reason."""

        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE outbox SET state='dead' WHERE id=?", (item.id,))
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters VALUES (?,?,?,?,?)",
                (item.id, at, attempts, reason, detail),
            )

        await self.run(fn)

    async def key(self, name: str) -> bytes:
        """A random 32-byte key kept in the store under ``name`` (created on first use)."""

        def fn(conn: sqlite3.Connection) -> bytes:
            row = conn.execute("SELECT value FROM meta WHERE key=?", (name,)).fetchone()
            if row is not None:
                return bytes(row[0])
            value = secrets.token_bytes(32)
            conn.execute("INSERT INTO meta VALUES (?,?)", (name, value))
            return value

        return await self.run(fn)

    async def delete_before(self, cutoff: float, *, journal_margin_s: float = 0.0) -> dict[str, int]:
        """The retention job: delete incident data older than ``cutoff`` (epoch seconds).

        An incident goes once its last revision is older than the cutoff and nothing of it is still
        waiting for delivery; with it go its revisions and outbox rows. Quarantine and audit rows
        older than the cutoff go too. Journal rows go by the same cutoff, but never those of an
        incident that is kept (from ``journal_margin_s`` before its first signal on): cutting its
        history would make a replay turn a later signal of the call into a new incident.

        Returns:
            Rows deleted per table.
        """

        def fn(conn: sqlite3.Connection) -> dict[str, int]:
            counts: dict[str, int] = {}
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS expired (incident_id TEXT PRIMARY KEY)")
            conn.execute("DELETE FROM expired")
            conn.execute(
                "INSERT INTO expired SELECT incident_id FROM incidents i WHERE updated_at < ? AND NOT EXISTS "
                "(SELECT 1 FROM outbox o WHERE o.incident_id = i.incident_id AND o.state = 'pending')",
                (cutoff,),
            )
            for table, sql in (
                (
                    "deliveries",
                    "DELETE FROM deliveries WHERE outbox_id IN (SELECT id FROM outbox WHERE "
                    "incident_id IN (SELECT incident_id FROM expired))",
                ),
                (
                    "dead_letters",
                    "DELETE FROM dead_letters WHERE outbox_id IN (SELECT id FROM outbox WHERE "
                    "incident_id IN (SELECT incident_id FROM expired))",
                ),
                ("outbox", "DELETE FROM outbox WHERE incident_id IN (SELECT incident_id FROM expired)"),
                ("revisions", "DELETE FROM revisions WHERE incident_id IN (SELECT incident_id FROM expired)"),
                (
                    "incident_calls",
                    "DELETE FROM incident_calls WHERE incident_id IN (SELECT incident_id FROM expired)",
                ),
                (
                    "desk_events",
                    "DELETE FROM desk_events WHERE incident_id IN (SELECT incident_id FROM expired)",
                ),
                ("desk", "DELETE FROM desk WHERE incident_id IN (SELECT incident_id FROM expired)"),
                ("incidents", "DELETE FROM incidents WHERE incident_id IN (SELECT incident_id FROM expired)"),
            ):
                counts[table] = conn.execute(sql).rowcount
            (oldest_kept,) = conn.execute("SELECT min(received_at) FROM incidents").fetchone()
            journal_cutoff = cutoff if oldest_kept is None else min(cutoff, oldest_kept - journal_margin_s)
            counts["journal"] = conn.execute("DELETE FROM journal WHERE at < ?", (journal_cutoff,)).rowcount
            for table in ("quarantine", "audit"):
                counts[table] = conn.execute(f"DELETE FROM {table} WHERE at < ?", (cutoff,)).rowcount
            # Expired console sessions: not personal data beyond the operator's name, but no reason
            # to keep them until the next sign-in sweeps them.
            counts["console_sessions"] = conn.execute(
                "DELETE FROM console_sessions WHERE expires_at <= ?", (time.time(),)
            ).rowcount
            return counts

        return await self.run(fn)

    async def swap_meta(self, name: str, value: bytes) -> bytes | None:
        """Store ``value`` under ``name`` in the meta table; return the previous value (None at first)."""

        def fn(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute("SELECT value FROM meta WHERE key=?", (name,)).fetchone()
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (name, value))
            return bytes(row[0]) if row is not None else None

        return await self.run(fn)

    # --- reads (they go through the same thread: one connection, always consistent) --------------

    async def replay_after(self, since: float, margin_s: float) -> int:
        """Where a replay starts: the journal seq after which every row it needs lies.

        Triage keeps state only for what was touched within its lifetime, so a replay needs the
        journal from ``since`` (now minus that lifetime and one prune interval) on, and, for every
        incident that may have been touched since then, its whole history: from ``margin_s`` before
        its first signal (orphan cancels and positions of the call come before the MSD). Touched
        means updated (a revision) or, since signals that change nothing for receivers (an
        unchanged position, a resent MSD) keep an incident alive without a revision, the latest
        incident of any vehicle that sent a signal since then.

        Returns:
            The greatest seq before that point (0 when the replay starts at the beginning).
        """

        def fn(conn: sqlite3.Connection) -> int:
            (first,) = conn.execute(
                "SELECT min(received_at) FROM incidents WHERE updated_at >= ?", (since,)
            ).fetchone()
            (latest,) = conn.execute(
                "SELECT min((SELECT received_at FROM incidents i WHERE i.tps = s.tps AND "
                "i.vehicle = s.vehicle ORDER BY i.updated_at DESC LIMIT 1)) "
                "FROM (SELECT DISTINCT tps, vehicle FROM journal WHERE at >= ? AND type = 'signal') s",
                (since,),
            ).fetchone()
            firsts = [t for t in (first, latest) if t is not None]
            start = min([since, *(t - margin_s for t in firsts)])
            (seq,) = conn.execute("SELECT max(seq) FROM journal WHERE at < ?", (start,)).fetchone()
            return int(seq or 0)

        return await self.run(fn)

    async def recent_revisions(self, since: float) -> dict[str, int]:
        """incident_id -> stored latest revision, for incidents updated at or after ``since``."""

        def fn(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT incident_id, revision FROM incidents WHERE updated_at >= ?", (since,)
            ).fetchall()
            return {r[0]: int(r[1]) for r in rows}

        return await self.run(fn)

    async def journal(self, after_seq: int, limit: int) -> list[JournalRow]:
        """Journal rows with ``seq > after_seq``, oldest first, at most ``limit``."""

        def fn(conn: sqlite3.Connection) -> list[JournalRow]:
            rows = conn.execute(
                "SELECT seq, type, at, transport, kind, tps, vehicle, call_id, payload, source, incident_id, "
                "action, actor, role, note FROM journal WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
            return [_journal_row(r) for r in rows]

        return await self.run(fn)

    async def pending_outbox(self) -> list[OutboxItem]:
        """Every pending outbox entry, oldest first."""

        def fn(conn: sqlite3.Connection) -> list[OutboxItem]:
            rows = conn.execute(
                "SELECT id, incident_id, revision, receiver, signal_at FROM outbox "
                "WHERE state='pending' ORDER BY id"
            ).fetchall()
            return [
                OutboxItem(id=r[0], incident_id=r[1], revision=r[2], receiver=r[3], signal_at=r[4])
                for r in rows
            ]

        return await self.run(fn)

    async def load_revisions(
        self, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], IncidentSnapshot]:
        """Stored snapshots by (incident_id, revision); missing keys are left out."""

        def fn(conn: sqlite3.Connection) -> dict[tuple[str, int], bytes]:
            found: dict[tuple[str, int], bytes] = {}
            for incident_id, revision in keys:
                row = conn.execute(
                    "SELECT snapshot FROM revisions WHERE incident_id=? AND revision=?",
                    (incident_id, revision),
                ).fetchone()
                if row is not None:
                    found[(incident_id, revision)] = row[0]
            return found

        raw = await self.run(fn)
        # Decoding the MSDs again is CPU work: do it here, not in the writer thread.
        return {k: load_snapshot(v) for k, v in raw.items()}

    async def list_incidents(
        self, *, status: str | None = None, level: str | None = None, limit: int = 100
    ) -> list[IncidentRow]:
        """The latest revision of incidents, newest first, optionally filtered."""

        def fn(conn: sqlite3.Connection) -> list[IncidentRow]:
            sql = "SELECT * FROM incidents"
            where: list[str] = []
            args: list[object] = []
            if status:
                where.append("status = ?")
                args.append(status)
            if level:
                where.append("level = ?")
                args.append(level)
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY updated_at DESC LIMIT ?"
            args.append(limit)
            return [IncidentRow.from_row(r) for r in conn.execute(sql, args).fetchall()]

        return await self.run(fn)

    async def find_incidents(
        self, *, call_id: str | None = None, vehicle: str | None = None, limit: int = 100
    ) -> list[IncidentRow]:
        """Incidents one of whose calls has this call id and/or vehicle key, newest first (issue 12)."""
        if call_id is None and vehicle is None:
            return []
        sql, args = find_sql("*", call_id, vehicle, limit)
        rows = await self.run(lambda conn: conn.execute(sql, args).fetchall())
        return [IncidentRow.from_row(r) for r in rows]

    async def get_incident(
        self, incident_id: str
    ) -> tuple[IncidentRow, list[RevisionRow], list[dict[str, Any]]] | None:
        """One incident with every revision (its history) and its deliveries; None when unknown."""

        def fn(conn: sqlite3.Connection) -> tuple[Any, list[Any], list[Any]] | None:
            row = conn.execute("SELECT * FROM incidents WHERE incident_id=?", (incident_id,)).fetchone()
            if row is None:
                return None
            revs = conn.execute(
                "SELECT seq, outcome, reasons, snapshot FROM revisions WHERE incident_id=? ORDER BY revision",
                (incident_id,),
            ).fetchall()
            dels = conn.execute(
                "SELECT o.receiver, o.revision, o.state, d.delivered_at, d.attempts, d.status, "
                "l.reason, l.at "
                "FROM outbox o LEFT JOIN deliveries d ON d.outbox_id = o.id "
                "LEFT JOIN dead_letters l ON l.outbox_id = o.id WHERE o.incident_id=? ORDER BY o.id",
                (incident_id,),
            ).fetchall()
            return row, revs, dels

        found = await self.run(fn)
        if found is None:
            return None
        row, revs, dels = found
        history = [RevisionRow.from_row(r) for r in revs]
        deliveries = [
            {
                "receiver": d[0],
                "revision": d[1],
                "state": d[2],
                "delivered_at": d[3],
                "attempts": d[4],
                "status": d[5],
                "dead_letter_reason": d[6],
                "dead_lettered_at": d[7],
            }
            for d in dels
        ]
        return IncidentRow.from_row(row), history, deliveries

    # --- the operator desk (issue 13; store/desk.py) ------------------------------------------------

    async def list_queue(self, query: IncidentQuery) -> list[QueueRow]:
        """Incidents in the queue's order, filtered (store/desk.py)."""
        sql, args = queue_sql(query)
        rows = await self.run(lambda conn: conn.execute(sql, args).fetchall())
        return [queue_row(r) for r in rows]

    async def queue_counters(self, non_psap: Sequence[str]) -> dict[str, int]:
        """Open, unacknowledged, waiting for escalation and at a PSAP, over every open incident."""
        sql, args = counters_sql(non_psap)
        row = await self.run(lambda conn: conn.execute(sql, args).fetchone())
        return counters(row)

    async def desk_view(self, incident_id: str, non_psap: Sequence[str]) -> DeskView | None:
        """The desk's view of one incident: its queue row, desk changes and linked incidents."""

        def fn(conn: sqlite3.Connection) -> tuple[Any, list[Any], list[Any]] | None:
            sql, args = queue_sql(IncidentQuery(q=incident_id, limit=2, non_psap=tuple(non_psap)))
            row = next((r for r in conn.execute(sql, args).fetchall() if r[0] == incident_id), None)
            if row is None:
                return None
            events = conn.execute(
                f"SELECT {DESK_EVENT_COLUMNS} FROM desk_events WHERE incident_id=? ORDER BY seq",
                (incident_id,),
            ).fetchall()
            linked = conn.execute(*linked_sql(row[11], incident_id)).fetchall()
            return row, events, linked

        found = await self.run(fn)
        if found is None:
            return None
        return desk_view(*found)

    async def stream_after(self, seq: int, limit: int = 500) -> list[RevisionRow | DeskEventRow]:
        """The operator stream after ``seq``: revisions and desk changes in their one sequence."""

        def fn(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            revs = conn.execute(
                "SELECT seq, outcome, reasons, snapshot FROM revisions WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
            desk = conn.execute(
                f"SELECT {DESK_EVENT_COLUMNS} FROM desk_events WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
            return revs, desk

        revs, desk = await self.run(fn)
        return merge_stream(revs, desk, limit)

    async def last_stream_seq(self) -> int:
        """The operator stream's newest sequence number (0 when empty)."""

        def fn(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT max(ifnull((SELECT max(seq) FROM revisions), 0), "
                "ifnull((SELECT max(seq) FROM desk_events), 0))"
            ).fetchone()
            return int(row[0])

        return await self.run(fn)

    async def revisions_after(self, seq: int, limit: int = 500) -> list[RevisionRow]:
        """Revisions with a global sequence after ``seq`` (resuming the operator stream)."""

        def fn(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                "SELECT seq, outcome, reasons, snapshot FROM revisions WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()

        return [RevisionRow.from_row(r) for r in await self.run(fn)]

    async def counts(self) -> dict[str, int]:
        """Row counts for summaries and tests."""

        def fn(conn: sqlite3.Connection) -> dict[str, int]:
            out = {
                t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in (
                    "journal",
                    "incidents",
                    "revisions",
                    "outbox",
                    "deliveries",
                    "dead_letters",
                    "quarantine",
                    "audit",
                )
            }
            out["outbox_pending"] = conn.execute(
                "SELECT count(*) FROM outbox WHERE state='pending'"
            ).fetchone()[0]
            return out

        return await self.run(fn)

    async def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest quarantined payloads with their reasons."""

        def fn(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                "SELECT id, at, transport, source, kind, tps, vehicle, payload, codec, reason, path "
                "FROM quarantine ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()

        keys = QUARANTINE_KEYS
        return [dict(zip(keys, r, strict=True)) for r in await self.run(fn)]

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter with its outbox key."""

        def fn(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                "SELECT o.incident_id, o.revision, o.receiver, l.at, l.attempts, l.reason, l.detail "
                "FROM dead_letters l JOIN outbox o ON o.id = l.outbox_id ORDER BY l.outbox_id"
            ).fetchall()

        keys = DEAD_LETTER_KEYS
        return [dict(zip(keys, r, strict=True)) for r in await self.run(fn)]

    async def audit_log(self, incident_id: str | None = None) -> list[dict[str, Any]]:
        """Audit entries, oldest first, optionally of one incident."""

        def fn(conn: sqlite3.Connection) -> list[Any]:
            sql = "SELECT at, actor, role, action, incident_id, note, outcome FROM audit"
            if incident_id is None:
                return conn.execute(sql + " ORDER BY id").fetchall()
            return conn.execute(sql + " WHERE incident_id=? ORDER BY id", (incident_id,)).fetchall()

        keys = AUDIT_KEYS
        return [dict(zip(keys, r, strict=True)) for r in await self.run(fn)]

    # --- operator console sessions (ecallgw/console/session.py) ------------------------------------

    async def session_put(
        self, session_id: str, *, operator: str, token_sha256: str, created_at: float, expires_at: float
    ) -> None:
        """Keep a console session (by the SHA-256 of its cookie); expired ones are dropped meanwhile."""

        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM console_sessions WHERE expires_at <= ?", (created_at,))
            conn.execute(
                "INSERT INTO console_sessions VALUES (?,?,?,?,?)",
                (session_id, operator, token_sha256, created_at, expires_at),
            )

        await self.run(fn)

    async def session_get(self, session_id: str, *, now: float) -> tuple[str, str, float] | None:
        """(operator, token SHA-256, expires_at) of an unexpired session, or None."""

        def fn(conn: sqlite3.Connection) -> tuple[str, str, float] | None:
            row = conn.execute(
                "SELECT operator, token_sha256, expires_at FROM console_sessions "
                "WHERE id=? AND expires_at > ?",
                (session_id, now),
            ).fetchone()
            return None if row is None else (row[0], row[1], row[2])

        return await self.run(fn)

    async def session_delete(self, session_id: str) -> None:
        """End a session (sign-out)."""
        await self.run(lambda conn: conn.execute("DELETE FROM console_sessions WHERE id=?", (session_id,)))

    # --- end of console sessions ---------------------------------------------------------------------


# --- helpers run in the writer thread -------------------------------------------------------------


class _UnitJob:
    """A unit's write as a job; consecutive ones in a batch are written together (`_write_units`)."""

    __slots__ = ("unit",)

    def __init__(self, unit: Unit) -> None:
        self.unit = unit

    def __call__(self, conn: sqlite3.Connection) -> CommitResult:
        return _write_units(conn, [self.unit])[0]


_CHUNK = 64  # rows per multi-row INSERT: 5 tables x 64 sizes of statement stay in the cache

_JOURNAL_COLUMNS = (
    "seq, type, at, transport, kind, tps, vehicle, call_id, payload, source, incident_id, action, actor, "
    "role, note"
)
_INCIDENT_COLUMNS = (
    "incident_id, revision, status, level, score, tps, vehicle, received_at, updated_at, call_id, kind, "
    "scene_id, escalation_due_at, level_rank"
)
_INCIDENT_UPSERT = (
    " ON CONFLICT (incident_id) DO UPDATE SET revision=excluded.revision, status=excluded.status, "
    "level=excluded.level, score=excluded.score, updated_at=excluded.updated_at, tps=excluded.tps, "
    "vehicle=excluded.vehicle, call_id=excluded.call_id, kind=excluded.kind, scene_id=excluded.scene_id, "
    "escalation_due_at=excluded.escalation_due_at, level_rank=excluded.level_rank "
    "WHERE excluded.revision >= incidents.revision"
)


_CALLS_KEEP = " ON CONFLICT DO NOTHING"  # a call is kept once per incident


def _insert_rows(
    conn: sqlite3.Connection, head: str, width: int, rows: list[tuple[Any, ...]], tail: str = ""
) -> None:
    """``head VALUES (?,..),(?,..) tail`` in chunks: one statement, so one step, per chunk.

    Every `sqlite3` step releases the GIL and must take it back from the event loop's thread,
    which under load holds it for up to the switch interval (5 ms): a statement per row made a
    20-unit commit take 17 ms (p50) beside a busy loop instead of 0.4 ms.
    """
    one = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        conn.execute(f"{head} VALUES {','.join([one] * len(chunk))}{tail}", [v for r in chunk for v in r])


def _write_units(conn: sqlite3.Connection, units: list[Unit]) -> list[CommitResult]:
    """Write units in order inside the open transaction, a few multi-row statements in all.

    Row ids are assigned by `plan_units` from the tables' current maxima (one query); only this
    writer inserts into these tables, inside this transaction.
    """
    journal_seq, revision_seq, outbox_id = conn.execute(
        "SELECT (SELECT ifnull(max(seq), 0) FROM journal), (SELECT max(ifnull((SELECT max(seq) FROM "
        "revisions), 0), ifnull((SELECT max(seq) FROM desk_events), 0))), "
        "(SELECT ifnull(max(id), 0) FROM outbox)"
    ).fetchone()
    plan = plan_units(units, journal_seq, revision_seq, outbox_id)
    journal = [_journal_values(seq, unit) for seq, unit in plan.journal]
    revisions, incidents = plan.revisions, plan.incidents
    outbox_rows, delivered_rows = plan.outbox, plan.delivered
    for row in plan.audit:  # rare (operator actions and views): a statement each
        conn.execute(
            "INSERT INTO audit (at, actor, role, action, incident_id, note, outcome) VALUES (?,?,?,?,?,?,?)",
            row,
        )
    for row in plan.quarantine:  # rare
        conn.execute(
            "INSERT INTO quarantine (at, transport, source, kind, tps, vehicle, payload, codec, reason, "
            "path) VALUES (?,?,?,?,?,?,?,?,?,?)",
            row,
        )
    if journal:
        _insert_rows(conn, f"INSERT INTO journal ({_JOURNAL_COLUMNS})", 15, journal)
    if revisions:
        _insert_rows(
            conn,
            "INSERT INTO revisions (seq, incident_id, revision, at, outcome, reasons, snapshot)",
            7,
            revisions,
        )
    if incidents:
        # In unit order: a later revision of the same incident in this batch wins, as it would
        # have row by row.
        _insert_rows(conn, f"INSERT INTO incidents ({_INCIDENT_COLUMNS})", 14, incidents, _INCIDENT_UPSERT)
    if outbox_rows:
        _insert_rows(
            conn,
            "INSERT INTO outbox (id, incident_id, revision, receiver, created_at, signal_at, state)",
            7,
            outbox_rows,
        )
    if delivered_rows:
        _insert_rows(conn, "INSERT INTO deliveries (outbox_id, delivered_at, attempts)", 3, delivered_rows)
    if plan.calls:  # the calls a revision brought (issue 12): find an incident by any of them
        head = "INSERT INTO incident_calls (incident_id, tps, vehicle, call_id)"
        _insert_rows(conn, head, 4, plan.calls, _CALLS_KEEP)
    if plan.desk_events:  # operator desk changes (issue 13): rare, after the revisions they follow
        _insert_rows(
            conn,
            "INSERT INTO desk_events (seq, incident_id, at, operator, kind, claimed_by, acked, text)",
            8,
            plan.desk_events,
        )
        _insert_rows(
            conn,
            "INSERT INTO desk (incident_id, acked, claimed_by)",
            3,
            plan.desk,
            " ON CONFLICT (incident_id) DO UPDATE SET acked=excluded.acked, claimed_by=excluded.claimed_by",
        )
    return plan.results


def _journal_values(seq: int, unit: Unit) -> tuple[Any, ...]:
    s, a = unit.signal, unit.action
    return (
        seq,
        unit.journal_type,
        unit.at,
        s.transport if s else None,
        s.kind if s else None,
        s.tps if s else None,
        s.vehicle if s else None,
        s.call_id if s else None,
        s.payload if s else None,
        s.source if s else None,
        a.incident_id if a else None,
        a.action if a else None,
        a.actor if a else None,
        a.role if a else None,
        a.note if a else None,
    )


def _journal_row(r: Sequence[Any]) -> JournalRow:
    return journal_row(r, seq=r[0], at=r[2])


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


_HOLD_MIN_S = 0.1  # first retry of held commits (doubling) ...
_HOLD_MAX_S = 2.0  # ... up to this: space back is noticed within 2 s
_SQLITE_REFUSALS = {
    sqlite3.SQLITE_FULL: "disk full",
    sqlite3.SQLITE_READONLY: "read-only",
    sqlite3.SQLITE_IOERR: "I/O error",  # ENOSPC while writing the WAL comes as SQLITE_IOERR_WRITE
    sqlite3.SQLITE_CANTOPEN: "cannot open a file",  # the -wal or a temporary file
}
_OS_REFUSALS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only"}


def store_refusal(exc: BaseException | None) -> str | None:
    """The reason, when an error means the disk is full or read-only (worth holding and retrying)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        label = _SQLITE_REFUSALS.get(code & 0xFF) if isinstance(code, int) else None
        if label is not None:
            return f"{label}: {exc} ({getattr(exc, 'sqlite_errorname', code)})"
    if isinstance(exc, OSError) and exc.errno in _OS_REFUSALS:
        return f"{_OS_REFUSALS[exc.errno]}: {exc}"
    return None


def _refused(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> str | None:
    """A batch failed because the store cannot write (full, read-only): why; None otherwise."""
    if not outcomes or outcomes[0][2] is None:
        return None
    return store_refusal(outcomes[0][2].__cause__)


def _cancel_all(futs: list[asyncio.Future[Any]]) -> None:
    for fut in futs:
        fut.cancel()


def _fail_jobs(jobs: list[_Job]) -> None:
    err = StoreError("the store is not running")
    for _, fut in jobs:
        _set_exception(fut, err)


def create_private(path: Path) -> None:
    """Create the store's directory (mode 0700) and database file (0600) when they are missing.

    The store holds personal data (VINs, positions, callback numbers). SQLite creates the ``-wal``
    and ``-shm`` files with the database file's mode, so they are 0600 as well. An existing
    directory or file keeps its mode (an operator may have chosen a group for backups); a database
    file that group or others may read is reported once, at open.
    """
    parent = path.parent
    if not parent.is_dir():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(parent, 0o700)  # mkdir's mode is filtered through the umask
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning(
                "the store file is accessible to group or others",
                extra={"path": str(path), "mode": f"{mode:04o}"},
            )
        return
    try:
        os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
    finally:
        os.close(fd)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _resolve_all(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, value, exc in outcomes:
        if fut.done():  # the waiter was cancelled; the work is committed all the same
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
