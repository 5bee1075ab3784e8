"""Versioned schemas of both backends, applied at start (or by ``ecallgw store migrate``).

Each backend has a list of migrations; version N is the first N applied. A store records its
version (SQLite: ``PRAGMA user_version``; PostgreSQL: the ``schema_version`` table) and a start
refuses a store whose version is newer than this code knows: an older ecallgw must not write into
a schema it does not understand. Migrations only ever append to the lists.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ecallgw.errors import StoreError

__all__ = ["POSTGRES", "SQLITE", "SchemaTooNewError", "migrate_postgres", "migrate_sqlite"]


class SchemaTooNewError(StoreError):
    """The store was written by a newer ecallgw (its schema version is beyond ours)."""


SQLITE: tuple[str, ...] = (
    # 1: the schema as first released (CREATE IF NOT EXISTS: stores from before versioning adopt it).
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY, type TEXT NOT NULL, at REAL NOT NULL,
    transport TEXT, kind TEXT, tps TEXT, vehicle TEXT, call_id TEXT, payload BLOB, source TEXT,
    incident_id TEXT, action TEXT, actor TEXT, role TEXT, note TEXT
);
CREATE INDEX IF NOT EXISTS journal_at ON journal (at);
CREATE TABLE IF NOT EXISTS incidents (
    incident_id TEXT PRIMARY KEY, revision INTEGER NOT NULL, status TEXT NOT NULL, level TEXT NOT NULL,
    score INTEGER NOT NULL, tps TEXT NOT NULL, vehicle TEXT NOT NULL, received_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_updated ON incidents (updated_at);
CREATE INDEX IF NOT EXISTS incidents_vehicle ON incidents (tps, vehicle, updated_at);
CREATE TABLE IF NOT EXISTS revisions (
    seq INTEGER PRIMARY KEY, incident_id TEXT NOT NULL, revision INTEGER NOT NULL, at REAL NOT NULL,
    outcome TEXT NOT NULL, reasons TEXT NOT NULL, snapshot BLOB NOT NULL, UNIQUE (incident_id, revision)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, incident_id TEXT NOT NULL, revision INTEGER NOT NULL, receiver TEXT NOT NULL,
    created_at REAL NOT NULL, signal_at REAL NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
    UNIQUE (incident_id, revision, receiver)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, receiver, id);
CREATE TABLE IF NOT EXISTS deliveries (
    outbox_id INTEGER PRIMARY KEY, delivered_at REAL NOT NULL, attempts INTEGER NOT NULL, status INTEGER,
    sent_at REAL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    outbox_id INTEGER PRIMARY KEY, at REAL NOT NULL, attempts INTEGER NOT NULL, reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, transport TEXT NOT NULL, source TEXT NOT NULL, kind TEXT,
    tps TEXT, vehicle TEXT, payload BLOB NOT NULL, codec TEXT NOT NULL, reason TEXT NOT NULL, path TEXT
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL, action TEXT NOT NULL,
    incident_id TEXT, note TEXT, outcome TEXT
);
""",
    # 2: operator console sessions (ecallgw/console/session.py), by the SHA-256 of the cookie.
    """
CREATE TABLE IF NOT EXISTS console_sessions (
    id TEXT PRIMARY KEY, operator TEXT NOT NULL, token_sha256 TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_expiry ON console_sessions (expires_at);
""",
    # 3: every call of an incident (issue 12: a redial, the same VIN via a second provider), so that
    # operators find an incident by any call id or vehicle key; written with the revision that
    # brings the call. Incidents stored before have none here (their primary vehicle still finds them).
    """
CREATE TABLE IF NOT EXISTS incident_calls (
    incident_id TEXT NOT NULL, tps TEXT NOT NULL, vehicle TEXT NOT NULL, call_id TEXT NOT NULL,
    PRIMARY KEY (incident_id, tps, vehicle, call_id)
);
CREATE INDEX IF NOT EXISTS incident_calls_call ON incident_calls (call_id);
CREATE INDEX IF NOT EXISTS incident_calls_vehicle ON incident_calls (vehicle);
""",
    # caller links, breakdown assistance cases and provider availability (issue 14, docs/caller.md);
    # a link is stored by the SHA-256 of its token, never the token.
    """
CREATE TABLE IF NOT EXISTS caller_links (
    link_id TEXT PRIMARY KEY, token_hash BLOB NOT NULL UNIQUE, purpose TEXT NOT NULL, incident_id TEXT,
    case_id TEXT, phone TEXT NOT NULL, lang TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL,
    max_uses INTEGER NOT NULL, uses INTEGER NOT NULL DEFAULT 0, revoked_at REAL, created_by TEXT NOT NULL,
    auto_key TEXT UNIQUE, sms_state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS caller_links_incident ON caller_links (incident_id);
CREATE INDEX IF NOT EXISTS caller_links_case ON caller_links (case_id);
CREATE INDEX IF NOT EXISTS caller_links_created ON caller_links (created_at);
CREATE TABLE IF NOT EXISTS assistance_cases (
    case_id TEXT PRIMARY KEY, created_at REAL NOT NULL, updated_at REAL NOT NULL, origin TEXT NOT NULL,
    status TEXT NOT NULL, capability TEXT NOT NULL, what TEXT NOT NULL, lat REAL, lon REAL,
    address TEXT NOT NULL, vehicle_desc TEXT NOT NULL, phone TEXT NOT NULL, tps TEXT, vehicle TEXT,
    provider TEXT, deadline REAL, tried TEXT NOT NULL, reason TEXT NOT NULL, eta_min INTEGER,
    note TEXT NOT NULL, shared TEXT NOT NULL, accepted_at REAL, version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS assistance_cases_status ON assistance_cases (status, deadline);
CREATE INDEX IF NOT EXISTS assistance_cases_updated ON assistance_cases (updated_at);
CREATE TABLE IF NOT EXISTS assistance_availability (
    provider TEXT PRIMARY KEY, available INTEGER NOT NULL, updated_at REAL NOT NULL
);
""",
    # operator desk (issue 13): the list's filters and queue order as columns of incidents (kind
    # automatic/manual/test, level_rank 0 critical .. 3 low, the manual call's escalation timer);
    # who holds an incident and whether an operator acked it (desk, its own table: a revision's
    # upsert and a desk change of one incident can share a sequencer statement); the desk's changes
    # (claims, acks, notes) numbered in the revisions' sequence (the operator stream's event ids).
    """
ALTER TABLE incidents ADD COLUMN call_id TEXT;
ALTER TABLE incidents ADD COLUMN kind TEXT;
ALTER TABLE incidents ADD COLUMN scene_id TEXT;
ALTER TABLE incidents ADD COLUMN escalation_due_at REAL;
ALTER TABLE incidents ADD COLUMN level_rank INTEGER NOT NULL DEFAULT 3;
UPDATE incidents SET level_rank = CASE level WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2
    ELSE 3 END;
CREATE INDEX incidents_queue ON incidents (status, level_rank, received_at, incident_id);
CREATE INDEX incidents_received ON incidents (received_at);
CREATE INDEX incidents_call ON incidents (call_id);
CREATE INDEX incidents_scene ON incidents (scene_id);
CREATE INDEX incidents_level ON incidents (level, received_at);
CREATE INDEX incidents_kind ON incidents (kind, received_at);
CREATE TABLE desk_events (
    seq INTEGER PRIMARY KEY, incident_id TEXT NOT NULL, at REAL NOT NULL, operator TEXT NOT NULL,
    kind TEXT NOT NULL, claimed_by TEXT, acked INTEGER NOT NULL DEFAULT 0, text TEXT NOT NULL DEFAULT ''
);
CREATE INDEX desk_events_incident ON desk_events (incident_id, seq);
CREATE TABLE desk (incident_id TEXT PRIMARY KEY, acked INTEGER NOT NULL DEFAULT 0, claimed_by TEXT);
""",
    # caller SMS outbox (docs/caller.md): what a pending SMS's text is built from and its retry
    # state, never its token (caller_links holds only the token's SHA-256); a replica claims a row
    # with a lease so that exactly one sends it, and re-mints the link's token when it lacks it.
    """
CREATE TABLE caller_sms (
    link_id TEXT PRIMARY KEY, base_url TEXT NOT NULL, idem_key TEXT NOT NULL,
    resends INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', claimed_by TEXT, lease_until REAL
);
CREATE INDEX caller_sms_due ON caller_sms (state, next_at);
""",
    # 7: fewer index insertions per new incident (issue 15's performance guard, docs/performance.md):
    # only the incidents linked to another one's scene are indexed by scene (store/desk.py
    # linked_sql); a lone incident's scene is its own id and is read by its key. The level and kind
    # filters of the queue narrow what the status index (the open queue) or the time range finds,
    # rather than each costing an insertion per incident for a rare search over every status.
    """
DROP INDEX incidents_scene;
CREATE INDEX incidents_linked ON incidents (scene_id) WHERE scene_id <> incident_id;
DROP INDEX incidents_level;
DROP INDEX incidents_kind;
""",
)

