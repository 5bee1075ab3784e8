"""A store that cannot write (disk full, read-only): commits are held, not failed, and written once it can.

SQLite: ``PRAGMA max_page_count`` at the database's current size makes the next write that needs a
page fail with SQLITE_FULL, the error SQLite gives for a full disk, through the same code path; a
simulation of the disk, not of SQLite. The real full disk (a small tmpfs) is in
``tests/gateway/test_disk_full.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ecallgw.config import StoreConfig
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.store import SqliteStore
from ecallgw.gateway.store.sqlite import store_refusal
from tests.gateway.helpers import until
from tests.gateway.store.support import signal_unit, snapshot


def _page_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA page_count").fetchone()[0])


def _cap(pages: int) -> Callable[[sqlite3.Connection], None]:
    def fn(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA max_page_count={pages}")

    return fn


async def test_sqlite_full_holds_commits_in_order_serves_reads_and_recovers(tmp_path: Path) -> None:
    metrics = Metrics()
    cfg = StoreConfig(path=str(tmp_path / "db" / "gw.sqlite3"))
    async with SqliteStore(cfg, metrics) as store:
        await store.commit(signal_unit(0, snapshot(incident_id="inc-0")))
        pages = await store.run(_page_count)
        await store.run(_cap(pages))  # "the disk is full" from now on
        held = [store.commit_nowait(signal_unit(n, snapshot(incident_id=f"inc-{n}"))) for n in range(1, 60)]
        await until(lambda: not store.writable, timeout_s=5)
        assert store.unwritable_reason is not None and "disk full" in store.unwritable_reason
        assert metrics.store_writable._value.get() == 0
        await asyncio.sleep(0.5)  # retries run meanwhile, and fail
        assert not any(f.done() for f in held), "a held commit resolved while the disk was full"
        # Reads answer while commits are held (the operator API stays up); they see what is committed.
        assert (await store.counts())["journal"] == 1
        # Units queued meanwhile wait behind the held ones.
        held += [store.commit_nowait(signal_unit(n, snapshot(incident_id=f"inc-{n}"))) for n in range(60, 70)]
        await store.run(_cap(1_000_000))  # space is back
        results = await asyncio.wait_for(asyncio.gather(*held), timeout=10)
        assert len(results) == 69 and store.writable and store.unwritable_reason is None
        assert metrics.store_writable._value.get() == 1
        rows = await store.journal(0, 1000)
        # Every unit stored once, in the order it was queued (the triage order).
        assert [r.signal.payload for r in rows if r.signal] == [
            signal_unit(n, None).signal.payload for n in range(70)
        ]
        await store.commit(signal_unit(70, snapshot(incident_id="inc-70")))  # and it goes on


def test_refusals_are_told_apart_from_bugs() -> None:
    assert store_refusal(sqlite3.OperationalError("database or disk is full")) is None  # no code: unknown
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    assert (store_refusal(full) or "").startswith("disk full")
    assert store_refusal(sqlite3.IntegrityError("UNIQUE constraint failed")) is None
    assert (store_refusal(OSError(28, "No space left on device")) or "").startswith("disk full")
