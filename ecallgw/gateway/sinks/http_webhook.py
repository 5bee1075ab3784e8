"""HTTP webhook sink: POST the incident document with ``Idempotency-Key: {incident_id}:{revision}``.

Every receiver, ``http://`` or ``https://``, goes through one small keep-alive HTTP/1.1 client: a
pool of at most ``concurrency`` connections, one ``asyncio.Protocol`` per connection, one timer per
pool for the request timeouts. HTTP itself is h11's: each connection holds an ``h11.Connection``
that turns our request into bytes and the receiver's bytes into events (status, headers, body, end),
with its checks of framing (Content-Length, chunks, what a close means) and its limit on a head's
size. We keep the pool rather than aiohttp's client because a POST through aiohttp costs several
times its CPU (``bench/http_client.py``, docs/performance.md), once per revision and receiver. TLS
is asyncio's, with a context of the receiver's own (its CA bundle, our client certificate, its pins:
``gateway.tls``).
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
import urllib.parse
from typing import cast

import h11

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
_MAX_HEAD = 1 << 16  # status line and headers of one answer (h11's max_incomplete_event_size)

_Answer = tuple[int, dict[str, str], bytes]


_CLOSE_WAIT_S = 2.0  # how long `aclose` lets idle connections close gracefully


class _ProtocolError(Exception):
    """The receiver's answer is not HTTP/1.1 we can read (treated like a connection failure)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: h11 writes its request and reads its answer from ``data_received``.

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
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        self._status = 0
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._framed = True  # the answer has a length or chunks (else its body runs to the close)

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
        self._feed(data)

    def eof_received(self) -> bool | None:
        # The receiver closed its side: never reuse this connection, even in the turn before
        # connection_lost runs (a request sent then would fail without reaching the receiver).
        self.closed = True
        if self.waiter is not None:
            self._feed(b"")  # h11 ends a body that runs to the close, or says the answer was cut
        return None  # the transport closes; connection_lost fails an unfinished answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self._gone = True
        pool = self._pool
        pool.conns.discard(self)
        if self in pool.idle:
            pool.idle.remove(self)
        if exc is None and self.waiter is not None and not self.waiter.done():
            self._feed(b"")  # a close without EOF first (TLS): the same as eof_received
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(
                exc or ConnectionResetError("the receiver closed the connection before a complete answer")
            )
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    # used by the pool

    def send(
        self, request: h11.Request, body: bytes, waiter: asyncio.Future[_Answer], deadline: float
    ) -> None:
        """Write one request; its answer resolves ``waiter``.

        Raises:
            ConnectionResetError: the connection is closed.
            _ProtocolError: h11 refuses the request (a header value it cannot carry).
        """
        if self._transport is None or self.closed:
            raise ConnectionResetError("not connected")
        conn = self._h11
        try:
            data = conn.send(request)
            data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            self.close()
            raise _ProtocolError(f"request: {exc}") from exc
        self.waiter = waiter
        self.heard = False
        self.deadline = deadline
        self._body.clear()
        self._transport.write(data)

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

    # reading the answer: h11's events

    def _feed(self, data: bytes) -> None:
        conn = self._h11
        try:
            conn.receive_data(data)
            while self.waiter is not None:
                event = conn.next_event()
                kind = type(event)
                if kind is h11.Data:
                    self._data(cast(h11.Data, event).data)
                elif kind is h11.Response:
                    self._response(cast(h11.Response, event))
                elif kind is h11.EndOfMessage:
                    self._finish(bytes(self._body))
                elif event is h11.NEED_DATA or kind is h11.InformationalResponse:
                    if event is h11.NEED_DATA:
                        return
                    # 1xx answers (100 Continue, 103 Early Hints) precede the real one
                else:  # ConnectionClosed before the end, or PAUSED (bytes beyond the answer)
                    raise h11.RemoteProtocolError(f"unexpected {kind.__name__}")
        except h11.RemoteProtocolError as exc:
            if not data:
                # The receiver closed mid-answer: a connection failure, as for a reset.
                self.fail(ConnectionResetError(f"the receiver closed the connection mid-answer ({exc})"))
            else:
                self.fail(_ProtocolError(str(exc)))
        except _ProtocolError as exc:
            self.fail(exc)

    def _response(self, event: h11.Response) -> None:
        self._status = event.status_code
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
        self._headers = headers
        length = headers.get("content-length")
        if length is not None and int(length) > _MAX_BODY:  # h11 checked it is digits
            raise _ProtocolError(f"answer of {length} bytes")
        self._framed = length is not None or "chunked" in headers.get("transfer-encoding", "").lower()

    def _data(self, data: bytes) -> None:
        body = self._body
        if len(body) + len(data) <= _MAX_BODY:
            body += data
        elif self._framed:
            raise _ProtocolError("answer too large")
        else:  # read no further; a body that runs to the close ends the connection anyway
            body += data[: _MAX_BODY - len(body)]
            self._finish(bytes(body))

    def _finish(self, body: bytes) -> None:
        waiter, self.waiter = self.waiter, None
        conn = self._h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE and not conn.trailing_data[0]:
            conn.start_next_cycle()  # kept alive, nothing beyond the answer: reusable
        else:
            self.close()  # asked to close, to EOF, or bytes beyond the answer
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, self._headers, body))