POSTGRES: tuple[str, ...] = (
    # 1: SQLite's tables, plus what replicas share: unsequenced journal rows (seq NULL) with the
    # receiving replica and the sequencer's decision, outbox claims with leases, the leader lease.
    """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE journal (
    id BIGSERIAL PRIMARY KEY, seq BIGINT UNIQUE, type TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
    now_at DOUBLE PRECISION,
    transport TEXT, kind TEXT, tps TEXT, vehicle TEXT, call_id TEXT, payload BYTEA, source TEXT, digest BYTEA,
    incident_id TEXT, action TEXT, actor TEXT, role TEXT, note TEXT, result JSONB
);
CREATE INDEX journal_unsequenced ON journal (id) WHERE seq IS NULL;
CREATE INDEX journal_now_at ON journal (now_at);
CREATE INDEX journal_at ON journal (at);
CREATE TABLE incidents (
    incident_id TEXT PRIMARY KEY, revision INTEGER NOT NULL, status TEXT NOT NULL, level TEXT NOT NULL,
    score INTEGER NOT NULL, tps TEXT NOT NULL, vehicle TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX incidents_updated ON incidents (updated_at);
CREATE INDEX incidents_vehicle ON incidents (tps, vehicle, updated_at);
CREATE TABLE revisions (
    seq BIGINT PRIMARY KEY, incident_id TEXT NOT NULL, revision INTEGER NOT NULL,
    at DOUBLE PRECISION NOT NULL, outcome TEXT NOT NULL, reasons TEXT NOT NULL, snapshot BYTEA NOT NULL,
    UNIQUE (incident_id, revision)
);
CREATE TABLE outbox (
    id BIGINT PRIMARY KEY, incident_id TEXT NOT NULL, revision INTEGER NOT NULL, receiver TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, signal_at DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', claimed_by TEXT, lease_until DOUBLE PRECISION,
    UNIQUE (incident_id, revision, receiver)
);
CREATE INDEX outbox_pending ON outbox (id) WHERE state = 'pending';
CREATE INDEX outbox_pair ON outbox (receiver, incident_id, revision) WHERE state = 'pending';
CREATE TABLE deliveries (
    outbox_id BIGINT PRIMARY KEY, delivered_at DOUBLE PRECISION NOT NULL, attempts INTEGER NOT NULL,
    status INTEGER, sent_at DOUBLE PRECISION
);
CREATE TABLE dead_letters (
    outbox_id BIGINT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, attempts INTEGER NOT NULL,
    reason TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE quarantine (
    id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, transport TEXT NOT NULL, source TEXT NOT NULL,
    kind TEXT, tps TEXT, vehicle TEXT, payload BYTEA NOT NULL, codec TEXT NOT NULL, reason TEXT NOT NULL,
    path TEXT
);
CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL,
    action TEXT NOT NULL, incident_id TEXT, note TEXT, outcome TEXT
);
CREATE INDEX audit_incident ON audit (incident_id, id);
CREATE TABLE sequencer_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1), epoch BIGINT NOT NULL, leader TEXT NOT NULL,
    renewed_at DOUBLE PRECISION NOT NULL
);
INSERT INTO sequencer_lease VALUES (1, 0, '', 0);
CREATE TABLE replicas (
    replica_id TEXT PRIMARY KEY, host TEXT NOT NULL, seen_at DOUBLE PRECISION NOT NULL
);
""",
    # 2: a statement can abort itself: the sequencer writes a batch in one statement and fails it
    # whole (SQLSTATE EC001) when its epoch is not the leader's or a row was sequenced already.
    """
CREATE FUNCTION ecallgw_fenced(why TEXT) RETURNS INTEGER LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'EC001', MESSAGE = why;
END $$;
""",
    # 3: operator console sessions (ecallgw/console/session.py), shared by every replica.
    """
CREATE TABLE console_sessions (
    id TEXT PRIMARY KEY, operator TEXT NOT NULL, token_sha256 TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
""",
    # 4: every call of an incident (issue 12), as in SQLite's migration 3.
    """
CREATE TABLE incident_calls (
    incident_id TEXT NOT NULL, tps TEXT NOT NULL, vehicle TEXT NOT NULL, call_id TEXT NOT NULL,
    PRIMARY KEY (incident_id, tps, vehicle, call_id)
);
CREATE INDEX incident_calls_call ON incident_calls (call_id);
CREATE INDEX incident_calls_vehicle ON incident_calls (vehicle);
""",
    # caller links, breakdown assistance cases and provider availability (issue 14, docs/caller.md)
    """
CREATE TABLE caller_links (
    link_id TEXT PRIMARY KEY, token_hash BYTEA NOT NULL UNIQUE, purpose TEXT NOT NULL, incident_id TEXT,
    case_id TEXT, phone TEXT NOT NULL, lang TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL, max_uses INTEGER NOT NULL, uses INTEGER NOT NULL DEFAULT 0,
    revoked_at DOUBLE PRECISION, created_by TEXT NOT NULL, auto_key TEXT UNIQUE, sms_state TEXT NOT NULL
);
CREATE INDEX caller_links_incident ON caller_links (incident_id);
CREATE INDEX caller_links_case ON caller_links (case_id);
CREATE INDEX caller_links_created ON caller_links (created_at);
CREATE TABLE assistance_cases (
    case_id TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
    origin TEXT NOT NULL, status TEXT NOT NULL, capability TEXT NOT NULL, what TEXT NOT NULL,
    lat DOUBLE PRECISION, lon DOUBLE PRECISION, address TEXT NOT NULL, vehicle_desc TEXT NOT NULL,
    phone TEXT NOT NULL, tps TEXT, vehicle TEXT, provider TEXT, deadline DOUBLE PRECISION,
    tried TEXT NOT NULL, reason TEXT NOT NULL, eta_min INTEGER, note TEXT NOT NULL, shared TEXT NOT NULL,
    accepted_at DOUBLE PRECISION, version INTEGER NOT NULL
);
CREATE INDEX assistance_cases_status ON assistance_cases (status, deadline);
CREATE INDEX assistance_cases_updated ON assistance_cases (updated_at);
CREATE TABLE assistance_availability (
    provider TEXT PRIMARY KEY, available INTEGER NOT NULL, updated_at DOUBLE PRECISION NOT NULL
);
""",
    # operator desk (issue 13): the list's filters and queue order as columns of incidents (kind
    # automatic/manual/test, level_rank 0 critical .. 3 low, the manual call's escalation timer);
    # who holds an incident and whether an operator acked it (desk, its own table: a revision's
    # upsert and a desk change of one incident can share a sequencer statement); the desk's changes
    # (claims, acks, notes) numbered in the revisions' sequence (the operator stream's event ids).
    """
ALTER TABLE incidents ADD COLUMN call_id TEXT;
ALTER TABLE incidents ADD COLUMN kind TEXT;
ALTER TABLE incidents ADD COLUMN scene_id TEXT;
ALTER TABLE incidents ADD COLUMN escalation_due_at DOUBLE PRECISION;
ALTER TABLE incidents ADD COLUMN level_rank INTEGER NOT NULL DEFAULT 3;
UPDATE incidents SET level_rank = CASE level WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2
    ELSE 3 END;
CREATE INDEX incidents_queue ON incidents (status, level_rank, received_at, incident_id);
CREATE INDEX incidents_received ON incidents (received_at);
CREATE INDEX incidents_call ON incidents (call_id);
CREATE INDEX incidents_scene ON incidents (scene_id);
CREATE INDEX incidents_level ON incidents (level, received_at);
CREATE INDEX incidents_kind ON incidents (kind, received_at);
CREATE TABLE desk_events (
    seq BIGINT PRIMARY KEY, incident_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, operator TEXT NOT NULL,
    kind TEXT NOT NULL, claimed_by TEXT, acked INTEGER NOT NULL DEFAULT 0, text TEXT NOT NULL DEFAULT ''
);
CREATE INDEX desk_events_incident ON desk_events (incident_id, seq);
CREATE TABLE desk (incident_id TEXT PRIMARY KEY, acked INTEGER NOT NULL DEFAULT 0, claimed_by TEXT);
""",
    # caller SMS outbox, as in SQLite's migration 6.
    """
CREATE TABLE caller_sms (
    link_id TEXT PRIMARY KEY, base_url TEXT NOT NULL, idem_key TEXT NOT NULL,
    resends INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    next_at DOUBLE PRECISION NOT NULL, state TEXT NOT NULL DEFAULT 'pending', claimed_by TEXT,
    lease_until DOUBLE PRECISION
);
CREATE INDEX caller_sms_due ON caller_sms (next_at) WHERE state = 'pending';
""",
    # fewer index insertions per new incident, as in SQLite's migration 7.
    """
DROP INDEX incidents_scene;
CREATE INDEX incidents_linked ON incidents (scene_id) WHERE scene_id <> incident_id;
DROP INDEX incidents_level;
DROP INDEX incidents_kind;
""",
)

_PG_MIGRATE_LOCK = 0x6563_616C_6C00  # advisory lock key: one replica migrates at a time


def _too_new(found: int, known: int, where: str) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"{where} has schema version {found}, newer than this ecallgw knows ({known}): "
        "run the ecallgw release that wrote it, or a newer one"
    )


def migrate_sqlite(conn: sqlite3.Connection, where: str = "the store") -> int:
    """Bring a SQLite store to the newest schema (outside any transaction); returns its version."""
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    if found > len(SQLITE):
        raise _too_new(found, len(SQLITE), where)
    for version in range(found + 1, len(SQLITE) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in SQLITE[version - 1].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(SQLITE)


async def migrate_postgres(conn: Any, where: str = "the store") -> int:
    """Bring a PostgreSQL store to the newest schema; replicas starting together take turns."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_MIGRATE_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        found = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
        if found > len(POSTGRES):
            raise _too_new(found, len(POSTGRES), where)
        for version in range(found + 1, len(POSTGRES) + 1):
            await conn.execute(POSTGRES[version - 1])
            await conn.execute("INSERT INTO schema_version VALUES ($1)", version)
    return len(POSTGRES)
