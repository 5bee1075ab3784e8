"""What only the PostgreSQL store does: unsequenced appends, the fenced sequencer, outbox claims
shared by replicas, and a writer that outlives a server restart.

The contract both backends keep is in ``test_contract.py``; here SQL is fine where it is the only way
to see or provoke something (the lease epoch, claims, a server going away).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecallgw.config import Secret, StoreConfig
from ecallgw.errors import StoreError
from ecallgw.gateway.records import (
    ActionRecord,
    DecisionRecord,
    OutboxItem,
    QuarantineRecord,
    RawSignal,
    Unit,
)
from ecallgw.gateway.store.migrations import POSTGRES
from ecallgw.gateway.store.postgres import FencedError, PostgresStore, SequencedRow
from ecallgw.simulators.pgserver import PgServer
from ecallgw.triage.decision import Route
from tests.gateway.store.support import raw, shared_store, signal_unit, snapshot

Conn = Any  # an asyncpg connection

RECEIVERS = ("psap", "desk")
_example = itertools.count(1)


def config(dsn: str, **kw: Any) -> StoreConfig:
    return StoreConfig(backend="postgresql", dsn=Secret(dsn), **kw)


@pytest.fixture
async def r1(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(config(pg_dsn), replica_id="r1") as store:
        yield store


@pytest.fixture
async def r2(pg_dsn: str, r1: PostgresStore) -> AsyncIterator[PostgresStore]:
    """A second replica on r1's database (opened after r1: the schema exists)."""
    async with PostgresStore(config(pg_dsn), replica_id="r2") as store:
        yield store


@pytest.fixture
async def seq_conn(r1: PostgresStore) -> AsyncIterator[Conn]:
    """The sequencer's connection of its own."""
    conn = await r1.connect("sequencer")
    try:
        yield conn
    finally:
        await conn.close()


