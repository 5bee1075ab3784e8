"""A simulated PSAP and operator desk: an aiohttp server on 127.0.0.1 that records every document.

Each receiver of the gateway points at ``http://127.0.0.1:{port}/{receiver}``. For every POST the
server records when it arrived, the body, the ``Idempotency-Key`` and what it answered, and counts
duplicate deliveries (a key accepted with a 2xx before). It can misbehave like real receivers do:
answer slowly, answer 5xx or 429 with ``Retry-After`` for a share of requests, or go down (stop
listening, so connections are refused) for a period.

``OperatorBot`` plays the operator desk: for each new incident the desk receives, it looks up what
the scenario prescribes (escalate or cancel, after a delay) and posts that action to the gateway's
operator API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

__all__ = [
    "Arrival",
    "Behaviour",
    "BotStats",
    "DocumentInfo",
    "OperatorBot",
    "SimulatedPsap",
    "parse_document",
]

_log = logging.getLogger("ecallgw.simulators.psap")
_CAP_NS = "{urn:oasis:names:tc:emergency:cap:1.2}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentInfo:
    """What the load test needs from a forwarded document (JSON or CAP)."""

    incident_id: str
    revision: int
    status: str
    tps: str
    vehicle: str
    call_id: str
    test: bool
    level: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Arrival:
    """One request the simulated receiver got.

    Attributes:
        receiver: the path's receiver name.
        at: arrival time (body read, before any simulated delay), epoch seconds (``time.time()``,
            the same clock the drivers schedule on). ``SimulatedPsap.arrivals`` is in answer order.
        status: the HTTP status we answered.
        key: the ``Idempotency-Key`` header, or None.
        content_type: the request's content type.
        body: the request body.
        duplicate: True when ``key`` had already been accepted (2xx) by this receiver.
    """

    receiver: str
    at: float
    status: int
    key: str | None
    content_type: str
    body: bytes
    duplicate: bool

    @property
    def accepted(self) -> bool:
        """True when we answered 2xx (the gateway counts it delivered)."""
        return 200 <= self.status < 300


@dataclass(slots=True, kw_only=True)
class Behaviour:
    """How the receiver misbehaves; change the fields while it runs.

    Attributes:
        delay_s: answer after this many seconds.
        error_rate: share of requests answered ``error_status``.
        error_status: 500, 503, ... for transient failures.
        throttle_rate: share of requests answered 429 with ``Retry-After: retry_after_s``.
        retry_after_s: the Retry-After we send with 429.
    """

    delay_s: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    throttle_rate: float = 0.0
    retry_after_s: int = 1


def _text(el: ET.Element | None) -> str:
    return (el.text or "") if el is not None else ""


def parse_document(content_type: str, body: bytes) -> DocumentInfo | None:
    """Extract incident id, revision, status and call of a JSON or CAP document; None if unreadable.

    JSON follows docs/interfaces.md (``incident_id``, ``revision``, ``status``, ``call``, ``severity``).
    For CAP the incident id and revision come from the ``parameter`` entries the gateway adds
    (``incident_id``, ``revision``, ``tps``, ``vehicle``, ``call_id``) and the status from ``msgType``
    (Alert -> open, Update -> updated, Cancel -> cancelled).
    """
    try:
        if "xml" in content_type or body.lstrip().startswith(b"<"):
            root = ET.fromstring(body)
            info = root.find(f"{_CAP_NS}info")
            params: dict[str, str] = {}
            if info is not None:
                for p in info.findall(f"{_CAP_NS}parameter"):
                    params[_text(p.find(f"{_CAP_NS}valueName"))] = _text(p.find(f"{_CAP_NS}value"))
            kind = _text(root.find(f"{_CAP_NS}msgType"))
            status = {"Alert": "open", "Update": "updated", "Cancel": "cancelled"}.get(kind, kind.lower())
            params = {k.lower(): v for k, v in params.items()}
            return DocumentInfo(
                incident_id=params.get("incident_id", ""),
                revision=int(params.get("revision", "0") or 0),
                status=params.get("status", status),
                tps=params.get("tps", ""),
                vehicle=params.get("vehicle", ""),
                call_id=params.get("call_id", ""),
                test=_text(root.find(f"{_CAP_NS}status")) == "Test",
                level=params.get("level") or params.get("severity_level"),
            )
        doc: dict[str, Any] = json.loads(body)
        call = doc.get("call") or {}
        severity = doc.get("severity") or {}
        return DocumentInfo(
            incident_id=str(doc["incident_id"]),
            revision=int(doc["revision"]),
            status=str(doc.get("status", "")),
            tps=str(call.get("tps", "")),
            vehicle=str(call.get("vehicle", "")),
            call_id=str(call.get("call_id", "")),
            test=bool(call.get("test", False)),
            level=severity.get("level") if isinstance(severity, dict) else None,
        )
    except (ValueError, KeyError, TypeError, ET.ParseError):
        return None


class SimulatedPsap:
    """The receiving end: ``async with SimulatedPsap() as psap: psap.url("operator")``.

    Args:
        rng: seeded randomness for which requests fail.
        behaviour: initial behaviour (well-behaved by default).
        port: the port to listen on (0 picks a free one, kept across outages).
    """

    def __init__(self, rng: random.Random, behaviour: Behaviour | None = None, *, port: int = 0) -> None:
        self.rng = rng
        self.behaviour = behaviour if behaviour is not None else Behaviour()
        self.port = port
        self.arrivals: list[Arrival] = []
        self.last_activity = 0.0
        """When a request last arrived or was answered (epoch seconds): quiet means no traffic."""
        self._accepted_keys: dict[str, set[str]] = {}
        self._listeners: list[Callable[[Arrival], None]] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._outage: asyncio.Task[None] | None = None

    def url(self, receiver: str) -> str:
        """The webhook URL for a receiver name."""
        return f"http://127.0.0.1:{self.port}/{receiver}"

    def subscribe(self, listener: Callable[[Arrival], None]) -> None:
        """Call ``listener`` with every arrival (on the event loop, right after it is recorded)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[Arrival], None]) -> None:
        """Stop calling ``listener``."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    @property
    def duplicates(self) -> int:
        """Accepted deliveries whose Idempotency-Key had been accepted before."""
        return sum(1 for a in self.arrivals if a.duplicate)

    def accepted(self, receiver: str | None = None) -> list[Arrival]:
        """Accepted (2xx) arrivals, optionally of one receiver."""
        return [a for a in self.arrivals if a.accepted and (receiver is None or a.receiver == receiver)]

    async def __aenter__(self) -> SimulatedPsap:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/{receiver}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await self._listen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._outage is not None:
            self._outage.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._outage
        if self._runner is not None:
            await self._runner.cleanup()

    async def _listen(self) -> None:
        if self._runner is None:
            raise RuntimeError("SimulatedPsap is not entered")
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        if self.port == 0:
            host_port = self._runner.addresses[0]
            self.port = int(host_port[1])

    async def go_down(self, seconds: float) -> None:
        """Stop listening now (connections are refused) and come back after ``seconds``.

        Called again while down, the outage is extended to end ``seconds`` from now.
        """
        if self._outage is not None and not self._outage.done():
            self._outage.cancel()  # one listener coming back, not two fighting over the port
            with contextlib.suppress(asyncio.CancelledError):
                await self._outage
        if self._site is not None:
            await self._site.stop()
            self._site = None
        # Stopping the listener leaves keep-alive connections open; a receiver that is down drops them.
        server = self._runner.server if self._runner is not None else None
        for handler in server.connections if server is not None else ():
            handler.force_close()

        async def back() -> None:
            await asyncio.sleep(seconds)
            await self._listen()

        self._outage = asyncio.create_task(back())

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        # Arrival is when the document got here: a slow PSAP's own answering time is not the
        # gateway's latency.
        arrived = self.last_activity = time.time()
        receiver = request.match_info["receiver"]
        b = self.behaviour
        if b.delay_s > 0:
            await asyncio.sleep(b.delay_s)
        roll = self.rng.random()
        headers: Mapping[str, str] = {}
        if roll < b.error_rate:
            status = b.error_status
        elif roll < b.error_rate + b.throttle_rate:
            status, headers = 429, {"Retry-After": str(b.retry_after_s)}
        else:
            status = 200
        key = request.headers.get("Idempotency-Key")
        duplicate = False
        if 200 <= status < 300 and key is not None:
            seen = self._accepted_keys.setdefault(receiver, set())
            duplicate = key in seen
            seen.add(key)
        arrival = Arrival(
            receiver=receiver,
            at=arrived,
            status=status,
            key=key,
            content_type=request.content_type,
            body=body,
            duplicate=duplicate,
        )
        self.arrivals.append(arrival)
        self.last_activity = time.time()
        for listener in self._listeners:
            listener(arrival)
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else "no")


@dataclass(slots=True)
class BotStats:
    """What the operator bot did.

    Attributes:
        actions: accepted actions by name.
        moot: actions the gateway refused with a 4xx (409: the incident had moved on).
        failures: actions still failing (5xx, 429, no answer) after five attempts.
        unfinished: actions not yet done when the bot was closed (due after the drain).
    """

    actions: dict[str, int] = field(default_factory=dict)
    moot: int = 0
    failures: int = 0
    unfinished: int = 0


class OperatorBot:
    """Acts on incidents the desk receives, as each scenario's label prescribes.

    Args:
        api: the gateway's base URL (``http://127.0.0.1:8080``).
        token: an operator bearer token.
        plan: (tps, vehicle) -> (action, epoch time to act) from the scenario labels.
        desk: the operator desk's receiver name.
    """

    def __init__(
        self,
        api: str,
        token: str,
        plan: Mapping[tuple[str, str], tuple[str, float]],
        *,
        desk: str = "operator",
    ) -> None:
        self.api = api.rstrip("/")
        self.token = token
        self.plan = plan
        self.desk = desk
        self.stats = BotStats()
        self._seen: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def on_arrival(self, arrival: Arrival) -> None:
        """Listener for ``SimulatedPsap.subscribe``: schedule the prescribed action once per incident."""
        if arrival.receiver != self.desk or not arrival.accepted:
            return
        info = parse_document(arrival.content_type, arrival.body)
        if info is None or info.incident_id in self._seen or info.status in ("cancelled", "resolved"):
            return
        step = self.plan.get((info.tps, info.vehicle))
        if step is None:
            return
        self._seen.add(info.incident_id)
        action, when = step
        task = asyncio.create_task(self._act(info.incident_id, action, when))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Return once every action scheduled so far has been posted (or given up)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def __aenter__(self) -> OperatorBot:
        self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"})
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stats.unfinished += len(self._tasks)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _act(self, incident_id: str, action: str, when: float) -> None:
        await asyncio.sleep(max(0.0, when - time.time()))
        if self._session is None:
            raise RuntimeError("OperatorBot is not entered")
        url = f"{self.api}/v1/incidents/{incident_id}/actions"
        body = {"action": action, "note": "simulated operator"}
        if action == "cancel":
            body["reason"] = "false trigger (simulated)"  # the API requires why (issue 13)
        for attempt in range(5):
            try:
                async with (
                    asyncio.timeout(5.0),
                    self._session.post(url, json=body) as resp,
                ):
                    if resp.status < 300:
                        self.stats.actions[action] = self.stats.actions.get(action, 0) + 1
                        return
                    if resp.status < 500 and resp.status != 429:
                        # 409: the incident moved on (cancelled by the vehicle); nothing to do.
                        _log.debug("operator %s on %s answered %s", action, incident_id, resp.status)
                        self.stats.moot += 1
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2 * 2**attempt)
        self.stats.failures += 1
