"""The HTTP server: signal ingest for providers, the operator API, and metrics and health for SREs.

Every endpoint but ``/healthz`` needs a bearer token from ``[auth]``; its role decides what it may do:

=========================================== ========== =============================================
endpoint                                    role       what
=========================================== ========== =============================================
POST /v1/ecall/{tps}/{vehicle}/{kind}       provider   ingest; only under the token's own ``tps``
GET  /v1/incidents                          operator   list (``status``, ``level``, ``limit``) (audited)
GET  /v1/incidents/events                   operator   Server-Sent Events, one per revision (audited)
GET  /v1/incidents/{id}                     operator   one incident with its history (audited)
POST /v1/incidents/{id}/actions             operator   ack, cancel, escalate, resolve (audited)
GET  /v1/quarantine, /v1/dead-letters       sre        what could not be decoded (audited) or delivered
GET  /metrics, /readyz                      sre        Prometheus text; readiness
GET  /healthz                               (none)     the process is alive
=========================================== ========== =============================================

Ingest answers 202 with the incident id only after the signal is durably stored, 400 naming the
problem when it cannot be decoded (the payload is kept in quarantine), 401/403 for a missing, wrong
or foreign token, 413 over the size limit, 415 for an unknown body type, 429 over the provider's rate.
Every error answer is JSON ``{"error": ...}``. Failed authentications are logged (never the token);
an address that sends too many unknown tokens is refused for a while (`AuthThrottle`). Slow clients
are bounded by ``http.read_timeout_s`` (headers, then body), event streams by ``max_sse_subscribers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ecallgw.codecs import document
from ecallgw.codecs.envelope import MAX_ENVELOPE_BYTES
from ecallgw.config import AuthConfig, HttpConfig
from ecallgw.errors import ConfigError, EncodeError, StoreError
from ecallgw.gateway.health import Health
from ecallgw.gateway.intake import Intake
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.pipeline import Pipeline
from ecallgw.gateway.records import RawSignal
from ecallgw.gateway.sinks.operator_stream import OperatorStream
from ecallgw.gateway.store import IncidentRow, Store
from ecallgw.gateway.tls import cert_sha256, peer_common_name, server_context

__all__ = ["HttpServer", "Principal"]

log = logging.getLogger("ecallgw.http")
access_log = logging.getLogger("ecallgw.access")
_ROLE = web.RequestKey("ecallgw_role", str)  # the authenticated principal's role, for the access log

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KINDS = frozenset({"msd", "cancel", "position"})
MSGPACK = "application/msgpack"
RAW_MSD = document.MSD_MEDIA_TYPE.lower()
_STORE_TIMEOUT_S = 30.0
_SSE_KEEPALIVE_S = 15.0
_UNKNOWN_TOKEN = "unknown token"
_AUTH_FAILURES = 10  # unknown tokens from one address within _AUTH_WINDOW_S ...
_AUTH_WINDOW_S = 60.0
_AUTH_BLOCK_S = 60.0  # ... refuse it (429) for this long
_AUTH_ADDRESSES = 10_000  # addresses remembered (least recently failed forgotten first)


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who a bearer token belongs to."""

    name: str
    role: str
    tps: str = ""