async def epoch(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT epoch FROM sequencer_lease WHERE id = 1"))


def decide(
    row: SequencedRow, at: float, snap: Any = None, outcome: str = "", receivers: tuple[str, ...] = ()
) -> Unit:
    """The sequencer's unit for an appended row: its place in the order, and what triage made of it."""
    decisions: tuple[DecisionRecord, ...] = ()
    if snap is not None:
        routes = tuple(
            Route(receiver=r, incident_id=snap.incident_id, revision=snap.revision) for r in receivers
        )
        decisions = (
            DecisionRecord(
                outcome=outcome, reasons=snap.reasons, snapshot=snap, routes=routes, signal_at=row.at
            ),
        )
    return Unit(
        journal_type=row.type,  # type: ignore[arg-type]
        at=at,
        signal=row.raw,
        action=row.action,
        decisions=decisions,
        journal_id=row.id,
        outcome=outcome,
    )


# --- appends and the sequencer ------------------------------------------------------------------


async def test_appended_rows_wait_unsequenced_until_the_sequencer_orders_them(
    r1: PostgresStore, seq_conn: Conn
) -> None:
    signals = [raw(n, 100.0 + n) for n in range(3)]
    action = ActionRecord(incident_id="inc-0", action="ack", actor="al", role="operator", note="n", at=104.0)
    futs = [r1.append_nowait(s) for s in signals] + [r1.append_nowait(action=action)]
    ids = list(await asyncio.gather(*futs))
    assert ids == sorted(ids) and len(set(ids)) == 4
    rows = await r1.unsequenced(seq_conn, 10)
    assert [r.id for r in rows] == ids
    assert [r.type for r in rows] == ["signal", "signal", "signal", "action"]
    assert [r.raw for r in rows[:3]] == signals and rows[3].action == action and rows[3].raw is None
    assert [r.digest for r in rows] == [s.digest for s in signals] + [None]
    assert [r.at for r in rows] == [100.0, 101.0, 102.0, 104.0]
    assert [r.id for r in await r1.unsequenced(seq_conn, 2)] == ids[:2]
    assert await r1.results(ids) == {}
    assert await r1.journal(0, 10) == []  # not in the triage order yet: not replayed
    assert (await r1.sequencer_lag())[0] == 4

    s0, s1, s2, act = rows
    snap = snapshot("inc-0")
    units = [
        decide(s2, 200.0),  # sequenced out of id order: the triage order is the sequencer's
        decide(s0, 201.0, snap, "new_incident", ("psap",)),
        decide(s1, 202.0, outcome="redelivered"),  # a transport copy: kept, not replayed
        decide(act, 203.0, outcome="acknowledged"),
    ]
    results = await r1.commit_sequenced(seq_conn, units, await epoch(seq_conn))
    assert [r.journal_seq for r in results] == [1, 2, 3, 4]
    assert [(o.incident_id, o.receiver) for o in results[1].outbox] == [("inc-0", "psap")]
    assert await r1.unsequenced(seq_conn, 10) == []
    assert await r1.sequencer_lag() == (0, 0.0)
    decided = await r1.results(ids)
    assert decided[s0.id] == {
        "outcome": "new_incident",
        "incident_id": "inc-0",
        "revision": 1,
        "reasons": [["new", "new incident"]],
    }
    assert decided[s1.id]["outcome"] == "redelivered" and decided[act.id]["incident_id"] == "inc-0"
    assert decided[act.id]["outcome"] == "acknowledged" and decided[s2.id]["revision"] is None
    journal = await r1.journal(0, 10)
    assert [(j.seq, j.type) for j in journal] == [(1, "signal"), (2, "signal"), (4, "action")]
    assert [j.at for j in journal] == [200.0, 201.0, 203.0]  # the now triage used
    assert [j.signal for j in journal[:2]] == [signals[2], signals[0]]  # as received
    assert journal[2].action == action
    assert await r1.last_journal_seq() == 4
    assert [(i.incident_id, i.revision) for i in await r1.pending_outbox()] == [("inc-0", 1)]

    later = await r1.append_nowait(raw(9, 300.0))
    [row] = await r1.unsequenced(seq_conn, 10)
    assert row.id == later > max(ids)
    [res] = await r1.commit_sequenced(seq_conn, [decide(row, 301.0)], await epoch(seq_conn))
    assert res.journal_seq == 5


@shared_store(20)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(0, 1), st.integers(1, 4)),
            st.tuples(st.just("turn"), st.just(0), st.just(0)),
            st.tuples(st.just("settle"), st.integers(0, 1), st.just(0)),
            st.tuples(st.just("sequence"), st.just(0), st.integers(1, 5)),
        ),
        min_size=1,
        max_size=30,
    )
)
async def test_appends_of_two_replicas_get_distinct_ids_and_are_each_sequenced_once(
    r1: PostgresStore, r2: PostgresStore, seq_conn: Conn, ops: list[tuple[str, int, int]]
) -> None:
    e = next(_example)
    stores = (r1, r2)
    seq0 = await r1.last_journal_seq()
    appended: dict[asyncio.Future[int], RawSignal] = {}
    outstanding: list[list[asyncio.Future[int]]] = [[], []]
    sequenced: list[int] = []  # journal ids in the order the sequencer took them
    n = 0

    async def sequence(limit: int) -> int:
        rows = await r1.unsequenced(seq_conn, limit)
        assert [r.id for r in rows] == sorted(r.id for r in rows)
        assert not {r.id for r in rows} & set(sequenced)  # a sequenced row is never offered again
        if rows:
            now = 1000.0 + len(sequenced)
            await r1.commit_sequenced(seq_conn, [decide(r, now) for r in rows], await epoch(seq_conn))
            sequenced.extend(r.id for r in rows)
        return len(rows)

    for op, which, count in ops:
        if op == "append":
            for _ in range(count):
                n += 1
                signal = raw(n, float(n), vehicle=f"e{e}-{n}")
                fut = stores[which].append_nowait(signal)
                appended[fut] = signal
                outstanding[which].append(fut)
        elif op == "turn":
            await asyncio.sleep(0)
        elif op == "settle":
            await asyncio.gather(*outstanding[which])
            outstanding[which] = []
        else:
            await sequence(count)
    ids = {fut: await fut for fut in appended}
    assert len(set(ids.values())) == len(ids)  # distinct across both replicas
    while await sequence(5):
        pass
    assert sorted(sequenced) == sorted(ids.values())  # every row, exactly once
    journal = await r1.journal(seq0, 10_000)
    assert [j.seq for j in journal] == list(range(seq0 + 1, seq0 + 1 + len(ids)))
    by_id = {jid: appended[fut] for fut, jid in ids.items()}
    assert [j.signal for j in journal] == [by_id[jid] for jid in sequenced]


