"""Test-wide settings: hypothesis profiles sized for CI on two cores; the PostgreSQL fixtures."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, settings

from ecallgw.simulators.pgserver import PgServer
from tests.browserkit import Browser, launch
from tests.tlskit import Pki, make_pki

# CI runs the same properties with fewer examples than a developer's run; the long runs
# (100,000 differential MSDs, 1,000,000 fuzzed inputs) live in bench/ scripts.
settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


# -- PostgreSQL: one private server per test session, a fresh database per test ---------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A started PostgreSQL server on 127.0.0.1, shared by the whole session; do not stop it.

    fsync is off: no test crashes the machine, and an immediate stop loses nothing committed (the
    WAL is in the OS's cache). A test that restarts or kills a server starts a `PgServer` of its
    own. Errors (not skips) when the binaries are missing: ``./run test`` installs them.
    """
    with PgServer(fsync=False) as server:
        yield server


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    """The DSN of a database created for this test on the session's server, dropped after it."""
    dsn = pg_server.create_database()
    yield dsn
    pg_server.drop_database(dsn.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, server and client certificates (and a rogue CA's), made once per session."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium driven by Playwright (tests/browserkit.py); requests leaving
    127.0.0.1 are refused and recorded in ``browser.foreign_requests``."""
    async with launch() as b:
        yield b