class _Bucket:
    """Token bucket of one provider's ingest rate."""

    __slots__ = ("level", "stamp")

    def __init__(self, burst: float) -> None:
        self.level = burst
        self.stamp = time.monotonic()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpServer:
    """The aiohttp application and its site; an async context manager that listens while open.

    Args:
        config: the ``[http]`` table.
        auth: bearer tokens.
        pipeline: where ingested signals and operator actions go.
        store: incidents, history, quarantine and dead letters for the API.
        stream: the operator event stream.
        metrics: the gateway's metrics.
        health: readiness checks.
        access_log: log one line per request on ``ecallgw.access`` (``log.access``).
    """

    def __init__(
        self,
        config: HttpConfig,
        auth: AuthConfig,
        pipeline: Pipeline | Intake,
        store: Store,
        stream: OperatorStream,
        metrics: Metrics,
        health: Health,
        *,
        access_log: bool = True,
    ) -> None:
        self._config = config
        self._access_log = access_log
        self._pipeline = pipeline
        self._store = store
        self._stream = stream
        self._metrics = metrics
        self._health = health
        # Tokens are looked up by their SHA-256: a dict lookup does not leak the token by timing.
        self._tokens = {
            hashlib.sha256(t.token.reveal().encode()).digest(): Principal(name=t.name, role=t.role, tps=t.tps)
            for t in auth.tokens
            if t.token  # an entry may name its holder by client certificate only
        }
        # A client certificate verified against http.client_ca_file names its holder by fingerprint
        # ("sha256:{hex}") or subject CN ("cn:{name}").
        self._certs = {
            key: Principal(name=t.name, role=t.role, tps=t.tps)
            for t in auth.tokens
            for key in (
                f"cn:{t.cert_cn}" if t.cert_cn else "",
                f"sha256:{t.cert_sha256.replace(':', '').lower()}" if t.cert_sha256 else "",
            )
            if key
        }
        self._buckets: dict[str, _Bucket] = {}
        self._throttle = AuthThrottle(
            limit=_AUTH_FAILURES,
            window_s=_AUTH_WINDOW_S,
            block_s=_AUTH_BLOCK_S,
            max_addresses=_AUTH_ADDRESSES,
        )
        self._sse_open = 0
        if not auth.tokens:
            log.warning(
                "auth.tokens is empty: every endpoint but /healthz refuses every request (401), "
                "ingest included",
                extra={"event": "no_tokens"},
            )
        self._runner: web.AppRunner | None = None
        self._accepting = True
        self.port = config.port
        self.app = self._build()

    def _build(self) -> web.Application:
        app = web.Application(
            client_max_size=self._config.max_body_bytes,
            middlewares=[self._access, self._json_errors],
            # A connection that has not sent a whole request head within read_timeout_s of its
            # opening (or of the previous answer) is closed: aiohttp's keep-alive timer fires while
            # the handler still waits for a complete message, partial headers or none.
            handler_args={"keepalive_timeout": self._config.read_timeout_s},
        )
        r = app.router
        r.add_post("/v1/ecall/{tps}/{vehicle}/{kind}", self._role("provider", self._ingest))
        r.add_get("/v1/incidents", self._role("operator", self._list))
        r.add_get("/v1/incidents/events", self._role("operator", self._capped_events))
        r.add_get("/v1/incidents/{id}", self._role("operator", self._get))
        r.add_post("/v1/incidents/{id}/actions", self._role("operator", self._action))
        r.add_get("/v1/quarantine", self._role("sre", self._quarantine))
        r.add_get("/v1/dead-letters", self._role("sre", self._dead_letters))
        r.add_get("/metrics", self._role("sre", self._metrics_page))
        r.add_get("/readyz", self._role("sre", self._readyz))
        r.add_get("/healthz", self._healthz)
        return app

    async def __aenter__(self) -> HttpServer:
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        cfg = self._config
        # Built at start: a rotated certificate or CA takes effect on restart. Loopback-only
        # plaintext is enforced by the configuration (http.host, http.allow_plaintext).
        tls = (
            server_context(
                cfg.tls_cert_file,
                cfg.tls_key_file,
                client_ca_file=cfg.client_ca_file,
                require_client_cert=cfg.require_client_cert,
            )
            if cfg.tls_cert_file
            else None
        )
        site = web.TCPSite(self._runner, cfg.host, cfg.port, ssl_context=tls)
        try:
            await site.start()
        except OSError as exc:  # port taken (or privileged), or a host that is not ours: refuse to start
            await self._runner.cleanup()
            key, value = (
                ("http.host", cfg.host) if exc.errno == errno.EADDRNOTAVAIL else ("http.port", cfg.port)
            )
            # os.strerror: uvloop's own message repeats the address.
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(key, value, f"cannot listen on {cfg.host}:{cfg.port}: {reason}") from exc
        for address in self._runner.addresses:  # the bound port when 0 was asked for
            self.port = int(address[1])
            break
        log.info(
            "http listening",
            extra={
                "address": f"{cfg.host}:{self.port}",
                "tls": tls is not None,
                "client_certs": "required" if cfg.require_client_cert else bool(cfg.client_ca_file),
            },
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stream.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop_intake(self) -> None:
        """Refuse new ingest with 503 (draining); the API stays up until the server closes."""
        self._accepting = False

    # --- auth -----------------------------------------------------------------------------------

    def _principal(self, request: web.Request) -> Principal | None:
        header = request.headers.get("Authorization", "")
        if not header and self._certs and request.transport is not None:
            # No token: a client certificate (verified in the handshake) may say who this is.
            ssl_object = request.transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            if der is None:
                return None
            cn = peer_common_name(ssl_object)
            return self._certs.get(f"sha256:{cert_sha256(der)}") or (
                self._certs.get(f"cn:{cn}") if cn is not None else None
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        return self._tokens.get(hashlib.sha256(token.strip().encode()).digest())

    def _role(
        self, role: str, handler: Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]
    ) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            remote = request.remote or "unknown"
            retry_after = self._throttle.retry_after(remote)
            if retry_after is not None:
                return self._refuse(
                    429,
                    "too many failed authentications from this address",
                    {"Retry-After": str(retry_after)},
                )
            who = self._principal(request)
            if who is None:
                self._auth_failed(request, remote, _auth_failure(request))
                return self._refuse(401, "missing or unknown bearer token", {"WWW-Authenticate": "Bearer"})
            request[_ROLE] = who.role
            if who.role != role:
                log.warning(
                    "authorization refused",
                    extra={
                        "event": "auth_refused",
                        "remote": remote,
                        "door": _door(request),
                        "holder": who.name,
                        "reason": f"a {who.role} may not use this endpoint",
                    },
                )
                return self._refuse(403, f"a {who.role} token may not use this endpoint")
            return await handler(request, who)

        return guarded

    def _auth_failed(self, request: web.Request, remote: str, reason: str) -> None:
        """Log a failed authentication (never the token); count a wrong guess against the address.

        Only an unknown token is a guess; a request with no token (a scanner, a misconfigured
        probe) learns nothing, and counting it would lock out clients that share its address.
        """
        blocked = reason == _UNKNOWN_TOKEN and self._throttle.failed(remote)
        log.warning(
            "authentication failed",
            extra={"event": "auth_failed", "remote": remote, "door": _door(request), "reason": reason},
        )
        if blocked:
            log.warning(
                "address refused after repeated failed authentications",
                extra={
                    "event": "auth_throttled",
                    "remote": remote,
                    "failures": _AUTH_FAILURES,
                    "window_s": _AUTH_WINDOW_S,
                    "block_s": _AUTH_BLOCK_S,
                },
            )

    @web.middleware
    async def _access(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """One line per answered request: the route's template, never the path (tokens, VINs)."""
        if not self._access_log:
            return await handler(request)
        t0 = time.monotonic()
        status = 499  # the client went away before an answer (nginx's "client closed request")
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            access_log.info(
                "request",
                extra={
                    "event": "access",
                    "method": request.method,
                    "route": _door(request),
                    "status": status,
                    "duration_ms": round((time.monotonic() - t0) * 1000.0, 3),
                    "role": request.get(_ROLE, "-"),
                },
            )

    @web.middleware
    async def _json_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every error answer is JSON ``{"error": ...}``: aiohttp's own (404, 405, 413) and 500s."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            headers = {
                k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")
            }
            return self._refuse(exc.status, (exc.reason or "error").lower(), headers)
        except Exception:
            log.exception("request failed", extra={"door": _door(request), "method": request.method})
            return self._refuse(500, "internal error")

    def _refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        self._metrics.http_rejected.labels(str(status)).inc()
        return web.json_response({"error": message}, status=status, headers=headers)

    def _rate_ok(self, tps: str) -> bool:
        cfg = self._config
        bucket = self._buckets.get(tps)
        if bucket is None:
            bucket = self._buckets[tps] = _Bucket(cfg.provider_burst)
        now = time.monotonic()
        bucket.level = min(cfg.provider_burst, bucket.level + (now - bucket.stamp) * cfg.provider_rate_per_s)
        bucket.stamp = now
        if bucket.level < 1.0:
            return False
        bucket.level -= 1.0
        return True

    # --- ingest ---------------------------------------------------------------------------------

    async def _ingest(self, request: web.Request, who: Principal) -> web.StreamResponse:
        tps = request.match_info["tps"]
        vehicle = request.match_info["vehicle"]
        kind = request.match_info["kind"]
        if tps != who.tps:
            return self._refuse(403, f"this token may write under {who.tps!r} only")
        if kind not in _KINDS:
            return self._refuse(404, f"unknown kind {kind[:20]!r}: msd, cancel or position")
        if not self._accepting:
            return self._refuse(503, "draining; retry on another gateway", {"Retry-After": "5"})
        if not self._rate_ok(tps):
            return self._refuse(429, "rate limit exceeded", {"Retry-After": "1"})
        ctype = request.content_type.lower()
        call_id: str | None = None
        if ctype == MSGPACK:
            raw_kind = kind
        elif ctype == RAW_MSD and kind == "msd":
            raw_kind = "msd_raw"
            call_id = request.headers.get("Call-Id", "")
        else:
            return self._refuse(
                415, f"body must be {MSGPACK}" + (f" or {document.MSD_MEDIA_TYPE}" if kind == "msd" else "")
            )
        try:
            async with asyncio.timeout(self._config.read_timeout_s):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(413, f"body over {self._config.max_body_bytes} bytes")
        except TimeoutError:
            return self._refuse(408, f"body not received within {self._config.read_timeout_s:g} s")
        raw = RawSignal(
            transport="http",
            kind=raw_kind,
            tps=tps,
            vehicle=vehicle,
            payload=body,
            received_at=time.time(),
            source=request.path,
            call_id=call_id,
        )
        try:
            async with asyncio.timeout(_STORE_TIMEOUT_S):
                stored = await self._pipeline.submit(raw)
                result = await asyncio.shield(stored)
            result = await self._pipeline.answer(result)  # replicas: the sequencer's decision (bounded)
        except (TimeoutError, StoreError):
            # Not known to be stored: the provider must retry (a retry of a stored one is harmless).
            return self._refuse(503, "not stored; retry", {"Retry-After": "1"})
        if result.error is not None:
            e = result.error
            status = 400
            if len(body) > MAX_ENVELOPE_BYTES:  # quarantined as its size and a prefix (pipeline.py)
                status = 413
                self._metrics.http_rejected.labels("413").inc()
            return web.json_response(
                {
                    "error": str(e),
                    "codec": e.codec,
                    "reason": e.reason,
                    "path": e.path,
                    "bit_offset": e.bit_offset,
                },
                status=status,
            )
        return web.json_response({"incident_id": result.incident_id, "outcome": result.outcome}, status=202)

    # --- operators ------------------------------------------------------------------------------

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
        if action not in ("ack", "cancel", "escalate", "resolve"):
            return self._refuse(400, "action must be ack, cancel, escalate or resolve")
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

    # --- SRE ------------------------------------------------------------------------------------

    async def _quarantine(self, request: web.Request, who: Principal) -> web.StreamResponse:
        rows = await self._store.quarantined(100)
        note = "quarantine=" + ",".join(str(r["id"]) for r in rows)
        await self._pipeline.audit_view("", actor=who.name, role=who.role, action="quarantine", note=note)
        for r in rows:
            r["payload"] = bytes(r["payload"]).hex()
        return web.json_response({"quarantine": rows})

    async def _dead_letters(self, request: web.Request, who: Principal) -> web.StreamResponse:
        return web.json_response({"dead_letters": await self._store.dead_letters()})

    async def _metrics_page(self, request: web.Request, who: Principal) -> web.StreamResponse:
        return web.Response(body=self._metrics.render(), content_type="text/plain", charset="utf-8")

    async def _readyz(self, request: web.Request, who: Principal) -> web.StreamResponse:
        checks = self._health.checks()
        ok = all(v for v in checks.values())
        return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"alive": True})


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