async def test_a_fenced_sequencer_writes_nothing(r1: PostgresStore, seq_conn: Conn) -> None:
    ids = [await r1.append_nowait(raw(n, 100.0 + n)) for n in range(2)]
    rows = await r1.unsequenced(seq_conn, 10)
    old = await epoch(seq_conn)
    await seq_conn.execute("UPDATE sequencer_lease SET epoch = epoch + 1")  # a new leader took over
    counts = await r1.counts()
    units = [decide(rows[0], 200.0, snapshot("a"), "new_incident", ("psap",)), decide(rows[1], 201.0)]
    with pytest.raises(FencedError, match=f"epoch {old} "):
        await r1.commit_sequenced(seq_conn, units, old)
    quarantine = Unit(
        journal_type=None, at=5.0, quarantine=QuarantineRecord(signal=raw(7), codec="msd", reason="x")
    )
    audit = Unit(
        journal_type=None,
        at=6.0,
        action=ActionRecord(incident_id="a", action="view", actor="al", role="viewer", note="", at=6.0),
        audit_outcome="viewed",
    )
    for unit in (quarantine, audit):  # no journal row, no decision: fenced all the same
        with pytest.raises(FencedError):
            await r1.commit_sequenced(seq_conn, [unit], old)
    assert await r1.counts() == counts
    assert [r.id for r in await r1.unsequenced(seq_conn, 10)] == ids
    assert await r1.results(ids) == {}
    assert not seq_conn.is_in_transaction()
    # The leader's epoch writes.
    results = await r1.commit_sequenced(seq_conn, units, old + 1)
    assert [r.journal_seq for r in results] == [1, 2]
    # A second sequencer deciding the same rows (with the current epoch, say in a race) is refused whole.
    again = [decide(rows[0], 300.0), decide(rows[1], 301.0, snapshot("b"), "new_incident", ("psap",))]
    counts = await r1.counts()
    with pytest.raises(FencedError, match="already sequenced"):
        await r1.commit_sequenced(seq_conn, again, old + 1)
    assert await r1.counts() == counts
    assert [j.at for j in await r1.journal(0, 10)] == [200.0, 201.0]


async def test_retention_never_deletes_unsequenced_rows(r1: PostgresStore, seq_conn: Conn) -> None:
    waiting = [await r1.append_nowait(raw(n, 100.0 + n)) for n in range(3)]
    await r1.commit(signal_unit(9, None, at=100.0))  # sequenced, as old
    deleted = await r1.delete_before(10_000.0)
    assert deleted["journal"] == 1
    assert [r.id for r in await r1.unsequenced(seq_conn, 10)] == waiting
    assert (await r1.counts())["journal"] == 3


# --- outbox claims ------------------------------------------------------------------------------


async def commit_revisions(
    store: PostgresStore, plan: list[tuple[str, int, tuple[str, ...]]]
) -> list[OutboxItem]:
    items: list[OutboxItem] = []
    for n, (iid, rev, receivers) in enumerate(plan):
        items += (await store.commit(signal_unit(n, snapshot(iid, rev), receivers))).outbox
    return items


def keys(items: list[OutboxItem]) -> list[tuple[str, int, str]]:
    return [(i.incident_id, i.revision, i.receiver) for i in items]


async def test_an_entry_is_claimed_by_one_replica_and_a_pair_by_one_at_a_time(
    r1: PostgresStore, r2: PostgresStore
) -> None:
    await commit_revisions(r1, [("a", 1, ("psap",)), ("b", 1, ("psap",)), ("a", 2, ("psap", "desk"))])
    assert keys(await r1.claim_outbox(RECEIVERS, limit=1)) == [("a", 1, "psap")]
    # a/2 for psap waits behind a/1, which r1 holds; for desk it is the pair's first.
    assert keys(await r2.claim_outbox(RECEIVERS)) == [("b", 1, "psap"), ("a", 2, "desk")]
    assert await r2.claim_outbox(RECEIVERS) == []
    assert keys(await r1.claim_outbox(RECEIVERS)) == [("a", 2, "psap")]  # behind its own a/1
    assert await r1.claim_outbox(RECEIVERS) == [] and await r2.claim_outbox(RECEIVERS) == []
    # Delivered or not, held entries stay with their holder.
    [a1] = [i for i in await r1.pending_outbox() if (i.incident_id, i.revision) == ("a", 1)]
    await r1.record_delivered(a1, at=1.0, attempts=1, status=200)
    assert await r2.claim_outbox(RECEIVERS) == []
    # Claiming at the same time: each entry goes to one of them.
    await commit_revisions(r1, [(f"c{n}", 1, ("psap", "desk")) for n in range(20)])
    one, two = await asyncio.gather(r1.claim_outbox(RECEIVERS), r2.claim_outbox(RECEIVERS))
    assert not {i.id for i in one} & {i.id for i in two}
    assert len(one) + len(two) == 40
    assert [i.id for i in one] == sorted(i.id for i in one)


