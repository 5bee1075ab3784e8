"""The operator console's routes on the HTTP server: its static page, sign-in and sign-out.

=========================================== ========== =============================================
endpoint                                    auth       what
=========================================== ========== =============================================
GET    /console/ and its assets             (none)     the page, scripts, styles, catalogues, Leaflet
GET    /console/config.json, wmi.json,      (none)     map tiles setting; WMI -> manufacturer; the
       areas.json                                      PSAP areas (the queue's area filter)
POST   /console/session                     token      sign in (form field ``token``): cookie, 303
GET    /console/session                     cookie     who is signed in, the CSRF token, the expiry
DELETE /console/session                     cookie     sign out (with ``X-CSRF-Token``)
=========================================== ========== =============================================

The page holds no data: everything it shows comes from the operator API, which accepts the
session cookie for an operator (`HttpServer._role`). Every answer here carries a strict
Content-Security-Policy (scripts, styles and connections to this origin only; images also from the
configured tile host), ``nosniff``, ``no-referrer`` and no framing.
"""

from __future__ import annotations

import json
import logging
import mimetypes
from importlib import resources
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from aiohttp import web

from ecallgw.config import ConsoleConfig
from ecallgw.console.session import Sessions, cookie_name, foreign_origin
from ecallgw.gateway.http_auth import Authenticator, AuthThrottle, Principal, Refuse
from ecallgw.gateway.store import Store
from ecallgw.simulators.vin import WMIS
from ecallgw.triage.policy import PsapArea

__all__ = ["Console"]

log = logging.getLogger("ecallgw.console")

_ASSET_SUFFIXES = frozenset({".html", ".js", ".css", ".json", ".png", ".svg"})
_TYPES = {".js": "text/javascript", ".json": "application/json", ".css": "text/css", ".html": "text/html"}


def _assets() -> dict[str, bytes]:
    """Every servable file of the package by its path under /console/ (read once at start)."""
    root = resources.files("ecallgw.console")
    found: dict[str, bytes] = {}
    stack = [(root, PurePosixPath())]
    while stack:
        folder, rel = stack.pop()
        for entry in folder.iterdir():
            name = entry.name
            if entry.is_dir():
                if not name.startswith((".", "_")):
                    stack.append((entry, rel / name))
            elif PurePosixPath(name).suffix in _ASSET_SUFFIXES:
                found[str(rel / name)] = entry.read_bytes()
    return found