class AuthThrottle:
    """Failed authentications per remote address; an address with too many is refused for a while.

    ``limit`` failures within ``window_s`` block the address for ``block_s`` (every request of it,
    with a valid token or not: a guesser must not learn which guess was right). Memory is bounded:
    at most ``max_addresses`` addresses are remembered in each table, the least recently failed
    forgotten first.
    """

    def __init__(
        self,
        *,
        limit: int,
        window_s: float,
        block_s: float,
        max_addresses: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._window_s = window_s
        self._block_s = block_s
        self._max = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._blocked: OrderedDict[str, float] = OrderedDict()  # address -> until (clock)

    def __len__(self) -> int:
        return len(self._failures) + len(self._blocked)

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until ``address`` may try again, or None when it is not blocked."""
        until = self._blocked.get(address)
        if until is None:
            return None
        left = until - self._clock()
        if left <= 0:
            del self._blocked[address]
            return None
        return max(1, math.ceil(left))

    def failed(self, address: str) -> bool:
        """Count a failure of ``address``; True when this one blocks it."""
        now = self._clock()
        times = self._failures.pop(address, None)
        if times is None:
            times = deque(maxlen=self._limit)
        times.append(now)
        if len(times) >= self._limit and now - times[0] <= self._window_s:
            self._blocked.pop(address, None)
            self._blocked[address] = now + self._block_s
            while len(self._blocked) > self._max:
                self._blocked.popitem(last=False)  # the one closest to its end
            return True
        self._failures[address] = times  # now the most recent
        while len(self._failures) > self._max:
            self._failures.popitem(last=False)
        return False


def _door(request: web.Request) -> str:
    """The route's path template (``/v1/ecall/{tps}/{vehicle}/{kind}``), never the path itself."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


def _auth_failure(request: web.Request) -> str:
    """Why a request carries no valid credentials, in words that never include the token."""
    header = request.headers.get("Authorization")
    if header is None:
        return "no bearer token (nor a known client certificate)"
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "not a bearer token"
    return _UNKNOWN_TOKEN
