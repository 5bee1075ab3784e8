"""The operator desk's store (issue 13), on both backends: the queue's order, filters, keyset pages
and counters; desk changes (claims, acks, notes) in the operator stream's sequence; retention."""

from __future__ import annotations

import dataclasses
import itertools

from hypothesis import given
from hypothesis import strategies as st

from ecallgw.gateway.records import DecisionRecord, DeskRecord, Unit
from ecallgw.gateway.store.desk import DeskEventRow, IncidentQuery
from ecallgw.gateway.store.protocol import RevisionRow
from ecallgw.model import Reason, Severity
from tests.gateway.store.support import AnyStore, shared_store, signal_unit, snapshot

_example = itertools.count(1)
_LEVELS = ["critical", "high", "medium", "low"]
_RANK = {level: i for i, level in enumerate(_LEVELS)}


def incident_unit(
    n: int,
    iid: str,
    *,
    tps: str = "acme",
    level: str = "high",
    at: float = 1000.0,
    kind: str = "automatic",
    status: str = "open",
    due: float | None = None,
    scene: str | None = None,
    receivers: tuple[str, ...] = ("psap",),
) -> Unit:
    snap = dataclasses.replace(
        snapshot(iid, at=at, status=status),
        tps=tps,
        call_id=f"call-{iid}",
        severity=Severity(level=level, score=50, reasons=(Reason(code="sev", text="severity"),)),  # type: ignore[arg-type]
        automatic=kind == "automatic",
        test=kind == "test",
        received_at=at,
        scene_id=scene or iid,
    )
    unit = signal_unit(n, snap, receivers, at=at)
    d = unit.decisions[0]
    return dataclasses.replace(unit, decisions=(dataclasses.replace(d, escalation_due_at=due),))


def desk_unit(at: float, *records: DeskRecord) -> Unit:
    return Unit(journal_type=None, at=at, desk=records)


def ack(iid: str, at: float = 2000.0, operator: str = "alice", claimed_by: str | None = None) -> DeskRecord:
    return DeskRecord(
        incident_id=iid, kind="ack", operator=operator, at=at, acked=True, claimed_by=claimed_by
    )


@shared_store(15)
@given(
    incidents=st.lists(
        st.tuples(
            st.sampled_from(_LEVELS),
            st.integers(0, 5),
            st.booleans(),
            st.sampled_from(["automatic", "manual"]),
        ),
        min_size=0,
        max_size=14,
    ),
    limit=st.integers(1, 6),
)
async def test_paging_yields_every_matching_incident_once_in_queue_order(
    store: AnyStore, incidents: list[tuple[str, int, bool, str]], limit: int
) -> None:
    e = next(_example)
    tps = f"t{e}"  # this example's incidents only
    expected = []
    for i, (level, age, acked, kind) in enumerate(incidents):
        iid = f"x{e}-{i:02d}"
        at = 1000.0 + age  # equal ages: the incident id decides
        await store.commit(incident_unit(e * 100 + i, iid, tps=tps, level=level, at=at, kind=kind))
        if acked:
            await store.commit(desk_unit(at, ack(iid)))
        expected.append((int(acked), _RANK[level], at, iid))
    expected.sort()
    seen: list[str] = []
    after = None
    for _ in range(len(incidents) + 2):
        page = await store.list_queue(IncidentQuery(tps=tps, limit=limit, after=after))
        seen += [r.incident_id for r in page]
        if len(page) < limit:
            break
        after = page[-1].key
    assert seen == [k[3] for k in expected]
    manual = await store.list_queue(IncidentQuery(tps=tps, kind="manual", limit=1000))
    assert [r.incident_id for r in manual] == [
        k[3] for k in expected if incidents[int(k[3][-2:])][3] == "manual"
    ]


async def test_filters_each_narrow_the_queue(store: AnyStore) -> None:
    await store.commit(incident_unit(1, "a", level="critical", at=1000.0, kind="manual", due=1060.0))
    await store.commit(incident_unit(2, "b", tps="other", level="low", at=1010.0, kind="test"))
    await store.commit(incident_unit(3, "c", level="medium", at=1020.0, status="cancelled"))

    async def ids(**kw: object) -> list[str]:
        return [r.incident_id for r in await store.list_queue(IncidentQuery(**kw))]  # type: ignore[arg-type]

    assert await ids() == ["a", "c", "b"]  # critical, medium, low
    assert await ids(statuses=("open", "updated")) == ["a", "b"]
    assert await ids(statuses=("cancelled",)) == ["c"]
    assert await ids(levels=("low", "critical")) == ["a", "b"]
    assert await ids(tps="other") == ["b"]
    assert await ids(vehicle="v1") == ["a", "c", "b"]
    assert await ids(vehicle="nope") == []
    assert await ids(kind="test") == ["b"]
    assert await ids(kind="manual") == ["a"]
    assert await ids(since=1010.0) == ["c", "b"]
    assert await ids(until=1010.0) == ["a"]
    assert await ids(q="call-c") == ["c"]
    assert await ids(q="b") == ["b"]
    [a] = await store.list_queue(IncidentQuery(q="a"))
    assert (a.kind, a.call_id, a.escalation_due_at, a.acked, a.claimed_by, a.at_psap) == (
        "manual",
        "call-a",
        1060.0,
        False,
        None,
        False,
    )
    assert a.snapshot is not None and a.snapshot.incident_id == "a"


