"""The forwarder against a real aiohttp receiver on 127.0.0.1: order, retries, Retry-After, dead letters."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecallgw.codecs.renderers import JsonRenderer
from ecallgw.config import ReceiverConfig, Secret, StoreConfig
from ecallgw.gateway.forwarder import CircuitBreaker, Forwarder, probe_delay_s
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.records import DecisionRecord, OutboxItem, Unit
from ecallgw.gateway.sinks.http_webhook import HttpWebhookSink
from ecallgw.gateway.sinks.operator_stream import OperatorSink
from ecallgw.gateway.store import SqliteStore
from ecallgw.model import IncidentSnapshot
from ecallgw.triage.decision import Route
from tests.gateway.helpers import make_snapshot, until
from tests.gateway.receiver import Receiver


def receiver_config(receiver: Receiver, **kw: Any) -> ReceiverConfig:
    base: dict[str, Any] = {
        "name": "psap",
        "url": receiver.url,
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.05,
        "breaker_threshold": 1000,
        "timeout_s": 2.0,
    }
    base.update(kw)
    return ReceiverConfig(**base)


@asynccontextmanager
async def forwarding(
    tmp_path: Path, cfg: ReceiverConfig, metrics: Metrics | None = None
) -> AsyncIterator[tuple[Forwarder, SqliteStore]]:
    metrics = metrics or Metrics()
    async with SqliteStore(StoreConfig(path=str(tmp_path / "gw.sqlite3")), metrics) as store:
        sink = HttpWebhookSink(cfg)
        async with Forwarder({cfg.name: cfg}, {cfg.name: sink}, store, metrics, rng=random.Random(7)) as fwd:
            task = asyncio.create_task(fwd.run())
            try:
                yield fwd, store
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


async def commit(store: SqliteStore, snap: IncidentSnapshot, receiver: str = "psap") -> list[OutboxItem]:
    unit = Unit(
        journal_type="signal",
        at=snap.updated_at,
        decisions=(
            DecisionRecord(
                outcome="new",
                reasons=(),
                snapshot=snap,
                routes=(Route(receiver=receiver, incident_id=snap.incident_id, revision=snap.revision),),
                signal_at=snap.updated_at,
            ),
        ),
    )
    return list((await store.commit(unit)).outbox)


async def test_each_revision_delivered_once_in_order_with_idempotency_key(tmp_path: Path) -> None:
    recv = Receiver()
    await recv.start()
    metrics = Metrics()
    try:
        async with forwarding(
            tmp_path, receiver_config(recv, concurrency=8, token=Secret("t" * 20)), metrics
        ) as (
            fwd,
            store,
        ):
            items = []
            for rev in (1, 2, 3):
                for inc in ("a", "b", "c"):
                    items += await commit(store, make_snapshot(inc, rev))
            fwd.add(items)
            async with asyncio.timeout(5):
                await fwd.wait_idle()
            assert (await store.counts())["outbox_pending"] == 0
    finally:
        await recv.stop()
    keys = [r.key for r in recv.requests]
    assert sorted(keys) == sorted(f"{i}:{r}" for i in "abc" for r in (1, 2, 3))
    for inc in "abc":  # revision order per incident, whatever the concurrency
        assert [k for k in keys if k.startswith(inc)] == [f"{inc}:1", f"{inc}:2", f"{inc}:3"]
    assert recv.requests[0].content_type == "application/json"
    assert recv.requests[0].authorization == "Bearer " + "t" * 20
    text = metrics.render().decode()
    assert 'ecallgw_deliveries_total{outcome="delivered",receiver="psap"} 9.0' in text
    assert 'ecallgw_end_to_end_latency_seconds_count{receiver="psap"} 9.0' in text
    assert 'ecallgw_outbox_depth{receiver="psap"} 0.0' in text


async def test_5xx_is_retried_until_confirmed(tmp_path: Path) -> None:
    recv = Receiver(script=lambda n: (503, {}) if n < 2 else (200, {}))
    await recv.start()
    try:
        async with forwarding(tmp_path, receiver_config(recv)) as (fwd, store):
            fwd.add(await commit(store, make_snapshot("a")))
            async with asyncio.timeout(5):
                await fwd.wait_idle()
            found = await store.get_incident("a")
            assert found is not None
            [delivery] = found[2]
            assert (delivery["state"], delivery["attempts"], delivery["status"]) == ("delivered", 3, 200)
    finally:
        await recv.stop()
    assert [r.status for r in recv.requests] == [503, 503, 200]
    assert len({r.key for r in recv.requests}) == 1  # every retry carries the same key


async def test_retry_after_is_honoured_for_the_whole_receiver(tmp_path: Path) -> None:
    recv = Receiver(script=lambda n: (429, {"Retry-After": "1"}) if n == 0 else (200, {}))
    await recv.start()
    try:
        async with forwarding(tmp_path, receiver_config(recv, concurrency=1, backoff_cap_s=2.0)) as (
            fwd,
            store,
        ):
            fwd.add(await commit(store, make_snapshot("a")))
            fwd.add(await commit(store, make_snapshot("b")))
            async with asyncio.timeout(5):
                await fwd.wait_idle()
    finally:
        await recv.stop()
    assert [r.status for r in recv.requests] == [429, 200, 200]
    # Backoff alone would retry within 50 ms; the receiver asked for a second.
    assert recv.requests[1].at - recv.requests[0].at >= 0.95


async def test_dead_letter_after_max_attempts_with_metric_and_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recv = Receiver(script=lambda n: (500, {}))
    await recv.start()
    metrics = Metrics()
    try:
        async with forwarding(tmp_path, receiver_config(recv, max_attempts=3), metrics) as (fwd, store):
            with caplog.at_level(logging.ERROR, logger="ecallgw.forwarder"):
                fwd.add(await commit(store, make_snapshot("a")))
                async with asyncio.timeout(5):
                    await fwd.wait_idle()
            [dead] = await store.dead_letters()
            assert (dead["incident_id"], dead["reason"], dead["attempts"]) == ("a", "http_5xx", 3)
    finally:
        await recv.stop()
    assert len(recv.requests) == 3
    assert (
        'ecallgw_deliveries_total{outcome="dead_lettered",receiver="psap"} 1.0' in metrics.render().decode()
    )
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "dead_letter"]
    assert record.receiver == "psap"  # type: ignore[attr-defined]
    assert record.reason == "http_5xx"  # type: ignore[attr-defined]


async def test_permanent_error_dead_letters_at_once(tmp_path: Path) -> None:
    recv = Receiver(script=lambda n: (400, {}))
    await recv.start()
    try:
        async with forwarding(tmp_path, receiver_config(recv)) as (fwd, store):
            fwd.add(await commit(store, make_snapshot("a")))
            async with asyncio.timeout(5):
                await fwd.wait_idle()
            [dead] = await store.dead_letters()
            assert dead["reason"] == "http_4xx" and dead["attempts"] == 1
    finally:
        await recv.stop()


async def test_receiver_down_then_back_loses_nothing(tmp_path: Path) -> None:
    recv = Receiver()  # not started: connection refused
    cfg = receiver_config(recv, max_attempts=3, breaker_threshold=2, breaker_cooldown_s=0.1, concurrency=4)
    metrics = Metrics()
    async with forwarding(tmp_path, cfg, metrics) as (fwd, store):
        items = []
        for n in range(20):
            items += await commit(store, make_snapshot(f"i{n}"))
        fwd.add(items)
        await until(lambda: fwd.lanes["psap"].breaker.state != "closed")
        await asyncio.sleep(1.0)  # far more than max_attempts backoffs: only the breaker holds them
        assert fwd.dead_lettered == 0
        assert 'ecallgw_outbox_depth{receiver="psap"} 20.0' in metrics.render().decode()
        await recv.start()
        try:
            async with asyncio.timeout(10):
                await fwd.wait_idle()
        finally:
            await recv.stop()
        assert (await store.counts())["deliveries"] == 20
    assert recv.keys == {f"i{n}:1" for n in range(20)}
    assert fwd.dead_lettered == 0


async def test_breaker_states() -> None:
    now = [0.0]
    b = CircuitBreaker(threshold=2, cooldown_s=10.0, clock=lambda: now[0])
    assert b.state == "closed"
    assert await b.admit() is False
    b.failure()
    assert b.state == "closed"  # one failure is not an outage
    b.failure()
    assert b.state == "open"
    now[0] = 10.0
    assert b.state == "half-open"
    assert await b.admit() is True  # the probe
    b.failure()  # a failed probe opens again at once
    assert b.state == "open" and b.open_until == 20.0
    now[0] = 20.0
    assert await b.admit() is True
    b.success()
    assert b.state == "closed" and b.failures == 0


@given(
    initial=st.floats(min_value=0.001, max_value=100.0),
    cap=st.floats(min_value=0.001, max_value=1000.0),
    failed=st.integers(min_value=0, max_value=10_000),
)
def test_probe_schedule_starts_small_doubles_and_is_capped(initial: float, cap: float, failed: int) -> None:
    delay = probe_delay_s(failed, initial_s=initial, cap_s=cap)
    assert 0 < delay <= cap
    assert probe_delay_s(0, initial_s=initial, cap_s=cap) == min(initial, cap)
    following = probe_delay_s(failed + 1, initial_s=initial, cap_s=cap)
    assert following == min(cap, 2 * delay)  # doubles until the cap, then stays there
    if initial <= cap:
        assert delay == min(cap, initial * 2.0 ** min(failed, 64))


async def test_breaker_waits_grow_only_while_probes_fail_and_reset_on_success() -> None:
    now = [0.0]
    b = CircuitBreaker(threshold=2, cooldown_s=10.0, clock=lambda: now[0], probe_initial_s=1.0)
    waits = []
    for _round in range(2):
        b.failure()
        b.failure()  # opens: the first probe comes after probe_initial_s, not the whole cooldown
        for _ in range(6):
            assert b.state == "open"
            assert b.open_until is not None
            waits.append(b.open_until - now[0])
            now[0] = b.open_until
            assert await b.admit() is True
            b.failure()  # the receiver is still down
        assert b.open_until is not None
        now[0] = b.open_until
        assert await b.admit() is True
        b.success()
        assert b.state == "closed" and b.failed_probes == 0
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0] * 2  # the second outage starts small again
    # Failures of requests already in flight when it opened re-arm the wait but do not lengthen it.
    b.failure()
    b.failure()
    b.failure()
    assert b.open_until == now[0] + 1.0 and b.failed_probes == 0


async def test_short_outage_costs_about_its_length_not_a_cooldown(tmp_path: Path) -> None:
    # The default breaker (5 failures, first probe after 1 s, cap 10 s) and default backoff,
    # against a receiver that goes down for 2 s while documents keep coming. With the old fixed
    # 10 s cooldown the documents waited up to ~10 s; now each arrives soon after it is back.
    recv = Receiver()
    await recv.start()
    metrics = Metrics()
    cfg = receiver_config(recv, breaker_threshold=5, backoff_base_s=0.5, backoff_cap_s=60.0, concurrency=16)
    assert (cfg.breaker_probe_initial_s, cfg.breaker_cooldown_s) == (1.0, 10.0)
    expected: set[str] = set()
    opened = False
    loop = asyncio.get_running_loop()
    try:
        async with forwarding(tmp_path, cfg, metrics) as (fwd, store):
            breaker = fwd.lanes["psap"].breaker

            async def send(n: int) -> None:
                for rev in (1, 2):
                    fwd.add(await commit(store, make_snapshot(f"i{n}", rev)))
                    expected.add(f"i{n}:{rev}")

            for n in range(5):
                await send(n)
                await asyncio.sleep(0.05)
            async with asyncio.timeout(5):
                await fwd.wait_idle()
            await recv.stop()  # down: connection refused
            down_until = loop.time() + 2.0
            n = 5
            while loop.time() < down_until:
                await send(n)
                n += 1
                opened = opened or breaker.state != "closed"
                await asyncio.sleep(0.1)
            await recv.start()
            back_at = time.time()  # the clock of Received.at
            async with asyncio.timeout(8):
                await fwd.wait_idle()
            assert fwd.dead_lettered == 0
            assert (await store.counts())["outbox_pending"] == 0
            assert breaker.state == "closed" and breaker.failed_probes == 0
    finally:
        await recv.stop()
    assert opened, "the outage did not open the breaker: the test would not exercise it"
    assert recv.keys == expected  # nothing lost; any resend carried the same key
    assert all(r.key in expected for r in recv.requests)
    late = max(r.at for r in recv.accepted) - back_at
    assert late <= 4.0, f"last document arrived {late:.2f} s after the receiver was back"
    keys = [r.key for r in recv.accepted]
    for inc in {k.split(":")[0] for k in expected}:  # revision order survived the outage
        assert keys.index(f"{inc}:1") < keys.index(f"{inc}:2")
    assert 'ecallgw_receiver_breaker_open{receiver="psap"} 0.0' in metrics.render().decode()


async def test_retry_after_is_capped_at_the_backoff_cap(tmp_path: Path) -> None:
    recv = Receiver(script=lambda n: (429, {"Retry-After": "3600"}) if n == 0 else (200, {}))
    await recv.start()
    try:
        async with forwarding(tmp_path, receiver_config(recv, backoff_cap_s=0.3)) as (fwd, store):
            fwd.add(await commit(store, make_snapshot("a")))
            async with asyncio.timeout(5):  # an uncapped hold would park the lane for an hour
                await fwd.wait_idle()
    finally:
        await recv.stop()
    assert [r.status for r in recv.requests] == [429, 200]
    assert 0.25 <= recv.requests[1].at - recv.requests[0].at < 3.0


async def test_probe_answered_with_a_permanent_error_closes_the_breaker(tmp_path: Path) -> None:
    # 2 x 503 open the breaker (threshold 2); the half-open probe gets a 400; then all is well.
    recv = Receiver(script=lambda n: (503, {}) if n < 2 else ((400, {}) if n == 2 else (200, {})))
    await recv.start()
    metrics = Metrics()
    cfg = receiver_config(
        recv, breaker_threshold=2, breaker_cooldown_s=0.2, concurrency=2, backoff_cap_s=0.02
    )
    try:
        async with forwarding(tmp_path, cfg, metrics) as (fwd, store):
            items = []
            for inc in ("a", "b", "c", "d"):
                items += await commit(store, make_snapshot(inc))
            fwd.add(items)
            async with asyncio.timeout(5):  # a probe never released left the lane waiting forever
                await fwd.wait_idle()
            breaker = fwd.lanes["psap"].breaker
            assert breaker.state == "closed"
            assert len(await store.dead_letters()) == 1
            assert (await store.counts())["deliveries"] == 3
    finally:
        await recv.stop()
    assert [r.status for r in recv.requests][:3] == [503, 503, 400]
    assert 'ecallgw_receiver_breaker_open{receiver="psap"} 0.0' in metrics.render().decode()


async def test_breaker_metric_shows_open_while_the_receiver_is_down(tmp_path: Path) -> None:
    recv = Receiver()  # not started
    metrics = Metrics()
    cfg = receiver_config(recv, breaker_threshold=1, breaker_cooldown_s=30.0)
    async with forwarding(tmp_path, cfg, metrics) as (fwd, store):
        fwd.add(await commit(store, make_snapshot("a")))
        await until(lambda: fwd.lanes["psap"].breaker.state == "open")
        await asyncio.sleep(0.1)
        fwd.add(await commit(store, make_snapshot("b")))  # waits on the breaker
        await asyncio.sleep(0.1)
        assert 'ecallgw_receiver_breaker_open{receiver="psap"} 1.0' in metrics.render().decode()


def test_release_lets_the_next_caller_probe() -> None:
    now = [0.0]
    b = CircuitBreaker(threshold=1, cooldown_s=1.0, clock=lambda: now[0])
    b.failure()
    now[0] = 1.0

    async def scenario() -> tuple[bool, bool]:
        first = await b.admit()
        b.release()  # the probe ended without a verdict
        async with asyncio.timeout(1):
            second = await b.admit()
        return first, second

    assert asyncio.run(scenario()) == (True, True)


class _BrokenSink:
    """A sink breaking its contract: raises something other than DeliveryError, then recovers."""

    confirmed_at_commit = False

    def __init__(self) -> None:
        self.calls = 0

    async def deliver(self, item: OutboxItem, body: bytes, content_type: str) -> int | None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("bug in a sink")
        return 200

    async def aclose(self) -> None:
        return None


class _BrokenRenderer(JsonRenderer):
    """Renders every incident but "bad", on which it raises a non-EncodeError (a renderer bug)."""

    def render(
        self, snapshot: IncidentSnapshot, *, forwarded_at: float, first: tuple[int, float] | None
    ) -> bytes:
        if snapshot.incident_id == "bad":
            raise KeyError("bug in a renderer")
        return super().render(snapshot, forwarded_at=forwarded_at, first=first)


async def test_unexpected_errors_in_render_or_sink_do_not_kill_the_worker(tmp_path: Path) -> None:
    recv = Receiver()
    cfg = receiver_config(recv, concurrency=1)
    metrics = Metrics()
    sink = _BrokenSink()
    async with (
        SqliteStore(StoreConfig(path=str(tmp_path / "gw.sqlite3")), metrics) as store,
        Forwarder({"psap": cfg}, {"psap": sink}, store, metrics, rng=random.Random(3)) as fwd,
    ):
        fwd.lanes["psap"].renderer = _BrokenRenderer("test")
        task = asyncio.create_task(fwd.run())
        try:
            items = await commit(store, make_snapshot("bad"))
            items += await commit(store, make_snapshot("good"))
            fwd.add(items)
            async with asyncio.timeout(5):
                await fwd.wait_idle()
            assert not task.done()  # the workers are still running
            [dead] = await store.dead_letters()
            assert (dead["incident_id"], dead["reason"]) == ("bad", "render")
            assert "KeyError" in dead["detail"]
            found = await store.get_incident("good")
            assert found is not None
            [delivery] = found[2]
            assert (delivery["state"], delivery["attempts"]) == ("delivered", 2)  # raised, then retried
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class _CountingDesk(OperatorSink):
    """The operator desk's sink, counting calls it should never get."""

    calls = 0

    async def deliver(self, item: OutboxItem, body: bytes, content_type: str) -> int | None:
        type(self).calls += 1
        return None


