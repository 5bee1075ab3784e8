"""A receiving end for delivery tests: a real aiohttp server on 127.0.0.1 that records what it gets.

It counts distinct ``Idempotency-Key`` values (what a PSAP deduplicates on) and can be scripted to
answer with errors, Retry-After, or to be down (its port closed) for a while. With ``tls`` (a server
context) it listens for HTTPS and records the client certificate's CN.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.gateway.broker import free_port

__all__ = ["Received", "Receiver"]


@dataclass
class Received:
    """One request as the receiver saw it."""

    key: str
    body: bytes
    content_type: str
    at: float
    status: int
    authorization: str | None = None
    client_cn: str | None = None


@dataclass
class Receiver:
    """The scripted receiver. ``script(n)`` gives (status, headers) for the n-th request (0-based)."""

    script: Callable[[int], tuple[int, dict[str, str]]] = lambda n: (200, {})
    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    tls: ssl.SSLContext | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/incidents"

    @property
    def keys(self) -> set[str]:
        """Distinct idempotency keys of accepted (2xx) requests."""
        return {r.key for r in self.requests if 200 <= r.status < 300}

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status, headers = self.script(len(self.requests))
        self.requests.append(
            Received(
                key=request.headers.get("Idempotency-Key", ""),
                body=body,
                content_type=request.content_type,
                at=time.time(),
                status=status,
                authorization=request.headers.get("Authorization"),
                client_cn=_client_cn(request),
            )
        )
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else "no")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/incidents", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _client_cn(request: web.Request) -> str | None:
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    for rdn in (cert or {}).get("subject", ()):
        for attr, value in rdn:
            if attr == "commonName":
                return str(value)
    return None
