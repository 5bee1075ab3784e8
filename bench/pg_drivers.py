"""Which PostgreSQL driver and statement for the store's write pattern? Rows/s and commit latency.

    .venv/bin/python bench/pg_drivers.py [--transactions 400] [--rows 50] [--payload 200] [--slice-ms 5]

The store commits a group of signals per transaction. This starts a private PostgreSQL server
(fsync on, ecallgw.simulators.pgserver) and writes ``transactions`` transactions of ``rows``
journal-like rows (id bigserial, type, at, tps, vehicle, payload bytea of ``payload`` bytes) into a
fresh database per variant, on one connection, waiting for each commit before the next (as one
group-commit writer does):

- asyncpg: executemany, one multi-row INSERT ... VALUES (..),(..), COPY (copy_records_to_table),
  INSERT ... SELECT FROM unnest($1::text[], ...) (arrays, one statement whatever the row count);
- psycopg 3 (async): executemany (pipeline mode), one multi-row INSERT;
- the reference, measured in the same run: SQLite (WAL, synchronous=FULL, multi-row INSERT) in
  the calling thread, no event loop, on the same disk.

Each transaction is timed from BEGIN to the end of COMMIT (p50 / p99 / max), rows/s over the run.
A second table puts a busy event loop beside the writer (a task that spins in pure Python in
~5 ms slices, as a loaded gateway does): asyncpg (explicit transaction, and a lone multi-row
INSERT that is its own transaction: one round trip) against the gateway's SQLite pattern (a
writer thread that resolves the loop's future with call_soon_threadsafe). There the latency is
what the awaiting coroutine sees: a reply that arrives during a slice wakes the coroutine after the
slice and the next one (the spinner's next step was queued first), so each round trip costs up to
two slices. The writer thread needs the GIL back after every sqlite3 call; a loop that releases the
GIL briefly once per slice (its poll between slices) resets the thread's 5 ms wait for a forced
switch each time, so with slices no longer than the switch interval it starves for seconds (see
``--slice-ms 10``: bounded, but slow).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import psycopg

from ecallgw.simulators.pgserver import PgServer

Row = tuple[str, float, str, str, bytes]
COLUMNS = ("type", "at", "tps", "vehicle", "payload")
PG_TABLE = (
    "CREATE TABLE journal (id bigserial PRIMARY KEY, type text NOT NULL, at double precision NOT NULL,"
    " tps text NOT NULL, vehicle text NOT NULL, payload bytea NOT NULL)"
)
SQLITE_TABLE = (
    "CREATE TABLE journal (id INTEGER PRIMARY KEY, type TEXT NOT NULL, at REAL NOT NULL,"
    " tps TEXT NOT NULL, vehicle TEXT NOT NULL, payload BLOB NOT NULL)"
)
WARMUP = 10  # transactions before the clock starts: connections, prepared statements, caches

# One transaction, given the rows; returns when its commit has been acknowledged.
Writer = Callable[[Sequence[Row]], Awaitable[None]]


def make_batches(n: int, rows: int, payload: int) -> list[list[Row]]:
    seq = 0
    batches = []
    for _ in range(n):
        batch = []
        for _ in range(rows):
            seq += 1
            batch.append(("signal", 1.7e9 + seq / 1000, "tps-a", f"WVWZZZ1JZ{seq:08d}", os.urandom(payload)))
        batches.append(batch)
    return batches


def values_sql(rows: int, style: str) -> str:
    """``VALUES ($1,$2,...),(...)`` for asyncpg (``$``) or psycopg (``%s``)."""
    width = len(COLUMNS)
    if style == "$":
        groups = ("(" + ",".join(f"${i * width + j + 1}" for j in range(width)) + ")" for i in range(rows))
    else:
        groups = ("(" + ",".join(["%s"] * width) + ")" for _ in range(rows))
    return f"INSERT INTO journal ({', '.join(COLUMNS)}) VALUES " + ",".join(groups)


def flat(rows: Sequence[Row]) -> list[Any]:
    return [v for r in rows for v in r]


class Result:
    def __init__(self, name: str, times: list[float], wall: float, rows: int) -> None:
        self.name, self.wall, self.rows = name, wall, rows
        self.times = sorted(times)

    def pct(self, p: float) -> float:
        return self.times[min(len(self.times) - 1, int(len(self.times) * p))] * 1e3


async def timed(name: str, write: Writer, batches: list[list[Row]]) -> Result:
    for batch in batches[:WARMUP]:
        await write(batch)
    times = []
    start = time.perf_counter()
    for batch in batches:
        t0 = time.perf_counter()
        await write(batch)
        times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    return Result(name, times, wall, sum(len(b) for b in batches))


async def with_busy_loop(slice_s: float, run: Coroutine[Any, Any, Result]) -> Result:
    """Run ``run`` beside a task that spins in pure Python in slices of ``slice_s`` (none if 0)."""
    stop = False

    async def spin() -> None:
        x = 0
        while not stop:
            end = time.perf_counter() + slice_s
            while time.perf_counter() < end:
                for i in range(200):
                    x += i
            await asyncio.sleep(0)

    spinner = asyncio.create_task(spin()) if slice_s > 0 else None
    try:
        return await run
    finally:
        stop = True
        if spinner is not None:
            await spinner


# -- asyncpg ------------------------------------------------------------------------------------


async def asyncpg_variant(dsn: str, variant: str, batches: list[list[Row]]) -> Result:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(PG_TABLE)
        rows = len(batches[0])
        insert_one = f"INSERT INTO journal ({', '.join(COLUMNS)}) VALUES ($1,$2,$3,$4,$5)"
        multi = values_sql(rows, "$")
        unnest = (
            f"INSERT INTO journal ({', '.join(COLUMNS)}) SELECT * FROM "
            "unnest($1::text[], $2::float8[], $3::text[], $4::text[], $5::bytea[])"
        )

        async def write(batch: Sequence[Row]) -> None:
            if variant == "multirow-implicit":  # one statement is its own transaction
                await conn.execute(multi, *flat(batch))
                return
            async with conn.transaction():
                if variant == "executemany":
                    await conn.executemany(insert_one, batch)
                elif variant == "multirow":
                    await conn.execute(multi, *flat(batch))
                elif variant == "copy":
                    await conn.copy_records_to_table("journal", records=batch, columns=COLUMNS)
                elif variant == "unnest":
                    await conn.execute(unnest, *(list(col) for col in zip(*batch, strict=True)))
                else:
                    raise ValueError(variant)

        result = await timed(variant, write, batches)
        count = await conn.fetchval("SELECT count(*) FROM journal")
        assert count == result.rows + sum(len(b) for b in batches[:WARMUP]), count
        return result
    finally:
        await conn.close()


# -- psycopg 3 ----------------------------------------------------------------------------------


async def psycopg_variant(dsn: str, variant: str, batches: list[list[Row]]) -> Result:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(PG_TABLE)
        rows = len(batches[0])
        insert_one = f"INSERT INTO journal ({', '.join(COLUMNS)}) VALUES (%s,%s,%s,%s,%s)"
        multi = values_sql(rows, "%s")

        async def write(batch: Sequence[Row]) -> None:
            async with conn.transaction():
                if variant == "executemany":
                    async with conn.cursor() as cur:
                        await cur.executemany(insert_one, batch)
                elif variant == "multirow":
                    await conn.execute(multi, flat(batch))
                else:
                    raise ValueError(variant)

        result = await timed(variant, write, batches)
        cur = await conn.execute("SELECT count(*) FROM journal")
        got = await cur.fetchone()
        assert got is not None and got[0] == result.rows + sum(len(b) for b in batches[:WARMUP]), got
        return result


# -- SQLite (the reference) ---------------------------------------------------------------------


def sqlite_open(path: Path) -> sqlite3.Connection:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(SQLITE_TABLE)
    return conn


def sqlite_commit(conn: sqlite3.Connection, sql: str, batch: Sequence[Row]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(sql, flat(batch))
    conn.execute("COMMIT")


def sqlite_direct(path: Path, batches: list[list[Row]]) -> Result:
    conn = sqlite_open(path)
    sql = values_sql(len(batches[0]), "?").replace("%s", "?")
    try:
        for batch in batches[:WARMUP]:
            sqlite_commit(conn, sql, batch)
        times = []
        start = time.perf_counter()
        for batch in batches:
            t0 = time.perf_counter()
            sqlite_commit(conn, sql, batch)
            times.append(time.perf_counter() - t0)
        return Result("multirow", times, time.perf_counter() - start, sum(len(b) for b in batches))
    finally:
        conn.close()


async def sqlite_writer_thread(path: Path, batches: list[list[Row]]) -> Result:
    """The gateway's pattern: the loop queues a job, a writer thread commits and resolves its future."""
    loop = asyncio.get_running_loop()
    conn = sqlite_open(path)
    sql = values_sql(len(batches[0]), "?").replace("%s", "?")
    jobs: queue.SimpleQueue[tuple[Sequence[Row], asyncio.Future[None]] | None] = queue.SimpleQueue()

    def writer() -> None:
        while (job := jobs.get()) is not None:
            batch, fut = job
            sqlite_commit(conn, sql, batch)
            loop.call_soon_threadsafe(fut.set_result, None)

    thread = threading.Thread(target=writer, name="bench-sqlite-writer")
    thread.start()

    async def write(batch: Sequence[Row]) -> None:
        fut: asyncio.Future[None] = loop.create_future()
        jobs.put((batch, fut))
        await fut

    try:
        return await timed("SQLite writer thread", write, batches)
    finally:
        jobs.put(None)
        thread.join()
        conn.close()


