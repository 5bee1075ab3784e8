"""The webhook sink's keep-alive HTTP/1.1 pool against real sockets on 127.0.0.1.

Raw asyncio servers answer scripted bytes, cut into pieces that reach the client one by one (an
answer split anywhere must read the same), with stray bytes after an answer, cut mid-body, slow or
never; an aiohttp server checks keep-alive reuse under concurrency. Every answer is checked for
what it returns, how the sink classifies it, and whether its connection was reused or closed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecallgw.config import ReceiverConfig
from ecallgw.errors import TransientDeliveryError
from ecallgw.gateway.records import OutboxItem
from ecallgw.gateway.sinks.http_webhook import _MAX_BODY, HttpWebhookSink, _Http11Pool
from tests.gateway.broker import free_port
from tests.gateway.helpers import until

ITEM = OutboxItem(id=1, incident_id="inc-1", revision=2, receiver="psap", signal_at=0.0)
BODY = b'{"incident_id":"inc-1"}'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

# respond(index of the request, writer) -> keep the connection open afterwards?
Respond = Callable[[int, asyncio.StreamWriter], Awaitable[bool]]


async def pause() -> None:
    """Let the client read what was written before writing more (one read per piece, both loops)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def write_pieces(writer: asyncio.StreamWriter, data: bytes, cuts: list[int]) -> None:
    """Write ``data`` cut at ``cuts``, each piece reaching the client on its own."""
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        if cut > start:
            writer.write(data[start:cut])
            await writer.drain()
            await pause()
            start = cut


def answer_with(answer: bytes, *, keep: bool = True) -> Respond:
    async def respond(index: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer)
        await writer.drain()
        return keep

    return respond


class RawServer:
    """A TCP server on 127.0.0.1 reading POSTs and answering each with ``respond``.

    Counts accepted connections, and connections the client closed (EOF or reset while the
    server waited for the next request).
    """

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.accepted = 0
        self.client_closed = 0
        self.requests: list[bytes] = []
        self.received = asyncio.Event()  # set at every request
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        async with asyncio.timeout(5):
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/in"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.client_closed += 1
                    return
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                self.received.set()
                if not await self.respond(len(self.requests) - 1, writer):
                    return
        except asyncio.CancelledError:
            # Stopped by __aexit__; ending normally keeps asyncio's stream callback from logging it.
            return
        finally:
            writer.close()
            self._tasks.discard(task)


def make_sink(url: str, *, timeout_s: float = 5.0, concurrency: int = 2) -> HttpWebhookSink:
    return HttpWebhookSink(ReceiverConfig(name="psap", url=url, timeout_s=timeout_s, concurrency=concurrency))


# -- an answer split anywhere reads the same ------------------------------------------------------

_HEADER_NAMES = ["X-Trace", "retry-after", "Location", "X-Receiver-Id", "ETag"]
_VALUE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)


@st.composite
def answers(draw: st.DrawFn) -> tuple[bytes, int, dict[str, str], bytes, bool]:
    """(answer bytes, status, headers, body, keep-alive) of a well-formed answer of any framing."""
    head = b""
    for code in draw(st.lists(st.sampled_from([100, 102, 103]), max_size=2)):
        hint = b"Link: </s.css>\r\n" if code == 103 else b""
        head += b"HTTP/1.1 %d Interim\r\n%s\r\n" % (code, hint)
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
    status = draw(st.sampled_from([200, 201, 202, 204, 304, 404, 429, 500, 503]))
    headers = draw(st.dictionaries(st.sampled_from(_HEADER_NAMES), _VALUE, max_size=3))
    close = draw(st.booleans())
    framing = draw(st.sampled_from(["length", "chunked", "eof"]))
    body = draw(st.binary(max_size=300))
    lines = [f"{version} {status} Some Reason"] + [f"{k}: {v}" for k, v in headers.items()]
    if close:
        lines.append("Connection: close")
    payload = b""
    if status in (204, 304):
        body = b""
        framing = "none"
    elif framing == "length":
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        cuts = sorted(draw(st.sets(st.integers(1, len(body) - 1), max_size=4))) if len(body) > 1 else []
        start = 0
        for cut in [*cuts, len(body)]:
            if cut > start:
                size = format(cut - start, draw(st.sampled_from(["x", "X"])))
                ext = draw(st.sampled_from(["", ";a=1", " ;name"]))
                payload += f"{size}{ext}\r\n".encode() + body[start:cut] + b"\r\n"
                start = cut
        payload += b"0\r\n" + draw(st.sampled_from([b"", b"Expires: never\r\n", b"A: 1\r\nB: 2\r\n"]))
        payload += b"\r\n"
    else:
        payload = body
    raw = head + ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
    keep = version == "HTTP/1.1" and not close and framing != "eof"
    return raw, status, {k.lower(): v for k, v in headers.items()}, body, keep


