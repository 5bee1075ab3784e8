"""Fixtures of the gateway tests: a real mosquitto, real SQLite files, real HTTP servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.gateway.broker import Mosquitto
from tests.gateway.receiver import Receiver


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private broker on a free port, stopped after the test (restartable inside it)."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A PSAP webhook on 127.0.0.1 that accepts everything."""
    recv = Receiver()
    await recv.start()
    try:
        yield recv
    finally:
        await recv.stop()
