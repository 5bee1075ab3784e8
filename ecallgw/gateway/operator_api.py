"""The operator API: the queue, one incident with its history, actions, and the live event stream.

=========================================== ========== =============================================
endpoint                                    role       what
=========================================== ========== =============================================
GET  /v1/incidents                          operator   the queue: filters ``status``, ``level``,
                                                       ``tps``, ``vehicle``, ``kind``, ``since``,
                                                       ``until``, ``q``; ``limit``, ``cursor``;
                                                       counters (audited)
GET  /v1/incidents/events                   operator   Server-Sent Events, live from now (``since``
                                                       or ``Last-Event-ID`` resume): ``revision``,
                                                       ``desk`` (claim, release, ack, note),
                                                       ``reset`` (audited)
GET  /v1/incidents/{id}                     operator   one incident: history, deliveries per
                                                       receiver, desk state, notes, trail, timeline,
                                                       linked incidents (audited)
POST /v1/incidents/{id}/actions             operator   ack, claim (assign), release, note, cancel,
                                                       escalate, resolve; confirm_storm,
                                                       dismiss_storm on a storm (audited)
=========================================== ========== =============================================

Views are audited (who saw which incident); actions go through the pipeline (the sequencer on
replicas) and are audited with the operator's name there. The queue's order is what needs a human
first: not acknowledged, then level (critical .. low), then oldest received; its cursor is the sort
key of a page's last row (base64url JSON), so paging is stable while nothing changes. docs/interfaces.md
is the contract.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import json
import math
import re
import time
from typing import Any

from aiohttp import web

from ecallgw.codecs import document
from ecallgw.config import HttpConfig
from ecallgw.errors import EncodeError, StoreError
from ecallgw.gateway.http_auth import Guard, Principal, Refuse
from ecallgw.gateway.intake import Intake
from ecallgw.gateway.pipeline import Pipeline
from ecallgw.gateway.records import OPERATOR_ACTIONS, DeskRecord
from ecallgw.gateway.sinks.operator_stream import DeskEvent, OperatorStream
from ecallgw.gateway.store import IncidentRow, Store
from ecallgw.gateway.store.desk import DeskEventRow, IncidentQuery, QueueRow
from ecallgw.gateway.store.protocol import RevisionRow
from ecallgw.model import IncidentSnapshot

__all__ = ["OperatorApi"]

_SSE_KEEPALIVE_S = 15.0
_STATUSES = ("open", "updated", "cancelled", "resolved")
_LEVELS = ("critical", "high", "medium", "low")
_KINDS = ("automatic", "manual", "test")
# Triage's (confirm_storm/dismiss_storm act on a storm's aggregate, issue 12) and the desk's own.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_OPERATOR = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_NOTE_MAX = 2000
_REASON_MAX = 200
_TRAIL = 20  # positions kept in an incident's trail


class _BadParameterError(Exception):
    """A request parameter that is wrong: its one-line message names it."""


class OperatorApi:
    """The operator endpoints, registered on the server's router behind its role guard."""

    def __init__(
        self,
        config: HttpConfig,
        pipeline: Pipeline | Intake,
        store: Store,
        stream: OperatorStream,
        refuse: Refuse,
    ) -> None:
        self._config = config
        self._pipeline = pipeline
        self._store = store
        self._stream = stream
        self._refuse = refuse
        self._sse_open = 0

    def register(self, router: web.UrlDispatcher, guard: Guard) -> None:
        router.add_get("/v1/incidents", guard("operator", self._list))
        router.add_get("/v1/incidents/events", guard("operator", self._capped_events))
        router.add_get("/v1/incidents/{id}", guard("operator", self._get))
        router.add_post("/v1/incidents/{id}/actions", guard("operator", self._action))

    @property
    def _non_psap(self) -> tuple[str, ...]:
        return self._pipeline.non_psap

    # --- the queue ------------------------------------------------------------------------------

    async def _list(self, request: web.Request, who: Principal) -> web.StreamResponse:
        try:
            query = _query(request.query, self._non_psap)
        except _BadParameterError as exc:
            return self._refuse(400, str(exc))
        # One row more than the page: whether there is a next page, without a second query.
        rows = await self._store.list_queue(dataclasses.replace(query, limit=query.limit + 1))
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        counters = await self._store.queue_counters(self._non_psap)
        # A list shows personal data (vehicle, place, callback): who saw which incidents.
        note = f"{_describe(request.query)} incidents=" + ",".join(r.incident_id for r in rows)
        await self._pipeline.audit_view("", actor=who.name, role=who.role, action="list", note=note)
        return web.json_response(
            {
                "incidents": [_item(r) for r in rows],
                "next_cursor": _cursor(rows[-1].key) if more and rows else None,
                "counters": counters,
            }
        )

    # --- one incident ---------------------------------------------------------------------------

    async def _get(self, request: web.Request, who: Principal) -> web.StreamResponse:
        incident_id = request.match_info["id"]
        found = await self._store.get_incident(incident_id)
        if found is None:
            return self._refuse(404, "no such incident")
        row, history, deliveries = found
        view = await self._store.desk_view(incident_id, self._non_psap)
        await self._pipeline.audit_view(incident_id, actor=who.name, role=who.role)
        now = time.time()
        revisions = []
        for rev in history:
            try:
                doc: Any = document.json_document(rev.snapshot, forwarded_at=now)
            except EncodeError as exc:
                doc = {"error": str(exc)}
            revisions.append(
                {
                    "seq": rev.seq,
                    "outcome": rev.outcome,
                    "reasons": [{"code": c, "text": t} for c, t in rev.reasons],
                    "document": doc,
                }
            )
        audit = await self._store.audit_log(incident_id)
        base = _item(view.row) if view is not None else _row_json(row)
        events = view.events if view is not None else ()
        snaps = [rev.snapshot for rev in history]
        return web.json_response(
            {
                **base,
                "history": revisions,
                "deliveries": deliveries,
                "receivers": _receivers(deliveries),
                "audit": audit,
                "notes": [
                    {"at": _iso(e.record.at), "operator": e.record.operator, "text": e.record.text}
                    for e in events
                    if e.record.kind == "note"
                ],
                "trail": _trail(snaps),
                "timeline": _timeline(history, deliveries, audit, events),
                "linked": list(view.linked) if view is not None else [],
            }
        )

    # --- actions --------------------------------------------------------------------------------

    async def _action(self, request: web.Request, who: Principal) -> web.StreamResponse:
        incident_id = request.match_info["id"]
        try:
            async with asyncio.timeout(self._config.read_timeout_s):
                body = await request.json()
        except TimeoutError:
            return self._refuse(408, f"body not received within {self._config.read_timeout_s:g} s")
        except (ValueError, UnicodeDecodeError, RecursionError):
            return self._refuse(400, 'body must be JSON: {"action": ..., "note": ...}')
        if not isinstance(body, dict):
            return self._refuse(400, "body must be a JSON object")
        try:
            action, note = _action_of(body)
        except _BadParameterError as exc:
            return self._refuse(400, str(exc))
        try:
            result = await self._pipeline.action(
                incident_id, action, actor=who.name, role=who.role, note=note
            )
        except StoreError:
            return self._refuse(503, "not stored; retry", {"Retry-After": "1"})
        status = {"unknown_incident": 404, "rejected": 409, "queued": 202}.get(result.outcome, 200)
        return web.json_response(
            {
                "incident_id": incident_id,
                "outcome": result.outcome,
                "revision": result.revision,
                "reasons": [{"code": c, "text": t} for c, t in result.reasons],
            },
            status=status,
        )

    # --- the event stream -----------------------------------------------------------------------

    async def _capped_events(self, request: web.Request, who: Principal) -> web.StreamResponse:
        """`_events` for at most ``http.max_sse_subscribers`` clients at once (503 beyond)."""
        cap = self._config.max_sse_subscribers
        if self._sse_open >= cap:
            return self._refuse(503, f"{cap} event streams are open, the most served", {"Retry-After": "5"})
        self._sse_open += 1
        try:
            return await self._events(request, who)
        finally:
            self._sse_open -= 1

    async def _events(self, request: web.Request, who: Principal) -> web.StreamResponse:
        # Live by default; Last-Event-ID (a reconnecting EventSource) or ?since= resume after it.
        # ``after`` is the old name of ``since``.
        last = (
            request.headers.get("Last-Event-ID") or request.query.get("since") or request.query.get("after")
        )
        resume: int | None = None
        if last is not None and last != "":
            try:
                resume = int(last)
            except ValueError:
                return self._refuse(400, "Last-Event-ID (or since) must be an integer")
            if resume < 0:
                return self._refuse(400, "Last-Event-ID (or since) must be >= 0")
        await self._pipeline.audit_view(
            "", actor=who.name, role=who.role, action="subscribe", note=f"since={resume}"
        )
        queue = self._stream.subscribe_desk()  # subscribe first: nothing falls between backlog and live
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        try:
            newest = await self._store.last_stream_seq()
            await resp.prepare(request)
            if resume is None:
                after = newest
            elif resume > newest:
                # An id this store never gave (another store, a restored backup): say so, and go
                # on live from here; the client reloads what it shows.
                after = newest
                await resp.write(_reset(newest))
            else:
                after = resume
                while True:  # the backlog from the store
                    backlog = await self._store.stream_after(after, 500)
                    for ev in backlog:
                        await resp.write(_sse_stored(ev))
                        after = ev.seq
                    if len(backlog) < 500:
                        break
            while True:
                try:
                    async with asyncio.timeout(_SSE_KEEPALIVE_S):
                        event = await queue.get()
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                if event is None:
                    break  # fell behind or shutting down: the client resumes with Last-Event-ID
                if event.seq <= after:
                    continue
                if isinstance(event, DeskEvent):
                    await resp.write(_sse_desk(event.seq, event.record))
                else:
                    await resp.write(_sse(event.seq, event.snapshot))
                after = event.seq
        except ConnectionResetError:
            pass  # the operator's client went away
        finally:
            self._stream.unsubscribe(queue)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await resp.write_eof()
        return resp