async def one_answer(
    raw: bytes, cuts: list[int], keep: bool
) -> tuple[tuple[int, dict[str, str], bytes], int]:
    """POST once through a pool to a server writing ``raw`` in pieces, then once more.

    Returns the first answer and the number of connections the two requests needed.
    """

    async def respond(index: int, writer: asyncio.StreamWriter) -> bool:
        if index == 0:
            await write_pieces(writer, raw, cuts)
            return keep  # a server that said it closes (or sent to EOF) closes
        writer.write(OK)
        await writer.drain()
        return True

    async with RawServer(respond) as server:
        pool = _Http11Pool(server.url, 2, {"User-Agent": "test"}, 5.0)
        try:
            async with asyncio.timeout(10):
                first = await pool.post(BODY, {"Idempotency-Key": "a:1"})
                second = await pool.post(BODY, {"Idempotency-Key": "a:2"})
            assert second == (200, {"content-length": "2"}, b"ok")
        finally:
            await pool.aclose()
        return first, server.accepted


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=answers(), data=st.data(), loop=st.sampled_from(["asyncio", "uvloop"]))
def test_an_answer_split_anywhere_reads_the_same(
    answer: tuple[bytes, int, dict[str, str], bytes, bool], data: st.DataObject, loop: str
) -> None:
    raw, status, headers, body, keep = answer
    cuts = data.draw(st.lists(st.integers(1, len(raw) - 1), max_size=12), label="cuts")
    run: Callable[[Coroutine[Any, Any, Any]], Any] = uvloop.run if loop == "uvloop" else asyncio.run
    (got_status, got_headers, got_body), connections = run(one_answer(raw, cuts, keep))
    assert got_status == status
    assert got_body == body
    assert {k: got_headers[k] for k in headers} == headers
    assert connections == (1 if keep else 2)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_answer_one_byte_at_a_time(loop: str) -> None:
    # Every boundary at once: inside the status line, CRLFs, a chunk size, its data and trailers.
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n"
        b"X-Trace: abc\r\n\r\n5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nExpires: never\r\n\r\n"
    )
    run: Callable[[Coroutine[Any, Any, Any]], Any] = uvloop.run if loop == "uvloop" else asyncio.run
    answer, connections = run(one_answer(raw, list(range(1, len(raw))), True))
    assert answer == (201, {"transfer-encoding": "chunked", "x-trace": "abc"}, b"hello!")
    assert connections == 1


# -- stray bytes, cuts, garbage --------------------------------------------------------------------


