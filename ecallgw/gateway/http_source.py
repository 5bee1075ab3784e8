"""The HTTP server: its site, authentication, and signal ingest for providers.

The operator endpoints live in `operator_api`, the SRE ones in `sre_api`; both register on this
server's router behind its role guard (`HttpServer._role`), tokens and certificates in `http_auth`.

Every endpoint but ``/healthz`` needs a bearer token from ``[auth]``; its role decides what it may do:

=========================================== ========== =============================================
endpoint                                    role       what
=========================================== ========== =============================================
POST /v1/ecall/{tps}/{vehicle}/{kind}       provider   ingest; only under the token's own ``tps``
GET  /v1/incidents                          operator   the queue: filters, cursor, counters (audited)
GET  /v1/incidents/events                   operator   Server-Sent Events, live: revisions, desk (audited)
GET  /v1/incidents/{id}                     operator   one incident: history, desk, timeline (audited)
POST /v1/incidents/{id}/actions             operator   ack, claim, release, note, cancel, escalate, resolve
GET  /v1/quarantine, /v1/dead-letters       sre        what could not be decoded (audited) or delivered
GET  /metrics, /readyz                      sre        Prometheus text; readiness
GET  /healthz                               (none)     the process is alive
GET  /console/ (and its assets, sign-in)    (none)     the operator console (ecallgw/console/)
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
import errno
import logging
import os
import re
import time

from aiohttp import web

from ecallgw.codecs import document
from ecallgw.codecs.envelope import MAX_ENVELOPE_BYTES
from ecallgw.config import AuthConfig, ConsoleConfig, HttpConfig
from ecallgw.console import Console
from ecallgw.errors import ConfigError, StoreError
from ecallgw.gateway.caller_api import CallerApi, CallerSettings
from ecallgw.gateway.health import Health
from ecallgw.gateway.http_auth import (
    UNKNOWN_TOKEN,
    Authenticator,
    AuthThrottle,
    Handler,
    Principal,
    RoleHandler,
    auth_failure,
    door,
)
from ecallgw.gateway.intake import Intake
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.operator_api import OperatorApi
from ecallgw.gateway.pipeline import Ingested, Pipeline
from ecallgw.gateway.records import ENVELOPE_KINDS, RawSignal
from ecallgw.gateway.sinks.operator_stream import OperatorStream
from ecallgw.gateway.sre_api import SreApi
from ecallgw.gateway.store import Store
from ecallgw.gateway.tls import server_context
from ecallgw.triage.policy import PsapArea

__all__ = ["AuthThrottle", "HttpServer", "Principal"]

log = logging.getLogger("ecallgw.http")
access_log = logging.getLogger("ecallgw.access")
_ROLE = web.RequestKey("ecallgw_role", str)  # the authenticated principal's role, for the access log

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MSGPACK = "application/msgpack"
RAW_MSD = document.MSD_MEDIA_TYPE.lower()
_STORE_TIMEOUT_S = 30.0
_STORE_RETRY_AFTER_S = 5  # Retry-After while the store is not writable (held commits retry within 2 s)
_WRITABLE_POLL_S = 0.25  # how often an ingest waiting for its commit looks whether the store is held
_AUTH_FAILURES = 10  # unknown tokens from one address within _AUTH_WINDOW_S ...
_AUTH_WINDOW_S = 60.0
_AUTH_BLOCK_S = 60.0  # ... refuse it (429) for this long
_AUTH_ADDRESSES = 10_000  # addresses remembered (least recently failed forgotten first)


class _Bucket:
    """Token bucket of one provider's ingest rate."""

    __slots__ = ("level", "stamp")

    def __init__(self, burst: float) -> None:
        self.level = burst
        self.stamp = time.monotonic()


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
        console: the ``[console]`` table; its session cookie stands for an operator token.
        psap_areas: triage's PSAP areas, for the console's area filter.
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
        console: ConsoleConfig | None = None,
        psap_areas: tuple[PsapArea, ...] = (),
        caller: CallerSettings | None = None,
    ) -> None:
        self._config = config
        self._access_log = access_log
        self._pipeline = pipeline
        self._store = store
        self._stream = stream
        self._metrics = metrics
        self._health = health
        self._auth = Authenticator(auth)
        self._buckets: dict[str, _Bucket] = {}
        self._throttle = AuthThrottle(
            limit=_AUTH_FAILURES,
            window_s=_AUTH_WINDOW_S,
            block_s=_AUTH_BLOCK_S,
            max_addresses=_AUTH_ADDRESSES,
        )
        if not auth.tokens:
            log.warning(
                "auth.tokens is empty: every endpoint but /healthz refuses every request (401), "
                "ingest included",
                extra={"event": "no_tokens"},
            )
        self._runner: web.AppRunner | None = None
        self._accepting = True
        self.port = config.port
        self._console = (
            Console(
                console,
                self._auth,
                store,
                self._refuse,
                self._throttle,
                config.tls_cert_file != "",
                areas=psap_areas,
            )
            if console is not None and console.enabled
            else None
        )
        self._caller_config = caller  # issue 14: [sms], [caller], [assistance]
        self.app = self._build(pipeline, store, stream, metrics, health)

    def _build(
        self,
        pipeline: Pipeline | Intake,
        store: Store,
        stream: OperatorStream,
        metrics: Metrics,
        health: Health,
    ) -> web.Application:
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
        OperatorApi(self._config, pipeline, store, stream, self._refuse).register(r, self._role)
        SreApi(pipeline, store, metrics, health).register(r, self._role)
        CallerApi(self._caller_config, pipeline, store, metrics, stream, self._refuse).register(
            r, self._role, app
        )
        if self._console is not None:
            self._console.register(r)
        return app

    async def __aenter__(self) -> HttpServer:
        cfg = self._config
        # Built at start: a rotated certificate or CA takes effect on restart. Loopback-only
        # plaintext is enforced by the configuration (http.host, http.allow_plaintext). Built before
        # the runner's setup starts the routes' background tasks, so a bad file leaves none behind.
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
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
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

    def reload_auth(self, auth: AuthConfig) -> None:
        """Take a reloaded ``[auth]`` table (SIGHUP, `gateway.reload`): effective from the next request."""
        self._auth.replace(auth)
        if not auth.tokens:
            log.warning(
                "auth.tokens is empty: every endpoint but /healthz refuses every request (401)",
                extra={"event": "no_tokens"},
            )

    def stop_intake(self) -> None:
        """Refuse new ingest with 503 (draining); the API stays up until the server closes."""
        self._accepting = False

    # --- auth -----------------------------------------------------------------------------------

    def _role(self, role: str, handler: RoleHandler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            remote = request.remote or "unknown"
            retry_after = self._throttle.retry_after(remote)
            if retry_after is not None:
                return self._refuse(
                    429,
                    "too many failed authentications from this address",
                    {"Retry-After": str(retry_after)},
                )
            who = self._auth.principal(request)
            if who is None and self._console is not None and "Authorization" not in request.headers:
                # A console session cookie stands for its operator's token; state changes need
                # its CSRF token too (ecallgw/console/session.py).
                who = await self._console.operator(request)
                refusal = self._console.csrf_refusal(request) if who is not None else None
                if refusal is not None:
                    log.warning(
                        "console request refused",
                        extra={"event": "csrf_refused", "remote": remote, "door": door(request)},
                    )
                    return self._refuse(403, refusal)
            if who is None:
                self._auth_failed(request, remote, auth_failure(request))
                return self._refuse(401, "missing or unknown bearer token", {"WWW-Authenticate": "Bearer"})
            request[_ROLE] = who.role
            if who.role != role:
                log.warning(
                    "authorization refused",
                    extra={
                        "event": "auth_refused",
                        "remote": remote,
                        "door": door(request),
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
        blocked = reason == UNKNOWN_TOKEN and self._throttle.failed(remote)
        log.warning(
            "authentication failed",
            extra={"event": "auth_failed", "remote": remote, "door": door(request), "reason": reason},
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
                    "route": door(request),
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
        except StoreError:
            # The store is full or read-only: a view that cannot be audited is refused (the access
            # log has the 503; readyz says why), as is an action triage must not see unstored.
            return self._refuse(503, "store not writable; retry", {"Retry-After": str(_STORE_RETRY_AFTER_S)})
        except Exception:
            log.exception("request failed", extra={"door": door(request), "method": request.method})
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
        if kind not in ENVELOPE_KINDS:
            return self._refuse(404, f"unknown kind {kind[:20]!r}: msd, cancel or position")
        if not self._accepting:
            return self._refuse(503, "draining; retry on another gateway", {"Retry-After": "5"})
        if not self._rate_ok(tps):
            return self._refuse(429, "rate limit exceeded", {"Retry-After": "1"})
        if not self._store.writable:
            # Full or read-only: refused before triage sees it, so the provider's retry after
            # Retry-After is a first delivery (readyz says why; docs/operations.md, store not writable).
            return self._refuse(
                503, "store not writable; retry later", {"Retry-After": str(_STORE_RETRY_AFTER_S)}
            )
        ctype = request.content_type.lower()
        call_id: str | None = None
        raw_kind: str
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
                result = await self._stored(stored)
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

    async def _stored(self, stored: asyncio.Future[Ingested]) -> Ingested:
        """The commit's result; `StoreError` as soon as the store turns unwritable meanwhile.

        A commit held for a full disk may take minutes; the provider learns at once that it is not
        stored (503), and its retry, once the commit is through, is recognised as a copy (202).
        """
        while True:
            done, _ = await asyncio.wait([stored], timeout=_WRITABLE_POLL_S)  # never cancels it
            if done:
                return stored.result()
            if not self._store.writable:
                raise StoreError(f"the store is not writable: {self._store.unwritable_reason}")

    # --- operators ------------------------------------------------------------------------------
