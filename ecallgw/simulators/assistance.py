"""Simulated assistance providers (tow trucks and garages cannot run here): HTTP servers on
127.0.0.1 that receive ecallgw's case webhook (docs/caller.md) and answer through ecallgw's API
with their own ``assistance`` token, by policy: accept (with an ETA), decline, or never answer.
For tests and ``ecallgw demo``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp import web

__all__ = ["Policy", "SimulatedProvider"]

Policy = Literal["accept", "decline", "silent"]


@dataclass
class SimulatedProvider:
    """One provider: its webhook records offers and, unless silent, answers after ``delay_s``."""

    name: str
    token: str
    lat: float
    lon: float
    capabilities: tuple[str, ...] = ("tow",)
    radius_km: float = 50.0
    policy: Policy = "accept"
    eta_min: int = 25
    delay_s: float = 0.05
    note: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    offers: list[dict[str, Any]] = field(default_factory=list)
    answers: list[tuple[str, int]] = field(default_factory=list)  # (case id, HTTP status)
    _runner: web.AppRunner | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/cases"

    def config(self) -> dict[str, Any]:
        """Its ``[[assistance.providers]]`` table."""
        return {
            "name": self.name,
            "lat": self.lat,
            "lon": self.lon,
            "radius_km": self.radius_km,
            "capabilities": list(self.capabilities),
            "webhook_url": self.url,
            "token": self.token,
        }

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            offer = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": "not JSON"}, status=400)
        if any(o.get("case_id") == offer.get("case_id") for o in self.offers):
            return web.json_response({"status": "duplicate"})  # one offer per idempotency key
        self.offers.append(offer)
        if self.policy != "silent":
            task = asyncio.create_task(self._answer(offer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response({"status": "received"}, status=202)

    async def _answer(self, offer: dict[str, Any]) -> None:
        await asyncio.sleep(self.delay_s)
        body: dict[str, Any] = {"accept": self.policy == "accept"}
        if self.policy == "accept":
            body["eta_min"] = self.eta_min
            body["note"] = self.note or f"{self.name}: truck on its way"
        headers = {"Authorization": f"Bearer {self.token}"}
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s,
                s.post(str(offer["answer_url"]), json=body, headers=headers) as resp,
            ):
                self.answers.append((str(offer["case_id"]), resp.status))

    async def start(self) -> SimulatedProvider:
        app = web.Application()
        app.router.add_post("/cases", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        for address in self._runner.addresses:
            self.port = int(address[1])
            break
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
