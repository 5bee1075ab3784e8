"""Shared pieces of the fault tests (``test_faults.py``, ``test_replicas.py``).

Real processes only: ``ecallgw serve`` subprocesses with a TOML configuration, a mosquitto, a PSAP
webhook (`Receiver`), SQLite files or a PostgreSQL server. What a test wants to know about the store
after a crash it asks an `Inspector`, which reads SQLite with ``sqlite3`` and PostgreSQL with
asyncpg, so the same assertions (`assert_nothing_lost`) hold on both backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import asyncpg

from tests.gateway.broker import Mosquitto
from tests.gateway.harness import SRE_TOKEN
from tests.gateway.helpers import cancel_envelope, make_msd, msd_envelope, vin_for
from tests.gateway.receiver import Receiver

__all__ = [
    "RECEIVER",
    "Inspector",
    "PgInspector",
    "SqliteInspector",
    "StoreSpec",
    "assert_nothing_lost",
    "expected_deliveries",
    "followups",
    "publish_all",
    "readyz",
    "scrape",
    "serve",
    "settle",
    "settle_async",
    "start_serve",
    "stop_serve",
    "stream",
    "tail",
    "until_count",
    "wait_ready",
    "write_config",
]

RECEIVER = "psap-fallback"


# --- the stream -----------------------------------------------------------------------------------


def stream(n: int, *, prefix: str = "car") -> list[tuple[str, bytes]]:
    """``n`` automatic eCalls of ``n`` vehicles: each one incident routed to the PSAP."""
    now = time.time()
    return [
        (
            f"ecall/v1/acme/{prefix}{i}/msd",
            msd_envelope(
                make_msd(vin=vin_for(i), timestamp=int(now)), call_id=f"call-{i}", sent_at=now + i * 1e-3
            ),
        )
        for i in range(n)
    ]


def followups(n: int) -> list[tuple[str, bytes]]:
    """A second MSD (an update: passengers and position changed) for every 10th vehicle, then a
    vehicle cancel for every 20th: each one more revision, to every receiver that had the incident.
    Published after all first MSDs, so that per vehicle the broker's order is the call's order."""
    now = time.time()
    updates = [
        (
            f"ecall/v1/acme/car{i}/msd",
            msd_envelope(
                make_msd(vin=vin_for(i), timestamp=int(now), message_identifier=2, passengers=4, lat=48.2),
                call_id=f"call-{i}",
                sent_at=now + 5 + i * 1e-3,
            ),
        )
        for i in range(0, n, 10)
    ]
    cancels = [
        (f"ecall/v1/acme/car{i}/cancel", cancel_envelope(call_id=f"call-{i}", sent_at=now + 10 + i * 1e-3))
        for i in range(0, n, 20)
    ]
    return updates + cancels


def expected_deliveries(n: int) -> int:
    """Revisions the PSAP gets from ``stream(n) + followups(n)``: first MSDs, updates, cancels."""
    return n + n // 10 + n // 20


async def publish_all(broker: Mosquitto, items: list[tuple[str, bytes]], *, window: int = 100) -> None:
    """Publish with QoS 1, ``window`` at a time, retrying what the broker did not confirm."""
    i = 0
    while i < len(items):
        try:
            async with aiomqtt.Client(broker.host, broker.port, max_inflight_messages=window) as pub:
                pub.pending_calls_threshold = window * 2
                while i < len(items):
                    chunk = items[i : i + window]
                    async with asyncio.timeout(10):
                        await asyncio.gather(*(pub.publish(t, p, qos=1) for t, p in chunk))
                    i += len(chunk)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.1)  # the broker is restarting: reconnect and resend the window


# --- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreSpec:
    """Where the gateway's store is: a SQLite file, or a PostgreSQL database (``dsn``)."""

    backend: str  # "sqlite" | "postgresql"
    sqlite_path: Path | None = None
    dsn: str | None = None
    lease_s: float = 2.0
    outbox_lease_s: float = 3.0
    decision_wait_s: float = 5.0

    def toml(self, replica_id: str) -> str:
        if self.backend == "sqlite":
            assert self.sqlite_path is not None
            return f'[store]\npath = "{self.sqlite_path}"\n'
        assert self.dsn is not None
        return (
            f'[store]\nbackend = "postgresql"\ndsn = "{self.dsn}"\nreplica_id = "{replica_id}"\n'
            f"lease_s = {self.lease_s}\noutbox_lease_s = {self.outbox_lease_s}\n"
            f"decision_wait_s = {self.decision_wait_s}\n"
        )

    def inspector(self) -> Inspector:
        if self.backend == "sqlite":
            assert self.sqlite_path is not None
            return SqliteInspector(self.sqlite_path)
        assert self.dsn is not None
        return PgInspector(self.dsn)


