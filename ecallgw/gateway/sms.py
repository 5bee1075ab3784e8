"""SMS through a generic HTTP SMS gateway: POST JSON, retried with backoff, one idempotency key.

Contract (docs/caller.md): ``POST {sms.url}`` with ``Authorization: Bearer {sms.token}`` (when set),
``Idempotency-Key: {key}`` and the JSON ``{"to", "text", "sender", "idempotency_key"}``. 2xx is
delivered; 408, 425, 429 and 5xx (and no answer) are retried with capped exponential backoff and
full jitter (`retry.backoff_s`, honouring Retry-After) under the same key, so the gateway sends a
retried message once; any other 4xx (and any 3xx: redirects are not followed) is final.

The text holds a link's token, which is stored nowhere: the queue is in memory. A message still
queued when the process stops is not sent; its link shows ``sms_state`` pending and the operator
sends a new link. Phone numbers are logged as pseudonyms, texts never.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from ecallgw.config import SmsConfig
from ecallgw.gateway.retry import backoff_s, parse_retry_after

__all__ = ["SmsMessage", "SmsSender", "pseudonym"]

log = logging.getLogger("ecallgw.sms")

_RETRYABLE_4XX = frozenset({408, 425, 429})


def pseudonym(phone: str) -> str:
    """A phone number as logs show it: a short digest (who is who across lines, not the number)."""
    return "tel-" + hashlib.sha256(phone.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True, kw_only=True)
class SmsMessage:
    key: str  # the idempotency key (the link id)
    to: str
    text: str


Outcome = Callable[[SmsMessage, str], Awaitable[None]]  # (message, "sent" | "failed")


class SmsSender:
    """Sends queued messages one after another, each retried until delivered or out of attempts."""

    def __init__(self, config: SmsConfig, on_outcome: Outcome, *, rng: random.Random | None = None) -> None:
        self._config = config
        self._on_outcome = on_outcome
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[SmsMessage] = asyncio.Queue(10_000)
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._config.url)

    def send(self, message: SmsMessage) -> bool:
        """Queue a message; False when SMS is not configured or the queue is full."""
        if not self.enabled:
            return False
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            log.error("sms queue full: message not sent", extra={"link_id": message.key})
            return False
        return True

    async def run(self) -> None:
        cfg = self._config
        ctx: ssl.SSLContext | bool = True
        if cfg.ca_file:
            ctx = ssl.create_default_context(cafile=cfg.ca_file)
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            self._session = session
            workers = [asyncio.create_task(self._worker()) for _ in range(4)]
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            message = await self._queue.get()
            outcome = await self._deliver(message)
            with contextlib.suppress(Exception):
                await self._on_outcome(message, outcome)

    async def _deliver(self, m: SmsMessage) -> str:
        cfg = self._config
        assert self._session is not None
        headers = {"Idempotency-Key": m.key}
        if cfg.token.reveal():
            headers["Authorization"] = f"Bearer {cfg.token.reveal()}"
        body = {"to": m.to, "text": m.text, "sender": cfg.sender, "idempotency_key": m.key}
        for attempt in range(1, cfg.max_attempts + 1):
            wait: float | None = None
            try:
                # No redirect is followed: a 307 would re-post the text (the link's token) to
                # wherever it points, plain http:// included (sms.url's https check bypassed).
                async with self._session.post(
                    cfg.url, json=body, headers=headers, allow_redirects=False
                ) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        log.info(
                            "sms delivered to the gateway",
                            extra={"link_id": m.key, "to": pseudonym(m.to), "attempts": attempt},
                        )
                        return "sent"
                    if resp.status < 500 and resp.status not in _RETRYABLE_4XX:
                        log.error(
                            "sms refused by the gateway",
                            extra={"link_id": m.key, "to": pseudonym(m.to), "status": resp.status},
                        )
                        return "failed"
                    wait = parse_retry_after(resp.headers.get("Retry-After"), now=time.time(), limit_s=60.0)
                    reason = f"status {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__
            if attempt == cfg.max_attempts:
                break
            delay = backoff_s(attempt, base_s=cfg.backoff_base_s, cap_s=cfg.backoff_cap_s, rng=self._rng)
            log.warning(
                "sms not delivered yet; retrying",
                extra={"link_id": m.key, "reason": reason, "attempt": attempt, "retry_in_s": round(delay, 3)},
            )
            await asyncio.sleep(max(delay, wait or 0.0))
        log.error(
            "sms given up", extra={"link_id": m.key, "to": pseudonym(m.to), "attempts": cfg.max_attempts}
        )
        return "failed"
