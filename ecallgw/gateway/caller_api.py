"""The caller's side over HTTP (issue 14): links, their public pages, breakdown assistance.

=========================================== ========== =============================================
endpoint                                    role       what
=========================================== ========== =============================================
POST   /v1/incidents/{id}/links             operator   a location or tracking link, sent by SMS
GET    /v1/incidents/{id}/links             operator   the incident's links (never their tokens)
DELETE /v1/links/{id}                       operator   revoke a link
POST   /v1/assistance/links                 operator   an assistance-form link for a phone, by SMS
GET    /v1/assistance/cases                 operator   cases (``status=unassigned``: the queue)
GET    /v1/assistance/cases/{id}            operator   one case with its links
POST   /v1/assistance/cases/{id}/share      operator   what the tracking page shows (garage, ...)
POST   /v1/assistance/cases/{id}/links      operator   a tracking link for the case, by SMS
POST   /v1/assistance/cases/{id}/dispatch   operator   offer to a named provider, or again from the nearest
POST   /v1/assistance/cases/{id}/close      operator   close a case
GET    /v1/assistance/providers             operator   the registry with availability
POST   /v1/assistance/providers/{name}      operator   ``{"available": bool}``
POST   /v1/assistance/availability          assistance the provider's own availability
POST   /v1/assistance/cases/{id}/answer     assistance accept or decline a case offered to it
POST   /v1/bcall/{tps}/{vehicle}            provider   a vehicle's breakdown call (msd envelope)
GET    /l/{token}, POST /l/{token}/position (token)    share a position (location link)
GET    /assist/{token}, POST .../request    (token)    the assistance form
GET    /t/{token}, GET /t/{token}/state     (token)    follow a case (tracking link)
=========================================== ========== =============================================

A link's token is ``secrets.token_urlsafe(32)``; only its SHA-256 is stored, it is never logged (the
access log shows the route template; these modules log the link id). Each token authorizes its
one purpose only, while it is neither expired nor revoked nor used up; public requests are
rate-limited per token and per client address. Every use is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from aiohttp import web

from ecallgw.caller import pages
from ecallgw.caller.texts import CAPABILITY_FOR, LANGS, WHATS, pick_lang, t
from ecallgw.codecs.caller import LINK_POSITION, check_position, encode_link_position
from ecallgw.codecs.envelope import decode_envelope
from ecallgw.config import Config
from ecallgw.errors import DecodeError, StoreError
from ecallgw.gateway.assistance import Dispatcher, tried_list
from ecallgw.gateway.http_auth import Guard, Principal, Refuse
from ecallgw.gateway.intake import Intake
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.pipeline import Ingested, Pipeline, quarantine_unit
from ecallgw.gateway.records import RawSignal
from ecallgw.gateway.sinks.operator_stream import OperatorStream
from ecallgw.gateway.sms import SmsSender, pseudonym
from ecallgw.gateway.store import Store
from ecallgw.gateway.store.caller import CallerStore, CaseRow, LinkRow, SmsRow
from ecallgw.model import MsdSignal

__all__ = ["CallerApi", "CallerSettings", "token_hash"]

CallerSettings = Config
"""The whole configuration: the caller's side reads ``[sms]``, ``[caller]``, ``[assistance]``, ``[http]``
and ``[store]`` (retention)."""

log = logging.getLogger("ecallgw.caller")

_PURPOSES = {"location": "l", "tracking": "t", "assist": "assist"}
_CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
_PAGE_HEADERS = {
    "Content-Security-Policy": _CSP,
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never sent onwards
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
_ASSETS = {"caller.js": "text/javascript", "caller.css": "text/css"}
_BODY_MAX = 4096
_STORE_TIMEOUT_S = 30.0


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


_VIEW_REPEAT_S = 300.0
"""An operator's identical repeated view of the breakdown list or a case is audited once per this."""