def write_config(
    path: Path,
    broker: Mosquitto,
    recv: Receiver,
    http_port: int,
    store: StoreSpec,
    *,
    replica_id: str = "r1",
    client_id: str = "gw-kill",
    share_group: str = "",
    log_level: str = "warning",
) -> Path:
    """An ``ecallgw serve`` configuration: the store, the broker, the SRE token, one PSAP webhook."""
    share = f'share_group = "{share_group}"\n' if share_group else ""
    path.write_text(
        f"""
{store.toml(replica_id)}
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "{client_id}"
{share}reconnect_min_s = 0.05
reconnect_max_s = 0.5
[http]
port = {http_port}
[[auth.tokens]]
name = "bob"
role = "sre"
token = "{SRE_TOKEN}"
[receivers.{RECEIVER}]
kind = "http"
url = "{recv.url}"
backoff_base_s = 0.05
backoff_cap_s = 0.5
concurrency = 32
[log]
level = "{log_level}"
"""
    )
    return path


# --- processes ------------------------------------------------------------------------------------


def tail(log: Path, chars: int = 2000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


async def start_serve(config: Path, log: Path) -> asyncio.subprocess.Process:
    """``ecallgw serve`` as a subprocess, its stderr (JSON lines) appended to ``log``."""
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ecallgw",
            "serve",
            "--config",
            str(config),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


async def readyz(http: aiohttp.ClientSession, http_port: int) -> tuple[int, dict[str, Any]]:
    """``/readyz`` with the SRE token: (status, checks); (0, {}) while nothing answers."""
    try:
        async with http.get(
            f"http://127.0.0.1:{http_port}/readyz",
            headers={"Authorization": f"Bearer {SRE_TOKEN}"},
            timeout=aiohttp.ClientTimeout(total=2),
        ) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = {}
            return resp.status, body if isinstance(body, dict) else {}
    except (aiohttp.ClientError, TimeoutError):
        return 0, {}


async def wait_ready(
    proc: asyncio.subprocess.Process, http_port: int, log: Path, *, timeout_s: float = 20.0
) -> float:
    """Wait until ``/readyz`` answers 200; returns the seconds it took."""
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout_s):
        while True:
            assert proc.returncode is None, tail(log)
            status, _ = await readyz(http, http_port)
            if status == 200:
                return time.monotonic() - t0
            await asyncio.sleep(0.05)


async def stop_serve(proc: asyncio.subprocess.Process, log: Path) -> None:
    """SIGTERM (after a SIGCONT, in case it was stopped) and wait; SIGKILL after 20 s."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"serve did not stop on SIGTERM within 20 s:\n{tail(log)}") from None
    assert proc.returncode in (0, -signal.SIGKILL), tail(log)


@asynccontextmanager
async def serve(config: Path, http_port: int, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``ecallgw serve`` as a subprocess, ready when /readyz says so; stopped (SIGTERM) after."""
    proc = await start_serve(config, log)
    try:
        await wait_ready(proc, http_port, log)
        yield proc
    finally:
        await stop_serve(proc, log)


# --- waiting --------------------------------------------------------------------------------------


async def settle(count: Callable[[], int], target: int, *, stall_s: float, timeout_s: float) -> None:
    """Wait until ``count()`` reaches ``target`` or stops growing for ``stall_s`` (no assertion here:
    the caller states what is missing)."""
    last, since = count(), time.monotonic()
    async with asyncio.timeout(timeout_s):
        while count() < target:
            await asyncio.sleep(0.1)
            if count() != last:
                last, since = count(), time.monotonic()
            elif time.monotonic() - since > stall_s:
                return


