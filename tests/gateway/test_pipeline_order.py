"""The pipeline keeps arrival order, also when a commit frees several slots in one loop turn."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from ecallgw.config import PipelineConfig, StoreConfig
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.pipeline import Pipeline
from ecallgw.gateway.records import RawSignal
from ecallgw.gateway.store import SqliteStore
from ecallgw.triage import TriageEngine, TriagePolicy


def raw(name: str) -> RawSignal:
    # Undecodable on purpose: each lands in quarantine, whose ids record the processing order.
    return RawSignal(
        transport="mqtt",
        kind="msd",
        tps="t",
        vehicle="v",
        payload=b"not msgpack " + name.encode(),
        received_at=time.time(),
        source=name,
    )


async def test_a_signal_arriving_while_the_consumer_is_handed_a_slot_waits_its_turn(tmp_path: Path) -> None:
    async with SqliteStore(StoreConfig(path=str(tmp_path / "s.sqlite3"))) as store:
        pipeline = Pipeline(
            PipelineConfig(queue_size=2),
            store,
            TriageEngine(TriagePolicy(), b"k" * 32),
            Metrics(),
            lambda r: None,
        )
        task = asyncio.create_task(pipeline.run())
        await asyncio.sleep(0)
        slow = store.run(lambda c: time.sleep(0.2))  # holds the writer: A and B commit together
        await asyncio.sleep(0.01)
        futures = [await pipeline.submit(raw(name)) for name in "ABC"]  # C: no slot, queued
        for _ in range(3):
            await asyncio.sleep(0)  # the consumer takes C and waits for a slot
        assert pipeline.queued == 0
        # The commit of A and B frees two slots in one turn: one is handed to the consumer (which
        # has not run yet), one is free. D arrives exactly then.
        async with asyncio.timeout(5):
            while not (pipeline._uncommitted.free > 0 and pipeline.queued == 0):  # noqa: ASYNC110
                await asyncio.sleep(0)
        futures.append(await pipeline.submit(raw("D")))
        async with asyncio.timeout(5):
            await asyncio.gather(slow, *futures)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

        def order(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute("SELECT source FROM quarantine ORDER BY id")]

        assert await store.run(order) == ["A", "B", "C", "D"]
