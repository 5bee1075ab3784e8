"""HTTP webhook sink: POST the incident document with ``Idempotency-Key: {incident_id}:{revision}``."""

from __future__ import annotations

import time

import aiohttp

from ecallgw.config import ReceiverConfig
from ecallgw.errors import PermanentDeliveryError, TransientDeliveryError
from ecallgw.gateway.records import OutboxItem
from ecallgw.gateway.retry import parse_retry_after

__all__ = ["HttpWebhookSink"]

# 408 and 429 are the receiver asking us to come back; every other 4xx will not get better.
_RETRYABLE_4XX = frozenset({408, 425, 429})


class HttpWebhookSink:
    """POST each revision to a receiver's URL.

    2xx confirms. 408/425/429 and 5xx are transient (with Retry-After when given); connection errors
    and timeouts are transient; any other status is permanent.

    Args:
        config: the receiver.
    """

    needs_body = True

    def __init__(self, config: ReceiverConfig) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None
        headers = {"User-Agent": "ecallgw"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token.reveal()}"
        self._headers = headers

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._config.concurrency),
                timeout=aiohttp.ClientTimeout(total=self._config.timeout_s),
                headers=self._headers,
            )
        return self._session

    async def deliver(self, item: OutboxItem, body: bytes, content_type: str) -> int | None:
        """POST one revision and classify the answer.

        Raises:
            TransientDeliveryError: worth retrying (``reason`` http_5xx, http_429, timeout, connect).
            PermanentDeliveryError: not worth retrying (``reason`` http_4xx).
        """
        name = self._config.name
        headers = {
            "Content-Type": content_type,
            "Idempotency-Key": f"{item.incident_id}:{item.revision}",
        }
        try:
            async with self._client().post(self._config.url, data=body, headers=headers) as resp:
                status = resp.status
                if 200 <= status < 300:
                    await resp.read()
                    return status
                text = (await resp.text(errors="replace"))[:200]
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), now=time.time())
        except TimeoutError as exc:
            raise TransientDeliveryError(
                name, "timeout", f"no answer within {self._config.timeout_s} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise TransientDeliveryError(name, "connect", str(exc)[:200]) from exc
        detail = f"HTTP {status}: {text}"
        if status >= 500:
            raise TransientDeliveryError(name, "http_5xx", detail, retry_after_s=retry_after)
        if status in _RETRYABLE_4XX:
            raise TransientDeliveryError(name, f"http_{status}", detail, retry_after_s=retry_after)
        raise PermanentDeliveryError(name, "http_4xx", detail)

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None
