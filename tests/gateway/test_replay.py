"""Restart: the journal replayed through a fresh triage engine rebuilds the same state, sends nothing.

Also: a policy change resends nothing, retention does not split a call's history, only the window
triage keeps state for is read, and a store the replay does not explain is reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

import aiohttp
import pytest

from ecallgw.app import Gateway
from ecallgw.config import PipelineConfig, StoreConfig
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.pipeline import Ingested, Pipeline
from ecallgw.gateway.records import DecisionRecord, RawSignal, Unit
from ecallgw.gateway.store import SqliteStore
from ecallgw.triage import TriageEngine, TriagePolicy
from tests.gateway.harness import OPERATOR_TOKEN, PROVIDER_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import cancel_envelope, make_msd, make_snapshot, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver


async def post(http: aiohttp.ClientSession, gw: Gateway, path: str, body: bytes) -> dict[str, object]:
    assert gw.http is not None
    async with http.post(
        f"http://127.0.0.1:{gw.http.port}{path}",
        data=body,
        headers={"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"},
    ) as resp:
        assert resp.status == 202, await resp.text()
        result: dict[str, object] = await resp.json()
        return result


async def test_replay_rebuilds_state_without_new_revisions_or_deliveries(
    tmp_path: Path, receiver: Receiver
) -> None:
    now = time.time()
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url, triage={"escalation_delay_s": 0.3})
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
        assert gw.http is not None
        auto = make_msd(vin=vin_for(21), timestamp=int(now))
        await post(http, gw, "/v1/ecall/acme/a/msd", msd_envelope(auto, call_id="a", sent_at=now))
        resent = make_msd(vin=vin_for(21), timestamp=int(now), message_identifier=2)
        await post(http, gw, "/v1/ecall/acme/a/msd", msd_envelope(resent, call_id="a", sent_at=now + 1))
        manual = make_msd(vin=vin_for(22), timestamp=int(now), automatic=False)
        await post(http, gw, "/v1/ecall/acme/b/msd", msd_envelope(manual, call_id="b", sent_at=now))
        await post(http, gw, "/v1/ecall/acme/b/cancel", cancel_envelope(call_id="b", sent_at=now + 2))
        timed = make_msd(vin=vin_for(23), timestamp=int(now), automatic=False)
        await post(http, gw, "/v1/ecall/acme/c/msd", msd_envelope(timed, call_id="c", sent_at=now))
        acted = make_msd(vin=vin_for(24), timestamp=int(now), automatic=False)
        d = await post(http, gw, "/v1/ecall/acme/d/msd", msd_envelope(acted, call_id="d", sent_at=now))
        async with http.post(
            f"http://127.0.0.1:{gw.http.port}/v1/incidents/{d['incident_id']}/actions",
            json={"action": "ack"},
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        ) as resp:
            assert resp.status == 200
        await until(lambda: len(receiver.accepted) >= 2)  # 'a' at once, 'c' after its timer
        await asyncio.sleep(0.5)  # 'd' was acknowledged: its timer must not fire
        before = await gw.store.counts()
        journal = len(await gw.store.journal(0, 1000))
        sent_before = len(receiver.requests)
    assert sent_before == 2
    async with running_gateway(cfg) as gw:
        assert gw.pipeline.replayed == journal
        await asyncio.sleep(0.5)  # time for any wrongly re-created delivery or timer
        assert await gw.store.counts() == before
        rows = await gw.store.list_incidents()
        assert len(rows) == 4
        for row in rows:
            found = await gw.store.get_incident(row.incident_id)
            assert found is not None
            assert gw.pipeline.engine.get(row.incident_id) == found[1][-1].snapshot
    assert len(receiver.requests) == sent_before
    assert {r.key.split(":")[1] for r in receiver.accepted} == {"1", "2"}  # 'a' rev 1, 'c' escalated rev 2


async def test_policy_change_resends_nothing_and_is_logged(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    other = Receiver()
    await other.start()
    try:
        now = time.time()
        cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url)
        async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
            for i in range(3):
                m = make_msd(vin=vin_for(30 + i), timestamp=int(now))
                await post(
                    http, gw, f"/v1/ecall/acme/v{i}/msd", msd_envelope(m, call_id=f"c{i}", sent_at=now)
                )
            await until(lambda: len(receiver.accepted) >= 3)
            for row in await gw.store.list_incidents():
                await gw.pipeline.action(row.incident_id, "resolve", actor="alice", role="operator", note="")
            await until(lambda: len(receiver.accepted) >= 6)
            before = await gw.store.counts()
        moved = gateway_config(
            tmp_path,
            broker=None,
            psap_url=receiver.url,
            receivers={"psap-new": {"kind": "http", "url": other.url}},
            triage={"fallback_psap_receiver": "psap-new"},
        )
        with caplog.at_level(logging.WARNING, logger="ecallgw.app"):
            async with running_gateway(moved) as gw:
                await asyncio.sleep(0.5)  # time for any re-routed delivery
                after = await gw.store.counts()
    finally:
        await other.stop()
    assert other.requests == []  # the new PSAP gets no old incident
    assert (after["outbox"], after["revisions"]) == (before["outbox"], before["revisions"])
    [changed] = [r for r in caplog.records if getattr(r, "event", "") == "policy_changed"]
    assert changed.fingerprint != changed.previous_fingerprint  # type: ignore[attr-defined]


async def test_retention_then_restart_makes_no_new_incident(tmp_path: Path, receiver: Receiver) -> None:
    # The retention job runs while a call's first signal is past the cutoff and its second is not.
    now = time.time()
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url)
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
        first = make_msd(vin=vin_for(41), timestamp=int(now))
        r1 = await post(http, gw, "/v1/ecall/acme/a/msd", msd_envelope(first, call_id="a", sent_at=now))
        await asyncio.sleep(0.2)
        cut = time.time()
        await asyncio.sleep(0.2)
        moved = make_msd(vin=vin_for(41), timestamp=int(now), message_identifier=2, passengers=4, lat=48.2)
        r2 = await post(http, gw, "/v1/ecall/acme/a/msd", msd_envelope(moved, call_id="a", sent_at=now + 1))
        assert r1["incident_id"] == r2["incident_id"]
        await until(lambda: len(receiver.accepted) >= 2)
        await gw.store.delete_before(cut, journal_margin_s=gw.pipeline.state_window_s)
    keys = set(receiver.keys)
    async with running_gateway(cfg) as gw:
        await asyncio.sleep(0.5)
        rows = await gw.store.list_incidents()
        assert [(r.incident_id, r.revision) for r in rows] == [(r1["incident_id"], 2)]
        snap = gw.pipeline.engine.get(str(r1["incident_id"]))
        assert snap is not None and snap.revision == 2
    assert set(receiver.keys) == keys


async def test_replay_reads_only_the_window_triage_keeps_state_for(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url, triage={"state_lifetime_s": 600.0})
    window = 600.0 + cfg.pipeline.prune_interval_s
    # A day-old journal (resolved long ago) and two signals of a recent call.
    async with SqliteStore(cfg.store) as store:
        for n in range(50):
            at = now - 86400.0 + n
            payload = msd_envelope(make_msd(vin=vin_for(n), timestamp=int(at)), call_id=f"old{n}", sent_at=at)
            await store.commit(Unit(journal_type="signal", at=at, signal=_raw(payload, f"o{n}", at)))
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
        assert gw.pipeline.replayed == 0  # nothing in the window
        recent = make_msd(vin=vin_for(99), timestamp=int(now))
        await post(http, gw, "/v1/ecall/acme/r/msd", msd_envelope(recent, call_id="r", sent_at=now))
        await until(lambda: len(receiver.accepted) >= 1)
    with caplog.at_level(logging.ERROR, logger="ecallgw.pipeline"):
        async with running_gateway(cfg) as gw:
            assert gw.pipeline.replayed == 1
            assert gw.pipeline.state_window_s == window
            # A stored incident the replayed journal does not explain is reported.
            ghost = dataclasses.replace(make_snapshot("ghost", at=now), updated_at=now)
            await gw.store.commit(
                Unit(
                    journal_type=None,
                    at=now,
                    decisions=(
                        DecisionRecord(outcome="new", reasons=(), snapshot=ghost, routes=(), signal_at=now),
                    ),
                )
            )
    assert not [r for r in caplog.records if getattr(r, "event", "") == "replay_mismatch"]
    with caplog.at_level(logging.ERROR, logger="ecallgw.pipeline"):
        async with running_gateway(cfg):
            pass
    [mismatch] = [r for r in caplog.records if getattr(r, "event", "") == "replay_mismatch"]
    assert mismatch.incidents == ["ghost"]  # type: ignore[attr-defined]


def _raw(payload: bytes, vehicle: str, at: float) -> RawSignal:
    return RawSignal(
        transport="http",
        kind="msd",
        tps="acme",
        vehicle=vehicle,
        payload=payload,
        received_at=at,
        source=f"/v1/ecall/acme/{vehicle}/msd",
    )


async def test_an_incident_kept_alive_without_revisions_is_replayed_whole(tmp_path: Path) -> None:
    # A call opened 2 h ago (older than triage's 65 min window) whose vehicle kept sending an
    # unchanged MSD: no revision since, but alive in triage. A replay starting at the window would
    # see the resend as a new call, and the next real update would reach the PSAP as a new incident.
    now = time.time()
    store_cfg = StoreConfig(path=str(tmp_path / "gw.sqlite3"))
    key = b"k" * 32
    old = now - 7200.0

    def raw(payload: bytes, at: float) -> RawSignal:
        return RawSignal(
            transport="mqtt",
            kind="msd",
            tps="acme",
            vehicle="car",
            payload=payload,
            received_at=at,
            source="t",
        )

    def msd(identifier: int, passengers: int, at: float) -> bytes:
        body = make_msd(
            vin=vin_for(90), timestamp=int(old), message_identifier=identifier, passengers=passengers
        )
        return msd_envelope(body, call_id="c", sent_at=at)

    async def run(signals: list[RawSignal]) -> tuple[list[Ingested], Pipeline]:
        async with SqliteStore(store_cfg) as store:
            pipeline = Pipeline(
                PipelineConfig(), store, TriageEngine(TriagePolicy(), key), Metrics(), lambda r: None
            )
            await pipeline.replay()
            task = asyncio.create_task(pipeline.run())
            try:
                futures = [await pipeline.submit(s) for s in signals]
                async with asyncio.timeout(5):
                    return list(await asyncio.gather(*futures)), pipeline
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    [opened, resent], _ = await run([raw(msd(1, 2, old), old), raw(msd(2, 2, now - 60), now - 60)])
    assert (opened.outcome, resent.outcome) == ("new_incident", "duplicate")
    [update], pipeline = await run([raw(msd(3, 5, now), now)])
    assert pipeline.replayed == 2  # the whole call, not just the window's resend
    assert (update.outcome, update.incident_id) == ("new_revision", opened.incident_id)
