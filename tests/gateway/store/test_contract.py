"""The store contract: every test here runs on SQLite and on PostgreSQL, through the `Store` protocol.

A unit commits whole (journal, revisions, incidents, outbox, quarantine, audit) or fails with the
rest of its batch; the journal keeps the triage order; outbox entries leave the pending set when
delivered or dead-lettered; retention keeps what a replay or a pending delivery still needs; a store
written by a newer ecallgw is refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecallgw.errors import StoreError
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.records import ActionRecord, DecisionRecord, OutboxItem, QuarantineRecord, Unit
from ecallgw.gateway.store import SqliteStore
from ecallgw.gateway.store.migrations import SchemaTooNewError
from ecallgw.model import IncidentSnapshot
from ecallgw.triage.decision import Route
from tests.gateway.store.support import (
    AnyStore,
    OpenStore,
    action_unit,
    failing_job,
    hold_writer,
    migrate_again,
    newest_version,
    raising_job,
    raw,
    record_schema_version,
    schema_version,
    shared_store,
    signal_unit,
    snapshot,
    version_rows,
)

_example = itertools.count(1)  # examples share the test's store: each names its incidents apart


def of(snap: IncidentSnapshot, **changes: Any) -> IncidentSnapshot:
    return dataclasses.replace(snap, **changes)


def quarantine_unit(n: int, at: float) -> Unit:
    return Unit(
        journal_type=None,
        at=at,
        quarantine=QuarantineRecord(signal=raw(n, at), codec="msd", reason="truncated", path="msdStructure"),
    )


# --- units: stored whole, or not at all ---------------------------------------------------------


async def test_unit_is_stored_and_survives_reopen(open_store: OpenStore) -> None:
    snap = snapshot()
    async with open_store() as store:
        result = await store.commit(signal_unit(1, snap, ("psap", "desk")))
        assert result.journal_seq == 1
        assert [(o.receiver, o.revision) for o in result.outbox] == [("psap", 1), ("desk", 1)]
        assert result.outbox[0].snapshot == snap
        assert [s for _, s in result.revision_seqs] == [snap]
    async with open_store() as store:
        counts = await store.counts()
        assert counts["journal"] == 1 and counts["revisions"] == 1 and counts["outbox_pending"] == 2
        loaded = await store.load_revisions([("inc-1", 1), ("inc-1", 9)])
        assert loaded == {("inc-1", 1): snap}
        assert await store.load_revisions([]) == {}
        [row] = await store.journal(0, 10)
        assert row.seq == 1 and row.type == "signal"
        assert row.signal is not None and row.signal.payload == raw(1).payload
        assert row.signal.digest == raw(1, 1001.0).digest
        assert row.signal == raw(1, 1001.0)
        assert row.at == 1001.0


async def test_a_revision_stored_twice_fails_loudly(store: AnyStore) -> None:
    # Triage and store disagreeing on a revision must not be papered over by ignoring the insert:
    # the unit fails (and with it the signal's acknowledgement), nothing of it is kept.
    snap = snapshot()
    first = await store.commit(signal_unit(1, snap))
    assert len(first.outbox) == 1
    with pytest.raises(StoreError, match=r"(?i)unique"):
        await store.commit(signal_unit(2, snap))
    counts = await store.counts()
    assert (counts["journal"], counts["outbox"], counts["revisions"]) == (1, 1, 1)


async def test_an_outbox_entry_stored_twice_fails_loudly(store: AnyStore) -> None:
    snap = snapshot()
    await store.commit(signal_unit(1, snap))
    routes_only = Unit(
        journal_type="signal",
        at=2000.0,
        signal=raw(2, 2000.0),
        decisions=(
            DecisionRecord(
                outcome="duplicate",
                reasons=(),
                snapshot=None,
                routes=(Route(receiver="psap", incident_id=snap.incident_id, revision=1),),
                signal_at=2000.0,
            ),
        ),
    )
    with pytest.raises(StoreError, match=r"(?i)unique"):
        await store.commit(routes_only)
    assert (await store.counts())["journal"] == 1


async def test_group_commit_batches_concurrent_units(open_store: OpenStore) -> None:
    metrics = Metrics()
    async with open_store(metrics=metrics) as store:
        results = await asyncio.gather(
            *(store.commit(signal_unit(n, snapshot(f"inc-{n}"))) for n in range(500))
        )
        # Journal order is submission order: replay relies on it.
        assert [r.journal_seq for r in results] == list(range(1, 501))
        assert 1 <= store.commits < 500
        counts = await store.counts()
        assert (counts["journal"], counts["outbox"], counts["revisions"]) == (500, 500, 500)
        assert [r.seq for r in await store.journal(0, 1000)] == list(range(1, 501))
    assert b"ecallgw_store_commit_seconds_count" in metrics.render()


async def test_a_failing_job_fails_its_whole_batch(store: AnyStore) -> None:
    hold = await hold_writer(store, 0.2)
    bad = failing_job(store)
    good = store.commit_nowait(signal_unit(1, snapshot()))
    results = await asyncio.gather(hold, bad, good, return_exceptions=True)
    assert not isinstance(results[0], BaseException)
    assert all(isinstance(r, StoreError) for r in results[1:]), results
    assert (await store.counts())["journal"] == 0
    assert (await store.commit(signal_unit(2, snapshot()))).journal_seq == 1  # the writer goes on


async def test_a_job_raising_any_exception_fails_its_batch_and_the_writer_goes_on(store: AnyStore) -> None:
    hold = await hold_writer(store, 0.2)
    good = store.commit_nowait(signal_unit(1, snapshot()))
    boom = raising_job(store)
    async with asyncio.timeout(5):  # the PostgreSQL writer died on it, leaving the batch unanswered
        results = await asyncio.gather(hold, good, boom, return_exceptions=True)
    assert not isinstance(results[0], BaseException)
    assert all(isinstance(r, StoreError) for r in results[1:]), results
    assert "BoomError" in str(results[2])
    assert (await store.commit(signal_unit(2, snapshot()))).journal_seq == 1
    assert store.writable
    assert (await store.counts())["journal"] == 1
    assert await store.swap_meta("boom", b"1") is None  # the job's own statement was rolled back


async def test_one_failing_unit_fails_and_rolls_back_its_whole_batch(store: AnyStore) -> None:
    a = (await store.commit(signal_unit(1, snapshot("a")))).outbox[0]
    # Hold the writer so that what comes next queues up, over several loop turns, as one batch.
    hold = await hold_writer(store, 0.3)
    futures: list[asyncio.Future[Any]] = [store.commit_nowait(signal_unit(2, snapshot("b")))]
    await asyncio.sleep(0)
    futures.append(store.record_delivered_nowait(a, at=5.0, attempts=1, status=200, sent_at=4.0))
    futures.append(store.commit_nowait(action_unit("a", 6.0)))
    futures.append(store.commit_nowait(quarantine_unit(9, 7.0)))
    await asyncio.sleep(0)
    futures.append(store.commit_nowait(signal_unit(3, snapshot("a"))))  # revision 1 of 'a' again: fails
    futures.append(store.commit_nowait(signal_unit(4, snapshot("c"))))
    await hold
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results), results
    counts = await store.counts()
    assert (counts["journal"], counts["incidents"], counts["outbox"], counts["outbox_pending"]) == (
        1,
        1,
        1,
        1,
    )
    assert (counts["deliveries"], counts["audit"], counts["quarantine"]) == (0, 0, 0)
    assert await store.first_delivery("a", "psap") is None
    # Nothing of the failed batch took a place in the order: the next unit follows the first.
    after = await store.commit(signal_unit(5, snapshot("d")))
    assert after.journal_seq == 2
    assert [r.seq for r in await store.journal(0, 10)] == [1, 2]


@shared_store(20)
@given(
    before=st.lists(st.sampled_from(["signal", "action", "quarantine", "deliver"]), max_size=6),
    after=st.lists(st.sampled_from(["signal", "action", "quarantine", "deliver"]), max_size=6),
)
async def test_a_batch_with_a_duplicate_revision_leaves_the_store_as_it_was(
    store: AnyStore, before: list[str], after: list[str]
) -> None:
    e = next(_example)
    base = await store.commit(signal_unit(e, snapshot(f"x{e}-base"), ("psap", "desk")))
    last_seq = base.journal_seq
    counts = await store.counts()
    audit = len(await store.audit_log())
    hold = await hold_writer(store, 0.05)
    futures: list[asyncio.Future[Any]] = []
    outbox = list(base.outbox)

    def queue(kinds: list[str], tag: str) -> None:
        for i, kind in enumerate(kinds):
            if kind == "signal":
                futures.append(store.commit_nowait(signal_unit(e, snapshot(f"x{e}-{tag}{i}"))))
            elif kind == "action":
                futures.append(store.commit_nowait(action_unit(f"x{e}-base", 5.0)))
            elif kind == "quarantine":
                futures.append(store.commit_nowait(quarantine_unit(e, 5.0)))
            elif outbox:
                item = outbox.pop()
                futures.append(store.record_delivered_nowait(item, at=5.0, attempts=1, status=200))

    queue(before, "b")
    futures.append(store.commit_nowait(signal_unit(e, snapshot(f"x{e}-base"))))  # stored already
    queue(after, "a")
    await hold
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results), results
    assert await store.counts() == counts
    assert len(await store.audit_log()) == audit
    assert {i.id for i in await store.pending_outbox()} >= {i.id for i in base.outbox}
    nxt = await store.commit(signal_unit(e, None))
    assert nxt.journal_seq == (last_seq or 0) + 1


async def test_work_queued_before_the_stop_is_committed_and_after_it_refused(open_store: OpenStore) -> None:
    store = await open_store().__aenter__()
    queued = store.commit_nowait(signal_unit(1, snapshot("a")))
    closing = asyncio.ensure_future(store.__aexit__(None, None, None))
    try:
        await asyncio.sleep(0)  # the stop has begun
        with pytest.raises(StoreError, match="not running"):
            store.commit_nowait(signal_unit(2, snapshot("b")))
        async with asyncio.timeout(5):
            assert (await queued).journal_seq == 1
    finally:
        async with asyncio.timeout(5):
            await closing
    async with open_store() as store:
        assert [r.seq for r in await store.journal(0, 10)] == [1]


# --- ids in unit order, each its own row --------------------------------------------------------


@shared_store(25)
@given(
    plan=st.lists(
        st.tuples(
            st.integers(0, 5),  # incident (several units may revise the same one in one batch)
            st.sampled_from(["signal", "quarantine", "routes_only", "action"]),
            st.lists(st.sampled_from(["psap", "desk", "operator"]), max_size=3, unique=True),
        ),
        min_size=1,
        max_size=120,
    )
)
async def test_rows_of_one_batch_get_ids_in_unit_order_and_each_id_is_its_own_row(
    store: AnyStore, plan: list[tuple[int, str, list[str]]]
) -> None:
    e = next(_example)
    seq0 = max([r.seq for r in await store.journal(0, 1_000_000)], default=0)
    rev0 = max([r.seq for r in await store.revisions_after(0, 1_000_000)], default=0)
    counts0 = await store.counts()
    revision: dict[int, int] = {}
    routed: set[tuple[int, int, str]] = set()
    units: list[Unit] = []
    for n, (incident, kind, receivers) in enumerate(plan):
        iid = f"e{e}-inc-{incident}"
        if kind == "quarantine":
            units.append(quarantine_unit(n, 1.0))
            continue
        if kind == "action":
            units.append(action_unit(iid, 1000.0 + n, actor=f"a{n}"))
            continue
        snap = None
        if kind == "signal":
            revision[incident] = revision.get(incident, 0) + 1
            snap = snapshot(incident_id=iid, revision=revision[incident])
        elif incident not in revision:
            continue  # routes_only needs a revision to point at
        rev = revision[incident]
        # routes_only: the latest revision to receivers that do not have it yet (no duplicates).
        targets = [rcv for rcv in receivers if (incident, rev, rcv) not in routed]
        routed.update((incident, rev, rcv) for rcv in targets)
        units.append(
            Unit(
                journal_type="signal",
                at=1000.0 + n,
                signal=raw(n, 1000.0 + n, vehicle=f"e{e}-v{n}"),
                decisions=(
                    DecisionRecord(
                        outcome="x",
                        reasons=(),
                        snapshot=snap,
                        routes=tuple(Route(receiver=rcv, incident_id=iid, revision=rev) for rcv in targets),
                        signal_at=1.0,
                    ),
                ),
                confirm_on_commit=frozenset({"operator"}),
            )
        )
    results = await asyncio.gather(*(store.commit(u) for u in units))  # one loop turn: one batch

    journal = {r.seq: r for r in await store.journal(seq0, 1_000_000)}
    revisions = {r.seq: r.snapshot for r in await store.revisions_after(rev0, 1_000_000)}
    pending = {i.id: i for i in await store.pending_outbox()}
    seqs = [r.journal_seq for r in results if r.journal_seq is not None]
    assert seqs == list(range(seq0 + 1, seq0 + 1 + len(seqs)))  # unit order, no gaps
    assert sorted(journal) == seqs
    for unit, result in zip(units, results, strict=True):
        assert (result.journal_seq is None) == (unit.journal_type is None)
        if result.journal_seq is not None:
            row = journal[result.journal_seq]
            assert (row.type, row.signal, row.action) == (unit.journal_type, unit.signal, unit.action)
        for seq, snap in result.revision_seqs:
            assert revisions[seq] == snap
        for item in result.outbox:
            assert pending[item.id] == dataclasses.replace(item, snapshot=None)
        for item in result.confirmed:
            assert item.receiver == "operator" and item.id not in pending
    rev_seqs = [seq for r in results for seq, _ in r.revision_seqs]
    assert rev_seqs == list(range(rev0 + 1, rev0 + 1 + len(rev_seqs)))
    ids = [i.id for r in results for i in (*r.outbox, *r.confirmed)]
    assert len(set(ids)) == len(ids)
    latest = {r.incident_id: r.revision for r in await store.list_incidents(limit=1_000_000)}
    assert {k: v for k, v in latest.items() if k.startswith(f"e{e}-")} == {
        f"e{e}-inc-{i}": rev for i, rev in revision.items()
    }  # the latest revision wins
    for i, rev in revision.items():
        found = await store.get_incident(f"e{e}-inc-{i}")
        assert found is not None
        _, history, deliveries = found
        assert [h.snapshot.revision for h in history] == list(range(1, rev + 1))
        for d in deliveries:
            assert d["state"] == ("delivered" if d["receiver"] == "operator" else "pending")
            assert (d["delivered_at"] is not None) == (d["receiver"] == "operator")
    counts = await store.counts()
    assert counts["outbox"] - counts0["outbox"] == len(ids)
    assert counts["deliveries"] - counts0["deliveries"] == sum(len(r.confirmed) for r in results)
    assert counts["quarantine"] - counts0["quarantine"] == sum(u.quarantine is not None for u in units)
    assert counts["audit"] - counts0["audit"] == sum(u.action is not None for u in units)


# --- reads see the writes queued before them ----------------------------------------------------


@shared_store(20)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("commit"), st.integers(1, 3)),
            st.tuples(st.just("deliver"), st.integers(0, 50)),
            st.tuples(st.just("settle"), st.just(0)),
            st.tuples(st.just("read"), st.just(0)),
        ),
        min_size=1,
        max_size=40,
    )
)
async def test_a_read_sees_every_write_queued_before_it(store: AnyStore, ops: list[tuple[str, int]]) -> None:
    e = next(_example)
    model: list[tuple[str, int, str]] = []  # pending (incident, revision, receiver), insertion order
    known: list[OutboxItem] = []  # committed entries whose ids are known (their commits settled)
    unsettled: list[asyncio.Future[Any]] = []
    n = 0

    async def check() -> None:
        pending = [
            (i.incident_id, i.revision, i.receiver)
            for i in await store.pending_outbox()
            if i.incident_id.startswith(f"e{e}-")
        ]
        assert pending == model

    for op, arg in ops:
        if op == "commit":
            for _ in range(arg):
                n += 1
                snap = snapshot(f"e{e}-{n}")
                unsettled.append(store.commit_nowait(signal_unit(n, snap, ("psap", "desk"))))
                model += [(snap.incident_id, 1, "psap"), (snap.incident_id, 1, "desk")]
        elif op == "deliver":
            if known:
                item = known.pop(arg % len(known))
                store.record_delivered_nowait(item, at=5.0, attempts=1, status=200)
                model.remove((item.incident_id, item.revision, item.receiver))
        elif op == "settle":
            for fut in unsettled:
                known += (await fut).outbox
            unsettled = []
        else:
            await check()  # nothing awaited the writes queued before
    await check()
    for fut in unsettled:
        await fut


# --- deliveries ---------------------------------------------------------------------------------


async def test_delivered_and_dead_letter_leave_pending(store: AnyStore) -> None:
    a = (await store.commit(signal_unit(1, snapshot("a")))).outbox[0]
    b = (await store.commit(signal_unit(2, snapshot("b")))).outbox[0]
    c = (await store.commit(signal_unit(3, snapshot("c")))).outbox[0]
    assert [p.id for p in await store.pending_outbox()] == [a.id, b.id, c.id]
    assert (await store.pending_outbox())[0] == dataclasses.replace(a, snapshot=None)
    await store.record_delivered(a, at=2000.0, attempts=1, status=200)
    await store.record_dead_letter(b, at=2001.0, attempts=5, reason="http_5xx", detail="503")
    assert [p.id for p in await store.pending_outbox()] == [c.id]
    [dead] = await store.dead_letters()
    assert dead == {
        "incident_id": "b",
        "revision": 1,
        "receiver": "psap",
        "at": 2001.0,
        "attempts": 5,
        "reason": "http_5xx",
        "detail": "503",
    }
    found = await store.get_incident("a")
    assert found is not None
    row, history, deliveries = found
    assert row.level == "high" and [h.snapshot.revision for h in history] == [1]
    assert deliveries == [
        {
            "receiver": "psap",
            "revision": 1,
            "state": "delivered",
            "delivered_at": 2000.0,
            "attempts": 1,
            "status": 200,
            "dead_letter_reason": None,
            "dead_lettered_at": None,
        }
    ]
    found = await store.get_incident("b")
    assert found is not None
    [dl] = found[2]
    assert (dl["state"], dl["dead_letter_reason"], dl["dead_lettered_at"]) == ("dead", "http_5xx", 2001.0)
    counts = await store.counts()
    assert (counts["deliveries"], counts["dead_letters"], counts["outbox_pending"]) == (1, 1, 1)


async def test_confirmations_of_one_turn_are_written_together_and_read_after(store: AnyStore) -> None:
    items = [
        (await store.commit(signal_unit(n, snapshot(f"i{n}"), ("psap", "desk")))).outbox for n in range(4)
    ]
    flat = [i for pair in items for i in pair]
    futs = [
        store.record_delivered_nowait(i, at=100.0 + k, attempts=k + 1, status=200 + k, sent_at=50.0 + k)
        for k, i in enumerate(flat[:6])
    ]
    # Not awaited: a read queued after them sees them.
    assert [p.id for p in await store.pending_outbox()] == [i.id for i in flat[6:]]
    assert await asyncio.gather(*futs) == [None] * 6
    assert (await store.counts())["deliveries"] == 6
    found = await store.get_incident("i1")
    assert found is not None
    assert [(d["receiver"], d["attempts"], d["status"], d["delivered_at"]) for d in found[2]] == [
        ("psap", 3, 202, 102.0),
        ("desk", 4, 203, 103.0),
    ]


async def test_first_delivery_is_the_lowest_confirmed_revision_with_a_send_time(store: AnyStore) -> None:
    assert await store.first_delivery("a", "psap") is None
    r1 = (await store.commit(signal_unit(1, snapshot("a", 1), ("psap", "desk")))).outbox
    r2 = (await store.commit(signal_unit(2, snapshot("a", 2), ("psap", "desk")))).outbox
    r3 = (await store.commit(signal_unit(3, snapshot("a", 3), ("psap",)))).outbox
    assert await store.first_delivery("a", "psap") is None  # nothing confirmed yet
    await store.record_delivered(r3[0], at=30.0, attempts=1, status=200, sent_at=29.0)
    assert await store.first_delivery("a", "psap") == (3, 29.0)
    # Confirmed later, but an earlier revision: the receiver's first is the lowest it has.
    await store.record_delivered(r2[0], at=40.0, attempts=2, status=200, sent_at=39.5)
    assert await store.first_delivery("a", "psap") == (2, 39.5)
    await store.record_delivered(r1[0], at=41.0, attempts=1, status=200)  # no send time: not counted
    assert await store.first_delivery("a", "psap") == (2, 39.5)
    assert await store.first_delivery("a", "desk") is None  # per receiver
    await store.record_delivered(r1[1], at=42.0, attempts=1, status=None, sent_at=41.25)
    assert await store.first_delivery("a", "desk") == (1, 41.25)
    assert await store.first_delivery("b", "desk") is None
    assert [i.id for i in await store.pending_outbox()] == [r2[1].id]


async def test_a_dead_letter_keeps_its_attempts_reason_and_order(store: AnyStore) -> None:
    items = [(await store.commit(signal_unit(n, snapshot(f"d{n}")))).outbox[0] for n in range(3)]
    for k, item in enumerate(reversed(items)):
        await store.record_dead_letter(item, at=10.0 + k, attempts=k, reason=f"r{k}", detail=f"detail {k}")
    assert [(d["incident_id"], d["reason"], d["attempts"]) for d in await store.dead_letters()] == [
        ("d0", "r2", 2),
        ("d1", "r1", 1),
        ("d2", "r0", 0),
    ]  # by outbox entry, not by when they died
    assert await store.pending_outbox() == []


# --- incidents and revisions --------------------------------------------------------------------


async def test_incident_row_tracks_latest_revision(store: AnyStore) -> None:
    await store.commit(signal_unit(1, snapshot("a", 1)))
    await store.commit(signal_unit(2, snapshot("a", 2, status="cancelled")))
    with pytest.raises(StoreError):  # an old revision again is refused, and does not win
        await store.commit(signal_unit(3, snapshot("a", 1)))
    [row] = await store.list_incidents()
    assert (row.revision, row.status) == (2, "cancelled")
    assert (row.tps, row.vehicle, row.received_at, row.updated_at) == ("acme", "v1", 1000.0, 1002.0)
    assert (row.level, row.score) == ("high", 70)
    assert await store.list_incidents(status="open") == []
    assert [r.snapshot.revision for r in await store.revisions_after(0)] == [1, 2]
    assert [r.snapshot.revision for r in await store.revisions_after(1)] == [2]


async def test_list_incidents_filters_and_orders_newest_first(store: AnyStore) -> None:
    low = of(
        snapshot("low", at=3000.0), severity=dataclasses.replace(snapshot().severity, level="low", score=10)
    )
    await store.commit(signal_unit(1, snapshot("old", at=1000.0)))
    await store.commit(signal_unit(2, low))
    await store.commit(signal_unit(3, snapshot("mid", at=2000.0, status="cancelled")))
    assert [r.incident_id for r in await store.list_incidents()] == ["low", "mid", "old"]
    assert [r.incident_id for r in await store.list_incidents(limit=2)] == ["low", "mid"]
    assert [r.incident_id for r in await store.list_incidents(level="high")] == ["mid", "old"]
    assert [r.incident_id for r in await store.list_incidents(status="open")] == ["low", "old"]
    assert [r.incident_id for r in await store.list_incidents(status="open", level="high")] == ["old"]
    assert [(r.level, r.score) for r in await store.list_incidents(level="low")] == [("low", 10)]


async def test_revisions_after_resumes_the_stream_in_global_order(store: AnyStore) -> None:
    results = []
    for n, (iid, rev) in enumerate([("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2)]):
        results.append(await store.commit(signal_unit(n, snapshot(iid, rev))))
    seqs = [seq for r in results for seq, _ in r.revision_seqs]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    stream = await store.revisions_after(0)
    assert [r.seq for r in stream] == seqs
    assert [(r.snapshot.incident_id, r.snapshot.revision) for r in stream] == [
        ("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2)
    ]  # fmt: skip
    assert stream[0].outcome == "new_incident"
    assert stream[0].reasons == (("new", "new incident"),)
    assert [r.seq for r in await store.revisions_after(seqs[1], limit=2)] == seqs[2:4]
    assert await store.revisions_after(seqs[-1]) == []
    found = await store.get_incident("b")
    assert found is not None
    assert [(h.seq, h.snapshot.revision) for h in found[1]] == [(seqs[1], 1), (seqs[4], 2)]
    assert await store.get_incident("nope") is None


async def test_recent_revisions_are_the_latest_of_incidents_updated_since(store: AnyStore) -> None:
    assert await store.recent_revisions(0.0) == {}
    await store.commit(signal_unit(1, snapshot("a", 1, at=100.0)))  # updated 101
    await store.commit(signal_unit(2, snapshot("a", 2, at=100.0)))  # updated 102
    await store.commit(signal_unit(3, snapshot("b", 1, at=200.0)))  # updated 201
    assert await store.recent_revisions(0.0) == {"a": 2, "b": 1}
    assert await store.recent_revisions(102.0) == {"a": 2, "b": 1}  # at or after
    assert await store.recent_revisions(102.5) == {"b": 1}
    assert await store.recent_revisions(201.5) == {}


# --- journal, quarantine, audit -----------------------------------------------------------------


async def test_quarantine_action_and_audit(store: AnyStore) -> None:
    bad = raw(7)
    await store.commit(
        Unit(
            journal_type=None,
            at=bad.received_at,
            quarantine=QuarantineRecord(signal=bad, codec="msd", reason="truncated", path="msdStructure"),
        )
    )
    action = ActionRecord(incident_id="a", action="ack", actor="alice", role="operator", note="seen", at=5.0)
    await store.commit(Unit(journal_type="action", at=5.0, action=action, audit_outcome="acknowledged"))
    viewed = ActionRecord(incident_id="b", action="view", actor="bob", role="viewer", note="", at=6.0)
    await store.commit(Unit(journal_type=None, at=6.0, action=viewed, audit_outcome="viewed"))
    [q] = await store.quarantined()
    assert q["payload"] == bad.payload and q["reason"] == "truncated" and q["source"] == bad.source
    assert (q["at"], q["transport"], q["kind"], q["tps"], q["vehicle"], q["codec"], q["path"]) == (
        1000.0, "mqtt", "msd", "acme", "v7", "msd", "msdStructure"
    )  # fmt: skip
    [entry] = await store.audit_log("a")
    assert (entry["actor"], entry["action"], entry["outcome"], entry["note"]) == (
        "alice", "ack", "acknowledged", "seen"
    )  # fmt: skip
    assert [(e["incident_id"], e["role"], e["at"]) for e in await store.audit_log()] == [
        ("a", "operator", 5.0),
        ("b", "viewer", 6.0),
    ]
    assert await store.audit_log("nope") == []
    rows = await store.journal(0, 10)
    assert [r.type for r in rows] == ["action"]  # quarantine and views are not replayed
    assert rows[0].action == action and rows[0].signal is None


async def test_quarantined_lists_the_newest_first(store: AnyStore) -> None:
    for n in range(5):
        await store.commit(quarantine_unit(n, 10.0 + n))
    newest = await store.quarantined(limit=3)
    assert [q["vehicle"] for q in newest] == ["v4", "v3", "v2"]
    assert len({q["id"] for q in await store.quarantined()}) == 5


async def test_the_journal_replays_in_commit_order_page_by_page(store: AnyStore) -> None:
    action = ActionRecord(incident_id="a", action="ack", actor="al", role="operator", note="n", at=7.0)
    units = [
        signal_unit(1, snapshot("a")),
        quarantine_unit(2, 3.0),
        Unit(journal_type="tick", at=4.0),
        Unit(journal_type="action", at=7.0, action=action, audit_outcome="acknowledged"),
        signal_unit(5, None, vehicle="v1"),
        Unit(journal_type="prune", at=9.0),
        signal_unit(6, snapshot("b")),
    ]
    for u in units[:3]:
        await store.commit(u)
    await asyncio.gather(*(store.commit(u) for u in units[3:]))
    pages = []
    after = 0
    while page := await store.journal(after, 2):
        assert len(page) <= 2
        pages.append(page)
        after = page[-1].seq
    rows = [r for p in pages for r in p]
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [(r.type, r.at) for r in rows] == [
        ("signal", 1001.0), ("tick", 4.0), ("action", 7.0),
        ("signal", 1005.0), ("prune", 9.0), ("signal", 1006.0),
    ]  # fmt: skip
    assert rows[2].action == action
    assert rows[3].signal == raw(5, 1005.0, "v1")
    assert rows[1].signal is None and rows[1].action is None
    assert await store.journal(6, 10) == []
    assert [r.seq for r in await store.journal(2, 3)] == [3, 4, 5]


# --- keys and meta ------------------------------------------------------------------------------


async def test_key_is_created_once(open_store: OpenStore) -> None:
    async with open_store() as store:
        k1, k1_again, other = await asyncio.gather(
            store.key("pseudonym"), store.key("pseudonym"), store.key("x")
        )
        assert k1 == k1_again and k1 != other
        assert len(k1) == 32 and len(other) == 32
    async with open_store() as store:
        assert await store.key("pseudonym") == k1


async def test_swap_meta_returns_what_was_stored_before(open_store: OpenStore) -> None:
    async with open_store() as store:
        assert await store.swap_meta("policy", b"one") is None
        assert await store.swap_meta("policy", b"two") == b"one"
        assert await store.swap_meta("other", b"") is None
        assert await store.swap_meta("other", b"\x00\xff") == b""
    async with open_store() as store:
        assert await store.swap_meta("policy", b"three") == b"two"
        assert await store.swap_meta("other", b"x") == b"\x00\xff"


# --- retention ----------------------------------------------------------------------------------


async def test_retention_deletes_old_data_but_not_pending_deliveries(store: AnyStore) -> None:
    old = (await store.commit(signal_unit(1, snapshot("old", at=100.0)))).outbox[0]
    await store.commit(signal_unit(2, snapshot("stuck", at=100.0)))  # never delivered
    await store.commit(signal_unit(3, snapshot("new", at=5000.0)))
    await store.record_delivered(old, at=200.0, attempts=1, status=200)
    deleted = await store.delete_before(3000.0)
    assert deleted["incidents"] == 1 and deleted["revisions"] == 1 and deleted["deliveries"] == 1
    assert deleted["outbox"] == 1
    # 'stuck' is kept, and with it the journal from its first signal (100) on: a replay needs it.
    assert deleted["journal"] == 0
    assert sorted(r.incident_id for r in await store.list_incidents()) == ["new", "stuck"]
    assert await store.load_revisions([("old", 1)]) == {}
    [stuck] = [i for i in await store.pending_outbox() if i.incident_id == "stuck"]
    await store.record_delivered(stuck, at=200.0, attempts=1, status=200)
    deleted = await store.delete_before(3000.0)
    assert deleted["incidents"] == 1
    assert deleted["journal"] == 3  # journal rows at 1001..1003: before the cutoff and any kept incident
    deleted = await store.delete_before(6000.0, journal_margin_s=1000.0)
    assert deleted["incidents"] == 0 and deleted["journal"] == 0  # 'new' (5000) is still pending
    counts = await store.counts()
    assert (counts["incidents"], counts["journal"], counts["outbox"]) == (1, 0, 1)


async def test_retention_keeps_the_journal_of_an_incident_that_is_kept(store: AnyStore) -> None:
    first = snapshot("call", at=1001.0)
    await store.commit(signal_unit(1, first))
    later = of(snapshot("call", revision=2, at=1001.0), updated_at=4000.0)
    await store.commit(signal_unit(3000, later))
    # The first signal (1001) is older than the cutoff, the incident (updated 4000) is not.
    deleted = await store.delete_before(2000.0, journal_margin_s=500.0)
    assert deleted["journal"] == 0
    assert [r.seq for r in await store.journal(0, 10)] == [1, 2]


async def test_retention_keeps_the_margin_before_a_kept_incident(store: AnyStore) -> None:
    await store.commit(Unit(journal_type="tick", at=400.0))
    await store.commit(Unit(journal_type="tick", at=600.0))
    await store.commit(signal_unit(1, snapshot("call", at=1001.0), at=1001.0))
    deleted = await store.delete_before(5000.0, journal_margin_s=500.0)  # 'call' is pending: kept
    assert deleted["journal"] == 1  # the tick at 400; from 501 on is kept
    assert [r.at for r in await store.journal(0, 10)] == [600.0, 1001.0]


async def test_retention_deletes_dead_letters_old_quarantine_and_audit(store: AnyStore) -> None:
    item = (await store.commit(signal_unit(1, snapshot("dead", at=100.0)))).outbox[0]
    await store.record_dead_letter(item, at=150.0, attempts=3, reason="http_4xx", detail="410")
    await store.commit(quarantine_unit(2, 100.0))
    await store.commit(quarantine_unit(3, 4000.0))
    await store.commit(action_unit("dead", 120.0))
    await store.commit(action_unit("dead", 4100.0))
    deleted = await store.delete_before(3000.0)
    assert (deleted["incidents"], deleted["outbox"], deleted["dead_letters"]) == (1, 1, 1)
    assert (deleted["quarantine"], deleted["audit"]) == (1, 1)
    assert await store.dead_letters() == []
    assert [q["at"] for q in await store.quarantined()] == [4000.0]
    assert [a["at"] for a in await store.audit_log()] == [4100.0]
    assert [r.at for r in await store.journal(0, 10)] == [4100.0]  # the signal (1001), the action (120) go


# --- where a replay starts ----------------------------------------------------------------------


async def test_replay_after_reaches_back_to_the_first_signal_of_touched_incidents(store: AnyStore) -> None:
    assert await store.replay_after(100.0, 10.0) == 0
    z = of(snapshot("z", at=50.0), vehicle="vz")  # received 50, updated 51
    a = of(snapshot("a", at=100.0), vehicle="va")  # received 100, updated 101
    b = of(snapshot("b", at=200.0), vehicle="vb")  # received 200, updated 201
    await store.commit(signal_unit(1, z, at=50.0, vehicle="vz"))  # seq 1
    await store.commit(signal_unit(2, a, at=100.0, vehicle="va"))  # seq 2
    await store.commit(signal_unit(3, b, at=200.0, vehicle="vb"))  # seq 3
    await store.commit(signal_unit(4, None, at=300.0, vehicle="va"))  # seq 4: va, no revision
    await store.commit(Unit(journal_type="tick", at=400.0))  # seq 5
    assert await store.replay_after(450.0, 10.0) == 5  # nothing touched since 450
    assert await store.replay_after(400.0, 10.0) == 4  # the row at 400 itself is replayed
    assert await store.replay_after(350.0, 10.0) == 4
    # va signalled at 300: its latest incident 'a' (first signal 100) is replayed from 90 on.
    assert await store.replay_after(250.0, 10.0) == 1
    assert await store.replay_after(150.0, 10.0) == 1  # 'b' updated since 150; va and vb signalled
    assert await store.replay_after(150.0, 60.0) == 0  # 100 - 60 = 40: before z's signal
    # An operator action revises 'a' at 500 (no signal): 'a' is touched since 450.
    await store.commit(
        action_unit("a", 500.0, snap=of(snapshot("a", 2, at=100.0), vehicle="va", updated_at=500.0))
    )
    assert await store.replay_after(450.0, 10.0) == 1
    assert await store.replay_after(550.0, 10.0) == 6


# --- migrations ---------------------------------------------------------------------------------


async def test_a_fresh_store_is_at_the_newest_schema_version(store: AnyStore) -> None:
    assert await schema_version(store) == newest_version(store)
    # PostgreSQL records a row per version; SQLite's pragma is one value.
    assert await version_rows(store) == (1 if isinstance(store, SqliteStore) else newest_version(store))


async def test_migrating_twice_changes_nothing(open_store: OpenStore) -> None:
    async with open_store() as store:
        first = await store.commit(signal_unit(1, snapshot("a")))
        counts = await store.counts()
        assert await migrate_again(store) == newest_version(store)
        assert await migrate_again(store) == newest_version(store)
        assert await store.counts() == counts
    async with open_store() as store:  # a start applies them again: a no-op
        assert await schema_version(store) == newest_version(store)
        assert await version_rows(store) == (1 if isinstance(store, SqliteStore) else newest_version(store))
        assert await store.counts() == counts
        assert [i.id for i in await store.pending_outbox()] == [first.outbox[0].id]
        assert (await store.commit(signal_unit(2, snapshot("b")))).journal_seq == 2


async def test_a_store_of_a_newer_schema_is_refused(open_store: OpenStore) -> None:
    async with open_store() as store:
        await store.commit(signal_unit(1, snapshot("a")))
        known = newest_version(store)
        await record_schema_version(store, known + 5)
    for _ in range(2):  # refused, and left as it was: refused again
        with pytest.raises(SchemaTooNewError) as caught:
            async with open_store():
                pytest.fail("a newer schema was opened")
        message = str(caught.value)
        assert f"version {known + 5}" in message and f"({known})" in message, message
        assert isinstance(caught.value, StoreError)


async def test_retention_deletes_expired_console_sessions_and_keeps_live_ones(store: AnyStore) -> None:
    now = time.time()
    # "live" first: a sign-in sweeps sessions expired at its own time.
    await store.session_put("live", operator="bob", token_sha256="t", created_at=now, expires_at=now + 3600)
    await store.session_put(
        "gone", operator="alice", token_sha256="t", created_at=now - 7200, expires_at=now - 1
    )
    deleted = await store.delete_before(now - 86400.0)
    assert deleted["console_sessions"] == 1
    assert await store.session_get("gone", now=now - 10) is None  # deleted, not only expired
    assert await store.session_get("live", now=now) is not None