class _Http11Pool:
    """Keep-alive HTTP/1.1 POSTs to one ``http://`` or ``https://`` URL over at most ``limit`` connections.

    A connection is reused only after a complete answer that did not ask to close; any error,
    timeout or cancellation closes it. A request that is not answered within ``timeout_s`` of its
    start (waiting for a connection and connecting included) fails with ``TimeoutError``: the rare
    waits for a free slot and for a connect run under ``asyncio.timeout_at``; an outstanding request
    has only a deadline, which one timer per pool sweeps, armed at the earliest deadline (requests
    start in deadline order, so the timer is re-armed about once per ``timeout_s``, not per request).
    """

    def __init__(
        self,
        url: str,
        limit: int,
        headers: dict[str, str],
        timeout_s: float,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.hostname is None:
            raise ValueError(f"no host in {url!r}")
        https = parts.scheme == "https"
        if https and tls is None:
            tls = ssl.create_default_context()
        self._tls = tls if https else None
        self._host = parts.hostname
        self._port = parts.port or (443 if https else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        self._target = target.encode("ascii")
        host = parts.netloc.rsplit("@", 1)[-1]
        self._headers = [(b"Host", host.encode("idna" if not host.isascii() else "ascii"))]
        self._headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
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
        try:
            request = h11.Request(
                method=b"POST",
                target=self._target,
                headers=[
                    *self._headers,
                    *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
                    (b"Content-Length", str(len(body)).encode("ascii")),
                ],
            )
        except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
            raise _ProtocolError(f"request: {exc}") from exc
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
                            lambda: _Connection(self),
                            self._host,
                            self._port,
                            ssl=self._tls,
                            server_hostname=self._host if self._tls is not None else None,
                        )
                waiter: asyncio.Future[_Answer] = loop.create_future()
                try:
                    conn.send(request, body, waiter, deadline)
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
    """POST each revision to a receiver's URL (``http://`` or ``https://``, one code path).

    2xx confirms. Redirects are not followed (permanent, ``http_3xx``). 408/425/429 and 5xx are
    transient (with Retry-After when given); connection errors, TLS failures other than a pin
    mismatch, unreadable answers and timeouts are transient; any other status is permanent, and so
    is a certificate that verifies but is not the pinned one (``tls_pin``).

    Args:
        config: the receiver.
    """

    confirmed_at_commit = False

    def __init__(self, config: ReceiverConfig) -> None:
        self._config = config
        headers = {"User-Agent": "ecallgw"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token.reveal()}"
        tls: ssl.SSLContext | None = None
        if config.url.startswith("https://"):
            where = f"receivers.{config.name}."
            tls = client_context(
                ca_file=config.ca_file, cert_file=config.cert_file, key_file=config.key_file, where=where
            )
            if config.pin_sha256:
                pins = (p.strip().replace(":", "").lower() for p in config.pin_sha256.split(","))
                pin(tls, pins, where=f"{where}pin_sha256")
        self._pool = _Http11Pool(config.url, config.concurrency, headers, config.timeout_s, tls=tls)

    async def deliver(self, item: OutboxItem, body: bytes, content_type: str) -> int | None:
        """POST one revision and classify the answer.

        Raises:
            TransientDeliveryError: worth retrying (``reason`` http_5xx, http_429, timeout, connect,
                tls, protocol).
            PermanentDeliveryError: not worth retrying (``reason`` http_4xx, http_3xx, tls_pin).
        """
        name = self._config.name
        headers = {
            "Content-Type": content_type,
            "Idempotency-Key": f"{item.incident_id}:{item.revision}",
        }
        try:
            # The pool applies the timeout itself (one timer per pool, not one per request).
            status, answer_headers, answer = await self._pool.post(body, headers)
        except TimeoutError as exc:
            raise TransientDeliveryError(
                name, "timeout", f"no answer within {self._config.timeout_s} s"
            ) from exc
        except ssl.SSLError as exc:
            pinned = _pin_error(exc)
            if pinned is not None:
                # The receiver's chain verified but it is not the certificate we pinned: an
                # impostor or an unannounced re-key. Retrying will not change it; fail loudly.
                raise PermanentDeliveryError(name, "tls_pin", str(pinned)[:300]) from exc
            # An unverifiable certificate (wrong CA, expired, wrong host) or a refused handshake:
            # possibly a receiver mid-rotation; retried, the breaker and dead letters as for an outage.
            raise TransientDeliveryError(name, "tls", str(exc)[:200] or type(exc).__name__) from exc
        except OSError as exc:
            raise TransientDeliveryError(name, "connect", str(exc)[:200] or type(exc).__name__) from exc
        except _ProtocolError as exc:
            raise TransientDeliveryError(name, "protocol", str(exc)[:200]) from exc
        if 200 <= status < 300:
            return status
        text = answer.decode("utf-8", errors="replace")[:200]
        detail = f"HTTP {status}: {text}"
        if 300 <= status < 400:
            # Never followed: a 301/302/303 would be retried as a body-less GET, and a 200 on that
            # is no delivery. The receiver's configuration needs fixing; an SRE sees the Location.
            location = answer_headers.get("location", "")
            raise PermanentDeliveryError(name, "http_3xx", f"HTTP {status} to {location[:200]}: {text}")
        retry_after = parse_retry_after(answer_headers.get("retry-after"), now=time.time())
        if status >= 500:
            raise TransientDeliveryError(name, "http_5xx", detail, retry_after_s=retry_after)
        if status in _RETRYABLE_4XX:
            raise TransientDeliveryError(name, f"http_{status}", detail, retry_after_s=retry_after)
        raise PermanentDeliveryError(name, "http_4xx", detail)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._pool.aclose()


def _pin_error(exc: BaseException) -> PinMismatchError | None:
    """The pin mismatch behind a TLS error, if that is what it is (raised by the handshake, or chained)."""
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
