"""HTTP webhook sink: POST the incident document with ``Idempotency-Key: {incident_id}:{revision}``.

Plain ``http://`` receivers get a small keep-alive HTTP/1.1 client of our own: one
``asyncio.Protocol`` per connection that parses the answer as its bytes arrive and resolves one future
per request, a pool of at most ``concurrency`` connections, and one timer per pool for the request
timeouts. One POST through aiohttp's client costs ~90 us of CPU on this machine in request objects,
payload registries, timers and header multidicts (``bench/http_client.py``), and a webhook delivery
is one of those per revision. ``https://`` receivers go through aiohttp, for its TLS handling, with
a context of the receiver's own (its CA bundle, our client certificate, its pins: ``gateway.tls``).
Both classify answers the same way.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
import urllib.parse
from typing import cast

import aiohttp

from ecallgw.config import ReceiverConfig
from ecallgw.errors import PermanentDeliveryError, TransientDeliveryError
from ecallgw.gateway.records import OutboxItem
from ecallgw.gateway.retry import parse_retry_after
from ecallgw.gateway.slots import Slots
from ecallgw.gateway.tls import PinMismatchError, client_context, pin

__all__ = ["HttpWebhookSink"]

# 408 and 429 are the receiver asking us to come back; every other 4xx will not get better.
_RETRYABLE_4XX = frozenset({408, 425, 429})
_MAX_BODY = 1 << 20  # a receiver's answer is read to keep the connection usable, not kept
_MAX_HEAD = 1 << 16  # status line and headers (or trailers) of one answer: StreamReader's limit
_MAX_CHUNK_LINE = 4096  # a chunk-size line with its extensions
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")

# Where the parser of one answer stands.
_HEAD = 0  # status line and header lines, up to the blank line
_LENGTH = 1  # a body of Content-Length bytes
_CHUNK_SIZE = 2  # the size line of the next chunk
_CHUNK_DATA = 3  # a chunk's data and the CRLF after it
_TRAILERS = 4  # trailer lines after the last chunk, up to the blank line
_TO_EOF = 5  # neither length nor chunks: the body runs to the end of the connection

_Answer = tuple[int, dict[str, str], bytes]


_CLOSE_WAIT_S = 2.0  # how long `aclose` lets idle connections close gracefully


class _ProtocolError(Exception):
    """The receiver's answer is not HTTP/1.1 we can read (treated like a connection failure)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its answer from ``data_received``.

    At most one request is outstanding (no pipelining). Bytes nobody asked for, an answer that
    asks to close, and every error close the connection, so a half-read or stray answer is never
    read as the next request's.
    """

    def __init__(self, pool: _Http11Pool) -> None:
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self.closed = False  # closing or closed: never reused
        self._gone = False  # connection_lost has run
        self._lost: asyncio.Future[None] | None = None
        self.waiter: asyncio.Future[_Answer] | None = None
        self.heard = False  # bytes of the outstanding request's answer have arrived
        self.deadline = 0.0  # loop time by which the outstanding request must be answered
        self._buf = bytearray()
        self._scan = 0  # where the search for the next line end resumes (bytes arrive in pieces)
        self._state = _HEAD
        self._need = 0
        self._status = 0
        self._headers: dict[str, str] = {}
        self._keep = False
        self._body = bytearray()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)
        self._pool.conns.add(self)

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            # Bytes after a complete answer or on an idle connection: the stream is out of step.
            self.close()
            return
        self.heard = True
        self._buf += data
        try:
            self._advance()
        except _ProtocolError as exc:
            self.fail(exc)

    def eof_received(self) -> bool | None:
        # The receiver closed its side: never reuse this connection, even in the turn before
        # connection_lost runs (a request sent then would fail without reaching the receiver).
        self.closed = True
        if self.waiter is not None and self._state == _TO_EOF:
            self._finish(bytes(self._buf))
        return None  # the transport closes; connection_lost fails an unfinished answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self._gone = True
        pool = self._pool
        pool.conns.discard(self)
        if self in pool.idle:
            pool.idle.remove(self)
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            if exc is None and self._state == _TO_EOF:
                waiter.set_result((self._status, self._headers, bytes(self._buf)))
            else:
                waiter.set_exception(
                    exc or ConnectionResetError("the receiver closed the connection before a complete answer")
                )
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    # used by the pool

    def send(self, request: bytes, waiter: asyncio.Future[_Answer], deadline: float) -> None:
        """Write one request; its answer resolves ``waiter``."""
        if self._transport is None or self.closed:
            raise ConnectionResetError("not connected")
        self.waiter = waiter
        self.heard = False
        self.deadline = deadline
        self._state = _HEAD
        self._scan = 0
        self._body.clear()
        self._transport.write(request)

    def fail(self, exc: BaseException) -> None:
        """Close, and fail the outstanding request with ``exc``."""
        waiter, self.waiter = self.waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.close()

    def abort(self) -> None:
        """Drop the connection at once, unsent bytes included."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def when_lost(self) -> asyncio.Future[None]:
        """A future resolved once the connection is gone."""
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
            if self._gone:
                self._lost.set_result(None)
        return self._lost

    # the parser

    def _advance(self) -> None:
        buf = self._buf
        while True:
            state = self._state
            if state == _LENGTH:
                need = self._need
                if len(buf) >= need:
                    body = bytes(buf[:need])
                    del buf[:need]
                    self._finish(body)
                return
            if state == _CHUNK_DATA:
                need = self._need
                if len(buf) < need + 2:
                    return
                if buf[need : need + 2] != b"\r\n":
                    raise _ProtocolError("chunk data not followed by CRLF")
                self._body += buf[:need]
                del buf[: need + 2]
                self._state = _CHUNK_SIZE
                continue
            if state == _TO_EOF:
                if len(buf) >= _MAX_BODY:  # read no further; the connection closes anyway
                    self._finish(bytes(buf[:_MAX_BODY]))
                return
            if state == _CHUNK_SIZE:
                end = buf.find(b"\r\n", self._scan)
                if end < 0:
                    if len(buf) > _MAX_CHUNK_LINE:
                        raise _ProtocolError("chunk-size line too long")
                    self._scan = max(0, len(buf) - 1)
                    return
                self._scan = 0
                self._chunk_size(bytes(buf[:end]))
                # The last chunk's CRLF stays: the trailer section then ends at the first CRLFCRLF.
                del buf[: end if self._state == _TRAILERS else end + 2]
                continue
            # _HEAD or _TRAILERS: up to the blank line
            end = buf.find(b"\r\n\r\n", self._scan)
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise _ProtocolError("answer head too large")
                self._scan = max(0, len(buf) - 3)
                return
            self._scan = 0
            if state == _TRAILERS:
                del buf[: end + 4]  # trailer fields are not used
                self._finish(bytes(self._body))
                return
            head = buf[:end].decode("latin-1")
            del buf[: end + 4]
            self._head(head)
            if self.waiter is None:  # finished (204, 304, Content-Length: 0)
                return

    def _head(self, head: str) -> None:
        lines = head.split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not (
            version.startswith("HTTP/1.") and len(code) == 3 and code.isascii() and code.isdigit()
        ) or rest[3:4] not in ("", " "):
            raise _ProtocolError(f"bad status line {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            name = name.strip().lower()
            if not sep or not name:
                raise _ProtocolError(f"bad header line {line[:80]!r}")
            headers[name] = value.strip()
        status = int(code)
        if status < 200:
            return  # 1xx answers (100 Continue, 103 Early Hints) precede the real one
        self._status = status
        self._headers = headers
        connection = headers.get("connection")
        self._keep = version == "HTTP/1.1" and (
            connection is None or "close" not in (t.strip() for t in connection.lower().split(","))
        )
        if status in (204, 304):
            self._finish(b"")
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = _CHUNK_SIZE
        elif (length := headers.get("content-length")) is not None:
            if not (length.isascii() and length.isdigit()):
                raise _ProtocolError(f"bad Content-Length {length[:40]!r}")
            n = int(length)
            if n > _MAX_BODY:
                raise _ProtocolError(f"answer of {n} bytes")
            self._state, self._need = _LENGTH, n
            if n == 0:
                self._finish(b"")
        else:
            self._state, self._keep = _TO_EOF, False

    def _chunk_size(self, line: bytes) -> None:
        digits = line.split(b";", 1)[0].strip()
        if not digits or len(digits) > 16 or not _HEX_DIGITS.issuperset(digits):
            raise _ProtocolError(f"bad chunk size {line[:40]!r}")
        n = int(digits, 16)
        if n == 0:
            self._state = _TRAILERS
            return
        if len(self._body) + n > _MAX_BODY:
            raise _ProtocolError("answer too large")
        self._state, self._need = _CHUNK_DATA, n

    def _finish(self, body: bytes) -> None:
        waiter, self.waiter = self.waiter, None
        if not self._keep or self._buf:
            self.close()  # asked to close, to EOF, or bytes beyond the answer
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, self._headers, body))