@pytest.mark.parametrize("later", [False, True], ids=["same-write", "while-idle"])
async def test_bytes_after_an_answer_close_the_connection(later: bool) -> None:
    # A second answer nobody asked for: read as the next request's, it would confirm a delivery
    # the receiver never saw.
    stray = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    async def respond(index: int, writer: asyncio.StreamWriter) -> bool:
        if index == 0:
            writer.write(OK if later else OK + stray)
            await writer.drain()
            if later:
                await asyncio.sleep(0.05)
                writer.write(stray)
                await writer.drain()
        else:
            writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
        return True

    async with RawServer(respond) as server:
        sink = make_sink(server.url)
        try:
            async with asyncio.timeout(5):
                assert await sink.deliver(ITEM, BODY, "application/json") == 200
                await until(lambda: server.client_closed == 1)
                assert await sink.deliver(ITEM, BODY, "application/json") == 202
        finally:
            await sink.aclose()
    assert server.accepted == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closed before any byte
        b"HTTP/1.1 200 OK\r\nContent-Le",  # inside the head
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # inside a sized body
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",  # inside a chunk
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",  # before the trailers end
    ],
    ids=["nothing", "head", "body", "chunk", "trailers"],
)
async def test_a_connection_closed_mid_answer_is_transient_connect(answer: bytes) -> None:
    async with RawServer(answer_with(answer, keep=False)) as server:
        sink = make_sink(server.url)
        try:
            async with asyncio.timeout(5):
                with pytest.raises(TransientDeliveryError) as info:
                    await sink.deliver(ITEM, BODY, "application/json")
        finally:
            await sink.aclose()
    assert info.value.reason == "connect"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/2 200 OK\r\n\r\n",  # not HTTP/1.x
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",  # four-digit status
        b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n",  # no status
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",  # bad header line
        b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",  # not digits
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (_MAX_BODY + 1),  # over the cap
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",  # bad chunk size
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",  # no CRLF after data
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (_MAX_BODY + 1),  # over the cap
        b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000,  # a head that never ends
    ],
    ids=[
        "http2",
        "status-digits",
        "no-status",
        "header",
        "length-sign",
        "length-cap",
        "chunk-size",
        "chunk-crlf",
        "chunk-cap",
        "head-cap",
    ],
)
async def test_garbage_is_transient_protocol_and_closes_the_connection(answer: bytes) -> None:
    async with RawServer(answer_with(answer)) as server:
        sink = make_sink(server.url)
        try:
            async with asyncio.timeout(5):
                with pytest.raises(TransientDeliveryError) as info:
                    await sink.deliver(ITEM, BODY, "application/json")
                await until(lambda: server.client_closed == 1)
        finally:
            await sink.aclose()
    assert info.value.reason == "protocol"


async def test_a_body_to_eof_is_read_up_to_the_cap() -> None:
    big = b"x" * (_MAX_BODY + 100_000)
    async with RawServer(answer_with(b"HTTP/1.0 200 OK\r\n\r\n" + big, keep=False)) as server:
        pool = _Http11Pool(server.url, 1, {}, 5.0)
        try:
            async with asyncio.timeout(10):
                status, _, body = await pool.post(BODY, {})
        finally:
            await pool.aclose()
    assert status == 200 and body == big[:_MAX_BODY]


# -- reuse -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n", True),  # no body, whatever the headers
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),  # HTTP/1.0 does not keep
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n", False),
    ],
    ids=["empty", "304", "204", "http1.0", "close-token"],
)
async def test_reuse_follows_the_answer(answer: bytes, reused: bool) -> None:
    status = int(answer.split(b" ")[1])
    async with RawServer(answer_with(answer, keep=reused)) as server:
        pool = _Http11Pool(server.url, 2, {}, 5.0)
        try:
            async with asyncio.timeout(5):
                for _ in range(3):
                    assert (await pool.post(BODY, {}))[0] == status
        finally:
            await pool.aclose()
    assert server.accepted == (1 if reused else 3)


async def test_a_connection_the_receiver_closed_while_idle_is_not_used_again() -> None:
    # The receiver's keep-alive timeout: it closes an idle connection without having said so.
    async with RawServer(answer_with(OK, keep=False)) as server:
        pool = _Http11Pool(server.url, 2, {}, 5.0)
        try:
            async with asyncio.timeout(5):
                assert (await pool.post(BODY, {}))[0] == 200
                await until(lambda: not pool.idle and not pool.conns)
                assert (await pool.post(BODY, {}))[0] == 200
        finally:
            await pool.aclose()
    assert server.accepted == 2


async def test_concurrent_deliveries_share_at_most_concurrency_connections() -> None:
    peers: set[tuple[str, int]] = set()
    keys: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))
        keys.append(request.headers["Idempotency-Key"])
        await asyncio.sleep(0.001)  # keep requests overlapping
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/in", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    sink = make_sink(f"http://127.0.0.1:{port}/in", concurrency=4)
    items = [
        OutboxItem(id=i, incident_id=f"inc-{i}", revision=1, receiver="psap", signal_at=0.0)
        for i in range(200)
    ]
    try:
        async with asyncio.timeout(20):
            statuses = await asyncio.gather(*(sink.deliver(i, BODY, "application/json") for i in items))
    finally:
        await sink.aclose()
        await runner.cleanup()
    assert statuses == [200] * 200
    assert sorted(keys) == sorted(f"inc-{i}:1" for i in range(200))
    assert 1 <= len(peers) <= 4


