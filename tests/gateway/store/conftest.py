"""Fixtures of the store tests: one open store per backend.

``store`` runs a test once on `SqliteStore` (a file in the test's directory) and once on
`PostgresStore` (a fresh database on the session's server, replica "r1"). ``open_store`` opens
another store on the same file or database (a reopen, a second replica, a refused start).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ecallgw.config import Secret, StoreConfig
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.store import SqliteStore
from ecallgw.gateway.store.postgres import PostgresStore
from tests.gateway.store.support import AnyStore, OpenStore, StoreCm

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test: "sqlite" or "postgresql"."""
    return str(request.param)


@pytest.fixture
def open_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """Opens a store of ``backend`` on this test's file or database.

    ``open_store(metrics=None, replica_id="r1", **config)``: ``config`` goes to `StoreConfig`;
    ``replica_id`` matters to PostgreSQL only.
    """
    if backend == "sqlite":
        path = str(tmp_path / "db" / "gw.sqlite3")

        def open_sqlite(*, metrics: Metrics | None = None, replica_id: str = "r1", **config: Any) -> StoreCm:
            return SqliteStore(StoreConfig(path=path, **config), metrics)

        return open_sqlite
    dsn: str = request.getfixturevalue("pg_dsn")

    def open_pg(*, metrics: Metrics | None = None, replica_id: str = "r1", **config: Any) -> StoreCm:
        cfg = StoreConfig(backend="postgresql", dsn=Secret(dsn), **config)
        return PostgresStore(cfg, metrics, replica_id=replica_id)

    return open_pg


@pytest.fixture
async def store(open_store: OpenStore) -> AsyncIterator[AnyStore]:
    """An open store of each backend, on a fresh file or database."""
    async with open_store() as s:
        yield s