async def test_desk_changes_claims_acks_counters_and_the_stream(store: AnyStore) -> None:
    await store.commit(incident_unit(1, "a", level="high", kind="manual", due=1060.0))
    await store.commit(incident_unit(2, "b", level="critical", receivers=("operator",)))
    assert await store.queue_counters(("operator", "test")) == {
        "open": 2,
        "unacknowledged": 2,
        "waiting_escalation": 1,
        "at_psap": 0,
    }
    before = await store.last_stream_seq()
    claim = DeskRecord(incident_id="a", kind="claim", operator="alice", at=1500.0, claimed_by="bob")
    note = DeskRecord(
        incident_id="a", kind="note", operator="alice", at=1500.0, claimed_by="bob", text="<b>x</b>\r\ny"
    )
    result = await store.commit(desk_unit(1500.0, claim, note))
    assert [s for s, _ in result.desk_seqs] == [before + 1, before + 2]
    assert await store.last_stream_seq() == before + 2
    await store.commit(desk_unit(1600.0, ack("a", 1600.0, claimed_by="bob")))
    [b_row, a_row] = await store.list_queue(IncidentQuery())
    assert (b_row.incident_id, b_row.acked) == ("b", False)  # not acked first, though less critical after
    assert (a_row.incident_id, a_row.acked, a_row.claimed_by) == ("a", True, "bob")
    assert (await store.queue_counters(("operator", "test")))["unacknowledged"] == 1
    assert (await store.queue_counters(("operator", "test")))["waiting_escalation"] == 0
    view = await store.desk_view("a", ("operator", "test"))
    assert view is not None
    assert [e.record.kind for e in view.events] == ["claim", "note", "ack"]
    assert view.events[1].record.text == "<b>x</b>\r\ny"
    # A revision after the desk changes: one sequence, revisions and desk changes interleaved.
    snap = dataclasses.replace(snapshot("a", revision=2), received_at=1000.0)
    await store.commit(
        Unit(
            journal_type="signal",
            at=1700.0,
            decisions=(
                DecisionRecord(
                    outcome="new_revision", reasons=(), snapshot=snap, routes=(), signal_at=1700.0
                ),
            ),
        )
    )
    stream = await store.stream_after(before, 100)
    assert [type(e) for e in stream] == [DeskEventRow, DeskEventRow, DeskEventRow, RevisionRow]
    assert [e.seq for e in stream] == list(range(before + 1, before + 5))
    assert [e.seq for e in await store.stream_after(before + 2, 1)] == [before + 3]
    # The revision's upsert keeps the desk's state.
    [a_row] = await store.list_queue(IncidentQuery(q="a"))
    assert (a_row.revision, a_row.acked, a_row.claimed_by) == (2, True, "bob")


async def test_at_psap_once_a_psap_confirmed(store: AnyStore) -> None:
    result = await store.commit(incident_unit(1, "a", receivers=("operator", "psap")))
    [desk_item, psap_item] = sorted(result.outbox, key=lambda i: i.receiver)
    await store.record_delivered_nowait(desk_item, at=1001.0, attempts=1, status=200)
    [row] = await store.list_queue(IncidentQuery())
    assert not row.at_psap  # the operator desk is no PSAP
    await store.record_delivered_nowait(psap_item, at=1002.0, attempts=2, status=200)
    [row] = await store.list_queue(IncidentQuery())
    assert row.at_psap
    assert (await store.queue_counters(("operator", "test")))["at_psap"] == 1


async def test_linked_incidents_of_one_scene(store: AnyStore) -> None:
    await store.commit(incident_unit(1, "a", scene="a", at=1000.0))
    await store.commit(incident_unit(2, "b", scene="a", at=1001.0))
    await store.commit(incident_unit(3, "c", at=1002.0))
    await store.commit(incident_unit(4, "d", scene="a", at=1003.0))
    view = await store.desk_view("b", ("operator",))
    assert view is not None and view.linked == ("a", "d")  # the scene's first and the other linked one
    view = await store.desk_view("a", ("operator",))
    assert view is not None and view.linked == ("b", "d")
    view = await store.desk_view("c", ("operator",))
    assert view is not None and view.linked == ()
    assert await store.desk_view("nope", ("operator",)) is None


async def test_retention_deletes_desk_changes_with_their_incident(store: AnyStore) -> None:
    await store.commit(incident_unit(1, "old", at=1000.0, receivers=()))  # nothing pending
    await store.commit(incident_unit(2, "new", at=5000.0, receivers=()))
    for iid in ("old", "new"):
        await store.commit(
            desk_unit(
                6000.0,
                DeskRecord(incident_id=iid, kind="claim", operator="alice", at=6000.0, claimed_by="alice"),
                DeskRecord(incident_id=iid, kind="note", operator="alice", at=6000.0, text="n"),
            )
        )
    deleted = await store.delete_before(3000.0)
    assert deleted["desk_events"] == 2
    assert deleted["desk"] == 1
    assert await store.desk_view("old", ("operator",)) is None
    view = await store.desk_view("new", ("operator",))
    assert view is not None and len(view.events) == 2
    assert [
        e.record.incident_id for e in await store.stream_after(0, 100) if isinstance(e, DeskEventRow)
    ] == [
        "new",
        "new",
    ]