# -- timeouts and cancellation ---------------------------------------------------------------------


def silent() -> Respond:
    async def respond(index: int, writer: asyncio.StreamWriter) -> bool:
        return True  # reads the next request (or the client's close) without answering

    return respond


async def timed_deliver(sink: HttpWebhookSink, item: OutboxItem = ITEM) -> tuple[str, float]:
    """(outcome, seconds) of one delivery: ``ok`` or the transient reason."""
    start = time.monotonic()
    try:
        await sink.deliver(item, BODY, "application/json")
        outcome = "ok"
    except TransientDeliveryError as exc:
        outcome = exc.reason
    return outcome, time.monotonic() - start


async def test_no_answer_times_out_at_the_deadline_and_closes_the_connection() -> None:
    async with RawServer(silent()) as server:
        sink = make_sink(server.url, timeout_s=0.3)
        try:
            async with asyncio.timeout(5):
                outcome, took = await timed_deliver(sink)
                await until(lambda: server.client_closed == 1)
        finally:
            await sink.aclose()
    assert outcome == "timeout"
    assert 0.3 <= took < 1.3


async def staggered_requests() -> tuple[list[tuple[str, float]], int]:
    """Three deliveries, the third started 0.3 s after the others; only the second is answered."""

    async def respond(index: int, writer: asyncio.StreamWriter) -> bool:
        if index == 1:
            await asyncio.sleep(0.25)
            writer.write(OK)
            await writer.drain()
        return True  # requests 0 and 2 are never answered

    async with RawServer(respond) as server:
        sink = make_sink(server.url, timeout_s=0.5, concurrency=3)
        try:
            async with asyncio.timeout(5):
                first = asyncio.ensure_future(timed_deliver(sink))
                await until(lambda: len(server.requests) == 1)
                second = asyncio.ensure_future(timed_deliver(sink))
                await until(lambda: len(server.requests) == 2)
                await asyncio.sleep(0.3)
                third = asyncio.ensure_future(timed_deliver(sink))
                results = await asyncio.gather(first, second, third)
        finally:
            await sink.aclose()
    return list(results), server.accepted


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_each_request_times_out_at_its_own_deadline(loop: str) -> None:
    # One timer serves the pool: a request started later must neither be failed at an earlier
    # request's deadline nor outlive its own; an answer in time is never failed. (uvloop's clock
    # has millisecond steps, hence the 10 ms below the timeout.)
    run: Callable[[Coroutine[Any, Any, Any]], Any] = uvloop.run if loop == "uvloop" else asyncio.run
    ((o1, t1), (o2, t2), (o3, t3)), accepted = run(staggered_requests())
    assert (o1, o2, o3) == ("timeout", "ok", "timeout")
    assert 0.49 <= t1 < 1.5 and t2 < 0.49 and 0.49 <= t3 < 1.5
    assert accepted == 2  # the third reused the connection the second left idle


async def test_waiting_for_a_connection_counts_towards_the_timeout() -> None:
    async with RawServer(silent()) as server:
        sink = make_sink(server.url, timeout_s=0.3, concurrency=1)
        try:
            async with asyncio.timeout(5):
                results = await asyncio.gather(timed_deliver(sink), timed_deliver(sink))
        finally:
            await sink.aclose()
    assert [o for o, _ in results] == ["timeout", "timeout"]
    assert all(0.3 <= t < 1.3 for _, t in results)
    assert server.accepted == 1  # the second never got a connection