async def settle_async(
    count: Callable[[], Awaitable[int]], target: int, *, stall_s: float, timeout_s: float
) -> int:
    """`settle` for a count that must be awaited (a store query); returns the last count."""
    last, since = await count(), time.monotonic()
    async with asyncio.timeout(timeout_s):
        while last < target:
            await asyncio.sleep(0.2)
            now = await count()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since > stall_s:
                break
    return last


async def until_count(
    count: Callable[[], Awaitable[int]], target: int, *, timeout_s: float, interval_s: float = 0.02
) -> int:
    """Wait until the awaited ``count()`` reaches ``target`` (a store query); returns it."""
    async with asyncio.timeout(timeout_s):
        while (now := await count()) < target:  # noqa: ASYNC110 (a store, no event to wait on)
            await asyncio.sleep(interval_s)
    return now


async def scrape(http_port: int, name: str) -> float:
    """Sum of a metric's samples from the daemon's /metrics."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{http_port}/metrics", headers={"Authorization": f"Bearer {SRE_TOKEN}"}
        ) as resp,
    ):
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


# --- the store, from outside ----------------------------------------------------------------------


class Inspector:
    """Read-only questions about a store after (or during) a fault, the same on both backends."""

    async def signals(self) -> int:
        """Signals stored, each once: transport copies recognised as such are not counted."""
        raise NotImplementedError

    async def unsequenced(self) -> int:
        """Journal rows no sequencer has taken yet (always 0 on SQLite)."""
        raise NotImplementedError

    async def pending(self) -> int:
        """Outbox entries not yet delivered (nor dead-lettered)."""
        return int(await self._value("SELECT count(*) FROM outbox WHERE state='pending'"))

    async def incidents(self) -> dict[str, int]:
        """incident_id -> latest revision, of the vehicles' incidents (a provider storm's aggregate for
        the operator desk, issue 12, is none: a burst of one provider's calls makes one)."""
        sql = "SELECT incident_id, revision FROM incidents WHERE incident_id NOT LIKE 'storm-%'"
        rows = await self._rows(sql)
        return {r[0]: int(r[1]) for r in rows}

    async def outbox(self) -> list[tuple[str, int, str, str]]:
        """Every outbox entry of the vehicles' incidents: (incident_id, revision, receiver, state)."""
        sql = "SELECT incident_id, revision, receiver, state FROM outbox WHERE incident_id NOT LIKE 'storm-%'"
        rows = await self._rows(sql)
        return [(r[0], int(r[1]), r[2], r[3]) for r in rows]

    async def dead_letters(self) -> int:
        return int(await self._value("SELECT count(*) FROM dead_letters"))

    async def close(self) -> None:
        return None

    async def _value(self, sql: str) -> Any:
        raise NotImplementedError

    async def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError


