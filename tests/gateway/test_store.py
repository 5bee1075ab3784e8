"""The SQLite store on a real file: group commit, idempotent outbox, delivery states, retention."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecallgw.config import StoreConfig
from ecallgw.errors import StoreError
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.records import ActionRecord, DecisionRecord, QuarantineRecord, RawSignal, Unit
from ecallgw.gateway.store import SqliteStore
from ecallgw.gateway.store import sqlite as store_module
from ecallgw.model import IncidentSnapshot
from tests.gateway.helpers import make_snapshot

snapshot = make_snapshot


def raw(n: int, at: float = 1000.0) -> RawSignal:
    return RawSignal(
        transport="mqtt",
        kind="msd",
        tps="acme",
        vehicle=f"v{n}",
        payload=bytes([n % 256]) * 10,
        received_at=at,
        source=f"ecall/v1/acme/v{n}/msd",
    )


def signal_unit(n: int, snap: IncidentSnapshot | None, receivers: tuple[str, ...] = ("psap",)) -> Unit:
    routes = tuple((r, snap.incident_id, snap.revision) for r in receivers) if snap else ()
    return Unit(
        journal_type="signal",
        at=1000.0 + n,
        signal=raw(n, 1000.0 + n),
        decisions=(
            DecisionRecord(
                outcome="new",
                reasons=snap.reasons if snap else (),
                snapshot=snap,
                routes=routes,
                signal_at=1000.0 + n,
            ),
        ),
    )


def cfg(tmp_path: Path, **kw: object) -> StoreConfig:
    return StoreConfig(path=str(tmp_path / "db" / "gw.sqlite3"), **kw)  # type: ignore[arg-type]


async def test_unit_is_stored_and_survives_reopen(tmp_path: Path) -> None:
    snap = snapshot()
    async with SqliteStore(cfg(tmp_path)) as store:
        result = await store.commit(signal_unit(1, snap, ("psap", "desk")))
        assert result.journal_seq == 1
        assert [(o.receiver, o.revision) for o in result.outbox] == [("psap", 1), ("desk", 1)]
        assert result.outbox[0].snapshot == snap
        assert [s for _, s in result.revision_seqs] == [snap]
    async with SqliteStore(cfg(tmp_path)) as store:
        counts = await store.counts()
        assert counts["journal"] == 1 and counts["revisions"] == 1 and counts["outbox_pending"] == 2
        loaded = await store.load_revisions([("inc-1", 1), ("inc-1", 9)])
        assert loaded == {("inc-1", 1): snap}
        [row] = await store.journal(0, 10)
        assert row.signal is not None and row.signal.payload == raw(1).payload
        assert row.signal.digest == raw(1).digest
        assert row.at == 1001.0


async def test_a_revision_stored_twice_fails_loudly(tmp_path: Path) -> None:
    # Triage and store disagreeing on a revision must not be papered over by ignoring the insert:
    # the unit fails (and with it the signal's acknowledgement), nothing of it is kept.
    snap = snapshot()
    async with SqliteStore(cfg(tmp_path)) as store:
        first = await store.commit(signal_unit(1, snap))
        assert len(first.outbox) == 1
        with pytest.raises(StoreError, match="UNIQUE"):
            await store.commit(signal_unit(2, snap))
        counts = await store.counts()
        assert (counts["journal"], counts["outbox"], counts["revisions"]) == (1, 1, 1)


async def test_an_outbox_entry_stored_twice_fails_loudly(tmp_path: Path) -> None:
    snap = snapshot()
    async with SqliteStore(cfg(tmp_path)) as store:
        await store.commit(signal_unit(1, snap))
        routes_only = Unit(
            journal_type="signal",
            at=2000.0,
            signal=raw(2, 2000.0),
            decisions=(
                DecisionRecord(
                    outcome="dup",
                    reasons=(),
                    snapshot=None,
                    routes=(("psap", snap.incident_id, 1),),
                    signal_at=2000.0,
                ),
            ),
        )
        with pytest.raises(StoreError, match="UNIQUE"):
            await store.commit(routes_only)
        assert (await store.counts())["journal"] == 1


async def test_group_commit_batches_concurrent_units(tmp_path: Path) -> None:
    metrics = Metrics()
    async with SqliteStore(cfg(tmp_path), metrics) as store:
        results = await asyncio.gather(
            *(store.commit(signal_unit(n, snapshot(f"inc-{n}"))) for n in range(500))
        )
        # Journal order is submission order: replay relies on it.
        assert [r.journal_seq for r in results] == list(range(1, 501))
        assert store.commits < 500
    with sqlite3.connect(tmp_path / "db" / "gw.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 500
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert b"ecallgw_store_commit_seconds_count" in metrics.render()


async def test_a_failing_job_fails_its_whole_batch(tmp_path: Path) -> None:
    async with SqliteStore(cfg(tmp_path)) as store:
        bad = store.run(lambda conn: conn.execute("INSERT INTO nowhere VALUES (1)"))
        good = store.commit(signal_unit(1, snapshot()))
        results = await asyncio.gather(bad, good, return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results)
        assert (await store.counts())["journal"] == 0


async def test_delivered_and_dead_letter_leave_pending(tmp_path: Path) -> None:
    async with SqliteStore(cfg(tmp_path)) as store:
        a = (await store.commit(signal_unit(1, snapshot("a")))).outbox[0]
        b = (await store.commit(signal_unit(2, snapshot("b")))).outbox[0]
        c = (await store.commit(signal_unit(3, snapshot("c")))).outbox[0]
        assert [p.id for p in await store.pending_outbox()] == [a.id, b.id, c.id]
        await store.record_delivered(a, at=2000.0, attempts=1, status=200)
        await store.record_dead_letter(b, at=2001.0, attempts=5, reason="http_5xx", detail="503")
        assert [p.id for p in await store.pending_outbox()] == [c.id]
        [dead] = await store.dead_letters()
        assert dead["incident_id"] == "b" and dead["reason"] == "http_5xx" and dead["attempts"] == 5
        found = await store.get_incident("a")
        assert found is not None
        row, history, deliveries = found
        assert row.level == "high" and [h.snapshot.revision for h in history] == [1]
        assert deliveries[0]["state"] == "delivered" and deliveries[0]["status"] == 200


async def test_incident_row_tracks_latest_revision(tmp_path: Path) -> None:
    async with SqliteStore(cfg(tmp_path)) as store:
        await store.commit(signal_unit(1, snapshot("a", 1)))
        await store.commit(signal_unit(2, snapshot("a", 2, status="cancelled")))
        with pytest.raises(StoreError):  # an old revision again is refused, and does not win
            await store.commit(signal_unit(3, snapshot("a", 1)))
        [row] = await store.list_incidents()
        assert (row.revision, row.status) == (2, "cancelled")
        assert await store.list_incidents(status="open") == []
        assert [r.snapshot.revision for r in await store.revisions_after(0)] == [1, 2]
        assert [r.snapshot.revision for r in await store.revisions_after(1)] == [2]


async def test_quarantine_action_and_audit(tmp_path: Path) -> None:
    async with SqliteStore(cfg(tmp_path)) as store:
        bad = raw(7)
        await store.commit(
            Unit(
                journal_type=None,
                at=bad.received_at,
                quarantine=QuarantineRecord(signal=bad, codec="msd", reason="truncated", path="msdStructure"),
            )
        )
        action = ActionRecord(
            incident_id="a", action="ack", actor="alice", role="operator", note="seen", at=5.0
        )
        await store.commit(Unit(journal_type="action", at=5.0, action=action, audit_outcome="acknowledged"))
        [q] = await store.quarantined()
        assert q["payload"] == bad.payload and q["reason"] == "truncated" and q["source"] == bad.source
        [entry] = await store.audit_log("a")
        assert (entry["actor"], entry["action"], entry["outcome"]) == ("alice", "ack", "acknowledged")
        rows = await store.journal(0, 10)
        assert [r.type for r in rows] == ["action"]  # quarantine is not replayed
        assert rows[0].action == action


async def test_retention_deletes_old_data_but_not_pending_deliveries(tmp_path: Path) -> None:
    async with SqliteStore(cfg(tmp_path)) as store:
        old = (await store.commit(signal_unit(1, snapshot("old", at=100.0)))).outbox[0]
        await store.commit(signal_unit(2, snapshot("stuck", at=100.0)))  # never delivered
        await store.commit(signal_unit(3, snapshot("new", at=5000.0)))
        await store.record_delivered(old, at=200.0, attempts=1, status=200)
        deleted = await store.delete_before(3000.0)
        assert deleted["incidents"] == 1 and deleted["revisions"] == 1 and deleted["deliveries"] == 1
        # 'stuck' is kept, and with it the journal from its first signal (100) on: a replay needs it.
        assert deleted["journal"] == 0
        assert sorted(r.incident_id for r in await store.list_incidents()) == ["new", "stuck"]
        [stuck] = [i for i in await store.pending_outbox() if i.incident_id == "stuck"]
        await store.record_delivered(stuck, at=200.0, attempts=1, status=200)
        deleted = await store.delete_before(3000.0)
        assert deleted["incidents"] == 1
        assert deleted["journal"] == 3  # journal rows at 1001..1003: before the cutoff and any kept incident
        deleted = await store.delete_before(6000.0, journal_margin_s=1000.0)
        assert deleted["incidents"] == 0 and deleted["journal"] == 0  # 'new' (5000) is still updated


async def test_retention_keeps_the_journal_of_an_incident_that_is_kept(tmp_path: Path) -> None:
    async with SqliteStore(cfg(tmp_path)) as store:
        first = snapshot("call", at=1001.0)
        await store.commit(signal_unit(1, first))
        later = dataclasses.replace(snapshot("call", revision=2, at=1001.0), updated_at=4000.0)
        await store.commit(signal_unit(3000, later))
        # The first signal (1001) is older than the cutoff, the incident (updated 4000) is not.
        deleted = await store.delete_before(2000.0, journal_margin_s=500.0)
        assert deleted["journal"] == 0
        assert len(await store.journal(0, 10)) == 2


async def test_key_is_created_once(tmp_path: Path) -> None:
    async with SqliteStore(cfg(tmp_path)) as store:
        k1 = await store.key("pseudonym")
    async with SqliteStore(cfg(tmp_path)) as store:
        assert await store.key("pseudonym") == k1
        assert len(k1) == 32


async def test_unwritable_path_fails_at_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot open"):
        async with SqliteStore(StoreConfig(path=str(tmp_path / "file" / "db.sqlite3"))):
            pass


async def test_one_failing_unit_fails_and_rolls_back_its_whole_batch(tmp_path: Path) -> None:
    async with SqliteStore(cfg(tmp_path)) as store:
        await store.commit(signal_unit(1, snapshot("a")))
        # Hold the writer so that the next three units queue up and form one batch.
        hold = asyncio.create_task(store.run(lambda conn: time.sleep(0.3)))
        await asyncio.sleep(0.05)
        futures = [
            store.commit_nowait(signal_unit(2, snapshot("b"))),
            store.commit_nowait(signal_unit(3, snapshot("a"))),  # revision 1 of 'a' again: fails
            store.commit_nowait(signal_unit(4, snapshot("c"))),
        ]
        await hold
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results), results
        counts = await store.counts()
        assert (counts["journal"], counts["incidents"], counts["outbox"]) == (1, 1, 1)


class _WriterDeath(BaseException):
    """Something the writer cannot survive (not an Exception: it ends the thread)."""


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


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    plan=st.lists(
        st.tuples(
            st.integers(0, 5),  # incident (several units may revise the same one in one batch)
            st.sampled_from(["signal", "quarantine", "routes_only"]),
            st.lists(st.sampled_from(["psap", "desk", "operator"]), max_size=3, unique=True),
        ),
        min_size=1,
        max_size=150,
    )
)
async def test_rows_of_one_batch_get_ids_in_unit_order_and_each_id_is_its_own_row(
    tmp_path_factory: pytest.TempPathFactory, plan: list[tuple[int, str, list[str]]]
) -> None:
    revision: dict[int, int] = {}
    units: list[Unit] = []
    for n, (incident, kind, receivers) in enumerate(plan):
        iid = f"inc-{incident}"
        if kind == "quarantine":
            r = raw(n)
            units.append(
                Unit(
                    journal_type=None, at=1.0, quarantine=QuarantineRecord(signal=r, codec="msd", reason="x")
                )
            )
            continue
        snap = None
        if kind == "signal":
            revision[incident] = revision.get(incident, 0) + 1
            snap = snapshot(incident_id=iid, revision=revision[incident])
        elif incident not in revision:
            continue  # routes_only needs a revision to point at
        rev = revision[incident]
        units.append(
            Unit(
                journal_type="signal",
                at=1000.0 + n,
                signal=raw(n),
                decisions=(
                    DecisionRecord(
                        outcome="x",
                        reasons=(),
                        snapshot=snap,
                        routes=tuple((rcv, iid, rev) for rcv in receivers if snap is not None),
                        signal_at=1.0,
                    ),
                ),
                confirm_on_commit=frozenset({"operator"}),
            )
        )
    path = tmp_path_factory.mktemp("batch")
    async with SqliteStore(cfg(path)) as store:
        results = await asyncio.gather(*(store.commit(u) for u in units))  # one loop turn: one batch

        def rows(conn: sqlite3.Connection) -> tuple[Any, ...]:
            return (
                dict(conn.execute("SELECT seq, vehicle FROM journal").fetchall()),
                {r[0]: r[1:] for r in conn.execute("SELECT seq, incident_id, revision FROM revisions")},
                {
                    r[0]: r[1:]
                    for r in conn.execute("SELECT id, incident_id, revision, receiver, state FROM outbox")
                },
                dict(conn.execute("SELECT incident_id, revision FROM incidents").fetchall()),
                {r[0] for r in conn.execute("SELECT outbox_id FROM deliveries")},
            )

        journal, revisions, outbox, incidents, deliveries = await store.run(rows)
    seqs = [r.journal_seq for r in results if r.journal_seq is not None]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # unit order, no gaps reused
    for unit, result in zip(units, results, strict=True):
        if unit.signal is not None:
            assert journal[result.journal_seq] == unit.signal.vehicle
        for seq, snap in result.revision_seqs:
            assert revisions[seq] == (snap.incident_id, snap.revision)
        for item in result.outbox:
            assert outbox[item.id] == (item.incident_id, item.revision, item.receiver, "pending")
        for item in result.confirmed:
            assert outbox[item.id] == (item.incident_id, item.revision, "operator", "delivered")
            assert item.id in deliveries
    assert incidents == {f"inc-{i}": rev for i, rev in revision.items()}  # the latest revision wins
    assert len(outbox) == sum(len(r.outbox) + len(r.confirmed) for r in results)


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