class _Http11Pool:
    """Keep-alive HTTP/1.1 POSTs to one ``http://`` URL over at most ``limit`` connections.

    A connection is reused only after a complete answer that did not ask to close; any error,
    timeout or cancellation closes it. A request that is not answered within ``timeout_s`` of its
    start (waiting for a connection and connecting included) fails with ``TimeoutError``: the rare
    waits for a free slot and for a connect run under ``asyncio.timeout_at``; an outstanding request
    has only a deadline, which one timer per pool sweeps, armed at the earliest deadline (requests
    start in deadline order, so the timer is re-armed about once per ``timeout_s``, not per request).
    """

    def __init__(self, url: str, limit: int, headers: dict[str, str], timeout_s: float) -> None:
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
        self._limit = limit
        self._timeout_s = timeout_s
        self._slots = Slots(limit)  # requests in flight, each on a connection of its own
        self.idle: list[_Connection] = []
        self.conns: set[_Connection] = set()  # every open connection, for the sweep
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    async def post(self, body: bytes, headers: dict[str, str]) -> _Answer:
        """Send one POST; (status, headers with lower-case names, body).

        Raises:
            TimeoutError: no complete answer within the timeout.
            OSError: connecting failed, or the connection broke before a complete answer.
            _ProtocolError: the answer is not HTTP/1.1 we can read.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = f"{self._head}{extra}Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body
        if not self._slots.try_acquire():
            async with asyncio.timeout_at(deadline):  # waiting for a slot counts towards the timeout
                await self._slots.acquire()
        try:
            idle = self.idle
            conn = idle.pop() if idle else None
            while conn is not None and conn.closed:  # closed while idle (stray bytes), not yet lost
                conn = idle.pop() if idle else None
            while True:
                reused = conn is not None
                if conn is None:
                    async with asyncio.timeout_at(deadline):
                        _, conn = await loop.create_connection(
                            lambda: _Connection(self), self._host, self._port
                        )
                waiter: asyncio.Future[_Answer] = loop.create_future()
                try:
                    conn.send(request, waiter, deadline)
                    if deadline < self._timer_at:
                        self._arm(loop, deadline)
                    answer = await waiter
                except OSError as exc:
                    conn.close()
                    if reused and not conn.heard and not isinstance(exc, TimeoutError):
                        # A kept-alive connection the receiver had closed (its FIN crossed our
                        # request): not an answer from the receiver. Once more on a new one, with
                        # the same Idempotency-Key.
                        conn = None
                        continue
                    raise
                except BaseException:
                    conn.close()  # cancelled mid-answer (an error has closed it already)
                    raise
                if not conn.closed:
                    idle.append(conn)
                return answer
        finally:
            self._slots.release()

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the requests past their deadline; re-arm at the earliest deadline left."""
        self._timer, self._timer_at = None, math.inf
        now = loop.time()
        nearest = math.inf
        for conn in list(self.conns):
            if conn.waiter is None:
                continue
            if conn.deadline <= now:
                conn.fail(TimeoutError())
            elif conn.deadline < nearest:
                nearest = conn.deadline
        if nearest < math.inf:
            self._arm(loop, nearest)

    async def aclose(self) -> None:
        """Close the idle connections."""
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()
        if idle:
            try:
                async with asyncio.timeout(_CLOSE_WAIT_S):
                    await asyncio.gather(*(conn.when_lost() for conn in idle))
            except TimeoutError:
                # A close waits for unsent bytes a receiver no longer reads: drop them instead of
                # holding up the shutdown.
                for conn in idle:
                    conn.abort()
        if self._timer is not None and not any(conn.waiter is not None for conn in self.conns):
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf


