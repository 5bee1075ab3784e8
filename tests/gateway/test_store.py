"""What only the SQLite store does: WAL, PRAGMAs, the writer and checkpointer threads, the file.

The behaviour both stores share (units, journal, outbox, retention, migrations) is tested once for
both backends in ``tests/gateway/store/test_contract.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import time
from pathlib import Path

import pytest

from ecallgw.config import StoreConfig
from ecallgw.errors import StoreError
from ecallgw.gateway.records import RawSignal, Unit
from ecallgw.gateway.store import SqliteStore
from ecallgw.gateway.store import sqlite as store_module
from ecallgw.gateway.store.migrations import SQLITE
from tests.gateway.store.support import signal_unit, snapshot


def cfg(tmp_path: Path, **kw: object) -> StoreConfig:
    return StoreConfig(path=str(tmp_path / "db" / "gw.sqlite3"), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("synchronous", "level"), [("full", 2), ("normal", 1)])
async def test_the_store_is_a_wal_file_with_its_pragmas(tmp_path: Path, synchronous: str, level: int) -> None:
    async with SqliteStore(cfg(tmp_path, synchronous=synchronous)) as store:
        await asyncio.gather(*(store.commit(signal_unit(n, snapshot(f"inc-{n}"))) for n in range(20)))

        def pragmas(conn: sqlite3.Connection) -> tuple[object, ...]:
            return tuple(
                conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in (
                    "journal_mode",
                    "synchronous",
                    "secure_delete",
                    "foreign_keys",
                    "wal_autocheckpoint",
                )
            )

        assert await store.run(pragmas) == ("wal", level, 1, 0, store_module._WAL_BACKSTOP_PAGES)
    with sqlite3.connect(tmp_path / "db" / "gw.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # kept in the file
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 20
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(SQLITE)


async def test_a_store_from_before_versioning_adopts_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "db" / "gw.sqlite3"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:  # the first release: its tables, no user_version
        conn.executescript(SQLITE[0])
        conn.execute("INSERT INTO meta VALUES ('pseudonym', x'01')")
    async with SqliteStore(cfg(tmp_path)) as store:
        assert await store.run(lambda c: c.execute("PRAGMA user_version").fetchone()[0]) == len(SQLITE)
        assert await store.key("pseudonym") == b"\x01"  # its data kept
        assert (await store.commit(signal_unit(1, snapshot()))).journal_seq == 1


class _WriterDeath(BaseException):
    """Something the writer cannot survive (not an Exception: it ends the thread)."""


async def test_unwritable_path_fails_at_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot open"):
        async with SqliteStore(StoreConfig(path=str(tmp_path / "file" / "db.sqlite3"))):
            pass


async def test_writer_thread_death_fails_every_waiting_future(tmp_path: Path) -> None:
    def die(conn: sqlite3.Connection) -> None:
        time.sleep(0.1)
        raise _WriterDeath

    async with SqliteStore(cfg(tmp_path)) as store:
        dying = asyncio.create_task(store.run(die))
        await asyncio.sleep(0.02)  # the writer took the job; these queue behind it
        queued = [store.commit_nowait(signal_unit(n, snapshot(f"q{n}"))) for n in range(3)]
        async with asyncio.timeout(5):  # never resolved before the fix: every waiter hung
            results = await asyncio.gather(dying, *queued, return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results), results
        assert not store.writable
        with pytest.raises(StoreError):
            await store.commit(signal_unit(9, snapshot("late")))


async def test_retention_overwrites_deleted_personal_data(tmp_path: Path) -> None:
    marker = b"WVWZZZ-SECRET-VIN-" * 4
    old = RawSignal(
        transport="mqtt", kind="msd", tps="acme", vehicle="v1", payload=marker, received_at=100.0, source="t"
    )
    path = tmp_path / "db" / "gw.sqlite3"
    async with SqliteStore(cfg(tmp_path)) as store:
        unit = Unit(journal_type="signal", at=100.0, signal=old)
        for n in range(50):  # enough rows to fill pages that are freed, not just shortened
            await store.commit(dataclasses.replace(unit, at=100.0 + n))
    assert marker in path.read_bytes()  # closing checkpointed the WAL into the file
    async with SqliteStore(cfg(tmp_path)) as store:
        assert await store.run(lambda conn: conn.execute("PRAGMA secure_delete").fetchone()[0]) == 1
        deleted = await store.delete_before(3000.0)
        assert deleted["journal"] == 50
    data = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        data += wal.read_bytes()
    assert marker not in data


@pytest.mark.parametrize("interval", [0.05, 0.0], ids=["checkpointer", "automatic"])
async def test_the_checkpointer_copies_the_wal_into_the_database_off_the_commit_path(
    tmp_path: Path, interval: float
) -> None:
    config = cfg(tmp_path, checkpoint_interval_s=interval)
    db = Path(config.path)

    def size() -> int:
        return db.stat().st_size

    async with SqliteStore(config) as store:
        empty = size()
        units = [signal_unit(n, snapshot(incident_id=f"inc-{n}")) for n in range(200)]
        await asyncio.gather(*(store.commit(u) for u in units))
        if interval:
            async with asyncio.timeout(5):
                while store.checkpoints < 2:  # noqa: ASYNC110 (a thread of its own, no event to wait on)
                    await asyncio.sleep(0.02)
            # The commits never checkpoint themselves (wal_autocheckpoint=0); the thread did.
            assert size() > empty
        else:
            await asyncio.sleep(0.2)
            assert store.checkpoints == 0
            assert size() == empty  # under 1,000 pages: still all in the WAL
        rows = await store.run(lambda c: c.execute("SELECT count(*) FROM journal").fetchone()[0])
    assert rows == 200


async def test_the_wal_stays_bounded_while_the_writer_is_never_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite rewinds the WAL only when a checkpoint ends while no transaction is open; a writer
    # kept busy by a backlog never lets the checkpointer thread's checkpoints do that. The
    # writer's own backstop checkpoint (here after 200 pages) must.
    monkeypatch.setattr(store_module, "_WAL_BACKSTOP_PAGES", 200)
    config = cfg(tmp_path, checkpoint_interval_s=0.05, synchronous="normal")
    blob = b"x" * 2000
    async with SqliteStore(config) as store:
        await store.run(lambda c: c.execute("CREATE TABLE x (id INTEGER PRIMARY KEY, v BLOB)"))
        end = time.monotonic() + 0.8
        written = 0
        while time.monotonic() < end:
            await asyncio.gather(
                *(store.run(lambda c: c.execute("INSERT INTO x (v) VALUES (?)", (blob,))) for _ in range(4))
            )
            written += 4
        wal = await asyncio.to_thread(lambda: Path(config.path + "-wal").stat().st_size)
    assert written * len(blob) > 8 * 200 * 4096  # far more than the bound went through the WAL
    assert wal <= 4 * 200 * 4096


async def test_a_job_after_the_stop_is_refused_not_left_unanswered(tmp_path: Path) -> None:
    store = await SqliteStore(cfg(tmp_path)).__aenter__()
    busy = asyncio.ensure_future(store.run(lambda c: time.sleep(0.2)))  # writer busy at the stop
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(store.__aexit__(None, None, None))
    await asyncio.sleep(0)  # the stop marker is queued; the writer has not exited yet
    with pytest.raises(StoreError, match="not running"):
        async with asyncio.timeout(2):  # behind the marker it would never be answered
            await store.run(lambda c: None)
    async with asyncio.timeout(5):
        await asyncio.gather(busy, closing)


async def test_the_store_directory_and_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    config = cfg(tmp_path)
    old = os.umask(0o002)  # a lax umask: group and others could read what it creates
    try:
        async with SqliteStore(config) as store:
            await store.commit(signal_unit(1, snapshot()))
            files = {p.name: p.stat().st_mode & 0o777 for p in Path(config.path).parent.iterdir()}
            directory = Path(config.path).parent.stat().st_mode & 0o777
    finally:
        os.umask(old)
    assert directory == 0o700
    assert files == {"gw.sqlite3": 0o600, "gw.sqlite3-wal": 0o600, "gw.sqlite3-shm": 0o600}


def _prepare_lax(path: Path) -> None:
    path.parent.mkdir(mode=0o750)
    os.chmod(path.parent, 0o750)
    path.touch(mode=0o640)
    os.chmod(path, 0o640)  # an operator's choice (a backup group): reported, not changed


def _modes(path: Path) -> tuple[int, int]:
    return path.parent.stat().st_mode & 0o777, path.stat().st_mode & 0o777


async def test_an_existing_directory_and_file_keep_their_modes(tmp_path: Path) -> None:
    config = cfg(tmp_path)
    _prepare_lax(Path(config.path))
    async with SqliteStore(config):
        pass
    assert _modes(Path(config.path)) == (0o750, 0o640)