class _Window:
    """Requests per key per minute (fixed one-minute windows), for the public pages."""

    def __init__(self, limit: int, keys: int = 50_000) -> None:
        self._limit = limit
        self._keys = keys
        self._seen: OrderedDict[Any, tuple[int, int]] = OrderedDict()

    def allow(self, key: Any, now: float) -> bool:
        minute = int(now // 60)
        start, count = self._seen.get(key, (minute, 0))
        if start != minute:
            start, count = minute, 0
        count += 1
        self._seen[key] = (start, count)
        self._seen.move_to_end(key)
        if len(self._seen) > self._keys:
            self._seen.popitem(last=False)
        return count <= self._limit


class CallerApi:
    """Links, the caller's pages and breakdown assistance; background work runs with the server."""

    def __init__(
        self,
        config: Config | None,
        pipeline: Pipeline | Intake,
        store: Store,
        metrics: Metrics,
        stream: OperatorStream,
        refuse: Refuse,
    ) -> None:
        self._cfg = config or Config()
        self._pipeline = pipeline
        self._store = store
        self._cstore = CallerStore(store)
        self._stream = stream
        self._refuse = refuse
        self._metrics = metrics
        self.sms = SmsSender(self._cfg.sms, self._cstore, self._sms_text, self._sms_outcome)
        self.dispatcher = Dispatcher(self._cfg.assistance, self._cstore, metrics, answer_url=self._answer_url)
        caller = self._cfg.caller
        self._per_token = _Window(caller.token_rate_per_min)
        self._per_address = _Window(caller.address_rate_per_min)
        self._tasks: list[asyncio.Task[Any]] = []
        self._origin = ""
        # (operator, view) -> (digest of what was shown, when): the console polls its lists.
        self._views: dict[tuple[str, str], tuple[bytes, float]] = {}
        pipeline.on_bcall = self._bcall_signal  # MQTT (and any source) breakdown calls

    # --- wiring -----------------------------------------------------------------------------------

    def register(self, router: web.UrlDispatcher, guard: Guard, app: web.Application | None = None) -> None:
        op = "operator"
        router.add_post("/v1/incidents/{id}/links", guard(op, self._create_incident_link))
        router.add_get("/v1/incidents/{id}/links", guard(op, self._incident_links))
        router.add_delete("/v1/links/{id}", guard(op, self._revoke))
        router.add_post("/v1/assistance/links", guard(op, self._create_assist_link))
        router.add_get("/v1/assistance/cases", guard(op, self._cases))
        router.add_get("/v1/assistance/cases/{id}", guard(op, self._case))
        router.add_post("/v1/assistance/cases/{id}/share", guard(op, self._share))
        router.add_post("/v1/assistance/cases/{id}/links", guard(op, self._create_case_link))
        router.add_post("/v1/assistance/cases/{id}/dispatch", guard(op, self._dispatch))
        router.add_post("/v1/assistance/cases/{id}/close", guard(op, self._close))
        router.add_get("/v1/assistance/providers", guard(op, self._providers))
        router.add_post("/v1/assistance/providers/{name}", guard(op, self._set_provider))
        router.add_post("/v1/assistance/availability", guard("assistance", self._own_availability))
        router.add_post("/v1/assistance/cases/{id}/answer", guard("assistance", self._answer))
        router.add_post("/v1/bcall/{tps}/{vehicle}", guard("provider", self._bcall))
        router.add_get("/l/{token}", self._location_page)
        router.add_post("/l/{token}/position", self._position)
        router.add_get("/assist/{token}", self._assist_page)
        router.add_post("/assist/{token}/request", self._assist_request)
        router.add_get("/t/{token}", self._tracking_page)
        router.add_get("/t/{token}/state", self._tracking_state)
        router.add_get("/caller-assets/{name}", self._asset)
        if app is not None:
            app.cleanup_ctx.append(self._lifetime)

    async def _lifetime(self, app: web.Application) -> AsyncIterator[None]:
        self._tasks = [
            asyncio.create_task(self.sms.run(), name="caller-sms"),
            asyncio.create_task(self.dispatcher.run(), name="assistance-timers"),
            asyncio.create_task(self._retention(), name="caller-retention"),
        ]
        if self._cfg.caller.auto_location_link:
            self._tasks.append(asyncio.create_task(self._auto_links(), name="caller-auto-links"))
        try:
            yield
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(BaseException):
                    await task

    def _base(self, request: web.Request | None) -> str:
        if self._cfg.caller.public_url:
            return self._cfg.caller.public_url.rstrip("/")
        if request is not None:
            # Without caller.public_url, a link goes back to the address its requester reached
            # (their own Host header: it serves only them).
            self._remember_socket(request)
            return str(request.url.origin())
        return self._own_origin()

    def _remember_socket(self, request: web.Request) -> None:
        """This server's own address as the request's connection reached it (its socket, never the
        Host header, which any client, unauthenticated ones included, writes as it likes)."""
        sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
        if isinstance(sock, tuple) and len(sock) >= 2:
            host = str(sock[0])
            host = f"[{host}]" if ":" in host else host
            self._origin = f"{'https' if request.secure else 'http'}://{host}:{sock[1]}"

    def _own_origin(self) -> str:
        if self._origin:
            return self._origin
        h = self._cfg.http
        return f"{'https' if h.tls_cert_file else 'http'}://{h.host}:{h.port}"

    def _answer_url(self, case_id: str) -> str:
        # What a provider posts its own token to: caller.public_url, else this server's socket
        # address; never a request's Host header (it would hand the provider's token to whoever
        # wrote it).
        base = self._cfg.caller.public_url.rstrip("/") or self._own_origin()
        return f"{base}/v1/assistance/cases/{case_id}/answer"

    # --- links ------------------------------------------------------------------------------------

    async def make_link(
        self,
        purpose: str,
        *,
        phone: str,
        lang: str,
        created_by: str,
        incident_id: str | None = None,
        case_id: str | None = None,
        ttl_s: float | None = None,
        max_uses: int | None = None,
        auto_key: str | None = None,
        request: web.Request | None = None,
        send: bool = True,
    ) -> tuple[LinkRow, str] | None:
        """Create a link (and queue its SMS); (row, url), or None when ``auto_key`` existed."""
        c = self._cfg.caller
        default_ttl, default_uses = {
            "location": (c.location_ttl_s, c.location_max_uses),
            "tracking": (c.tracking_ttl_s, 1_000_000),
            "assist": (c.assist_ttl_s, 5),
        }[purpose]
        token = secrets.token_urlsafe(32)
        now = time.time()
        will_send = send and bool(phone) and self.sms.enabled
        row = LinkRow(
            link_id="lnk-" + secrets.token_hex(8),
            token_hash=token_hash(token),
            purpose=purpose,
            incident_id=incident_id,
            case_id=case_id,
            phone=phone,
            lang=pick_lang(None, lang, "en"),  # a call's "de-AT" is "de"
            created_at=now,
            expires_at=now + (ttl_s or default_ttl),
            max_uses=max_uses or default_uses,
            uses=0,
            revoked_at=None,
            created_by=created_by,
            auto_key=auto_key,
            sms_state="pending" if will_send else "none",
        )
        if not await self._cstore.insert_link(row):
            return None
        base = self._base(request)
        url = pages.link_url(base, _PURPOSES[purpose], token)
        await self._audit(
            incident_id or "",
            actor=created_by,
            role="policy"
            if created_by.startswith("policy")
            else "caller"
            if created_by.startswith("link:")  # a form's own tracking link
            else "operator",
            action=f"link_create_{purpose}",
            note=f"link={row.link_id} case={case_id or '-'} to={pseudonym(phone) if phone else '-'} "
            f"expires_in_s={int(row.expires_at - now)} max_uses={row.max_uses}",
        )
        if will_send:
            try:
                await self.sms.submit(row.link_id, token, base)
            except StoreError:  # the link stays pending with no outbox row: shown "lost" later
                log.error("sms not queued: outbox unavailable", extra={"link_id": row.link_id})
        log.info(
            "caller link created",
            extra={
                "link_id": row.link_id,
                "purpose": purpose,
                "incident_id": incident_id,
                "case_id": case_id,
            },
        )
        return row, url

    @staticmethod
    def _sms_text(row: SmsRow, token: str) -> str:
        title = {"location": "location_title", "tracking": "tracking_title", "assist": "assist_title"}[
            row.purpose
        ]
        return f"{t(row.lang, title)}: {pages.link_url(row.base_url, _PURPOSES[row.purpose], token)}"

    async def _sms_outcome(self, link_id: str, outcome: str) -> None:
        log.debug("sms outcome stored", extra={"link_id": link_id, "outcome": outcome})

    async def _audit_view(self, *, actor: str, role: str, action: str, note: str) -> None:
        """Audit a view unless the same operator saw exactly the same thing within
        `_VIEW_REPEAT_S`: the console polls the breakdown list every few seconds, and a row per
        poll would bury the views that matter without saying anything new about who saw what."""
        digest = hashlib.sha256(note.encode()).digest()
        now = time.monotonic()
        last = self._views.get((actor, action))
        if last is not None and last[0] == digest and now - last[1] < _VIEW_REPEAT_S:
            return
        self._views[(actor, action)] = (digest, now)
        await self._audit("", actor=actor, role=role, action=action, note=note)

    async def _audit(self, incident_id: str, *, actor: str, role: str, action: str, note: str) -> None:
        with contextlib.suppress(StoreError):
            await self._pipeline.audit_view(incident_id, actor=actor, role=role, action=action, note=note)

    async def _json(self, request: web.Request, *, public: bool = False) -> dict[str, Any] | web.Response:
        h = _PAGE_HEADERS if public else None  # a public answer carries the pages' headers too
        try:
            async with asyncio.timeout(self._cfg.http.read_timeout_s):
                raw = await request.content.read(_BODY_MAX + 1)
        except TimeoutError:
            return self._refuse(408, "body not received in time", h)
        if len(raw) > _BODY_MAX:
            return self._refuse(413, f"body over {_BODY_MAX} bytes", h)
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...]]]]
            return self._refuse(400, "body must be JSON", h)
        if not isinstance(body, dict):
            return self._refuse(400, "body must be a JSON object", h)
        return body

    async def _create_incident_link(self, request: web.Request, who: Principal) -> web.StreamResponse:
        incident_id = request.match_info["id"]
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        purpose = body.get("purpose")
        if purpose not in ("location", "tracking"):
            return self._refuse(400, "purpose must be location or tracking")
        found = await self._store.get_incident(incident_id)
        if found is None:
            return self._refuse(404, "no such incident")
        _, history, _ = found
        snap = history[-1].snapshot if history else None
        opts = _link_options(body)
        if isinstance(opts, str):
            return self._refuse(400, opts)
        phone, ttl_s, max_uses, lang = opts
        phone = phone or (snap.callback if snap is not None else None) or ""
        if not phone and self.sms.enabled:
            return self._refuse(400, "phone: the incident has no callback number; give one")
        made = await self.make_link(
            purpose,
            phone=phone,
            lang=lang or (snap.lang if snap is not None and snap.lang else "en"),
            created_by=who.name,
            incident_id=incident_id,
            ttl_s=ttl_s,
            max_uses=max_uses,
            request=request,
        )
        assert made is not None
        return web.json_response(_link_json(made[0], url=made[1]), status=201)

    async def _create_case_link(self, request: web.Request, who: Principal) -> web.StreamResponse:
        case = await self._cstore.case(request.match_info["id"])
        if case is None:
            return self._refuse(404, "no such case")
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        if body.get("purpose", "tracking") != "tracking":
            return self._refuse(400, "purpose must be tracking")
        opts = _link_options(body)
        if isinstance(opts, str):
            return self._refuse(400, opts)
        phone, ttl_s, max_uses, lang = opts
        made = await self.make_link(
            "tracking",
            phone=phone or case.phone,
            lang=lang or "en",
            created_by=who.name,
            case_id=case.case_id,
            ttl_s=ttl_s,
            max_uses=max_uses,
            request=request,
        )
        assert made is not None
        return web.json_response(_link_json(made[0], url=made[1]), status=201)

    async def _create_assist_link(self, request: web.Request, who: Principal) -> web.StreamResponse:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        opts = _link_options(body)
        if isinstance(opts, str):
            return self._refuse(400, opts)
        phone, ttl_s, max_uses, lang = opts
        if not phone and self.sms.enabled:
            return self._refuse(400, "phone is required")
        made = await self.make_link(
            "assist",
            phone=phone or "",
            lang=lang or "en",
            created_by=who.name,
            ttl_s=ttl_s,
            max_uses=max_uses,
            request=request,
        )
        assert made is not None
        return web.json_response(_link_json(made[0], url=made[1]), status=201)

    async def _incident_links(self, request: web.Request, who: Principal) -> web.StreamResponse:
        incident_id = request.match_info["id"]
        rows = await self._cstore.links_of(incident_id=incident_id)
        return web.json_response({"links": [_link_json(r) for r in rows]})

    async def _revoke(self, request: web.Request, who: Principal) -> web.StreamResponse:
        link_id = request.match_info["id"]
        row = await self._cstore.link(link_id)
        if row is None:
            return self._refuse(404, "no such link")
        done = await self._cstore.revoke_link(link_id, time.time())
        await self._audit(
            row.incident_id or "", actor=who.name, role=who.role, action="link_revoke", note=f"link={link_id}"
        )
        row = await self._cstore.link(link_id)
        assert row is not None
        return web.json_response({**_link_json(row), "revoked_now": done})

    # --- public pages -------------------------------------------------------------------------------

    def _page(self, html: str, status: int = 200) -> web.Response:
        return web.Response(
            text=html, status=status, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS
        )

    def _lang(self, request: web.Request, link: LinkRow | None) -> str:
        return pick_lang(
            request.query.get("lang"), request.headers.get("Accept-Language"), link.lang if link else None
        )

    async def _resolve(
        self, request: web.Request, purpose: str, *, count_use: bool = False, throttled: bool = False
    ) -> tuple[LinkRow | None, web.Response | None]:
        """The link a public request's token names, or the answer that refuses it; ``throttled``:
        the handler asked `_throttled` already."""
        if not throttled and (refused := self._throttled(request)) is not None:
            return None, refused
        now = time.time()
        token = request.match_info["token"]
        digest = token_hash(token)
        link = None if len(token) > 100 else await self._cstore.link_by_hash(digest)
        if link is None or link.purpose != purpose:
            return None, self._gone(request, None, 404)
        usable = link.revoked_at is None and link.expires_at > now and link.uses < link.max_uses
        if usable and count_use:
            usable = await self._cstore.use_link(link.link_id, now)
        if not usable:
            await self._audit(
                link.incident_id or "",
                actor=f"link:{link.link_id}",
                role="caller",
                action=f"link_refused_{purpose}",
                note=f"link={link.link_id} case={link.case_id or '-'} revoked={link.revoked_at is not None} "
                f"expired={link.expires_at <= now} uses={link.uses}/{link.max_uses}",
            )
            return None, self._gone(request, link, 410)
        return link, None

    def _throttled(self, request: web.Request) -> web.Response | None:
        """429 beyond the rate per client address or per token; first thing on every public route,
        before the body is read (refused input is counted too)."""
        now = time.time()
        remote = request.remote or "unknown"
        digest = token_hash(request.match_info["token"])
        if self._per_address.allow(remote, now) and self._per_token.allow(digest, now):
            return None
        return web.Response(
            text="Too many requests; wait a minute.\n",
            status=429,
            headers={"Retry-After": "60", **_PAGE_HEADERS},
        )

    def _gone(self, request: web.Request, link: LinkRow | None, status: int) -> web.Response:
        lang = self._lang(request, link)
        if request.method == "GET" and not request.path.endswith("/state"):
            return self._page(pages.gone_page(lang, request.path), status)
        return web.json_response({"error": t(lang, "gone_body")}, status=status, headers=_PAGE_HEADERS)

    async def _asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _ASSETS:
            return self._refuse(404, "not found")
        data = resources.files("ecallgw.caller").joinpath("static", name).read_bytes()
        return web.Response(
            body=data,
            content_type=_ASSETS[name],
            charset="utf-8",
            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    async def _location_page(self, request: web.Request) -> web.StreamResponse:
        link, refused = await self._resolve(request, "location")
        if refused is not None:
            return refused
        assert link is not None
        await self._audit(
            link.incident_id or "",
            actor=f"link:{link.link_id}",
            role="caller",
            action="link_open",
            note=f"link={link.link_id}",
        )
        return self._page(pages.location_page(self._lang(request, link), request.path))

    async def _position(self, request: web.Request) -> web.StreamResponse:
        if (throttled := self._throttled(request)) is not None:
            return throttled
        body = await self._json(request, public=True)
        if isinstance(body, web.Response):
            return body
        try:
            lat, lon, acc = check_position(body)
        except DecodeError as exc:
            return web.json_response(
                {"error": exc.reason, "field": exc.path}, status=400, headers=_PAGE_HEADERS
            )
        link, refused = await self._resolve(request, "location", count_use=True, throttled=True)
        if refused is not None:
            return refused
        assert link is not None and link.incident_id is not None
        found = await self._store.get_incident(link.incident_id)
        if found is None or not found[1]:
            return self._gone(request, link, 410)
        snap = found[1][-1].snapshot
        now = time.time()
        raw = RawSignal(
            transport="link",
            kind=LINK_POSITION,
            tps=snap.tps,
            vehicle=snap.vehicle,
            payload=encode_link_position(snap.call_id, now, lat, lon, acc),
            received_at=now,
            source=f"link:{link.link_id}",
        )
        try:
            async with asyncio.timeout(_STORE_TIMEOUT_S):
                stored = await self._pipeline.submit(raw)
                result = await asyncio.shield(stored)
            result = await self._pipeline.answer(result)
        except (TimeoutError, StoreError):
            return web.json_response(
                {"error": "not stored; retry"}, status=503, headers={"Retry-After": "1", **_PAGE_HEADERS}
            )
        await self._audit(
            link.incident_id,
            actor=f"link:{link.link_id}",
            role="caller",
            action="link_position",
            note=f"link={link.link_id} accuracy_m={acc:.0f} outcome={result.outcome}",
        )
        log.info(
            "caller position received",
            extra={"link_id": link.link_id, "incident_id": link.incident_id, "outcome": result.outcome},
        )
        return web.json_response(
            {"outcome": result.outcome, "uses_left": max(0, link.max_uses - link.uses - 1)},
            headers=_PAGE_HEADERS,
        )

    async def _assist_page(self, request: web.Request) -> web.StreamResponse:
        link, refused = await self._resolve(request, "assist")
        if refused is not None:
            return refused
        assert link is not None
        return self._page(pages.assist_page(self._lang(request, link), request.path))

    async def _assist_request(self, request: web.Request) -> web.StreamResponse:
        self._remember_socket(request)
        if (throttled := self._throttled(request)) is not None:
            return throttled
        body = await self._json(request, public=True)
        if isinstance(body, web.Response):
            return body
        try:
            form = _assist_form(body)
        except _FormError as exc:
            return web.json_response(
                {"error": f"{exc.field}: {exc.reason}", "field": exc.field}, status=400, headers=_PAGE_HEADERS
            )
        link, refused = await self._resolve(request, "assist", count_use=True, throttled=True)
        if refused is not None:
            return refused
        assert link is not None
        lat, lon, address, vehicle_desc, what, phone = form
        case = await self._new_case(
            origin="form",
            what=what,
            lat=lat,
            lon=lon,
            address=address,
            vehicle_desc=vehicle_desc,
            phone=phone or link.phone,
        )
        made = await self.make_link(
            "tracking",
            phone=case.phone,
            lang=self._lang(request, link),
            created_by=f"link:{link.link_id}",
            case_id=case.case_id,
            request=request,
            send=False,  # the page shows it; no SMS needed for what the caller holds
        )
        assert made is not None
        await self._audit(
            "",
            actor=f"link:{link.link_id}",
            role="caller",
            action="assist_request",
            note=f"case={case.case_id}",
        )
        return web.json_response(
            {"case_id": case.case_id, "tracking_url": made[1]}, status=201, headers=_PAGE_HEADERS
        )

    async def _new_case(
        self,
        *,
        origin: str,
        what: str,
        lat: float | None,
        lon: float | None,
        address: str,
        vehicle_desc: str,
        phone: str,
        tps: str | None = None,
        vehicle: str | None = None,
        case_id: str | None = None,
    ) -> CaseRow:
        now = time.time()
        case = CaseRow(
            case_id=case_id or "case-" + secrets.token_hex(10),
            created_at=now,
            updated_at=now,
            origin=origin,
            status="dispatching",
            capability=CAPABILITY_FOR.get(what, "tow"),
            what=what,
            lat=lat,
            lon=lon,
            address=address,
            vehicle_desc=vehicle_desc,
            phone=phone,
            tps=tps,
            vehicle=vehicle,
            provider=None,
            deadline=None,
            tried="",
            reason="",
            eta_min=None,
            note="",
            shared="{}",
            accepted_at=None,
            version=0,
        )
        return await self.dispatcher.start(case)

    async def _tracking_page(self, request: web.Request) -> web.StreamResponse:
        link, refused = await self._resolve(request, "tracking")
        if refused is not None:
            return refused
        assert link is not None
        lang = self._lang(request, link)
        await self._audit(
            link.incident_id or "",
            actor=f"link:{link.link_id}",
            role="caller",
            action="link_open",
            note=f"link={link.link_id} case={link.case_id or '-'}",
        )
        return self._page(pages.tracking_page(lang, request.path, await self._state(link, lang)))

    async def _tracking_state(self, request: web.Request) -> web.StreamResponse:
        link, refused = await self._resolve(request, "tracking")
        if refused is not None:
            return refused
        assert link is not None
        state = await self._state(link, self._lang(request, link))
        return web.json_response(state, headers=_PAGE_HEADERS)

    async def _state(self, link: LinkRow, lang: str) -> dict[str, Any]:
        """What the tracking page shows: the case's state and what was chosen to be shared, only."""
        out: dict[str, Any] = {
            k: None for k in ("state", "provider", "eta", "garage", "replacement", "message")
        }
        updated: float | None = None
        if link.case_id is not None:
            case = await self._cstore.case(link.case_id)
            if case is not None:
                shared = json.loads(case.shared or "{}")
                out["state"] = t(lang, f"st_{case.status}") if case.status in _CASE_STATES else case.status
                out["provider"] = case.provider if case.status == "accepted" else None
                eta = shared.get("eta_min", case.eta_min)
                out["eta"] = f"{eta} {t(lang, 'minutes')}" if eta is not None else None
                out["garage"] = shared.get("garage")
                out["replacement"] = shared.get("replacement")
                out["message"] = shared.get("message")
                updated = case.updated_at
        elif link.incident_id is not None:
            found = await self._store.get_incident(link.incident_id)
            if found is not None:
                row = found[0]
                out["state"] = t(lang, f"st_{row.status}")
                updated = row.updated_at
        out["updated"] = time.strftime("%H:%M:%S", time.localtime(updated)) if updated else None
        return out

    # --- assistance (operators, providers, vehicles) ------------------------------------------------

    async def _cases(self, request: web.Request, who: Principal) -> web.StreamResponse:
        status = request.query.get("status")
        if status is not None and status not in _CASE_STATES:
            return self._refuse(400, "status must be dispatching, accepted, unassigned or closed")
        rows = await self._cstore.cases(status)
        note = f"status={status} cases=" + ",".join(r.case_id for r in rows)
        await self._audit_view(actor=who.name, role=who.role, action="assistance_list", note=note)
        return web.json_response({"cases": [_case_json(r) for r in rows]})

    async def _case(self, request: web.Request, who: Principal) -> web.StreamResponse:
        case = await self._cstore.case(request.match_info["id"])
        if case is None:
            return self._refuse(404, "no such case")
        links = await self._cstore.links_of(case_id=case.case_id)
        await self._audit_view(actor=who.name, role=who.role, action="assistance_view", note=case.case_id)
        return web.json_response({**_case_json(case), "links": [_link_json(r) for r in links]})

    async def _share(self, request: web.Request, who: Principal) -> web.StreamResponse:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        allowed = {"garage": 300, "replacement": 300, "message": 500}
        for key, value in body.items():
            if key == "eta_min":
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1440
                ):
                    return self._refuse(400, "eta_min must be minutes, 0..1440, or null")
            elif key in allowed:
                if value is not None and (not isinstance(value, str) or len(value) > allowed[key]):
                    return self._refuse(
                        400, f"{key} must be a string of at most {allowed[key]} characters, or null"
                    )
            else:
                return self._refuse(400, f"unknown field {key[:40]!r}: garage, replacement, eta_min, message")
        for _ in range(5):  # optimistic: re-read when a concurrent change won
            case = await self._cstore.case(request.match_info["id"])
            if case is None:
                return self._refuse(404, "no such case")
            shared = json.loads(case.shared or "{}")
            shared.update(body)
            moved = await self._cstore.update_case(case, shared=json.dumps(shared), updated_at=time.time())
            if moved is not None:
                await self._audit(
                    "", actor=who.name, role=who.role, action="assistance_share", note=case.case_id
                )
                return web.json_response(_case_json(moved))
        return self._refuse(409, "the case keeps changing; retry")

    async def _dispatch(self, request: web.Request, who: Principal) -> web.StreamResponse:
        """``{"provider": name}`` offers the case to that provider; ``{}`` dispatches it again
        from the nearest (a case of the queue once a provider is available again)."""
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        name = body.get("provider")
        if name is not None and name not in self.dispatcher.providers:
            return self._refuse(400, "provider: no such provider")
        case = await self._cstore.case(request.match_info["id"])
        if case is None:
            return self._refuse(404, "no such case")
        if case.status in ("accepted", "closed"):
            return self._refuse(409, f"the case is {case.status}")
        moved = await (self.dispatcher.offer_to(case, name) if name else self.dispatcher.restart(case))
        if moved is None:
            return self._refuse(409, "the case changed meanwhile; look again")
        await self._audit(
            "",
            actor=who.name,
            role=who.role,
            action="assistance_dispatch",
            note=f"{case.case_id} {name or 'nearest'}",
        )
        return web.json_response(_case_json(moved))

    async def _close(self, request: web.Request, who: Principal) -> web.StreamResponse:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        note = body.get("note", "")
        if not isinstance(note, str) or len(note) > 500:
            return self._refuse(400, "note must be a string of at most 500 characters")
        case = await self._cstore.case(request.match_info["id"])
        if case is None:
            return self._refuse(404, "no such case")
        moved = await self.dispatcher.close(case, note)
        if moved is None:
            return self._refuse(409, "the case changed meanwhile; look again")
        await self._audit("", actor=who.name, role=who.role, action="assistance_close", note=case.case_id)
        return web.json_response(_case_json(moved))

    async def _providers(self, request: web.Request, who: Principal) -> web.StreamResponse:
        cands = {c.name: c for c in await self.dispatcher.candidates()}
        return web.json_response(
            {
                "providers": [
                    {
                        "name": p.name,
                        "lat": p.lat,
                        "lon": p.lon,
                        "radius_km": p.radius_km,
                        "capabilities": list(p.capabilities),
                        "available": cands[p.name].available,
                    }
                    for p in self.dispatcher.providers.values()
                ]
            }
        )

    async def _availability(self, name: str, request: web.Request, who: Principal) -> web.StreamResponse:
        if name not in self.dispatcher.providers:
            return self._refuse(404, "no such provider")
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        if not isinstance(body.get("available"), bool):
            return self._refuse(400, 'body must be {"available": true|false}')
        await self._cstore.set_available(name, body["available"], time.time())
        await self._audit(
            "",
            actor=who.name,
            role=who.role,
            action="provider_availability",
            note=f"{name}={body['available']}",
        )
        return web.json_response({"name": name, "available": body["available"]})

    async def _set_provider(self, request: web.Request, who: Principal) -> web.StreamResponse:
        return await self._availability(request.match_info["name"], request, who)

    async def _own_availability(self, request: web.Request, who: Principal) -> web.StreamResponse:
        return await self._availability(who.name, request, who)

    async def _answer(self, request: web.Request, who: Principal) -> web.StreamResponse:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        accept = body.get("accept")
        eta = body.get("eta_min")
        note = body.get("note", "")
        if not isinstance(accept, bool):
            return self._refuse(400, "accept must be true or false")
        if eta is not None and (isinstance(eta, bool) or not isinstance(eta, int) or not 0 <= eta <= 1440):
            return self._refuse(400, "eta_min must be minutes, 0..1440")
        if not isinstance(note, str) or len(note) > 500:
            return self._refuse(400, "note must be a string of at most 500 characters")
        status, message, case = await self.dispatcher.answer(
            request.match_info["id"], who.name, accept=accept, eta_min=eta, note=note
        )
        await self._audit(
            "",
            actor=who.name,
            role=who.role,
            action="assistance_answer",
            note=f"{request.match_info['id']} {message}",
        )
        if status >= 400:
            return self._refuse(status, message)
        assert case is not None
        return web.json_response({"outcome": message, "case_id": case.case_id, "status": case.status})

    async def _bcall(self, request: web.Request, who: Principal) -> web.StreamResponse:
        tps, vehicle = request.match_info["tps"], request.match_info["vehicle"]
        self._remember_socket(request)
        if tps != who.tps:
            return self._refuse(403, f"this token may write under {who.tps!r} only")
        try:
            async with asyncio.timeout(self._cfg.http.read_timeout_s):
                body = await request.read()
        except TimeoutError:
            return self._refuse(408, "body not received in time")
        raw = RawSignal(
            transport="http", kind="bcall", tps=tps, vehicle=vehicle, payload=body, received_at=time.time()
        )
        try:
            case = await self.bcall(raw)
        except DecodeError as exc:
            return web.json_response({"error": str(exc), "path": exc.path}, status=400)
        except StoreError:
            return self._refuse(503, "not stored; retry", {"Retry-After": "1"})
        return web.json_response({"case_id": case.case_id, "status": case.status}, status=202)

    def _bcall_signal(self, raw: RawSignal) -> asyncio.Future[Ingested]:
        """`Pipeline.submit` for kind ``bcall``: resolves once the case is stored (then the source
        acknowledges); what cannot be decoded is kept in quarantine like any signal."""
        return asyncio.ensure_future(self._bcall_ingested(raw))

    async def _bcall_ingested(self, raw: RawSignal) -> Ingested:
        try:
            case = await self.bcall(raw)
        except DecodeError as exc:
            unit, err = quarantine_unit(raw, exc, self._metrics)
            await self._store.commit(unit)
            return Ingested(outcome="quarantined", error=err)
        return Ingested(outcome=f"bcall_{case.status}")

    async def bcall(self, raw: RawSignal) -> CaseRow:
        """A vehicle's breakdown call (an ``msd`` envelope on the ``bcall`` kind): a case, never a PSAP.

        The case id comes from the signal's digest, so a redelivered call is one case.

        Raises:
            DecodeError: the envelope cannot be decoded.
        """
        tps, vehicle = raw.tps, raw.vehicle
        sig = decode_envelope("msd", tps, vehicle, raw.payload)
        assert isinstance(sig, MsdSignal)
        pos = sig.msd.position
        return await self._new_case(
            origin="vehicle",
            what="other",
            lat=pos[0] if pos else None,
            lon=pos[1] if pos else None,
            address="",
            vehicle_desc=f"{tps}/{vehicle}",
            phone=sig.callback or "",
            tps=tps,
            vehicle=vehicle,
            case_id="case-" + raw.digest.hex()[:20],
        )

    # --- policy and housekeeping --------------------------------------------------------------------

    async def _auto_links(self) -> None:
        """Triage policy ``caller.auto_location_link``: a new call without a trusted MSD position
        gets a location link at its callback number (once per incident, whichever replica)."""
        queue = self._stream.subscribe()
        try:
            while True:
                event = await queue.get()
                if event is None:
                    self._stream.unsubscribe(queue)
                    queue = self._stream.subscribe()
                    continue
                s = event.snapshot
                if (
                    s is None
                    or s.revision != 1
                    or s.test
                    or not s.callback
                    or s.incident_id.startswith("storm-")
                ):
                    continue
                if s.position is not None and s.position.trusted:
                    continue
                with contextlib.suppress(StoreError):
                    await self.make_link(
                        "location",
                        phone=s.callback,
                        lang=s.lang or "en",
                        created_by="policy:auto_location_link",
                        incident_id=s.incident_id,
                        auto_key=f"location:{s.incident_id}",
                    )
        finally:
            self._stream.unsubscribe(queue)

    async def _retention(self) -> None:
        cfg = self._cfg.store
        sms = self._cfg.sms
        # A link pending with no outbox row (made by a release before the outbox, or its process
        # stopped between the two inserts) is "lost" once no replica can still be sending it.
        retry_window_s = sms.max_attempts * (sms.timeout_s + sms.backoff_cap_s)
        while True:
            with contextlib.suppress(StoreError):
                await self._cstore.mark_sms_lost(time.time() - retry_window_s)
                deleted = await self._cstore.delete_before(time.time() - cfg.retention_days * 86400.0)
                for table, n in deleted.items():
                    if n:
                        self._metrics.retention_deleted.labels(table).inc(n)
            await asyncio.sleep(cfg.retention_interval_s)


