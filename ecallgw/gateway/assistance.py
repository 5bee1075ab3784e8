"""Breakdown assistance dispatch: the nearest available provider by webhook, then the next (issue 14).

A case is offered to one provider at a time, nearest first (`ecallgw.caller.dispatch.ranked`):
the offer is one conditional UPDATE (``provider``, ``deadline = now + answer_timeout_s``, the
version compared), so of several replicas exactly one makes it and sends the webhook. The provider
answers through ``POST /v1/assistance/cases/{id}/answer``; a decline, a webhook that cannot be
delivered, or no answer by the deadline offers the case to the next one; when nobody is left the
case goes to the operators' queue (status ``unassigned``) with the reason. Deadlines are stored:
after a restart the timer loop finds overdue offers in the store and moves on.

Webhook contract (docs/caller.md): ``POST {webhook_url}`` JSON case, ``Idempotency-Key:
{case_id}:{provider}``, bearer ``webhook_token``; 2xx is received (the answer comes through the
API), 408/425/429/5xx and no answer are retried ``assistance.webhook_attempts`` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client import Histogram

from ecallgw.caller.dispatch import Candidate, distance_km, ranked
from ecallgw.config import AssistanceConfig, ProviderConfig
from ecallgw.errors import StoreError
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.retry import backoff_s
from ecallgw.gateway.store.caller import CallerStore, CaseRow

__all__ = ["Dispatcher"]

log = logging.getLogger("ecallgw.assistance")

_TICK_S = 0.25  # the timer loop's longest sleep: overdue offers are found within this


def tried_list(case: CaseRow) -> list[tuple[str, str]]:
    """(provider, outcome) of every provider asked before, in order."""
    return [tuple(x.split(":", 1)) for x in case.tried.split(",") if x]  # type: ignore[misc]


class Dispatcher:
    """Offers cases to providers and keeps their deadlines."""

    def __init__(
        self,
        config: AssistanceConfig,
        store: CallerStore,
        metrics: Metrics,
        *,
        answer_url: Callable[[str], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self._answer_url = answer_url
        self.providers: dict[str, ProviderConfig] = {p.name: p for p in config.providers}
        self._rng = random.Random()
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Time from the request to an accepting provider; no labels (nothing personal to label by).
        self.accept_seconds = Histogram(
            "ecallgw_assistance_accept_seconds",
            "Breakdown assistance: seconds from the request to a provider's acceptance.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
            registry=metrics.registry,
        )

    async def candidates(self) -> list[Candidate]:
        overrides = await self._store.availability()
        return [
            Candidate(
                name=p.name,
                lat=p.lat,
                lon=p.lon,
                radius_km=p.radius_km,
                capabilities=frozenset(p.capabilities),
                available=overrides.get(p.name, p.available),
                area=p.area,
            )
            for p in self.providers.values()
        ]

    async def start(self, case: CaseRow) -> CaseRow:
        """Store a new case and offer it to the nearest provider (or the operator queue).

        A case id that exists already (the same breakdown call redelivered) is not offered again.
        """
        if not await self._store.insert_case(case):
            return await self._store.case(case.case_id) or case
        return await self.advance(case, None)

    async def advance(self, case: CaseRow, outcome: str | None) -> CaseRow:
        """Close the current offer with ``outcome`` (declined, timeout, unreachable) and make the next.

        Returns the case as it is now (unchanged when another replica moved it first).
        """
        now = self._clock()
        tried = tried_list(case)
        if case.provider is not None and outcome is not None:
            tried.append((case.provider, outcome))
        tried_text = ",".join(f"{n}:{o}" for n, o in tried)
        if case.lat is None or case.lon is None:
            moved = await self._store.update_case(
                case,
                status="unassigned",
                provider=None,
                deadline=None,
                tried=tried_text,
                reason="no position: locate the caller (send a location link) and assign by hand",
                updated_at=now,
            )
            return moved or case
        choices = ranked(
            await self.candidates(),
            lat=case.lat,
            lon=case.lon,
            capability=case.capability,
            exclude=[n for n, _ in tried],
        )
        if not choices:
            if tried:
                reason = "every provider in range was asked: " + ", ".join(f"{n} {o}" for n, o in tried)
            else:
                reason = f"no available provider with capability {case.capability} serves this position"
            moved = await self._store.update_case(
                case,
                status="unassigned",
                provider=None,
                deadline=None,
                tried=tried_text,
                reason=reason,
                updated_at=now,
            )
            if moved is not None:
                log.warning(
                    "assistance case for the operators", extra={"case_id": case.case_id, "reason": reason}
                )
            return moved or case
        distance, chosen = choices[0]
        moved = await self._store.update_case(
            case,
            status="dispatching",
            provider=chosen.name,
            deadline=now + self._config.answer_timeout_s,
            tried=tried_text,
            reason="",
            updated_at=now,
        )
        if moved is None:
            return case  # another replica (or an answer) moved it first: theirs to follow up
        log.info(
            "assistance case offered",
            extra={"case_id": case.case_id, "provider": chosen.name, "distance_km": round(distance, 2)},
        )
        self._spawn(self._webhook(moved, self.providers[chosen.name], distance))
        self._wake.set()
        return moved

    async def offer_to(self, case: CaseRow, name: str) -> CaseRow | None:
        """An operator's choice: offer the case to this provider now, whatever its distance and
        whether it was asked before; a pending offer to another is withdrawn. None if the case
        changed meanwhile."""
        p = self.providers[name]
        now = self._clock()
        tried = tried_list(case)
        if case.status == "dispatching" and case.provider is not None:
            tried.append((case.provider, "withdrawn"))
        moved = await self._store.update_case(
            case,
            status="dispatching",
            provider=name,
            deadline=now + self._config.answer_timeout_s,
            tried=",".join(f"{n}:{o}" for n, o in tried if n != name),
            reason="",
            updated_at=now,
        )
        if moved is not None:
            distance = (
                0.0 if case.lat is None or case.lon is None else distance_km(case.lat, case.lon, p.lat, p.lon)
            )
            log.info(
                "assistance case offered by an operator", extra={"case_id": case.case_id, "provider": name}
            )
            self._spawn(self._webhook(moved, p, distance))
            self._wake.set()
        return moved

    async def restart(self, case: CaseRow) -> CaseRow | None:
        """Dispatch again from the nearest provider (after availability changed): the timer loop
        takes a case with no deadline at its next turn."""
        moved = await self._store.update_case(
            case,
            status="dispatching",
            provider=None,
            deadline=None,
            tried="",
            reason="",
            updated_at=self._clock(),
        )
        self._wake.set()
        return moved

    async def close(self, case: CaseRow, note: str) -> CaseRow | None:
        return await self._store.update_case(
            case, status="closed", deadline=None, note=note or case.note, updated_at=self._clock()
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _webhook(self, case: CaseRow, p: ProviderConfig, distance_km: float) -> None:
        body = {
            "case_id": case.case_id,
            "capability": case.capability,
            "what": case.what,
            "position": None if case.lat is None else {"lat": case.lat, "lon": case.lon},
            "distance_km": round(distance_km, 2),
            "address": case.address,
            "vehicle": case.vehicle_desc,
            "phone": case.phone,
            "answer_by": case.deadline,
            "answer_url": self._answer_url(case.case_id),
        }
        headers = {"Idempotency-Key": f"{case.case_id}:{p.name}", "Content-Type": "application/json"}
        if p.webhook_token.reveal():
            headers["Authorization"] = f"Bearer {p.webhook_token.reveal()}"
        data = json.dumps(body).encode()
        session = self._session
        if session is None:
            return
        for attempt in range(1, self._config.webhook_attempts + 1):
            try:
                # No redirect is followed (the case's personal data would go wherever it points).
                async with session.post(
                    p.webhook_url, data=data, headers=headers, allow_redirects=False
                ) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        return
                    if resp.status < 500 and resp.status not in (408, 425, 429):
                        break
            except (aiohttp.ClientError, TimeoutError):
                pass
            if attempt < self._config.webhook_attempts:
                await asyncio.sleep(backoff_s(attempt, base_s=0.2, cap_s=5.0, rng=self._rng))
        log.warning(
            "assistance webhook failed; next provider", extra={"case_id": case.case_id, "provider": p.name}
        )
        current = await self._store.case(case.case_id)
        if current is not None and current.status == "dispatching" and current.provider == p.name:
            await self.advance(current, "unreachable")

    async def answer(
        self, case_id: str, provider: str, *, accept: bool, eta_min: int | None, note: str
    ) -> tuple[int, str, CaseRow | None]:
        """A provider's answer to an offer: (HTTP status, message, the case now)."""
        case = await self._store.case(case_id)
        if case is None or provider not in {case.provider, *(n for n, _ in tried_list(case))}:
            return 404, "no such case for this provider", None
        if case.status != "dispatching" or case.provider != provider:
            return 409, f"this case is no longer offered to {provider} (status {case.status})", case
        now = self._clock()
        if accept:
            shared = json.loads(case.shared or "{}")
            if note:
                shared["message"] = note
            moved = await self._store.update_case(
                case,
                status="accepted",
                deadline=None,
                eta_min=eta_min,
                note=note,
                accepted_at=now,
                updated_at=now,
                shared=json.dumps(shared),
            )
            if moved is None:
                return 409, "the case changed meanwhile; ask again", await self._store.case(case_id)
            self.accept_seconds.observe(max(0.0, now - case.created_at))
            log.info("assistance case accepted", extra={"case_id": case_id, "provider": provider})
            return 200, "accepted", moved
        moved = await self.advance(case, "declined")
        return 200, "declined", moved

    async def run(self) -> None:
        """Offers past their deadline move on: on this replica or any other, after a restart too."""
        timeout = aiohttp.ClientTimeout(total=self._config.webhook_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            try:
                # Cases stored but never offered (a stop between the two) are picked up here too.
                while True:
                    now = self._clock()
                    try:
                        for case in await self._store.due_cases(now):
                            await self.advance(case, "no answer" if case.provider else None)
                        nxt = await self._store.next_deadline()
                    except StoreError as exc:
                        log.warning("assistance timers: store unavailable", extra={"error": str(exc)})
                        nxt = None
                    sleep = _TICK_S if nxt is None else min(_TICK_S, max(0.01, nxt - self._clock()))
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(sleep):
                            await self._wake.wait()
            finally:
                for task in list(self._tasks):
                    task.cancel()
                self._session = None