async def test_a_sink_confirmed_at_commit_gets_no_worker_and_its_leftovers_are_confirmed(
    tmp_path: Path,
) -> None:
    """`Sink.confirmed_at_commit`: listed for the store, and an entry left pending (written before
    the receiver was confirmed at commit) is confirmed when loaded, without rendering or deliver."""
    metrics = Metrics()
    desk = ReceiverConfig(name="desk", kind="operator")
    async with (
        SqliteStore(StoreConfig(path=str(tmp_path / "gw.sqlite3")), metrics) as store,
        Forwarder({"desk": desk}, {"desk": _CountingDesk()}, store, metrics, rng=random.Random(1)) as fwd,
    ):
        assert fwd.confirmed_at_commit == frozenset({"desk"})
        task = asyncio.create_task(fwd.run())
        try:
            items = await commit(store, make_snapshot("left", revision=1), receiver="desk")
            items += await commit(store, make_snapshot("left", revision=2), receiver="desk")
            fwd.add(items)
            assert fwd.pending == 0  # confirmed in `add`, in commit order
            async with asyncio.timeout(5):
                await fwd.wait_idle()
                await until(lambda: fwd.delivered == 2)
            await store.pending_outbox()  # the store's jobs run in order: the records are written
            found = await store.get_incident("left")
            assert found is not None
            assert sorted((d["revision"], d["state"], d["attempts"]) for d in found[2]) == [
                (1, "delivered", 1),
                (2, "delivered", 1),
            ]
            assert not await store.pending_outbox()
            assert _CountingDesk.calls == 0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
