"""Fixtures of the gateway tests: a real mosquitto, real SQLite files, real HTTP servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.gateway import harness
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


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per store backend: gateway_config points at SQLite or at a fresh database."""
    if request.param == "postgresql":
        if request.node.get_closest_marker("sqlite_only") is not None:
            pytest.skip("SQLite-specific")
        server = request.getfixturevalue("pg_server")
        dsn = server.create_database()
        monkeypatch.setattr(
            harness,
            "STORE_OVERRIDE",
            {
                "backend": "postgresql",
                "dsn": dsn,
                "lease_s": 2.0,
                "outbox_lease_s": 5.0,
                "decision_wait_s": 5.0,
            },
        )
    return str(request.param)