async def test_a_revision_waits_while_a_lower_one_is_being_claimed_elsewhere(
    r1: PostgresStore, r2: PostgresStore, pg_dsn: str
) -> None:
    # A claim in flight elsewhere holds pair a's advisory lock and has locked a/1 (SKIP LOCKED
    # makes r2 pass it by): r2 must not take a/2 meanwhile, or two replicas would deliver one
    # incident's revisions side by side.
    await commit_revisions(r1, [("a", 1, ("psap",)), ("a", 2, ("psap",)), ("b", 1, ("psap",))])
    a1 = (await r1.pending_outbox())[0]
    other = await asyncpg.connect(pg_dsn, timeout=10)
    try:
        async with other.transaction():
            await other.execute("SELECT pg_advisory_xact_lock(hashtextextended('psap/a', 0))")
            await other.execute("SELECT id FROM outbox WHERE id = $1 FOR UPDATE", a1.id)
            assert keys(await r2.claim_outbox(RECEIVERS)) == [("b", 1, "psap")]
    finally:
        await other.close()
    assert keys(await r1.claim_outbox(RECEIVERS)) == [("a", 1, "psap"), ("a", 2, "psap")]
    assert await r2.claim_outbox(RECEIVERS) == []


async def test_a_lapsed_lease_is_taken_over_and_a_renewed_one_is_kept(pg_dsn: str) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(PostgresStore(config(pg_dsn, outbox_lease_s=0.5), replica_id="a"))
        b = await stack.enter_async_context(PostgresStore(config(pg_dsn, outbox_lease_s=0.5), replica_id="b"))
        await commit_revisions(a, [("x", 1, ("psap",)), ("x", 2, ("psap",)), ("y", 1, ("psap",))])
        held = await a.claim_outbox(RECEIVERS)
        assert keys(held) == [("x", 1, "psap"), ("x", 2, "psap"), ("y", 1, "psap")]
        ids = [i.id for i in held]
        for _ in range(8):  # 0.8 s, longer than the lease: renewed every 0.1 s, never lost
            assert await a.renew_claims(ids) == 3
            assert await b.claim_outbox(RECEIVERS) == []
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.6)  # a stops renewing (frozen, dead): its lease runs out
        taken = await b.claim_outbox(RECEIVERS)
        assert taken == held
        assert await a.renew_claims(ids) == 0  # a holds nothing any more
        assert await a.claim_outbox(RECEIVERS) == []


async def test_a_silent_replica_counts_as_alive_while_a_claim_of_its_may_still_hold(pg_dsn: str) -> None:
    # Alone, the sequencer claims its own new entries in its commit (Replica): not while a replica
    # gone silent may still hold a live claim on an earlier revision of a pair. Its claims hold
    # outbox_lease_s after its last renewal, at most a heartbeat (lease_s) after its last heartbeat:
    # here 1.2 s, where three leases would be 0.6 s.
    cfg = {"lease_s": 0.2, "outbox_lease_s": 1.0}
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(PostgresStore(config(pg_dsn, **cfg), replica_id="a"))
        b = await stack.enter_async_context(PostgresStore(config(pg_dsn, **cfg), replica_id="b"))
        await commit_revisions(a, [("x", 1, ("psap",))])
        assert keys(await b.claim_outbox(RECEIVERS)) == [("x", 1, "psap")]  # b's last renewal and beat

        async def beat() -> None:  # a's heartbeat (Replica does it every lease_s)
            await a.run(
                lambda c: c.execute(
                    "UPDATE replicas SET seen_at = extract(epoch from clock_timestamp()) "
                    "WHERE replica_id = 'a'"
                )
            )

        assert await a.live_replicas() == 2
        await asyncio.sleep(0.7)  # b silent for more than three leases: its claim still holds
        await beat()
        assert await a.live_replicas() == 2
        assert await a.claim_outbox(RECEIVERS) == []
        await asyncio.sleep(0.7)  # 1.4 s: the claim has lapsed, and b no longer counts
        await beat()
        assert await a.live_replicas() == 1
        assert keys(await a.claim_outbox(RECEIVERS)) == [("x", 1, "psap")]


