"""The private PostgreSQL server of tests, benchmarks and the demo (ecallgw.simulators.pgserver)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from ecallgw.simulators.pgserver import PgServer, find_bindir


@pytest.fixture(scope="module")
def own_server() -> Iterator[PgServer]:
    """A server of this module's own, for the restarts (the session's server must keep running)."""
    with PgServer(fsync=True) as server:
        yield server


async def _fetchval(dsn: str, query: str) -> object:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


def test_find_bindir_holds_the_server_binaries() -> None:
    bindir = find_bindir()
    for name in ("initdb", "pg_ctl", "postgres", "psql"):
        assert (bindir / name).is_file(), name


async def test_the_server_accepts_a_connection(pg_server: PgServer) -> None:
    assert await _fetchval(pg_server.dsn, "SELECT 1") == 1
    assert pg_server.dsn == f"postgresql://ecallgw@127.0.0.1:{pg_server.port}/ecallgw"
    assert pg_server.pid > 0
    assert await _fetchval(pg_server.dsn, "SELECT current_user") == "ecallgw"
    assert await _fetchval(pg_server.dsn, "SHOW max_connections") == "200"


async def test_each_test_database_is_distinct(pg_server: PgServer, pg_dsn: str) -> None:
    other = pg_server.create_database()
    try:
        assert other != pg_dsn
        assert other.startswith(f"postgresql://ecallgw@127.0.0.1:{pg_server.port}/")
        first = await asyncpg.connect(pg_dsn, timeout=10)
        try:
            await first.execute("CREATE TABLE t (x int)")
            await first.execute("INSERT INTO t VALUES (7)")
            assert await first.fetchval("SELECT current_database()") == pg_dsn.rsplit("/", 1)[1]
        finally:
            await first.close()
        assert await _fetchval(other, "SELECT to_regclass('t') IS NULL") is True
        assert await _fetchval(other, "SELECT current_database()") == other.rsplit("/", 1)[1]
    finally:
        pg_server.drop_database(other.rsplit("/", 1)[1])


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_restart_keeps_committed_rows_data_dir_and_port(own_server: PgServer, mode: str) -> None:
    dsn = own_server.create_database(f"restart_{mode}")
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("CREATE TABLE kept (id int PRIMARY KEY, payload bytea)")
        await conn.executemany("INSERT INTO kept VALUES ($1, $2)", [(i, bytes([i]) * 200) for i in range(50)])
    finally:
        await conn.close()
    port, pid = own_server.port, own_server.pid
    own_server.restart(mode)
    assert own_server.port == port
    assert own_server.pid != pid
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch("SELECT id, payload FROM kept ORDER BY id")
    finally:
        await conn.close()
    assert [(r["id"], r["payload"]) for r in rows] == [(i, bytes([i]) * 200) for i in range(50)]
    if mode == "immediate":
        # Crash recovery ran: the mode did what it says.
        assert "was not properly shut down" in _read(own_server.log_path)


def _read(path: Path) -> str:
    return path.read_text()


def _listening(port: int) -> list[str]:
    """Local addresses of the sockets in LISTEN state on ``port``, from /proc/net/tcp{,6}."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: TCP_LISTEN
                found.append(address)
    return found


def test_the_server_listens_on_127_0_0_1_only(pg_server: PgServer) -> None:
    assert pg_server.sql("SHOW listen_addresses").strip() == "127.0.0.1"
    if Path("/proc/net/tcp").exists():
        assert _listening(pg_server.port) == ["0100007F"]  # 127.0.0.1, little-endian hex
    # Other loopback addresses (Linux routes all of 127/8 to lo) and the host's own are refused.
    for host in ("127.0.0.2", socket.gethostbyname(socket.gethostname())):
        if host == "127.0.0.1":
            continue
        with pytest.raises(OSError), socket.create_connection((host, pg_server.port), timeout=2):
            pass
