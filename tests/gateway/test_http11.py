"""The webhook sink's own HTTP/1.1 client against raw TCP servers on 127.0.0.1 that answer scripted bytes.

aiohttp servers always answer with Content-Length; receivers in the field also answer chunked, close
the connection, send no length at all, or send garbage. Each case must confirm, retry or refuse as
HTTP says, and a connection is reused only after a complete answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from ecallgw.config import ReceiverConfig
from ecallgw.errors import PermanentDeliveryError, TransientDeliveryError
from ecallgw.gateway.records import OutboxItem
from ecallgw.gateway.sinks.http_webhook import HttpWebhookSink

ITEM = OutboxItem(id=1, incident_id="inc-1", revision=2, receiver="psap", signal_at=0.0)
BODY = b'{"incident_id":"inc-1"}'


@asynccontextmanager
async def scripted(
    answer: bytes, *, close: bool = False
) -> AsyncIterator[tuple[int, list[bytes], list[int]]]:
    """A server answering ``answer`` to every request; yields (port, requests, connection ids)."""
    requests: list[bytes] = []
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = len(set(connections)) + 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                requests.append(head + await reader.readexactly(length))
                connections.append(conn)
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, requests, connections
    finally:
        server.close()
        await server.wait_closed()


def sink(port: int) -> HttpWebhookSink:
    return HttpWebhookSink(
        ReceiverConfig(name="psap", url=f"http://127.0.0.1:{port}/in?x=1", timeout_s=2.0, concurrency=2)
    )


async def test_keep_alive_reuses_one_connection_and_sends_the_headers() -> None:
    async with scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") as (port, requests, conns):
        s = sink(port)
        try:
            async with asyncio.timeout(5):
                for _ in range(3):
                    assert await s.deliver(ITEM, BODY, "application/json") == 200
        finally:
            await s.aclose()
    assert conns == [1, 1, 1]
    head, _, body = requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /in?x=1 HTTP/1.1\r\n") and body == BODY
    assert b"Idempotency-Key: inc-1:2" in head and b"Content-Type: application/json" in head


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nok\r\n3\r\n!!!\r\n0\r\nT: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    ],
)
async def test_chunked_and_interim_answers_confirm_and_keep_the_connection(answer: bytes) -> None:
    async with scripted(answer) as (port, _, conns):
        s = sink(port)
        try:
            async with asyncio.timeout(5):
                for _ in range(2):
                    assert 200 <= (await s.deliver(ITEM, BODY, "application/json") or 0) < 300
        finally:
            await s.aclose()
    assert conns == [1, 1]


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nbody to eof",
    ],
)
async def test_an_answer_that_closes_is_read_and_the_next_request_reconnects(answer: bytes) -> None:
    async with scripted(answer, close=True) as (port, _, conns):
        s = sink(port)
        try:
            async with asyncio.timeout(5):
                for _ in range(2):
                    assert await s.deliver(ITEM, BODY, "application/json") == 200
        finally:
            await s.aclose()
    assert conns == [1, 2]


async def test_retry_after_and_refusals_are_classified() -> None:
    answer = b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nslow"
    async with scripted(answer) as (port, _, _):
        s = sink(port)
        try:
            with pytest.raises(TransientDeliveryError) as info:
                await s.deliver(ITEM, BODY, "application/json")
        finally:
            await s.aclose()
    assert info.value.reason == "http_429" and info.value.retry_after_s == 7.0
    assert "slow" in info.value.detail
    async with scripted(b"HTTP/1.1 422 Nope\r\nContent-Length: 3\r\n\r\nbad") as (port, _, _):
        s = sink(port)
        try:
            with pytest.raises(PermanentDeliveryError) as refused:
                await s.deliver(ITEM, BODY, "application/json")
        finally:
            await s.aclose()
    assert refused.value.reason == "http_4xx"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"SMTP ready\r\n\r\n", "protocol"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "connect"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "protocol"),
    ],
)
async def test_garbage_or_a_cut_answer_is_transient(answer: bytes, reason: str) -> None:
    async with scripted(answer, close=True) as (port, _, _):
        s = sink(port)
        try:
            with pytest.raises(TransientDeliveryError) as info:
                await s.deliver(ITEM, BODY, "application/json")
        finally:
            await s.aclose()
    assert info.value.reason == reason


async def test_no_answer_is_a_timeout_and_a_closed_port_a_connect_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    s = HttpWebhookSink(ReceiverConfig(name="psap", url=f"http://127.0.0.1:{port}/", timeout_s=0.2))
    try:
        with pytest.raises(TransientDeliveryError) as info:
            await s.deliver(ITEM, BODY, "application/json")
        assert info.value.reason == "timeout"
    finally:
        await s.aclose()
        server.close()
        await server.wait_closed()
    s = HttpWebhookSink(ReceiverConfig(name="psap", url=f"http://127.0.0.1:{port}/", timeout_s=0.5))
    try:
        with pytest.raises(TransientDeliveryError) as info:
            await s.deliver(ITEM, BODY, "application/json")
        assert info.value.reason == "connect"
    finally:
        await s.aclose()
