"""The simulated PSAP: records, counts duplicates, and fails on request (real aiohttp on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import random
import time

import aiohttp
import pytest

from ecallgw.simulators.psap import Behaviour, SimulatedPsap, parse_document

_DOC = {
    "incident_id": "inc-1",
    "revision": 1,
    "status": "open",
    "severity": {"level": "high", "score": 70, "reasons": []},
    "call": {"tps": "northstar", "vehicle": "v1", "call_id": "c1", "automatic": True, "test": False},
}


async def _post(
    session: aiohttp.ClientSession, url: str, key: str, doc: dict[str, object]
) -> aiohttp.ClientResponse:
    async with asyncio.timeout(5), session.post(url, json=doc, headers={"Idempotency-Key": key}) as resp:
        await resp.read()
        return resp


async def test_records_arrivals_and_counts_duplicates() -> None:
    async with SimulatedPsap(random.Random(1)) as psap, aiohttp.ClientSession() as session:
        before = time.time()
        for key in ("inc-1:1", "inc-1:2", "inc-1:1"):
            resp = await _post(session, psap.url("psap-fallback"), key, _DOC)
            assert resp.status == 200
        # The same key at another receiver is not a duplicate: each receiver gets its own copy.
        await _post(session, psap.url("operator"), "inc-1:1", _DOC)
    assert [a.key for a in psap.arrivals] == ["inc-1:1", "inc-1:2", "inc-1:1", "inc-1:1"]
    assert [a.duplicate for a in psap.arrivals] == [False, False, True, False]
    assert psap.duplicates == 1
    assert all(before <= a.at <= time.time() for a in psap.arrivals)
    info = parse_document(psap.arrivals[0].content_type, psap.arrivals[0].body)
    assert info is not None and (info.incident_id, info.revision, info.tps, info.vehicle) == (
        "inc-1",
        1,
        "northstar",
        "v1",
    )


async def test_errors_throttling_and_delay() -> None:
    behaviour = Behaviour(error_rate=0.5, throttle_rate=0.5, retry_after_s=7)
    async with SimulatedPsap(random.Random(2), behaviour) as psap, aiohttp.ClientSession() as session:
        statuses = set()
        for i in range(20):
            async with (
                asyncio.timeout(5),
                session.post(psap.url("p"), json=_DOC, headers={"Idempotency-Key": f"k{i}"}) as r,
            ):
                statuses.add(r.status)
                if r.status == 429:
                    assert r.headers["Retry-After"] == "7"
        assert statuses == {503, 429}
        assert psap.accepted() == [] and psap.duplicates == 0
        psap.behaviour = Behaviour(delay_s=0.3)
        t = time.monotonic()
        await _post(session, psap.url("p"), "x", _DOC)
        answered = time.time()
        assert time.monotonic() - t >= 0.3
        # Arrival is when the document got here, not when the slow PSAP got round to answering.
        assert answered - psap.arrivals[-1].at >= 0.25


async def test_goes_down_and_comes_back_on_the_same_port() -> None:
    async with SimulatedPsap(random.Random(3)) as psap, aiohttp.ClientSession() as session:
        port = psap.port
        # A keep-alive connection opened before the outage must not survive it either.
        await _post(session, psap.url("p"), "before", _DOC)
        await psap.go_down(0.5)
        with pytest.raises(aiohttp.ClientConnectionError):
            await _post(session, psap.url("p"), "a", _DOC)
        await asyncio.sleep(0.8)
        assert psap.port == port
        resp = await _post(session, psap.url("p"), "a", _DOC)
        assert resp.status == 200


def test_parse_document_rejects_garbage() -> None:
    assert parse_document("application/json", b"{not json") is None
    assert parse_document("application/json", json.dumps({"revision": 1}).encode()) is None


async def test_a_second_outage_extends_the_first() -> None:
    async with SimulatedPsap(random.Random(4)) as psap, aiohttp.ClientSession() as session:
        await psap.go_down(0.3)
        await asyncio.sleep(0.1)
        await psap.go_down(0.5)  # now down until ~0.6 s from the start, and back exactly once
        await asyncio.sleep(0.35)
        with pytest.raises(aiohttp.ClientConnectionError):
            await _post(session, psap.url("p"), "a", _DOC)
        await asyncio.sleep(0.5)
        resp = await _post(session, psap.url("p"), "a", _DOC)
        assert resp.status == 200 and [a.key for a in psap.arrivals] == ["a"]