# -- main ---------------------------------------------------------------------------------------


async def run_all(pg: PgServer, sqlite_dir: Path, a: argparse.Namespace) -> None:
    batches = make_batches(a.transactions, a.rows, a.payload)
    version = pg.sql("SHOW server_version").strip().split()[0]
    print(
        f"# bench/pg_drivers.py  {a.transactions} transactions of {a.rows} rows ({a.payload}-byte payload),"
        f" PostgreSQL {version} fsync=on synchronous_commit=on, asyncpg {asyncpg.__version__},"
        f" psycopg {psycopg.__version__} ({psycopg.pq.__impl__}), loop {a.loop}, {os.cpu_count()} CPUs,"
        f" switch interval {sys.getswitchinterval() * 1e3:g} ms"
    )
    print("| driver | statements per transaction | rows/s | p50 ms | p99 ms | max ms |")
    print("|---|---|---:|---:|---:|---:|")
    for variant, what in (
        ("executemany", "BEGIN, executemany, COMMIT"),
        ("multirow", "BEGIN, one multi-row INSERT, COMMIT"),
        ("copy", "BEGIN, COPY (copy_records_to_table), COMMIT"),
        ("unnest", "BEGIN, INSERT ... SELECT unnest(arrays), COMMIT"),
        ("multirow-implicit", "one multi-row INSERT, its own transaction"),
    ):
        r = await asyncpg_variant(pg.create_database(), variant, batches)
        print(_row("asyncpg", what, r))
    for variant, what in (
        ("executemany", "BEGIN, executemany (pipeline), COMMIT"),
        ("multirow", "BEGIN, one multi-row INSERT, COMMIT"),
    ):
        r = await psycopg_variant(pg.create_database(), variant, batches)
        print(_row("psycopg 3 async", what, r))
    r = await asyncio.to_thread(sqlite_direct, sqlite_dir / "ref.sqlite3", batches)
    print(
        _row("SQLite (reference)", "BEGIN IMMEDIATE, one multi-row INSERT, COMMIT (WAL, synchronous=FULL)", r)
    )

    print()
    print("| writer | event loop | rows/s | p50 ms | p99 ms | max ms |")
    print("|---|---|---:|---:|---:|---:|")
    for slice_ms in (0.0, a.slice_ms):
        loop_state = f"spinning {slice_ms:g} ms slices" if slice_ms else "idle"
        for variant, name in (
            ("multirow", "asyncpg: BEGIN, multi-row INSERT, COMMIT"),
            ("multirow-implicit", "asyncpg: lone multi-row INSERT"),
        ):
            r = await with_busy_loop(slice_ms / 1e3, asyncpg_variant(pg.create_database(), variant, batches))
            print(_row(name, loop_state, r))
        r = await with_busy_loop(slice_ms / 1e3, sqlite_writer_thread(sqlite_dir / "thread.sqlite3", batches))
        print(_row("SQLite writer thread: multi-row INSERT", loop_state, r))


def _row(first: str, second: str, r: Result) -> str:
    return (
        f"| {first} | {second} | {r.rows / r.wall:,.0f} | {r.pct(0.5):.2f} | {r.pct(0.99):.2f} "
        f"| {r.times[-1] * 1e3:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transactions", type=int, default=400)
    parser.add_argument("--rows", type=int, default=50, help="rows per transaction")
    parser.add_argument("--payload", type=int, default=200, help="payload bytes per row")
    parser.add_argument("--slice-ms", type=float, default=5.0, help="the busy loop's pure-Python slices")
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the gateway runs uvloop"
    )
    a = parser.parse_args()
    with PgServer(fsync=True) as pg, tempfile.TemporaryDirectory(prefix="ecallgw-bench-") as d:
        if a.loop == "uvloop":
            import uvloop

            uvloop.run(run_all(pg, Path(d), a))
        else:
            asyncio.run(run_all(pg, Path(d), a))


if __name__ == "__main__":
    main()
