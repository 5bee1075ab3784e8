"""HTTP webhook sink: POST the incident document with ``Idempotency-Key: {incident_id}:{revision}``.

Plain ``http://`` receivers get a small keep-alive HTTP/1.1 client of our own (asyncio streams, a pool
of at most ``concurrency`` connections): one POST through aiohttp's client costs ~150 us of CPU on
this machine in request objects, payload registries, timers and header multidicts, and a webhook
delivery is one of those per revision. ``https://`` receivers go through aiohttp, for its TLS handling.
Both classify answers the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse

import aiohttp

from ecallgw.config import ReceiverConfig
from ecallgw.errors import PermanentDeliveryError, TransientDeliveryError
from ecallgw.gateway.records import OutboxItem
from ecallgw.gateway.retry import parse_retry_after

__all__ = ["HttpWebhookSink"]

# 408 and 429 are the receiver asking us to come back; every other 4xx will not get better.
_RETRYABLE_4XX = frozenset({408, 425, 429})
_MAX_BODY = 1 << 20  # a receiver's answer is read to keep the connection usable, not kept


class _ProtocolError(Exception):
    """The receiver's answer is not HTTP/1.1 we can read (treated like a connection failure)."""


class _Http11Pool:
    """Keep-alive HTTP/1.1 POSTs to one ``http://`` URL over at most ``limit`` connections.

    A connection is reused only after a complete answer that did not ask to close; any error,
    timeout or cancellation closes it (a half-read answer must never be read as the next one's).
    """

    def __init__(self, url: str, limit: int, headers: dict[str, str]) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.hostname is None:
            raise ValueError(f"no host in {url!r}")
        self._host = parts.hostname
        self._port = parts.port or 80
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        host = parts.netloc.rsplit("@", 1)[-1]
        lines = [f"POST {target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self._head = "\r\n".join(lines) + "\r\n"
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Send one POST; (status, headers with lower-case names, body)."""
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = f"{self._head}{extra}Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = await asyncio.open_connection(self._host, self._port)
            reader, writer = conn
            reusable = False
            try:
                writer.write(request)
                await writer.drain()
                status, answer_headers, answer, reusable = await _read_response(reader)
            finally:
                if reusable:
                    self._idle.append(conn)
                else:
                    writer.close()
        return status, answer_headers, answer

    async def aclose(self) -> None:
        """Close the idle connections."""
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
        for _, writer in idle:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes, bool]:
    while True:
        block = await reader.readuntil(b"\r\n\r\n")
        lines = block[:-4].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise _ProtocolError(f"bad status line {lines[0][:80]!r}")
        status = int(code)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _ProtocolError(f"bad header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        if status >= 200:
            break  # 1xx answers (103 Early Hints) precede the real one
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if status in (204, 304):
        return status, headers, b"", keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        size = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            n = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
            if n == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return status, headers, b"".join(chunks), keep
            size += n
            if size > _MAX_BODY:
                raise _ProtocolError("answer too large")
            chunks.append((await reader.readexactly(n + 2))[:-2])
    length = headers.get("content-length")
    if length is not None:
        n = int(length)
        if not 0 <= n <= _MAX_BODY:
            raise _ProtocolError(f"answer of {n} bytes")
        return status, headers, await reader.readexactly(n), keep
    # Neither length nor chunks: the body runs to the end of the connection.
    return status, headers, await reader.read(_MAX_BODY), False


class HttpWebhookSink:
    """POST each revision to a receiver's URL.

    2xx confirms. Redirects are not followed (permanent, ``http_3xx``). 408/425/429 and 5xx are
    transient (with Retry-After when given); connection errors
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
        self._pool: _Http11Pool | None = None
        if config.url.startswith("http://"):
            self._pool = _Http11Pool(config.url, config.concurrency, headers)

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
            if self._pool is not None:
                async with asyncio.timeout(self._config.timeout_s):
                    status, answer_headers, answer = await self._pool.post(body, headers)
                if 200 <= status < 300:
                    return status
                text = answer.decode("utf-8", errors="replace")[:200]
                retry_after = parse_retry_after(answer_headers.get("retry-after"), now=time.time())
                location = answer_headers.get("location", "")
            else:
                async with self._client().post(
                    self._config.url, data=body, headers=headers, allow_redirects=False
                ) as resp:
                    status = resp.status
                    if 200 <= status < 300:
                        await resp.read()
                        return status
                    text = (await resp.text(errors="replace"))[:200]
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"), now=time.time())
                    location = resp.headers.get("Location", "")
        except TimeoutError as exc:
            raise TransientDeliveryError(
                name, "timeout", f"no answer within {self._config.timeout_s} s"
            ) from exc
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise TransientDeliveryError(name, "connect", str(exc)[:200] or type(exc).__name__) from exc
        except (_ProtocolError, ValueError) as exc:
            raise TransientDeliveryError(name, "protocol", str(exc)[:200]) from exc
        detail = f"HTTP {status}: {text}"
        if 300 <= status < 400:
            # Never followed: a 301/302/303 would be retried as a body-less GET, and a 200 on that
            # is no delivery. The receiver's configuration needs fixing; an SRE sees the Location.
            raise PermanentDeliveryError(name, "http_3xx", f"HTTP {status} to {location[:200]}: {text}")
        if status >= 500:
            raise TransientDeliveryError(name, "http_5xx", detail, retry_after_s=retry_after)
        if status in _RETRYABLE_4XX:
            raise TransientDeliveryError(name, f"http_{status}", detail, retry_after_s=retry_after)
        raise PermanentDeliveryError(name, "http_4xx", detail)

    async def aclose(self) -> None:
        """Close the connection pools."""
        if self._pool is not None:
            await self._pool.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None