async def test_a_dead_letter_after_a_takeover_delivery_does_not_undo_it(pg_dsn: str) -> None:
    # a's lease ran out while its requests kept failing; b took the entry over and delivered it.
    # a giving up afterwards must not list a delivered entry among the dead letters.
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(PostgresStore(config(pg_dsn, outbox_lease_s=0.2), replica_id="a"))
        b = await stack.enter_async_context(PostgresStore(config(pg_dsn, outbox_lease_s=0.2), replica_id="b"))
        await commit_revisions(a, [("x", 1, ("psap",))])
        [item] = await a.claim_outbox(RECEIVERS)
        await asyncio.sleep(0.3)
        assert await b.claim_outbox(RECEIVERS) == [item]
        await b.record_delivered(item, at=10.0, attempts=1, status=200, sent_at=9.0)
        await a.record_dead_letter(item, at=11.0, attempts=8, reason="http_5xx", detail="503")
        assert await a.dead_letters() == []
        found = await a.get_incident("x")
        assert found is not None
        [d] = found[2]
        assert (d["state"], d["status"], d["dead_letter_reason"]) == ("delivered", 200, None)
        assert await a.first_delivery("x", "psap") == (1, 9.0)


async def test_two_replicas_claiming_at_once_never_split_a_pair(r1: PostgresStore, r2: PostgresStore) -> None:
    # A real race, repeated: each replica takes one entry, both at once, of a pair with two
    # pending revisions. One of them gets revision 1, the other nothing; before the claim took its
    # pair locks ahead of its snapshot, a claim committed in between went unseen and the second
    # replica took revision 2 (6 splits in 300 rounds).
    for k in range(200):
        await commit_revisions(r1, [(f"race{k}", 1, ("psap",)), (f"race{k}", 2, ("psap",))])
        got = await asyncio.gather(r1.claim_outbox(RECEIVERS, limit=1), r2.claim_outbox(RECEIVERS, limit=1))
        assert sorted(keys(got[0] + got[1])) == [(f"race{k}", 1, "psap")], (k, got)
        for store, items in zip((r1, r2), got, strict=True):
            for item in items:
                await store.record_delivered(item, at=1.0, attempts=1, status=200)
        [rest] = [s for s, items in zip((r1, r2), got, strict=True) if items]
        [second] = await rest.claim_outbox(RECEIVERS)
        assert keys([second]) == [(f"race{k}", 2, "psap")]
        await rest.record_delivered(second, at=1.0, attempts=1, status=200)
    assert await r1.pending_outbox() == []


@shared_store(15)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(
                st.just("revise"),
                st.integers(0, 3),
                st.sampled_from([("psap",), ("desk",), ("psap", "desk")]),
            ),
            st.tuples(st.just("claim"), st.integers(0, 1), st.integers(1, 4)),
            st.tuples(st.just("race"), st.integers(1, 4), st.integers(1, 4)),
            st.tuples(st.just("deliver"), st.integers(0, 1), st.integers(0, 20)),
            st.tuples(st.just("dead"), st.integers(0, 1), st.integers(0, 20)),
        ),
        min_size=1,
        max_size=30,
    )
)
async def test_claims_never_split_a_pair_between_replicas(
    r1: PostgresStore, r2: PostgresStore, ops: list[tuple[str, Any, Any]]
) -> None:
    e = next(_example)
    stores = {"r1": r1, "r2": r2}
    names = ("r1", "r2")
    revision: dict[int, int] = {}
    held: dict[str, list[OutboxItem]] = {"r1": [], "r2": []}
    n = 0

    async def check(claimed: dict[str, list[OutboxItem]]) -> None:
        assert not {i.id for i in claimed["r1"]} & {i.id for i in claimed["r2"]}
        rows = await r1.read(
            lambda c: c.fetch(
                "SELECT id, incident_id, revision, receiver, claimed_by, "
                "lease_until >= extract(epoch from clock_timestamp()) AS valid "
                "FROM outbox WHERE state = 'pending' ORDER BY receiver, incident_id, revision"
            )
        )
        for name, items in claimed.items():
            for item in items:
                assert any(r["id"] == item.id and r["claimed_by"] == name for r in rows), item
        pairs: dict[tuple[str, str], list[Any]] = {}
        for r in rows:
            pairs.setdefault((r["receiver"], r["incident_id"]), []).append(r)
        for pair in pairs.values():
            for k, r in enumerate(pair):
                if r["claimed_by"] is not None and r["valid"]:
                    # Every lower pending revision is held, validly, by the same replica.
                    assert all(p["claimed_by"] == r["claimed_by"] and p["valid"] for p in pair[:k]), pair

    for op, x, y in ops:
        claimed: dict[str, list[OutboxItem]] = {"r1": [], "r2": []}
        if op == "revise":
            revision[x] = revision.get(x, 0) + 1
            n += 1
            await r1.commit(signal_unit(n, snapshot(f"e{e}-{x}", revision[x]), y))
        elif op == "claim":
            claimed[names[x]] = await stores[names[x]].claim_outbox(RECEIVERS, limit=y)
        elif op == "race":
            claimed["r1"], claimed["r2"] = await asyncio.gather(
                r1.claim_outbox(RECEIVERS, limit=x), r2.claim_outbox(RECEIVERS, limit=y)
            )
        else:
            mine = held[names[x]]
            if mine:
                item = mine.pop(y % len(mine))
                if op == "deliver":
                    await stores[names[x]].record_delivered(item, at=1.0, attempts=1, status=200)
                else:
                    await stores[names[x]].record_dead_letter(item, at=1.0, attempts=1, reason="x", detail="")
        for name in names:
            held[name] += claimed[name]
        await check(claimed)
    for name in names:  # leave nothing pending for the next example
        for item in held[name] + await stores[name].claim_outbox(RECEIVERS, limit=10_000):
            await stores[name].record_delivered(item, at=1.0, attempts=1, status=200)
    while leftover := await r1.claim_outbox(RECEIVERS, limit=10_000):
        for item in leftover:
            await r1.record_delivered(item, at=1.0, attempts=1, status=200)
    assert await r1.pending_outbox() == []


