"""The SRE endpoints: quarantine and dead letters (what could not be decoded or delivered),
Prometheus metrics, readiness, and an unauthenticated liveness probe.
"""

from __future__ import annotations

from aiohttp import web

from ecallgw.gateway.health import Health
from ecallgw.gateway.http_auth import Guard, Principal
from ecallgw.gateway.intake import Intake
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.pipeline import Pipeline
from ecallgw.gateway.store import Store

__all__ = ["SreApi"]


class SreApi:
    """The SRE endpoints, registered on the server's router behind its role guard."""

    def __init__(self, pipeline: Pipeline | Intake, store: Store, metrics: Metrics, health: Health) -> None:
        self._pipeline = pipeline
        self._store = store
        self._metrics = metrics
        self._health = health

    def register(self, router: web.UrlDispatcher, guard: Guard) -> None:
        router.add_get("/v1/quarantine", guard("sre", self._quarantine))
        router.add_get("/v1/dead-letters", guard("sre", self._dead_letters))
        router.add_get("/metrics", guard("sre", self._metrics_page))
        router.add_get("/readyz", guard("sre", self._readyz))
        router.add_get("/healthz", self._healthz)

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
        body: dict[str, object] = {"ready": ok, "checks": checks}
        if reasons := self._health.reasons(checks):
            body["reasons"] = reasons  # e.g. the store is full: {"store_writable": "disk full: ..."}
        return web.json_response(body, status=200 if ok else 503)

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"alive": True})