class Console:
    """The console's routes; `operator` and `csrf_refusal` serve the server's role guard."""

    def __init__(
        self,
        config: ConsoleConfig,
        auth: Authenticator,
        store: Store,
        refuse: Refuse,
        throttle: AuthThrottle,
        tls: bool,
        *,
        areas: tuple[PsapArea, ...] = (),
    ) -> None:
        self._config = config
        self._refuse = refuse
        self._throttle = throttle
        self._tls = tls
        self.sessions = Sessions(
            auth, store, hours=config.session_hours, always_secure=config.cookie_secure == "always"
        )
        self._assets = _assets()
        tile_host = ""
        if config.tile_url:  # "{s}" (a subdomain Leaflet picks) is any subdomain to the CSP
            parts = urlsplit(config.tile_url)
            tile_host = f" {parts.scheme}://{parts.netloc.replace('{s}', '*')}"
        self._headers = {
            "Content-Security-Policy": (
                "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                f"img-src 'self' data:{tile_host}; object-src 'none'; base-uri 'none'; "
                "form-action 'self'; frame-ancestors 'none'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-cache",
        }
        self._config_json = json.dumps(
            {
                "tile_url": config.tile_url,
                "tile_attribution": config.tile_attribution,
                "session_hours": config.session_hours,
            }
        ).encode()
        self._wmi_json = json.dumps({w.code: w.make for w in WMIS}, ensure_ascii=False).encode()
        # The PSAP areas triage routes by, for the queue's area filter ((lon, lat) rings, first wins).
        self._areas_json = json.dumps(
            {
                "areas": [
                    {
                        "name": a.receiver,
                        "polygons": [
                            {
                                "outer": [list(p) for p in poly.outer],
                                "holes": [[list(p) for p in h] for h in poly.holes],
                            }
                            for poly in a.polygons
                        ],
                    }
                    for a in areas
                ]
            }
        ).encode()

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/console", self._to_index)
        router.add_get("/console/session", self._session)
        router.add_post("/console/session", self._sign_in)
        router.add_delete("/console/session", self._sign_out)
        router.add_get("/console/config.json", self._config_page)
        router.add_get("/console/wmi.json", self._wmi)
        router.add_get("/console/areas.json", self._areas_page)
        router.add_get("/console/{path:.*}", self._asset)

    # --- for the role guard -------------------------------------------------------------------

    async def operator(self, request: web.Request) -> Principal | None:
        found = await self.sessions.principal(request)
        return None if found is None else found[0]

    def csrf_refusal(self, request: web.Request) -> str | None:
        return self.sessions.csrf_refusal(request)

    # --- routes ---------------------------------------------------------------------------------

    def _answer(self, body: bytes, content_type: str, status: int = 200) -> web.Response:
        return web.Response(body=body, status=status, content_type=content_type, headers=self._headers)

    async def _to_index(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/console/", headers=self._headers)

    async def _asset(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"] or "index.html"
        body = self._assets.get(path)
        if body is None:
            return self._refuse(404, "no such console file")
        suffix = PurePosixPath(path).suffix
        ctype = _TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"
        return self._answer(body, ctype)

    async def _config_page(self, request: web.Request) -> web.StreamResponse:
        return self._answer(self._config_json, "application/json")

    async def _wmi(self, request: web.Request) -> web.StreamResponse:
        return self._answer(self._wmi_json, "application/json")

    async def _areas_page(self, request: web.Request) -> web.StreamResponse:
        return self._answer(self._areas_json, "application/json")

    async def _session(self, request: web.Request) -> web.StreamResponse:
        found = await self.sessions.principal(request)
        session = self.sessions.cookie(request)
        if found is None or session is None:
            return self._refuse(401, "not signed in")
        who, expires = found
        body = json.dumps(
            {"operator": who.name, "csrf": self.sessions.csrf_token(session), "expires_at": expires}
        ).encode()
        return self._answer(body, "application/json")

    async def _sign_in(self, request: web.Request) -> web.StreamResponse:
        remote = request.remote or "unknown"
        retry_after = self._throttle.retry_after(remote)
        if retry_after is not None:
            return self._refuse(
                429, "too many failed sign-ins from this address", {"Retry-After": str(retry_after)}
            )
        if foreign_origin(request):
            return self._refuse(403, "cross-origin sign-in refused")
        try:
            form = await request.post()
        except ValueError:
            return self._refuse(400, "token: a form field")
        token = form.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= 512:
            return self._refuse(400, "token: a form field of 1 to 512 characters")
        opened = await self.sessions.sign_in(token)
        if opened is None:
            self._throttle.failed(remote)
            log.warning(
                "console sign-in refused", extra={"event": "console_signin_refused", "remote": remote}
            )
            raise web.HTTPSeeOther("/console/?signin=failed", headers=self._headers)
        session, who, _ = opened
        log.info("console sign-in", extra={"event": "console_signin", "holder": who.name, "remote": remote})
        response = web.HTTPSeeOther("/console/", headers=self._headers)
        secure = self.sessions.secure(request) or self._tls
        response.set_cookie(
            cookie_name(secure),
            session,
            max_age=max(1, int(self._config.session_hours * 3600)),
            path="/",
            secure=secure,
            httponly=True,
            samesite="Strict",
        )
        raise response

    async def _sign_out(self, request: web.Request) -> web.StreamResponse:
        if self.sessions.cookie(request) is None:
            return self._refuse(401, "not signed in")
        refusal = self.sessions.csrf_refusal(request)
        if refusal is not None:
            return self._refuse(403, refusal)
        await self.sessions.sign_out(request)
        response = self._answer(b'{"signed_out": true}', "application/json")
        response.del_cookie(cookie_name(self.sessions.secure(request)), path="/")
        return response