class HttpWebhookSink:
    """POST each revision to a receiver's URL.

    2xx confirms. Redirects are not followed (permanent, ``http_3xx``). 408/425/429 and 5xx are
    transient (with Retry-After when given); connection errors
    and timeouts are transient; any other status is permanent.

    Args:
        config: the receiver.
    """

    confirmed_at_commit = False

    def __init__(self, config: ReceiverConfig) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None
        headers = {"User-Agent": "ecallgw"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token.reveal()}"
        self._headers = headers
        self._pool: _Http11Pool | None = None
        self._tls: ssl.SSLContext | None = None
        if config.url.startswith("http://"):
            self._pool = _Http11Pool(config.url, config.concurrency, headers, config.timeout_s)
        else:
            where = f"receivers.{config.name}."
            self._tls = client_context(
                ca_file=config.ca_file, cert_file=config.cert_file, key_file=config.key_file, where=where
            )
            if config.pin_sha256:
                pins = (p.strip().replace(":", "").lower() for p in config.pin_sha256.split(","))
                pin(self._tls, pins, where=f"{where}pin_sha256")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._config.concurrency, ssl=self._tls or True),
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
                # The pool applies the timeout itself (one timer per pool, not one per request).
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
        except aiohttp.ClientSSLError as exc:
            pinned = _pin_error(exc)
            if pinned is not None:
                # The receiver's chain verified but it is not the certificate we pinned: an
                # impostor or an unannounced re-key. Retrying will not change it; fail loudly.
                raise PermanentDeliveryError(name, "tls_pin", str(pinned)[:300]) from exc
            # An unverifiable certificate (wrong CA, expired, wrong host) or a refused handshake:
            # possibly a receiver mid-rotation; retried, the breaker and dead letters as for an outage.
            raise TransientDeliveryError(name, "tls", str(exc)[:200] or type(exc).__name__) from exc
        except (aiohttp.ClientError, OSError) as exc:
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


def _pin_error(exc: BaseException) -> PinMismatchError | None:
    """The pin mismatch behind an aiohttp TLS error, if that is what it is."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, PinMismatchError):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "certificate_error", None)]
    return None