class SqliteInspector(Inspector):
    """A SQLite store file (read while the daemon runs or after it died: WAL readers are fine)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def signals(self) -> int:
        return int(await self._value("SELECT count(*) FROM journal WHERE type='signal'"))

    async def unsequenced(self) -> int:
        return 0

    async def _value(self, sql: str) -> Any:
        return (await self._rows(sql))[0][0]

    async def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            return [tuple(r) for r in db.execute(sql).fetchall()]


class PgInspector(Inspector):
    """A PostgreSQL store through asyncpg; reconnects after the server restarted.

    On PostgreSQL a journal row is written by the replica that received the signal with ``seq``
    NULL and sequenced later; a transport copy that reached a second replica (or a restarted one)
    is its own row, sequenced with ``result->>'outcome' = 'redelivered'``.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: Any = None
        self._lock = asyncio.Lock()  # one connection: one question at a time

    async def signals(self) -> int:
        return int(
            await self._value(
                "SELECT count(*) FROM journal WHERE type='signal' "
                "AND (result IS NULL OR result->>'outcome' IS DISTINCT FROM 'redelivered')"
            )
        )

    async def copies(self) -> int:
        """Transport copies stored by a replica and recognised by the sequencer."""
        return int(
            await self._value(
                "SELECT count(*) FROM journal WHERE type='signal' AND result->>'outcome' = 'redelivered'"
            )
        )

    async def unsequenced(self) -> int:
        return int(await self._value("SELECT count(*) FROM journal WHERE seq IS NULL"))

    async def max_seq(self) -> int:
        return int(await self._value("SELECT coalesce(max(seq), 0) FROM journal"))

    async def lease(self) -> tuple[int, str, float]:
        """(epoch, leader, renewed_at) of the sequencer lease."""
        row = (await self._rows("SELECT epoch, leader, renewed_at FROM sequencer_lease WHERE id = 1"))[0]
        return int(row[0]), str(row[1]), float(row[2])

    async def execute(self, sql: str) -> None:
        async with self._lock:
            conn = await self._connect()
            try:
                await conn.execute(sql)
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
                await self._drop()
                raise

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def _connect(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.dsn, timeout=5)
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await conn.close()
            conn.terminate()

    async def _value(self, sql: str) -> Any:
        return (await self._rows(sql))[0][0]

    async def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        async with self._lock:
            return await self._rows_locked(sql)

    async def _rows_locked(self, sql: str) -> list[tuple[Any, ...]]:
        # The server may be restarting (a fault test): reconnect, a few tries.
        for attempt in range(50):
            try:
                conn = await self._connect()
                return [tuple(r) for r in await conn.fetch(sql, timeout=10)]
            except (
                OSError,
                TimeoutError,
                asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError,
                asyncpg.CannotConnectNowError,
                asyncpg.AdminShutdownError,
            ):
                await self._drop()
                if attempt == 49:
                    raise
                await asyncio.sleep(0.2)
        raise AssertionError("unreachable")


# --- the bar --------------------------------------------------------------------------------------


async def assert_nothing_lost(store: Inspector, recv: Receiver, *, n: int, signals: int) -> int:
    """The guarantees after a fault, for ``stream(n) + followups(n)`` (``signals`` published).

    Every signal stored exactly once (transport copies recognised), none left unsequenced; one
    incident per vehicle with the revisions a single gateway gives the same stream; every routed
    revision delivered, the latest included; per incident, revisions first reach the receiver in
    order; repeats only under a key already seen; no dead letters. Returns the repeats.
    """
    expected_n = expected_deliveries(n)
    journal = await store.signals()
    unsequenced = await store.unsequenced()
    incidents = await store.incidents()
    routed = await store.outbox()
    dead = await store.dead_letters()
    assert (journal, unsequenced) == (signals, 0)  # every signal stored once, redeliveries recognised
    assert len(incidents) == n
    assert sorted(incidents.values()).count(3) == n // 20 and sum(incidents.values()) == expected_n
    expected = {f"{i}:{r}" for i, r, receiver, _ in routed if receiver == RECEIVER}
    missing = expected - recv.keys
    assert len(missing) == 0, (
        f"{len(missing)} of {len(expected)} deliveries missing, e.g. {sorted(missing)[:5]}"
    )
    assert recv.keys == expected and len(expected) == expected_n
    # Every receiver that had an incident got its latest revision (the cancel, where there was one).
    for incident_id, revision, receiver, state in routed:
        assert state == "delivered", (incident_id, revision, receiver, state)
    latest: dict[tuple[str, str], int] = {}
    for incident_id, revision, receiver, _ in routed:
        latest[(incident_id, receiver)] = max(revision, latest.get((incident_id, receiver), 0))
    assert all(revision == incidents[iid] for (iid, _), revision in latest.items())
    cancelled = {r.key for r in recv.accepted if b"cancel_requested" in r.body}
    assert len(cancelled) == n // 20
    # Revision order per incident at the receiver: each revision first arrives after the one before
    # (a repeat after the crash re-sends under the same key, never a later revision early).
    first_seen: dict[str, list[int]] = {}
    for r in recv.accepted:
        key_incident, key_revision = r.key.rsplit(":", 1)
        seen = first_seen.setdefault(key_incident, [])
        if int(key_revision) not in seen:
            seen.append(int(key_revision))
    assert all(seen == sorted(seen) for seen in first_seen.values())
    assert (sum(len(s) for s in first_seen.values()), dead) == (expected_n, 0)
    extra = len(recv.accepted) - expected_n  # deliveries repeated after the crash: same keys only
    assert 0 <= extra < expected_n
    return extra
