"""A simulated SMS gateway (the operator's SMS provider cannot run here): an HTTP server on
127.0.0.1 that takes ``POST /sms`` as ecallgw's SMS webhook sends it (docs/caller.md) and records
each message once per idempotency key, as a real gateway must. It can answer 5xx to the first
``fail_first`` requests to exercise the sender's retries. For tests and ``ecallgw demo``.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["SimulatedSmsGateway", "Sms"]

_URL = re.compile(r"https?://\S+")


@dataclass(frozen=True, slots=True)
class Sms:
    """One message as the gateway accepted it."""

    to: str
    text: str
    sender: str
    key: str
    authorization: str | None

    @property
    def url(self) -> str | None:
        """The first link in the text."""
        m = _URL.search(self.text)
        return m.group(0) if m else None


@dataclass
class SimulatedSmsGateway:
    """Records messages; ``fail_first`` requests are answered 503 (then it accepts)."""

    fail_first: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Sms] = field(default_factory=list)
    requests: int = 0
    keys_seen: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/sms"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        key = request.headers.get("Idempotency-Key", "")
        self.keys_seen.append(key)
        if self.requests <= self.fail_first:
            return web.json_response({"error": "simulated outage"}, status=503)
        try:
            body = json.loads(await request.read())
            to, text = str(body["to"]), str(body["text"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "body must be JSON {to, text}"}, status=400)
        if key and any(m.key == key for m in self.messages):
            return web.json_response({"status": "duplicate", "key": key})  # sent once per key
        self.messages.append(
            Sms(
                to=to,
                text=text,
                sender=str(body.get("sender", "")),
                key=key,
                authorization=request.headers.get("Authorization"),
            )
        )
        self._arrived.set()
        return web.json_response({"status": "queued", "key": key}, status=202)

    async def wait(self, n: int = 1, timeout_s: float = 10.0) -> list[Sms]:
        """Wait until ``n`` messages have arrived; return them."""
        async with asyncio.timeout(timeout_s):
            while len(self.messages) < n:
                self._arrived.clear()
                await self._arrived.wait()
        return self.messages

    async def start(self) -> SimulatedSmsGateway:
        app = web.Application()
        app.router.add_post("/sms", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        for address in self._runner.addresses:
            self.port = int(address[1])
            break
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> SimulatedSmsGateway:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
