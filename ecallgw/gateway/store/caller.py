"""Caller links, assistance cases and provider availability on either store backend (issue 14).

The tables are created by the migrations (migrations.py) beside the incidents'. This module holds
their queries, written once with ``?`` placeholders and run on SQLite in the store's writer thread
(`SqliteStore.run`, inside its group commit, each query in a SAVEPOINT of its own so that a failing
one never fails the batch it rides in) or on PostgreSQL on a pooled connection (``$n``
placeholders, one statement each: a transaction of its own). Every change that replicas could race
for is one conditional statement (``UPDATE ... WHERE version = ?``, ``INSERT ... ON CONFLICT DO
NOTHING``): whoever's statement changed the row owns what follows (sending the SMS, the webhook).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ecallgw.errors import StoreError
from ecallgw.gateway.store.postgres import DB_ERRORS, PostgresStore
from ecallgw.gateway.store.protocol import Store
from ecallgw.gateway.store.sqlite import SqliteStore

__all__ = ["CallerStore", "CaseRow", "LinkRow", "SmsRow"]

_frozen = {"frozen": True, "slots": True, "kw_only": True}


@dataclass(**_frozen)
class LinkRow:
    """One caller link as stored (never its token: ``token_hash`` is its SHA-256)."""

    link_id: str
    token_hash: bytes
    purpose: str  # location, tracking or assist
    incident_id: str | None
    case_id: str | None
    phone: str
    lang: str
    created_at: float
    expires_at: float
    max_uses: int
    uses: int
    revoked_at: float | None
    created_by: str
    auto_key: str | None
    sms_state: str  # none, pending, sent, failed, lost (pending with no outbox row, see mark_sms_lost)


_LINK_COLS = (
    "link_id, token_hash, purpose, incident_id, case_id, phone, lang, created_at, expires_at, max_uses, "
    "uses, revoked_at, created_by, auto_key, sms_state"
)


def _link(r: Sequence[Any]) -> LinkRow:
    return LinkRow(
        link_id=r[0],
        token_hash=bytes(r[1]),
        purpose=r[2],
        incident_id=r[3],
        case_id=r[4],
        phone=r[5],
        lang=r[6],
        created_at=r[7],
        expires_at=r[8],
        max_uses=r[9],
        uses=r[10],
        revoked_at=r[11],
        created_by=r[12],
        auto_key=r[13],
        sms_state=r[14],
    )


@dataclass(**_frozen)
class SmsRow:
    """A pending SMS of the outbox with what its text is built from (never the token)."""

    link_id: str
    base_url: str
    key: str  # the Idempotency-Key: the link id, then ``{link id}.r{n}`` after n resends
    resends: int
    attempts: int  # made under ``key``
    next_at: float
    phone: str
    purpose: str
    lang: str
    token_hash: bytes
    expires_at: float
    revoked_at: float | None


_SMS_COLS = (
    "s.link_id, s.base_url, s.idem_key, s.resends, s.attempts, s.next_at, l.phone, l.purpose, l.lang, "
    "l.token_hash, l.expires_at, l.revoked_at"
)


def _sms(r: Sequence[Any]) -> SmsRow:
    return SmsRow(
        link_id=r[0],
        base_url=r[1],
        key=r[2],
        resends=r[3],
        attempts=r[4],
        next_at=r[5],
        phone=r[6],
        purpose=r[7],
        lang=r[8],
        token_hash=bytes(r[9]),
        expires_at=r[10],
        revoked_at=r[11],
    )


@dataclass(**_frozen)
class CaseRow:
    """One breakdown assistance case.

    ``status``: dispatching (a provider is being asked; ``provider`` and ``deadline`` set),
    accepted, unassigned (nobody: the operator queue, ``reason`` says why), closed.
    ``tried`` lists the providers already asked (comma-separated). ``shared`` is the JSON of what
    the operator or the provider chose to show on the tracking page. ``version`` increases with
    every change (the conditional updates compare it).
    """

    case_id: str
    created_at: float
    updated_at: float
    origin: str  # form, vehicle or operator
    status: str
    capability: str
    what: str
    lat: float | None
    lon: float | None
    address: str
    vehicle_desc: str
    phone: str
    tps: str | None
    vehicle: str | None
    provider: str | None
    deadline: float | None
    tried: str
    reason: str
    eta_min: int | None
    note: str
    shared: str
    accepted_at: float | None
    version: int


_CASE_COLS = (
    "case_id, created_at, updated_at, origin, status, capability, what, lat, lon, address, vehicle_desc, "
    "phone, tps, vehicle, provider, deadline, tried, reason, eta_min, note, shared, accepted_at, version"
)


def _case(r: Sequence[Any]) -> CaseRow:
    return CaseRow(**dict(zip(_CASE_COLS.split(", "), r, strict=True)))


_PLACEHOLDER = re.compile(r"\?")


def _pg(sql: str) -> str:
    n = iter(range(1, 1000))
    return _PLACEHOLDER.sub(lambda _: f"${next(n)}", sql)


class CallerStore:
    """The issue-14 tables on the gateway's store (SQLite or PostgreSQL)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def _q(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        store = self._store
        if isinstance(store, SqliteStore):

            def fn(conn: sqlite3.Connection) -> list[tuple[Any, ...]] | sqlite3.Error:
                conn.execute("SAVEPOINT caller")
                try:
                    rows = [tuple(r) for r in conn.execute(sql, args).fetchall()]
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO caller")
                    conn.execute("RELEASE caller")
                    return exc
                conn.execute("RELEASE caller")
                return rows

            out = await store.run(fn)
            if isinstance(out, sqlite3.Error):
                raise StoreError(f"caller store: {out}")
            return out
        if isinstance(store, PostgresStore):
            try:
                async with store.pool.acquire() as conn:
                    return [tuple(r) for r in await conn.fetch(_pg(sql), *args)]
            except DB_ERRORS as exc:
                raise StoreError(f"caller store: {exc!r}") from exc
        raise StoreError(f"caller links need a SQLite or PostgreSQL store, not {type(store).__name__}")

    # --- links ----------------------------------------------------------------------------------

    async def insert_link(self, link: LinkRow) -> bool:
        """Store a new link; False when its ``auto_key`` exists already (another replica made it)."""
        rows = await self._q(
            f"INSERT INTO caller_links ({_LINK_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT DO NOTHING RETURNING link_id",
            link.link_id,
            link.token_hash,
            link.purpose,
            link.incident_id,
            link.case_id,
            link.phone,
            link.lang,
            link.created_at,
            link.expires_at,
            link.max_uses,
            link.uses,
            link.revoked_at,
            link.created_by,
            link.auto_key,
            link.sms_state,
        )
        return bool(rows)

    async def link_by_hash(self, token_hash: bytes) -> LinkRow | None:
        rows = await self._q(f"SELECT {_LINK_COLS} FROM caller_links WHERE token_hash = ?", token_hash)
        return _link(rows[0]) if rows else None

    async def link(self, link_id: str) -> LinkRow | None:
        rows = await self._q(f"SELECT {_LINK_COLS} FROM caller_links WHERE link_id = ?", link_id)
        return _link(rows[0]) if rows else None

    async def links_of(self, *, incident_id: str | None = None, case_id: str | None = None) -> list[LinkRow]:
        col, value = ("incident_id", incident_id) if incident_id is not None else ("case_id", case_id)
        rows = await self._q(
            f"SELECT {_LINK_COLS} FROM caller_links WHERE {col} = ? ORDER BY created_at", value
        )
        return [_link(r) for r in rows]

    async def use_link(self, link_id: str, now: float) -> bool:
        """Count one use; False when the link is expired, revoked or used up (nothing counted)."""
        rows = await self._q(
            "UPDATE caller_links SET uses = uses + 1 WHERE link_id = ? AND revoked_at IS NULL "
            "AND expires_at > ? AND uses < max_uses RETURNING uses",
            link_id,
            now,
        )
        return bool(rows)

    async def revoke_link(self, link_id: str, now: float) -> bool:
        rows = await self._q(
            "UPDATE caller_links SET revoked_at = ? WHERE link_id = ? AND revoked_at IS NULL "
            "RETURNING link_id",
            now,
            link_id,
        )
        return bool(rows)

    async def set_sms_state(self, link_id: str, state: str) -> None:
        await self._q(
            "UPDATE caller_links SET sms_state = ? WHERE link_id = ? RETURNING link_id", state, link_id
        )

    async def mark_sms_lost(self, before: float) -> int:
        """Links whose SMS is still pending though made before ``before`` and that have no outbox
        row (made by a release before the outbox, or stopped between the two inserts): ``lost``."""
        rows = await self._q(
            "UPDATE caller_links SET sms_state = 'lost' WHERE sms_state = 'pending' AND created_at < ? "
            "AND link_id NOT IN (SELECT link_id FROM caller_sms) RETURNING link_id",
            before,
        )
        return len(rows)

    # --- SMS outbox -------------------------------------------------------------------------------

    async def insert_sms(
        self, link_id: str, base_url: str, *, now: float, owner: str, lease_until: float
    ) -> None:
        """A new pending SMS, claimed by its creator (who holds the token and sends it at once)."""
        await self._q(
            "INSERT INTO caller_sms (link_id, base_url, idem_key, next_at, claimed_by, lease_until) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING link_id",
            link_id,
            base_url,
            link_id,
            now,
            owner,
            lease_until,
        )

    async def sms(self, link_id: str, owner: str) -> SmsRow | None:
        """A pending SMS claimed by ``owner``; None when it is not (sent, or claimed elsewhere)."""
        rows = await self._q(
            f"SELECT {_SMS_COLS} FROM caller_sms s JOIN caller_links l ON l.link_id = s.link_id "
            "WHERE s.link_id = ? AND s.state = 'pending' AND s.claimed_by = ?",
            link_id,
            owner,
        )
        return _sms(rows[0]) if rows else None

    async def claim_due_sms(
        self, now: float, *, owner: str, lease_until: float, limit: int = 50
    ) -> list[str]:
        """Claim pending SMS due now whose lease is free or expired; one conditional UPDATE each,
        so of replicas racing for a row exactly one gets it."""
        due = await self._q(
            "SELECT link_id FROM caller_sms WHERE state = 'pending' AND next_at <= ? "
            "AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_at LIMIT ?",
            now,
            now,
            limit,
        )
        claimed = []
        for (link_id,) in due:
            rows = await self._q(
                "UPDATE caller_sms SET claimed_by = ?, lease_until = ? WHERE link_id = ? "
                "AND state = 'pending' AND (lease_until IS NULL OR lease_until < ?) RETURNING link_id",
                owner,
                lease_until,
                link_id,
                now,
            )
            claimed += [r[0] for r in rows]
        return claimed

    async def sms_attempt(self, link_id: str, key: str, *, owner: str, lease_until: float) -> int | None:
        """Count an attempt before it is made (a crash mid-POST leaves it counted: it may have
        reached the provider); its number, or None when this process no longer holds the claim."""
        rows = await self._q(
            "UPDATE caller_sms SET attempts = attempts + 1, lease_until = ? WHERE link_id = ? "
            "AND claimed_by = ? AND idem_key = ? AND state = 'pending' RETURNING attempts",
            lease_until,
            link_id,
            owner,
            key,
        )
        return int(rows[0][0]) if rows else None

    async def sms_wait(self, link_id: str, *, owner: str, next_at: float, lease_until: float) -> bool:
        rows = await self._q(
            "UPDATE caller_sms SET next_at = ?, lease_until = ? WHERE link_id = ? AND claimed_by = ? "
            "AND state = 'pending' RETURNING link_id",
            next_at,
            lease_until,
            link_id,
            owner,
        )
        return bool(rows)

    async def supersede_sms(self, row: SmsRow, new_key: str, *, owner: str) -> bool:
        """Give up ``row.key`` (attempted, unconfirmed) for ``new_key`` with no attempts."""
        rows = await self._q(
            "UPDATE caller_sms SET idem_key = ?, resends = resends + 1, attempts = 0 WHERE link_id = ? "
            "AND claimed_by = ? AND idem_key = ? AND state = 'pending' RETURNING link_id",
            new_key,
            row.link_id,
            owner,
            row.key,
        )
        return bool(rows)

    async def remint(self, link_id: str, old_hash: bytes, new_hash: bytes, now: float) -> bool:
        """Replace a live link's token hash, if it is still ``old_hash`` (the old token, never
        delivered, stops working at once)."""
        rows = await self._q(
            "UPDATE caller_links SET token_hash = ? WHERE link_id = ? AND token_hash = ? "
            "AND revoked_at IS NULL AND expires_at > ? RETURNING link_id",
            new_hash,
            link_id,
            old_hash,
            now,
        )
        return bool(rows)

    async def finish_sms(self, link_id: str, state: str, *, owner: str) -> bool:
        """``sent`` or ``failed``, by the claim's holder; the link's ``sms_state`` follows."""
        rows = await self._q(
            "UPDATE caller_sms SET state = ?, lease_until = NULL WHERE link_id = ? AND claimed_by = ? "
            "AND state = 'pending' RETURNING link_id",
            state,
            link_id,
            owner,
        )
        if rows:
            await self.set_sms_state(link_id, state)
        return bool(rows)

    async def release_sms(self, owner: str) -> None:
        """A stopping process frees its claims so that another replica (or its successor) sends them
        without waiting for the leases to run out."""
        await self._q(
            "UPDATE caller_sms SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = ? "
            "AND state = 'pending' RETURNING link_id",
            owner,
        )

    # --- assistance cases -----------------------------------------------------------------------

    async def insert_case(self, case: CaseRow) -> bool:
        """Store a new case; False when its id exists (a redelivered breakdown call)."""
        values = [getattr(case, c) for c in _CASE_COLS.split(", ")]
        rows = await self._q(
            f"INSERT INTO assistance_cases ({_CASE_COLS}) VALUES ({','.join('?' * len(values))}) "
            "ON CONFLICT DO NOTHING RETURNING case_id",
            *values,
        )
        return bool(rows)

    async def case(self, case_id: str) -> CaseRow | None:
        rows = await self._q(f"SELECT {_CASE_COLS} FROM assistance_cases WHERE case_id = ?", case_id)
        return _case(rows[0]) if rows else None

    async def cases(self, status: str | None = None, limit: int = 200) -> list[CaseRow]:
        if status is None:
            rows = await self._q(
                f"SELECT {_CASE_COLS} FROM assistance_cases ORDER BY created_at DESC LIMIT ?", limit
            )
        else:
            rows = await self._q(
                f"SELECT {_CASE_COLS} FROM assistance_cases WHERE status = ? "
                "ORDER BY created_at DESC LIMIT ?",
                status,
                limit,
            )
        return [_case(r) for r in rows]

    async def due_cases(self, now: float) -> list[CaseRow]:
        """Cases whose provider's answer is overdue (or whose dispatch never started)."""
        rows = await self._q(
            f"SELECT {_CASE_COLS} FROM assistance_cases WHERE status = 'dispatching' AND "
            "(deadline IS NULL OR deadline <= ?) ORDER BY created_at",
            now,
        )
        return [_case(r) for r in rows]

    async def next_deadline(self) -> float | None:
        rows = await self._q("SELECT min(deadline) FROM assistance_cases WHERE status = 'dispatching'")
        return rows[0][0] if rows and rows[0][0] is not None else None

    async def update_case(self, case: CaseRow, **changes: Any) -> CaseRow | None:
        """Apply ``changes`` if the case is still at ``case.version``; the new row, or None if not."""
        cols = list(changes)
        sets = ", ".join(f"{c} = ?" for c in cols)
        rows = await self._q(
            f"UPDATE assistance_cases SET {sets}, version = version + 1 WHERE case_id = ? AND version = ? "
            f"RETURNING {_CASE_COLS}",
            *[changes[c] for c in cols],
            case.case_id,
            case.version,
        )
        return _case(rows[0]) if rows else None

    # --- provider availability --------------------------------------------------------------------

    async def set_available(self, provider: str, available: bool, now: float) -> None:
        await self._q(
            "INSERT INTO assistance_availability (provider, available, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (provider) DO UPDATE SET available = excluded.available, "
            "updated_at = excluded.updated_at RETURNING provider",
            provider,
            int(available),
            now,
        )

    async def availability(self) -> dict[str, bool]:
        rows = await self._q("SELECT provider, available FROM assistance_availability")
        return {r[0]: bool(r[1]) for r in rows}

    # --- retention --------------------------------------------------------------------------------

    async def delete_before(self, cutoff: float) -> dict[str, int]:
        """Links and cases (with their positions, phones and what was shared) older than ``cutoff``:
        the same retention as incidents (``store.retention_days``)."""
        # A link's outbox row goes with it (a pending one is given up once the link expired).
        await self._q(
            "DELETE FROM caller_sms WHERE link_id IN (SELECT link_id FROM caller_links "
            "WHERE expires_at < ? AND created_at < ?) RETURNING link_id",
            cutoff,
            cutoff,
        )
        links = await self._q(
            "DELETE FROM caller_links WHERE expires_at < ? AND created_at < ? RETURNING link_id",
            cutoff,
            cutoff,
        )
        cases = await self._q(
            "DELETE FROM assistance_cases WHERE updated_at < ? "
            "AND status IN ('accepted', 'closed', 'unassigned') RETURNING case_id",
            cutoff,
        )
        return {"caller_links": len(links), "assistance_cases": len(cases)}