# --- parameters -------------------------------------------------------------------------------------


def _multi(values: list[str], name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A repeatable parameter that also takes a comma list, each value one of ``allowed``."""
    out: list[str] = []
    for v in values:
        for raw in v.split(","):
            part = raw.strip()
            if part not in allowed:
                raise _BadParameterError(
                    f"{name} must be one or more of {', '.join(allowed)} (got {part[:40]!r})"
                )
            if part not in out:
                out.append(part)
    return tuple(out)


def _time(text: str, name: str) -> float:
    """ISO 8601 (a time without an offset is UTC) or epoch seconds."""
    try:
        value = float(text)
    except ValueError:
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise _BadParameterError(
                f"{name} must be ISO 8601 (2026-12-05T03:00:00Z) or epoch seconds"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.timestamp()
    if not math.isfinite(value):
        raise _BadParameterError(f"{name} must be a finite number of epoch seconds")
    return value


def _query(q: Any, non_psap: tuple[str, ...]) -> IncidentQuery:
    """The queue's filters from the query string; `_BadParameterError` names the first wrong parameter."""
    known = {"status", "level", "tps", "vehicle", "kind", "since", "until", "q", "limit", "cursor"}
    for key in q:
        if key not in known:
            raise _BadParameterError(f"unknown parameter {key[:40]!r}: one of {', '.join(sorted(known))}")
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise _BadParameterError("limit must be an integer from 1 to 1000") from None
    if not 1 <= limit <= 1000:
        raise _BadParameterError("limit must be an integer from 1 to 1000")
    single: dict[str, str | None] = {}
    for key in ("tps", "vehicle", "kind", "since", "until", "q", "cursor"):
        values = q.getall(key, [])
        if len(values) > 1:
            raise _BadParameterError(f"{key} may be given once")
        single[key] = values[0] if values else None
    for key in ("tps", "vehicle"):
        value = single[key]
        if value is not None and not _NAME.fullmatch(value):
            raise _BadParameterError(f"{key} must be 1-64 of A-Z a-z 0-9 _ -")
    kind = single["kind"]
    if kind is not None and kind not in _KINDS:
        raise _BadParameterError("kind must be automatic, manual or test")
    text = single["q"]
    if text is not None and not 1 <= len(text) <= 200:
        raise _BadParameterError("q must be 1-200 characters (an incident id or a call id)")
    since = None if single["since"] is None else _time(single["since"], "since")
    until = None if single["until"] is None else _time(single["until"], "until")
    return IncidentQuery(
        statuses=_multi(q.getall("status", []), "status", _STATUSES),
        levels=_multi(q.getall("level", []), "level", _LEVELS),
        tps=single["tps"],
        vehicle=single["vehicle"],
        kind=kind,
        since=since,
        until=until,
        q=text,
        limit=limit,
        after=None if single["cursor"] is None else _uncursor(single["cursor"]),
        non_psap=non_psap,
    )


def _describe(q: Any) -> str:
    return " ".join(f"{k}={v[:100]}" for k, v in q.items())


def _cursor(key: tuple[int, int, float, str]) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _uncursor(text: str) -> tuple[int, int, float, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        acked, rank, received_at, incident_id = json.loads(raw)
        if (
            acked not in (0, 1)
            or not isinstance(rank, int)
            or not isinstance(received_at, int | float)
            or not isinstance(incident_id, str)
        ):
            raise ValueError
        return (int(acked), rank, float(received_at), incident_id)
    except (ValueError, TypeError):
        raise _BadParameterError("cursor must be a next_cursor this API gave") from None


def _action_of(body: dict[str, Any]) -> tuple[str, str]:
    """(the journaled action, the note) of an action's body; `_BadParameterError` names the wrong field."""
    action = body.get("action")
    if action not in OPERATOR_ACTIONS:
        raise _BadParameterError(f"action must be one of {', '.join(OPERATOR_ACTIONS)}")
    note = body.get("note", "")
    if note is None:
        note = ""
    if not isinstance(note, str) or len(note) > _NOTE_MAX:
        raise _BadParameterError(f"note must be a string of at most {_NOTE_MAX} characters")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError:
        raise _BadParameterError("note must be Unicode text (no lone surrogates)") from None
    note = note.strip()
    if action == "note" and not note:
        raise _BadParameterError("note is required for action note")
    if action == "cancel":
        reason = body.get("reason", "")
        if not isinstance(reason, str) or not reason.strip():
            raise _BadParameterError("reason is required to cancel (why: false trigger, test, ...)")
        reason = reason.strip()
        if len(reason) > _REASON_MAX or any(c in reason for c in "\r\n"):
            raise _BadParameterError(f"reason must be one line of at most {_REASON_MAX} characters")
        if not note:
            raise _BadParameterError("note is required to cancel")
        return f"cancel:{reason}", note
    if action == "claim":
        assignee = body.get("assignee")
        if assignee is None:
            return "claim", note
        if not isinstance(assignee, str) or not _OPERATOR.fullmatch(assignee):
            raise _BadParameterError("assignee must be an operator's name (1-64 of A-Z a-z 0-9 _ . @ -)")
        return f"claim:{assignee}", note
    if "assignee" in body:
        raise _BadParameterError("assignee goes with action claim only")
    return str(action), note


# --- rendering --------------------------------------------------------------------------------------


def _iso(t: float | None) -> str | None:
    return None if t is None else document.iso_time(t)


def _reasons(snap: IncidentSnapshot | None, stored: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    """The latest revision's reasons, severity reasons first, each code once."""
    pairs: list[tuple[str, str]] = []
    if snap is not None:
        pairs += [(r.code, r.text) for r in snap.severity.reasons]
        pairs += [(r.code, r.text) for r in snap.reasons]
    pairs += list(stored)
    seen: set[str] = set()
    out = []
    for code, text in pairs:
        if code not in seen:
            seen.add(code)
            out.append({"code": code, "text": text})
    return out


def _item(r: QueueRow) -> dict[str, Any]:
    """One incident as the queue shows it (docs/interfaces.md)."""
    s = r.snapshot
    position = None
    direction = None
    passengers = None
    if s is not None:
        if s.position is not None:
            position = {"lat": s.position.lat, "lon": s.position.lon, "trusted": s.position.trusted}
        if s.msd is not None:
            st = s.msd.msd.msd_structure
            direction = float(st.vehicle_direction * 2) if st.vehicle_direction <= 179 else None
            passengers = st.number_of_passengers
    open_ = r.status in ("open", "updated")
    return {
        "incident_id": r.incident_id,
        "revision": r.revision,
        "status": r.status,
        "level": r.level,
        "score": r.score,
        "tps": r.tps,
        "vehicle": r.vehicle,
        "call_id": s.call_id if s is not None else r.call_id,
        "automatic": s.automatic if s is not None else r.kind == "automatic",
        "test": s.test if s is not None else r.kind == "test",
        "position": position,
        "direction_deg": direction,
        "passengers": passengers,
        "callback": s.callback if s is not None else None,
        "lang": s.lang if s is not None else None,
        "reasons": _reasons(s, r.reasons),
        "claimed_by": r.claimed_by,
        "acked": r.acked,
        "escalation_due_at": _iso(r.escalation_due_at) if open_ and not r.acked else None,
        "at_psap": r.at_psap,
        "scene_id": r.scene_id,
        # A storm's aggregate (id storm-...): the incident ids it stands for; empty for an incident.
        "members": list(s.members) if s is not None else [],
        "received_at": document.iso_time(r.received_at),
        "updated_at": document.iso_time(r.updated_at),
    }


def _row_json(r: IncidentRow) -> dict[str, Any]:
    """An incident the desk view could not read (it went meanwhile): its stored row."""
    return {
        "incident_id": r.incident_id,
        "revision": r.revision,
        "status": r.status,
        "level": r.level,
        "score": r.score,
        "tps": r.tps,
        "vehicle": r.vehicle,
        "claimed_by": None,
        "acked": False,
        "escalation_due_at": None,
        "received_at": document.iso_time(r.received_at),
        "updated_at": document.iso_time(r.updated_at),
    }


def _receivers(deliveries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deliveries per receiver: revisions routed, confirmed, pending, dead-lettered; attempts of the
    settled ones; the last dead letter's reason; when the receiver last confirmed one."""
    by: dict[str, dict[str, Any]] = {}
    confirmed_at: dict[str, float] = {}
    for d in deliveries:
        name = d["receiver"]
        r = by.setdefault(
            name,
            {
                "receiver": name,
                "revisions": 0,
                "confirmed": 0,
                "pending": 0,
                "dead_lettered": 0,
                "attempts": 0,
                "last_error": None,
                "confirmed_at": None,
            },
        )
        r["revisions"] += 1
        r["attempts"] += d.get("attempts") or 0
        if d.get("delivered_at") is not None:
            r["confirmed"] += 1
            confirmed_at[name] = max(confirmed_at.get(name, 0.0), d["delivered_at"])
        elif d.get("dead_letter_reason") is not None:
            r["dead_lettered"] += 1
            r["last_error"] = d["dead_letter_reason"]
        else:
            r["pending"] += 1
    for name, at in confirmed_at.items():
        by[name]["confirmed_at"] = _iso(at)
    return list(by.values())


def _trail(snaps: list[IncidentSnapshot]) -> list[dict[str, Any]]:
    """The incident's positions over its revisions (MSD, then updates), newest last, repeats dropped."""
    out: list[dict[str, Any]] = []
    last: tuple[float, float] | None = None
    for s in snaps:
        p = s.position
        if p is None or (p.lat, p.lon) == last:
            continue
        last = (p.lat, p.lon)
        out.append(
            {
                "at": _iso(p.at if p.at is not None else s.updated_at),
                "lat": p.lat,
                "lon": p.lon,
                "trusted": p.trusted,
                "source": p.source,
                "revision": s.revision,
            }
        )
    return out[-_TRAIL:]


_REDIAL_CODES = frozenset({"redial_joined", "provider_joined", "redial_after_close", "redial"})
_SIGNAL_OUTCOMES = frozenset(
    {"new_incident", "new_revision", "joined_incident", "cancel_requested", "cancelled", "duplicate"}
)
_VIEWS = frozenset({"view", "list", "subscribe", "quarantine"})


def _timeline(
    history: list[Any], deliveries: list[dict[str, Any]], audit: list[dict[str, Any]], events: tuple[Any, ...]
) -> list[dict[str, Any]]:
    """Signals (redials as such), revisions, deliveries, operator actions and notes, by time."""
    items: list[tuple[float, int, dict[str, Any]]] = []
    for rev in history:
        s = rev.snapshot
        codes = {c for c, _ in rev.reasons}
        if rev.outcome in _SIGNAL_OUTCOMES and not codes & {"cancelled_by_operator"}:
            kind = "redial" if codes & _REDIAL_CODES else "signal"
            items.append((s.updated_at, 0, {"kind": kind, "outcome": rev.outcome, "revision": s.revision}))
        items.append(
            (
                s.updated_at,
                1,
                {
                    "kind": "revision",
                    "revision": s.revision,
                    "status": s.status,
                    "level": s.severity.level,
                    "outcome": rev.outcome,
                    "reasons": [{"code": c, "text": t} for c, t in rev.reasons],
                },
            )
        )
    for d in deliveries:
        if d.get("delivered_at") is not None:
            items.append(
                (
                    d["delivered_at"],
                    2,
                    {
                        "kind": "delivery",
                        "receiver": d["receiver"],
                        "revision": d["revision"],
                        "state": "confirmed",
                        "attempts": d.get("attempts"),
                    },
                )
            )
        elif d.get("dead_lettered_at") is not None:
            items.append(
                (
                    d["dead_lettered_at"],
                    2,
                    {
                        "kind": "delivery",
                        "receiver": d["receiver"],
                        "revision": d["revision"],
                        "state": "dead_lettered",
                        "error": d.get("dead_letter_reason"),
                    },
                )
            )
    for a in audit:
        if a["action"] in _VIEWS or a["action"] == "note":
            continue  # views are the audit's; a note is the timeline's note entry
        verb, _, arg = str(a["action"]).partition(":")
        entry = {"kind": "action", "action": verb, "operator": a["actor"], "outcome": a["outcome"]}
        if verb == "claim" and arg:
            entry["assignee"] = arg
        if verb == "cancel" and arg:
            entry["reason"] = arg
        items.append((a["at"], 3, entry))
    for e in events:
        if e.record.kind == "note":
            items.append(
                (e.record.at, 4, {"kind": "note", "operator": e.record.operator, "text": e.record.text})
            )
    items.sort(key=lambda x: (x[0], x[1]))
    return [{"at": _iso(at), **entry} for at, _, entry in items]


def _desk_json(record: DeskRecord) -> dict[str, Any]:
    return {
        "incident_id": record.incident_id,
        "kind": record.kind,
        "operator": record.operator,
        "at": _iso(record.at),
        "claimed_by": record.claimed_by,
        "acked": record.acked,
        "text": record.text,
    }


def _sse(seq: int, snapshot: IncidentSnapshot) -> bytes:
    try:
        data = document.render_json(snapshot, forwarded_at=time.time())
    except EncodeError as exc:
        data = json.dumps(
            {"incident_id": snapshot.incident_id, "revision": snapshot.revision, "error": str(exc)}
        ).encode()
    return b"id: %d\nevent: revision\ndata: %s\n\n" % (seq, data)


def _sse_desk(seq: int, record: DeskRecord) -> bytes:
    # json.dumps escapes line breaks: a note with CRLF stays one data line.
    data = json.dumps(_desk_json(record), ensure_ascii=False).encode()
    return b"id: %d\nevent: desk\ndata: %s\n\n" % (seq, data)


def _sse_stored(ev: RevisionRow | DeskEventRow) -> bytes:
    if isinstance(ev, DeskEventRow):
        return _sse_desk(ev.seq, ev.record)
    return _sse(ev.seq, ev.snapshot)


def _reset(last_seq: int) -> bytes:
    # With the id, a client's next reconnect resumes from here instead of being reset again.
    return b"id: %d\nevent: reset\ndata: %s\n\n" % (last_seq, json.dumps({"last_seq": last_seq}).encode())