async def test_a_connect_that_hangs_times_out() -> None:
    # A listener with a full accept queue drops SYNs: connecting hangs, as to a host that is down.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    loop = asyncio.get_running_loop()
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            try:
                async with asyncio.timeout(0.2):
                    await loop.sock_connect(filler, ("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            pytest.fail("the accept queue never filled")
        sink = make_sink(f"http://127.0.0.1:{port}/", timeout_s=0.3)
        try:
            async with asyncio.timeout(5):
                outcome, took = await timed_deliver(sink)
        finally:
            await sink.aclose()
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    assert outcome == "timeout"
    assert 0.3 <= took < 1.3


async def test_a_refused_connection_is_transient_connect() -> None:
    sink = make_sink(f"http://127.0.0.1:{free_port()}/")
    try:
        async with asyncio.timeout(5):
            outcome, _ = await timed_deliver(sink)
    finally:
        await sink.aclose()
    assert outcome == "connect"


async def test_cancelling_a_request_closes_its_connection_and_frees_its_slot() -> None:
    async def respond(index: int, writer: asyncio.StreamWriter) -> bool:
        if index > 0:
            writer.write(OK)
            await writer.drain()
        return True  # the first request is never answered

    async with RawServer(respond) as server:
        sink = make_sink(server.url, concurrency=1)
        try:
            async with asyncio.timeout(5):
                task = asyncio.ensure_future(sink.deliver(ITEM, BODY, "application/json"))
                await server.received.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await until(lambda: server.client_closed == 1)
                assert await sink.deliver(ITEM, BODY, "application/json") == 200
        finally:
            await sink.aclose()
    assert server.accepted == 2


async def test_a_request_cancelled_while_waiting_for_a_slot_leaves_the_slot_to_others() -> None:
    gate = asyncio.Event()

    async def respond(index: int, writer: asyncio.StreamWriter) -> bool:
        if index == 0:
            await gate.wait()
        writer.write(OK)
        await writer.drain()
        return True

    async with RawServer(respond) as server:
        sink = make_sink(server.url, concurrency=1)
        try:
            async with asyncio.timeout(5):
                first = asyncio.ensure_future(sink.deliver(ITEM, BODY, "application/json"))
                await server.received.wait()
                waiting = asyncio.ensure_future(sink.deliver(ITEM, BODY, "application/json"))
                third = asyncio.ensure_future(sink.deliver(ITEM, BODY, "application/json"))
                await asyncio.sleep(0.02)
                waiting.cancel()
                gate.set()
                assert await first == 200 and await third == 200
                with pytest.raises(asyncio.CancelledError):
                    await waiting
        finally:
            await sink.aclose()
    assert len(server.requests) == 2 and server.accepted == 1


async def test_a_slot_handed_to_a_request_cancelled_at_that_moment_passes_on() -> None:
    # The first request's release hands its slot to the waiting one, which is cancelled before it
    # runs: it must pass the slot on, or the pool is one connection short for good.
    pool = _Http11Pool("http://127.0.0.1:1/", 1, {}, 1.0)  # the port is set below
    waiting: list[asyncio.Future[Any]] = []

    async def respond(index: int, writer: asyncio.StreamWriter) -> bool:
        if index == 0:
            waiting.append(asyncio.ensure_future(pool.post(BODY, {})))
            await asyncio.sleep(0.02)  # queued behind the slot the first request holds
        writer.write(OK)
        await writer.drain()
        return True

    async with RawServer(respond) as server:
        pool = _Http11Pool(server.url, 1, {}, 1.0)
        try:
            async with asyncio.timeout(5):
                assert (await pool.post(BODY, {}))[0] == 200
                # Same step as the release: the waiter holds its slot but has not run yet.
                assert not waiting[0].done()
                waiting[0].cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting[0]
                assert (await pool.post(BODY, {}))[0] == 200
        finally:
            await pool.aclose()
    assert len(server.requests) == 2


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_kept_alive_connection_the_receiver_closed_is_not_a_failed_delivery(loop: str) -> None:
    # The receiver answers (HTTP/1.1, no "Connection: close") and then closes: its FIN may cross
    # our next request on that connection, which then dies unread. That is no answer from the
    # receiver: the request goes once more on a new connection (same Idempotency-Key).
    async def scenario() -> tuple[int, int]:
        seen = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal seen
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(1)
            seen += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = _Http11Pool(f"http://127.0.0.1:{port}/", 4, {}, 2.0)
        ok = 0
        async with asyncio.timeout(20):
            for _ in range(100):
                status, _, _ = await pool.post(b"x", {})
                ok += status == 200
        await pool.aclose()
        server.close()
        return ok, seen

    run = uvloop.run if loop == "uvloop" else asyncio.run
    ok, seen = run(scenario())
    assert ok == 100
    assert seen == 100  # each reached the receiver once
