"""The store's PostgreSQL link over TLS: ``store.dsn`` carries ``sslmode=verify-full&sslrootcert=...``.

A private server with ``ssl = on`` and ``hostssl`` only (`PgServer(require_ssl=True)`) and the
test PKI. asyncpg honours libpq's ``sslmode``: with our CA it connects over TLS (seen from the
server's side, ``pg_stat_ssl``); a rogue CA, a certificate for another host and a plaintext client
are refused, each with one StoreError line, and ``ecallgw serve`` exits in one line, no traceback.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ecallgw.config import Secret, StoreConfig
from ecallgw.errors import StoreError
from ecallgw.gateway.store.postgres import PostgresStore
from ecallgw.simulators.pgserver import PgServer
from tests.tlskit import Pair, Pki


def tls_server(pki: Pki, server: Pair) -> PgServer:
    return PgServer(fsync=False, ssl_cert=server.cert, ssl_key=server.key, require_ssl=True)


@pytest.fixture(scope="module")
def pg_tls(pki: Pki) -> Iterator[PgServer]:
    """A server presenting the test CA's certificate for 127.0.0.1, TLS required on TCP."""
    with tls_server(pki, pki.server) as server:
        yield server


def store(dsn: str) -> PostgresStore:
    return PostgresStore(StoreConfig(backend="postgresql", dsn=Secret(dsn)), replica_id="tls-test")


def verify_full(server: PgServer, ca: Path, mode: str = "verify-full") -> str:
    return f"{server.dsn}?sslmode={mode}&sslrootcert={ca}"


async def test_verify_full_with_our_ca_connects_over_tls(pg_tls: PgServer, pki: Pki) -> None:
    async with store(verify_full(pg_tls, pki.ca)) as st:
        async with st.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert row is not None and row["ssl"] is True and row["version"] in ("TLSv1.2", "TLSv1.3")
        assert await st.list_incidents() == []  # migrated and usable


@pytest.mark.parametrize(
    ("dsn_of", "says"),
    [
        (lambda pg, pki: verify_full(pg, pki.other_ca), "CERTIFICATE_VERIFY_FAILED"),
        (lambda pg, pki: f"{pg.dsn}?sslmode=disable", "no encryption"),
    ],
    ids=["rogue-ca", "plaintext"],
)
async def test_a_link_it_cannot_verify_or_without_tls_is_refused_in_one_line(
    pg_tls: PgServer, pki: Pki, dsn_of: Callable[[PgServer, Pki], str], says: str
) -> None:
    with pytest.raises(StoreError) as err:
        async with store(dsn_of(pg_tls, pki)):
            pass
    line = str(err.value)
    assert line.startswith("cannot connect to store.dsn: ") and says in line
    assert "\n" not in line


async def test_a_certificate_for_another_host_passes_verify_ca_but_not_verify_full(pki: Pki) -> None:
    with tls_server(pki, pki.wrong_host) as server:
        with pytest.raises(StoreError, match="mismatch"):
            async with store(verify_full(server, pki.ca)):
                pass
        async with store(verify_full(server, pki.ca, mode="verify-ca")):
            pass  # the chain is ours; only the name differs


def test_serve_reports_a_refused_store_certificate_in_one_line(
    pg_tls: PgServer, pki: Pki, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ecallgw", "serve", "--set", "store.backend=postgresql",
         "--set", f"store.dsn={verify_full(pg_tls, pki.other_ca)}", "--set", "http.enabled=false",
         "--set", "mqtt.enabled=false"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "cannot connect to store.dsn" in line and "CERTIFICATE_VERIFY_FAILED" in line
