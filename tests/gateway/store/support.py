"""Inputs of the store tests, and the few helpers that speak one backend's SQL.

Everything else in the store tests goes through the `Store` protocol (and ``counts``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias

from hypothesis import HealthCheck, settings

from ecallgw.gateway.records import ActionRecord, DecisionRecord, RawSignal, Unit
from ecallgw.gateway.store import SqliteStore
from ecallgw.gateway.store.migrations import POSTGRES, SQLITE, migrate_postgres, migrate_sqlite
from ecallgw.gateway.store.postgres import PostgresStore
from ecallgw.model import IncidentSnapshot
from ecallgw.triage.decision import Route
from tests.gateway.helpers import make_snapshot

AnyStore: TypeAlias = SqliteStore | PostgresStore
StoreCm: TypeAlias = AbstractAsyncContextManager[AnyStore]
OpenStore: TypeAlias = Callable[..., StoreCm]

snapshot = make_snapshot


def shared_store(max_examples: int) -> settings:
    """Hypothesis settings of a property whose examples share the test's store (and database):
    a fresh one per example would cost a database each. Examples name their rows apart."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# --- inputs -----------------------------------------------------------------------------------


def raw(n: int, at: float = 1000.0, vehicle: str | None = None) -> RawSignal:
    """Signal ``n``: an MSD of vehicle ``v{n}`` (unless given) received at ``at``."""
    return RawSignal(
        transport="mqtt",
        kind="msd",
        tps="acme",
        vehicle=vehicle or f"v{n}",
        payload=bytes([n % 256]) * 10,
        received_at=at,
        source=f"ecall/v1/acme/v{n}/msd",
    )


def signal_unit(
    n: int,
    snap: IncidentSnapshot | None,
    receivers: tuple[str, ...] = ("psap",),
    *,
    at: float | None = None,
    vehicle: str | None = None,
    confirm: frozenset[str] = frozenset(),
) -> Unit:
    """The unit of signal ``n`` (received and triaged at 1000 + n unless given) making ``snap``."""
    at = 1000.0 + n if at is None else at
    routes = (
        tuple(Route(receiver=r, incident_id=snap.incident_id, revision=snap.revision) for r in receivers)
        if snap
        else ()
    )
    return Unit(
        journal_type="signal",
        at=at,
        signal=raw(n, at, vehicle),
        decisions=(
            DecisionRecord(
                outcome="new_incident" if snap is not None else "duplicate",
                reasons=snap.reasons if snap else (),
                snapshot=snap,
                routes=routes,
                signal_at=at,
            ),
        ),
        confirm_on_commit=confirm,
    )


def action_unit(
    incident_id: str,
    at: float,
    snap: IncidentSnapshot | None = None,
    action: str = "ack",
    actor: str = "alice",
) -> Unit:
    """An operator action (journaled and audited), making ``snap`` when given (routed to psap)."""
    record = ActionRecord(
        incident_id=incident_id, action=action, actor=actor, role="operator", note="", at=at
    )
    routes = (
        (Route(receiver="psap", incident_id=snap.incident_id, revision=snap.revision),)
        if snap is not None
        else ()
    )
    decisions = (
        (DecisionRecord(outcome="acknowledged", reasons=(), snapshot=snap, routes=routes, signal_at=at),)
        if snap is not None
        else ()
    )
    return Unit(
        journal_type="action", at=at, action=record, decisions=decisions, audit_outcome="acknowledged"
    )


# --- the only backend-specific SQL --------------------------------------------------------------


def newest_version(store: AnyStore) -> int:
    """The schema version this code writes for ``store``'s backend."""
    return len(SQLITE) if isinstance(store, SqliteStore) else len(POSTGRES)


async def schema_version(store: AnyStore) -> int:
    """The version the store records (SQLite: PRAGMA user_version; PostgreSQL: schema_version)."""
    if isinstance(store, SqliteStore):
        return int(await store.run(lambda c: c.execute("PRAGMA user_version").fetchone()[0]))
    return int(await store.read(lambda c: c.fetchval("SELECT max(version) FROM schema_version")))


async def version_rows(store: AnyStore) -> int:
    """Versions recorded: rows of schema_version (PostgreSQL); SQLite's pragma is a single value."""
    if isinstance(store, SqliteStore):
        return 1
    return int(await store.read(lambda c: c.fetchval("SELECT count(*) FROM schema_version")))


async def record_schema_version(store: AnyStore, version: int) -> None:
    """Record ``version`` as the store's schema version, as a newer ecallgw would have."""
    if isinstance(store, SqliteStore):
        await store.run(lambda c: c.execute(f"PRAGMA user_version = {int(version)}"))
    else:
        await store.run(lambda c: c.execute("INSERT INTO schema_version VALUES ($1)", version))


async def migrate_again(store: AnyStore) -> int:
    """Apply the migrations once more on one of the open store's connections; returns the version."""
    if isinstance(store, SqliteStore):
        return await store.run(migrate_sqlite)
    return int(await store.read(migrate_postgres))


async def hold_writer(store: AnyStore, seconds: float) -> asyncio.Future[Any]:
    """Keep the writer busy for ``seconds``; returns once it is, with the job's future.

    What is queued meanwhile, over any number of loop turns, waits for one batch after it.
    """
    started = threading.Event()

    def sqlite_job(conn: Any) -> None:
        started.set()
        time.sleep(seconds)

    async def pg_job(conn: Any) -> None:
        started.set()
        await conn.execute("SELECT pg_sleep($1)", seconds)

    if isinstance(store, SqliteStore):
        fut = asyncio.ensure_future(store.run(sqlite_job))
    else:
        fut = asyncio.ensure_future(store.run(pg_job))
    async with asyncio.timeout(10):
        while not started.is_set():  # noqa: ASYNC110 (the writer thread sets it)
            await asyncio.sleep(0.001)
    return fut


def failing_job(store: AnyStore) -> asyncio.Future[Any]:
    """A job whose statement fails (it fails its whole batch)."""
    if isinstance(store, SqliteStore):
        return asyncio.ensure_future(store.run(lambda c: c.execute("INSERT INTO nowhere VALUES (1)")))
    return asyncio.ensure_future(store.run(lambda c: c.execute("INSERT INTO nowhere VALUES (1)")))


class BoomError(Exception):
    """Not a database error: a bug in a job, or input the driver's encoder rejects."""


def raising_job(store: AnyStore) -> asyncio.Future[Any]:
    """A job that raises `BoomError` after a statement of its own (it fails its whole batch)."""

    def sqlite_job(conn: Any) -> None:
        conn.execute("INSERT INTO meta VALUES ('boom', x'00')")
        raise BoomError("boom")

    async def pg_job(conn: Any) -> None:
        await conn.execute("INSERT INTO meta VALUES ('boom', '\\x00')")
        raise BoomError("boom")

    if isinstance(store, SqliteStore):
        return asyncio.ensure_future(store.run(sqlite_job))
    return asyncio.ensure_future(store.run(pg_job))
