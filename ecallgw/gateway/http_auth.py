"""Who is asking: bearer tokens and client certificates mapped to a `Principal`, failed attempts throttled.

Tokens are looked up by their SHA-256 (a dict lookup does not leak the token by timing); a client
certificate verified against ``http.client_ca_file`` names its holder by fingerprint or subject CN.
Nothing here logs or returns a token.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from ecallgw.config import AuthConfig
from ecallgw.gateway.tls import cert_sha256, peer_common_name

__all__ = [
    "UNKNOWN_TOKEN",
    "AuthThrottle",
    "Authenticator",
    "Guard",
    "Handler",
    "Principal",
    "Refuse",
    "RoleHandler",
    "auth_failure",
    "door",
]

UNKNOWN_TOKEN = "unknown token"


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who a bearer token belongs to."""

    name: str
    role: str
    tps: str = ""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RoleHandler = Callable[[web.Request, "Principal"], Awaitable[web.StreamResponse]]
Guard = Callable[[str, RoleHandler], Handler]
"""Wraps a handler so that only a principal of the named role reaches it (the server's ``_role``)."""
Refuse = Callable[..., web.Response]
"""``refuse(status, message, headers=None)``: a JSON error answer, counted in the metrics."""


class Authenticator:
    """The ``[auth]`` table as lookups: token digest -> holder, certificate identity -> holder."""

    def __init__(self, auth: AuthConfig) -> None:
        self.replace(auth)

    def replace(self, auth: AuthConfig) -> None:
        """Take a reloaded ``[auth]`` table (SIGHUP): from the next request on, a new token is
        accepted and a removed one refused (a console session opened with it ends too)."""
        self._tokens = {
            hashlib.sha256(t.token.reveal().encode()).digest(): Principal(name=t.name, role=t.role, tps=t.tps)
            for t in auth.tokens
            if t.token  # an entry may name its holder by client certificate only
        }
        # "sha256:{hex}" of the certificate, or "cn:{name}" of its subject.
        self._certs = {
            key: Principal(name=t.name, role=t.role, tps=t.tps)
            for t in auth.tokens
            for key in (
                f"cn:{t.cert_cn}" if t.cert_cn else "",
                f"sha256:{t.cert_sha256.replace(':', '').lower()}" if t.cert_sha256 else "",
            )
            if key
        }

    def token(self, token: str) -> Principal | None:
        """The holder of a bearer token, or None."""
        return self._tokens.get(hashlib.sha256(token.strip().encode()).digest())

    # --- console sessions (ecallgw/console/session.py) remember a token by its digest -------------

    @staticmethod
    def token_sha256(token: str) -> str:
        """The hex SHA-256 a console session keeps of the token it was opened with."""
        return hashlib.sha256(token.strip().encode()).hexdigest()

    def by_token_sha256(self, digest: str) -> Principal | None:
        """The holder of the token with this hex SHA-256, while it is still configured."""
        try:
            return self._tokens.get(bytes.fromhex(digest))
        except ValueError:
            return None

    def principal(self, request: web.Request) -> Principal | None:
        """The holder of the request's bearer token, or of its verified client certificate."""
        header = request.headers.get("Authorization", "")
        if not header and self._certs and request.transport is not None:
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
        return self.token(token)


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


def door(request: web.Request) -> str:
    """The route's path template (``/v1/ecall/{tps}/{vehicle}/{kind}``), never the path itself."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


def auth_failure(request: web.Request) -> str:
    """Why a request carries no valid credentials, in words that never include the token."""
    header = request.headers.get("Authorization")
    if header is None:
        return "no bearer token (nor a known client certificate)"
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "not a bearer token"
    return UNKNOWN_TOKEN
