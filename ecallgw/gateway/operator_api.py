"""The operator API: incidents, their history, actions, and the live event stream.

=========================================== ========== =============================================
endpoint                                    role       what
=========================================== ========== =============================================
GET  /v1/incidents                          operator   list (``status``, ``level``, ``limit``) (audited)
GET  /v1/incidents/events                   operator   Server-Sent Events, one per revision (audited)
GET  /v1/incidents/{id}                     operator   one incident with its history (audited)
POST /v1/incidents/{id}/actions             operator   ack, cancel, escalate, resolve (audited)
=========================================== ========== =============================================

Views are audited (who saw which incident); actions go through the pipeline (the sequencer on
replicas) and are audited with the operator's name there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from ecallgw.codecs import document
from ecallgw.config import HttpConfig
from ecallgw.errors import EncodeError, StoreError
from ecallgw.gateway.http_auth import Guard, Principal, Refuse
from ecallgw.gateway.intake import Intake
from ecallgw.gateway.pipeline import Pipeline
from ecallgw.gateway.sinks.operator_stream import OperatorStream
from ecallgw.gateway.store import IncidentRow, Store
from ecallgw.triage import ACTIONS

__all__ = ["OperatorApi"]

_SSE_KEEPALIVE_S = 15.0


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

    async def _list(self, request: web.Request, who: Principal) -> web.StreamResponse:
        q = request.query
        try:
            limit = max(1, min(1000, int(q.get("limit", "100"))))
        except ValueError:
            return self._refuse(400, "limit must be an integer")
        status = q.get("status")
        level = q.get("level")
        if status is not None and status not in ("open", "updated", "cancelled", "resolved"):
            return self._refuse(400, "status must be open, updated, cancelled or resolved")
        if level is not None and level not in ("critical", "high", "medium", "low"):
            return self._refuse(400, "level must be critical, high, medium or low")
        rows = await self._store.list_incidents(status=status, level=level, limit=limit)
        # A list shows personal data (vehicle, time, place by level): who saw which incidents.
        note = f"status={status} level={level} limit={limit} incidents=" + ",".join(
            r.incident_id for r in rows
        )
        await self._pipeline.audit_view("", actor=who.name, role=who.role, action="list", note=note)
        return web.json_response({"incidents": [_row_json(r) for r in rows]})

    async def _get(self, request: web.Request, who: Principal) -> web.StreamResponse:
        incident_id = request.match_info["id"]
        found = await self._store.get_incident(incident_id)
        if found is None:
            return self._refuse(404, "no such incident")
        row, history, deliveries = found
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
        return web.json_response(
            {**_row_json(row), "history": revisions, "deliveries": deliveries, "audit": audit}
        )

    async def _action(self, request: web.Request, who: Principal) -> web.StreamResponse:
        incident_id = request.match_info["id"]
        try:
            async with asyncio.timeout(self._config.read_timeout_s):
                body = await request.json()
        except TimeoutError:
            return self._refuse(408, f"body not received within {self._config.read_timeout_s:g} s")
        except (ValueError, UnicodeDecodeError):
            return self._refuse(400, 'body must be JSON: {"action": ..., "note": ...}')
        if not isinstance(body, dict):
            return self._refuse(400, "body must be a JSON object")
        action = body.get("action")
        note = body.get("note", "")
        if action not in ACTIONS:  # confirm_storm/dismiss_storm act on a storm's aggregate (issue 12)
            return self._refuse(400, "action must be one of " + ", ".join(ACTIONS))
        if not isinstance(note, str) or len(note) > 2000:
            return self._refuse(400, "note must be a string of at most 2000 characters")
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
        last = request.headers.get("Last-Event-ID") or request.query.get("after") or "0"
        try:
            after = int(last)
        except ValueError:
            return self._refuse(400, "Last-Event-ID must be an integer")
        await self._pipeline.audit_view(
            "", actor=who.name, role=who.role, action="subscribe", note=f"after={after}"
        )
        queue = self._stream.subscribe()  # subscribe first: nothing falls between backlog and live
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        try:
            await resp.prepare(request)
            while True:  # the backlog from the store
                backlog = await self._store.revisions_after(after, 500)
                for rev in backlog:
                    await resp.write(_sse(rev.seq, rev.snapshot))
                    after = rev.seq
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
                await resp.write(_sse(event.seq, event.snapshot))
                after = event.seq
        except ConnectionResetError:
            pass  # the operator's client went away
        finally:
            self._stream.unsubscribe(queue)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await resp.write_eof()
        return resp


def _row_json(r: IncidentRow) -> dict[str, Any]:
    return {
        "incident_id": r.incident_id,
        "revision": r.revision,
        "status": r.status,
        "level": r.level,
        "score": r.score,
        "tps": r.tps,
        "vehicle": r.vehicle,
        "received_at": document.iso_time(r.received_at),
        "updated_at": document.iso_time(r.updated_at),
    }


def _sse(seq: int, snapshot: Any) -> bytes:
    try:
        data = document.render_json(snapshot, forwarded_at=time.time())
    except EncodeError as exc:
        data = json.dumps(
            {"incident_id": snapshot.incident_id, "revision": snapshot.revision, "error": str(exc)}
        ).encode()
    return b"id: %d\nevent: revision\ndata: %s\n\n" % (seq, data)