_CASE_STATES = ("dispatching", "accepted", "unassigned", "closed")


def _link_options(body: dict[str, Any]) -> tuple[str | None, float | None, int | None, str | None] | str:
    phone = body.get("phone")
    ttl = body.get("ttl_s")
    uses = body.get("max_uses")
    lang = body.get("lang")
    if phone is not None and (
        not isinstance(phone, str) or not 3 <= len(phone) <= 32 or not _phone_ok(phone)
    ):
        return "phone must be a phone number (digits, spaces, +, -, 3..32 characters)"
    if ttl is not None and (
        isinstance(ttl, bool)
        or not isinstance(ttl, int | float)
        or not 60 <= ttl <= 7 * 86400  # False for NaN; exact for any int (no float conversion)
    ):
        return "ttl_s must be seconds between 60 and 604800"
    if uses is not None and (isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= 100):
        return "max_uses must be an integer between 1 and 100"
    if lang is not None and lang not in LANGS:
        return f"lang must be one of {', '.join(LANGS)}"
    return phone, ttl, uses, lang


def _phone_ok(phone: str) -> bool:
    return all(ch.isdigit() or ch in "+ -()" for ch in phone) and sum(ch.isdigit() for ch in phone) >= 3


class _FormError(ValueError):
    """A form field the caller must correct (named in the answer, shown by the page)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _assist_form(body: dict[str, Any]) -> tuple[float | None, float | None, str, str, str, str]:
    """(lat, lon, address, vehicle, what, phone) of the form; `_FormError` naming a bad field."""
    lat = lon = None
    if body.get("lat") is not None or body.get("lon") is not None:
        try:
            lat, lon, _ = check_position({"accuracy_m": 0, **body})
        except DecodeError as exc:
            raise _FormError(exc.path, exc.reason) from exc
    fields = {"address": 300, "vehicle": 200, "phone": 32}
    values: dict[str, str] = {}
    for key, limit in fields.items():
        v = body.get(key, "")
        if not isinstance(v, str) or len(v) > limit:
            raise _FormError(key, f"at most {limit} characters")
        values[key] = v.strip()
    what = body.get("what")
    if what not in WHATS:
        raise _FormError("what", f"one of {', '.join(WHATS)}")
    if values["phone"] and not _phone_ok(values["phone"]):
        raise _FormError("phone", "a phone number")
    if lat is None:
        coords = _coordinates(values["address"])
        if coords is not None:
            lat, lon = coords
        elif not values["address"]:
            raise _FormError("address", "give the address or coordinates, or use your position")
    return (lat, lon, values["address"], values["vehicle"], what, values["phone"])


def _coordinates(text: str) -> tuple[float, float] | None:
    """Typed coordinates such as ``50.85, 4.35``; None for an address (the operator locates it)."""
    parts = text.replace(";", ",").split(",")
    if len(parts) != 2:
        return None
    try:
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    if math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180:
        return lat, lon
    return None


def _link_json(r: LinkRow, *, url: str | None = None) -> dict[str, Any]:
    now = time.time()
    state = (
        "revoked"
        if r.revoked_at is not None
        else "expired"
        if r.expires_at <= now
        else "used_up"
        if r.uses >= r.max_uses
        else "active"
    )
    out: dict[str, Any] = {
        "link_id": r.link_id,
        "purpose": r.purpose,
        "incident_id": r.incident_id,
        "case_id": r.case_id,
        "state": state,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "uses": r.uses,
        "max_uses": r.max_uses,
        "created_by": r.created_by,
        "sms": r.sms_state,
    }
    if url is not None:
        out["url"] = url  # shown once, to its creator (read out if the SMS cannot be sent)
    return out


def _case_json(c: CaseRow) -> dict[str, Any]:
    return {
        "case_id": c.case_id,
        "status": c.status,
        "origin": c.origin,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "capability": c.capability,
        "what": c.what,
        "position": None if c.lat is None else {"lat": c.lat, "lon": c.lon},
        "address": c.address,
        "vehicle": c.vehicle_desc,
        "phone": c.phone,
        "provider": c.provider,
        "answer_by": c.deadline,
        "tried": [{"provider": n, "outcome": o} for n, o in tried_list(c)],
        "reason": c.reason,
        "eta_min": c.eta_min,
        "note": c.note,
        "shared": json.loads(c.shared or "{}"),
        "accepted_at": c.accepted_at,
    }
