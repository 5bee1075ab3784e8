"""The caller's side in ``ecallgw demo`` (issue 14): a simulated SMS gateway, simulated assistance
providers in a few cities, breakdowns (online forms and vehicles' bCalls) and callers who open
the location link their SMS brings and share their position.

Callers are simulated the way their phones would talk to the gateway: they read the link from
the SMS the gateway sent (through the simulated SMS gateway) and post to the public page's own
endpoint, as its script does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from ecallgw.simulators.assistance import Policy, SimulatedProvider
from ecallgw.simulators.sms import SimulatedSmsGateway
from ecallgw.simulators.trajectory import PLACES

__all__ = ["CallerSide"]

# (city, policy): most accept; one declines and one never answers, so dispatch moves on.
_PROVIDERS: tuple[tuple[str, Policy], ...] = (
    ("London", "accept"),
    ("London", "decline"),
    ("Brussels", "accept"),
    ("Paris", "silent"),
    ("Paris", "accept"),
    ("Berlin", "accept"),
    ("Munich", "accept"),
)
_WHATS = ("flat_tyre", "battery", "engine", "accident", "locked_out", "other")


class CallerSide:
    """Started before the gateway (its configuration needs the addresses), driven after it."""

    def __init__(
        self,
        rng: random.Random,
        *,
        share_fraction: float = 0.7,
        breakdown_every_s: float = 6.0,
        bcall_share: float = 0.3,
    ) -> None:
        self._rng = rng
        self._share_fraction = share_fraction
        self._every_s = breakdown_every_s
        self._bcall_share = bcall_share
        self.sms = SimulatedSmsGateway()
        self.providers: list[SimulatedProvider] = []
        self._task: asyncio.Task[None] | None = None
        self.shared = 0
        self.cases: list[str] = []
        self.tracking_printed = False

    async def __aenter__(self) -> CallerSide:
        await self.sms.start()
        places = {name: (lat, lon) for name, lat, lon in PLACES}
        for i, (city, policy) in enumerate(_PROVIDERS):
            lat, lon = places[city]
            provider = SimulatedProvider(
                name=f"{city.lower()}-{policy}-{i}",
                token=secrets.token_urlsafe(24),
                lat=lat + self._rng.uniform(-0.05, 0.05),
                lon=lon + self._rng.uniform(-0.05, 0.05),
                capabilities=("tow", "repair", "taxi") if i % 2 == 0 else ("tow", "repair"),
                radius_km=80.0,
                policy=policy,
                eta_min=self._rng.randint(15, 45),
                delay_s=self._rng.uniform(0.5, 3.0),
            )
            self.providers.append(await provider.start())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        for p in self.providers:
            await p.stop()
        await self.sms.stop()

    def config_tree(self) -> dict[str, Any]:
        """The ``[sms]``, ``[caller]`` and ``[assistance]`` tables for the demo's gateway."""
        return {
            "sms": {"url": self.sms.url, "token": secrets.token_urlsafe(24), "sender": "ecallgw-demo"},
            "caller": {"auto_location_link": True},
            "assistance": {"answer_timeout_s": 8.0, "providers": [p.config() for p in self.providers]},
        }

    def start(
        self, api: str, operator_token: str, provider_tokens: dict[str, str], say: Callable[[str], None]
    ) -> None:
        self._task = asyncio.create_task(self._run(api, operator_token, provider_tokens, say))

    async def _run(
        self, api: str, operator: str, provider_tokens: dict[str, str], say: Callable[[str], None]
    ) -> None:
        rng = self._rng
        answered: set[str] = set()
        headers = {"Authorization": f"Bearer {operator}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            next_breakdown = time.time() + 2.0
            while True:
                await asyncio.sleep(0.5)
                # Callers who got a location link: most open it and share their position.
                for m in list(self.sms.messages):
                    if m.key in answered or m.url is None or "/l/" not in m.url:
                        continue
                    answered.add(m.key)
                    if rng.random() < self._share_fraction:
                        lat, lon = rng.choice([(la, lo) for _, la, lo in PLACES])
                        body = {
                            "lat": lat + rng.uniform(-0.02, 0.02),
                            "lon": lon,
                            "accuracy_m": rng.uniform(5, 60),
                        }
                        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                            async with s.post(f"{m.url}/position", json=body) as resp:
                                if resp.status == 200:
                                    self.shared += 1
                if time.time() >= next_breakdown:
                    next_breakdown = time.time() + self._every_s
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError):
                        await self._breakdown(s, api, headers, provider_tokens)
                if not self.tracking_printed and self.cases:
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError):
                        async with s.get(
                            f"{api}/v1/assistance/cases?status=accepted", headers=headers
                        ) as resp:
                            accepted = (await resp.json())["cases"]
                        if accepted:
                            case = accepted[0]
                            async with s.post(
                                f"{api}/v1/assistance/cases/{case['case_id']}/links",
                                headers=headers,
                                json={"phone": "+32 470 00 00 00"},
                            ) as resp:
                                link = await resp.json()
                            self.tracking_printed = True
                            say(
                                f"demo: breakdown {case['case_id']} taken by {case['provider']} "
                                f"(ETA {case['eta_min']} min); follow it in a browser: {link['url']}"
                            )

    async def _breakdown(
        self, s: aiohttp.ClientSession, api: str, headers: dict[str, str], provider_tokens: dict[str, str]
    ) -> None:
        rng = self._rng
        # Mostly where providers are; now and then where none is (the case goes to the operators).
        served = {c for c, _ in _PROVIDERS}
        city, lat, lon = rng.choice([p for p in PLACES if (p[0] in served) == (rng.random() < 0.85)])
        lat, lon = lat + rng.uniform(-0.1, 0.1), lon + rng.uniform(-0.1, 0.1)
        if rng.random() < self._bcall_share and provider_tokens:
            # A vehicle's own breakdown call (kind bcall) over HTTP ingest.
            from ecallgw.simulators._demo_bcall import bcall_envelope

            tps, token = rng.choice(sorted(provider_tokens.items()))
            vehicle = f"bc-{secrets.token_hex(4)}"
            async with s.post(
                f"{api}/v1/bcall/{tps}/{vehicle}",
                data=bcall_envelope(rng, lat, lon),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/msgpack"},
            ) as resp:
                self.cases.append(str((await resp.json())["case_id"]))
            return
        # A caller on the phone: the operator sends the form link, the caller fills it in.
        async with s.post(
            f"{api}/v1/assistance/links", headers=headers, json={"phone": "+44 7700 900123"}
        ) as resp:
            link = await resp.json()
        body = {
            "lat": lat,
            "lon": lon,
            "accuracy_m": rng.uniform(5, 50),
            "what": rng.choice(_WHATS),
            "vehicle": f"{city[:2].upper()}-{rng.randint(100, 999)}",
            "phone": "+44 7700 900123",
            "address": "",
        }
        async with s.post(f"{link['url']}/request", json=body) as resp:
            self.cases.append(str((await resp.json())["case_id"]))

    def summary(self) -> str:
        offers = sum(len(p.offers) for p in self.providers)
        return (
            f"SMS {len(self.sms.messages)}, positions shared {self.shared}, "
            f"breakdowns {len(self.cases)}, offers {offers}"
        )
