"""Fixtures of the gateway tests: a real mosquitto, real SQLite files, real HTTP servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.gateway.broker import Mosquitto
from tests.gateway.receiver import Receiver


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A private broker on a free port, stopped after the test (restartable inside it)."""
    with Mosquitto() as broker:
        yield broker


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A PSAP webhook on 127.0.0.1 that accepts everything."""
    recv = Receiver()
    await recv.start()
    try:
        yield recv
    finally:
        await recv.stop()