# --- start, migrations, a server that goes away -------------------------------------------------


async def test_replicas_starting_together_migrate_once(pg_dsn: str) -> None:
    stores = [PostgresStore(config(pg_dsn), replica_id=f"r{n}") for n in range(3)]
    async with AsyncExitStack() as stack:
        await asyncio.gather(*(stack.enter_async_context(s) for s in stores))
        versions = await stores[0].read(
            lambda c: c.fetch("SELECT version FROM schema_version ORDER BY version")
        )
        assert [v[0] for v in versions] == list(range(1, len(POSTGRES) + 1))
        assert await stores[2].key("k") == await stores[1].key("k")


async def test_an_unreachable_server_fails_the_start() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens on it once closed
    with pytest.raises(StoreError, match="cannot connect"):
        async with PostgresStore(config(f"postgresql://ecallgw@127.0.0.1:{port}/x")):
            pass


@pytest.mark.slow
async def test_the_writer_outlives_a_server_restart(pg_server: PgServer, pg_dsn: str) -> None:
    async with PostgresStore(config(pg_dsn), replica_id="r1") as store:
        assert (await store.commit(signal_unit(1, snapshot("a")))).journal_seq == 1
        assert store.writable
        await asyncio.to_thread(pg_server.stop, "fast")
        try:
            outage: list[asyncio.Future[Any]] = [
                store.commit_nowait(signal_unit(n, snapshot(f"o{n}"))) for n in range(2, 5)
            ]
            outage.append(store.append_nowait(raw(5)))
            async with asyncio.timeout(20):
                results = await asyncio.gather(*outage, return_exceptions=True)
            assert all(isinstance(r, StoreError) for r in results), results
            assert not store.writable
            with pytest.raises(StoreError):
                await store.pending_outbox()
        finally:
            if not pg_server.running:  # the session's server: leave it running whatever happened
                await asyncio.to_thread(pg_server.start)
        async with asyncio.timeout(20):
            while True:  # the first batch may meet a connection the restart broke
                try:
                    result = await store.commit(signal_unit(6, snapshot("b")))
                    break
                except StoreError:
                    assert not store.writable
        assert store.writable
        assert result.journal_seq == 2  # nothing of the outage was stored
        assert [(i.incident_id, i.revision) for i in await store.pending_outbox()] == [("a", 1), ("b", 1)]
        assert [r.seq for r in await store.journal(0, 10)] == [1, 2]
    conn = await asyncpg.connect(pg_dsn, timeout=10)
    try:
        assert await conn.fetchval("SELECT count(*) FROM journal") == 2
    finally:
        await conn.close()
