"""SMS through a generic HTTP SMS gateway: POST JSON, retried with backoff, one idempotency key.

Contract (docs/caller.md): ``POST {sms.url}`` with ``Authorization: Bearer {sms.token}`` (when set),
``Idempotency-Key: {key}`` and the JSON ``{"to", "text", "sender", "idempotency_key"}``. 2xx is
delivered; 408, 425, 429 and 5xx (and no answer) are retried with capped exponential backoff and
full jitter (`retry.backoff_s`, honouring Retry-After) under the same key, so the gateway sends a
retried message once; any other 4xx (and any 3xx: redirects are not followed) is final.

The outbox is durable (table ``caller_sms``) without the token, which is stored nowhere: a row holds
what the text is built from (link, base URL; the link's phone, purpose, language), the key, the
attempts made under it and the next attempt's time. One replica sends a row: it claims it with a
lease (a conditional UPDATE), renewed before each attempt and each wait. A process that claims a
row whose token it does not hold (it restarted, or the sender died) mints a new token for the link
(a conditional UPDATE of its hash: the old token, never delivered, stops working). With no attempt
made yet it sends under the same key; with attempts made but unconfirmed (one may have reached the
provider) it sends under a new key ``{link id}.r{n}``, so the caller may get two SMS, the first one's
link dead. Phone numbers are logged as pseudonyms, texts never.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import aiohttp

from ecallgw.config import SmsConfig
from ecallgw.errors import StoreError
from ecallgw.gateway.retry import backoff_s, parse_retry_after
from ecallgw.gateway.store.caller import CallerStore, SmsRow

__all__ = ["SmsSender", "pseudonym"]

log = logging.getLogger("ecallgw.sms")

_RETRYABLE_4XX = frozenset({408, 425, 429})


def pseudonym(phone: str) -> str:
    """A phone number as logs show it: a short digest (who is who across lines, not the number)."""
    return "tel-" + hashlib.sha256(phone.encode()).hexdigest()[:12]


Text = Callable[[SmsRow, str], str]  # (row, token) -> the SMS text
Outcome = Callable[[str, str], Awaitable[None]]  # (link id, "sent" | "failed")

_MARGIN_S = 5.0  # lease beyond an attempt's timeout or a wait: store round trips, clock skew


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()  # as caller_api.token_hash


class SmsSender:
    """Sends the durable outbox's messages, each retried until delivered or out of attempts."""

    def __init__(
        self,
        config: SmsConfig,
        outbox: CallerStore,
        text: Text,
        on_outcome: Outcome,
        *,
        poll_s: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._outbox = outbox
        self._text = text
        self._on_outcome = on_outcome
        self._poll_s = poll_s
        self._rng = rng or random.Random()
        self._owner = "sms-" + secrets.token_hex(6)  # this process's claims
        self._tokens: dict[str, str] = {}  # link id -> token minted by this process, until sent
        self._inflight: set[str] = set()
        self._queue: asyncio.Queue[str] = asyncio.Queue(10_000)
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._config.url)

    def _lease(self, beyond_s: float = 0.0) -> float:
        return time.time() + self._config.timeout_s + beyond_s + _MARGIN_S

    async def submit(self, link_id: str, token: str, base_url: str) -> bool:
        """Store a new message (claimed by this process) and queue it; False when SMS is off."""
        if not self.enabled:
            return False
        await self._outbox.insert_sms(
            link_id, base_url, now=time.time(), owner=self._owner, lease_until=self._lease()
        )
        self._tokens[link_id] = token
        self._enqueue(link_id)
        return True

    def _enqueue(self, link_id: str) -> None:
        if link_id in self._inflight:
            return
        try:
            self._queue.put_nowait(link_id)
            self._inflight.add(link_id)
        except asyncio.QueueFull:  # stays in the outbox: claimed again once its lease runs out
            log.error("sms queue full: message deferred", extra={"link_id": link_id})

    async def run(self) -> None:
        if not self.enabled:
            return  # no SMS: nothing is ever queued, no need to poll the store
        cfg = self._config
        ctx: ssl.SSLContext | bool = True
        if cfg.ca_file:
            ctx = ssl.create_default_context(cafile=cfg.ca_file)
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            self._session = session
            workers = [asyncio.create_task(self._worker()) for _ in range(4)]
            workers.append(asyncio.create_task(self._poll()))
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.gather(*workers, return_exceptions=True)
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5.0):
                        await self._outbox.release_sms(self._owner)

    async def _poll(self) -> None:
        """Claim what is due and unclaimed (left by a stopped process, or past its lease)."""
        while True:
            with contextlib.suppress(StoreError):
                for link_id in await self._outbox.claim_due_sms(
                    time.time(), owner=self._owner, lease_until=self._lease()
                ):
                    self._enqueue(link_id)
            await asyncio.sleep(self._poll_s)

    async def _worker(self) -> None:
        while True:
            link_id = await self._queue.get()
            try:
                outcome = await self._send(link_id)
                if outcome is not None:
                    self._tokens.pop(link_id, None)
                    if await self._outbox.finish_sms(link_id, outcome, owner=self._owner):
                        with contextlib.suppress(Exception):
                            await self._on_outcome(link_id, outcome)
            except StoreError as exc:  # the row stays pending: claimed again after its lease
                log.warning("sms outbox unavailable", extra={"link_id": link_id, "reason": str(exc)})
            except Exception:  # a worker must outlive one bad message; the row stays pending
                log.exception("sms worker error", extra={"link_id": link_id})
            finally:
                self._inflight.discard(link_id)

    async def _send(self, link_id: str) -> str | None:
        """Deliver one claimed message; its outcome, or None when the claim was lost."""
        row = await self._outbox.sms(link_id, self._owner)
        if row is None:
            return None
        now = time.time()
        if row.revoked_at is not None or row.expires_at <= now:
            return "failed"  # a dead link is not sent
        token = self._tokens.get(link_id)
        key = row.key
        if token is None:
            if row.attempts > 0:
                # An attempt may have reached the provider with the old text: resending another
                # text under its key would leave the caller with whichever the provider kept.
                key = f"{link_id}.r{row.resends + 1}"
                if not await self._outbox.supersede_sms(row, key, owner=self._owner):
                    return None
                log.warning(
                    "sms resent under a new key (earlier attempts unconfirmed)",
                    extra={"link_id": link_id, "superseded": row.key},
                )
            token = secrets.token_urlsafe(32)
            if not await self._outbox.remint(link_id, row.token_hash, _hash(token), now):
                link = await self._outbox.link(link_id)
                dead = link is None or link.revoked_at is not None or link.expires_at <= now
                return "failed" if dead else None  # else reminted by another: its claim, its send
            self._tokens[link_id] = token
            row = replace(row, key=key, attempts=0 if key != row.key else row.attempts)
        return await self._deliver(row, self._text(row, token))

    async def _deliver(self, m: SmsRow, text: str) -> str | None:
        cfg = self._config
        assert self._session is not None
        headers = {"Idempotency-Key": m.key}
        if cfg.token.reveal():
            headers["Authorization"] = f"Bearer {cfg.token.reveal()}"
        body = {"to": m.phone, "text": text, "sender": cfg.sender, "idempotency_key": m.key}
        attempt = m.attempts
        while attempt < cfg.max_attempts:
            n = await self._outbox.sms_attempt(m.link_id, m.key, owner=self._owner, lease_until=self._lease())
            if n is None:
                return None
            attempt = n
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
                            extra={"link_id": m.link_id, "to": pseudonym(m.phone), "attempts": attempt},
                        )
                        return "sent"
                    if resp.status < 500 and resp.status not in _RETRYABLE_4XX:
                        log.error(
                            "sms refused by the gateway",
                            extra={"link_id": m.link_id, "to": pseudonym(m.phone), "status": resp.status},
                        )
                        return "failed"
                    wait = parse_retry_after(resp.headers.get("Retry-After"), now=time.time(), limit_s=60.0)
                    reason = f"status {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__
            if attempt >= cfg.max_attempts:
                break
            delay = max(
                backoff_s(attempt, base_s=cfg.backoff_base_s, cap_s=cfg.backoff_cap_s, rng=self._rng),
                wait or 0.0,
            )
            if not await self._outbox.sms_wait(
                m.link_id, owner=self._owner, next_at=time.time() + delay, lease_until=self._lease(delay)
            ):
                return None
            log.warning(
                "sms not delivered yet; retrying",
                extra={
                    "link_id": m.link_id,
                    "reason": reason,
                    "attempt": attempt,
                    "retry_in_s": round(delay, 3),
                },
            )
            await asyncio.sleep(delay)
        log.error(
            "sms given up",
            extra={"link_id": m.link_id, "to": pseudonym(m.phone), "attempts": cfg.max_attempts},
        )
        return "failed"
