"""Console sessions: an operator signs in with their token once and gets a session cookie.

The cookie holds 32 random bytes; the store keeps only their SHA-256 (a copy of the table gives no
live session) with the operator's name, the SHA-256 of the token used and the expiry, so every
replica on one PostgreSQL sees a sign-in and a sign-out at once. A session works only while its
token is still an operator token in ``auth.tokens`` (removing the token ends its sessions).

Every state-changing request made with the cookie carries ``X-CSRF-Token`` (an HMAC of the session
id, handed to the page by ``GET /console/session``) and, when the browser sends one, an ``Origin``
of this very host; the cookie itself is ``SameSite=Strict`` and ``HttpOnly`` (``Secure`` over TLS,
and always with ``console.cookie_secure = "always"``, for TLS ended by a reverse proxy in front).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import urlsplit

from aiohttp import web

from ecallgw.gateway.http_auth import Authenticator, Principal
from ecallgw.gateway.store import Store

__all__ = ["CSRF_HEADER", "Sessions", "cookie_name", "foreign_origin"]

CSRF_HEADER = "X-CSRF-Token"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def cookie_name(secure: bool) -> str:
    """``__Host-`` over TLS: the browser then refuses the cookie unless Secure, Path=/, no Domain."""
    return "__Host-ecallgw_session" if secure else "ecallgw_session"


def foreign_origin(request: web.Request) -> bool:
    """Whether the browser says the request comes from another site.

    Under ``Referrer-Policy: no-referrer`` the page's own requests carry ``Origin: null``, so the
    fetch metadata (``Sec-Fetch-Site``) is asked too; a request without either (curl) is judged by
    its CSRF token alone.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    return origin is not None and origin != "null" and urlsplit(origin).netloc != request.host


def _digest(session: str) -> str:
    return hashlib.sha256(session.encode()).hexdigest()


class Sessions:
    """Sign-in, lookup and sign-out of console sessions kept in the store."""

    def __init__(
        self, auth: Authenticator, store: Store, *, hours: float, always_secure: bool = False
    ) -> None:
        self._auth = auth
        self._store = store
        self._lifetime_s = hours * 3600.0
        self._always_secure = always_secure

    def secure(self, request: web.Request) -> bool:
        """Whether the cookie is Secure (and ``__Host-``): over TLS, or always when TLS ends at a
        proxy in front (the browser speaks HTTPS; this server sees plain HTTP)."""
        return self._always_secure or request.secure

    def cookie(self, request: web.Request) -> str | None:
        value = request.cookies.get(cookie_name(self.secure(request)))
        return value if value and len(value) <= 128 else None

    async def sign_in(self, token: str) -> tuple[str, Principal, float] | None:
        """A new session for an operator token: (cookie value, holder, expiry), or None."""
        who = self._auth.token(token)
        if who is None or who.role != "operator":
            return None
        session = secrets.token_urlsafe(32)
        now = time.time()
        expires = now + self._lifetime_s
        await self._store.session_put(
            _digest(session),
            operator=who.name,
            token_sha256=Authenticator.token_sha256(token),
            created_at=now,
            expires_at=expires,
        )
        return session, who, expires

    async def principal(self, request: web.Request) -> tuple[Principal, float] | None:
        """The operator of the request's session cookie and its expiry, or None."""
        session = self.cookie(request)
        if session is None:
            return None
        found = await self._store.session_get(_digest(session), now=time.time())
        if found is None:
            return None
        _, token_sha256, expires = found
        who = self._auth.by_token_sha256(token_sha256)  # the token must still be configured
        if who is None or who.role != "operator":
            return None
        return who, expires

    async def sign_out(self, request: web.Request) -> None:
        session = self.cookie(request)
        if session is not None:
            await self._store.session_delete(_digest(session))

    @staticmethod
    def csrf_token(session: str) -> str:
        return hmac.new(session.encode(), b"ecallgw console csrf", hashlib.sha256).hexdigest()

    def csrf_refusal(self, request: web.Request) -> str | None:
        """Why a request made with the cookie may not change anything, or None when it may."""
        if request.method in _SAFE:
            return None
        if foreign_origin(request):
            return "cross-origin request refused"
        session = self.cookie(request)
        sent = request.headers.get(CSRF_HEADER, "")
        if session is None or not hmac.compare_digest(sent.encode(), self.csrf_token(session).encode()):
            return f"missing or wrong {CSRF_HEADER}"
        return None
