"""Open-loop publishers: send pre-encoded signals over MQTT (QoS 1) or HTTP at their scheduled times.

Open loop means the send times are fixed by the schedule, not by how fast the gateway answers: a
slow gateway makes the driver fall behind, and because latency is measured from the *scheduled*
time, that delay shows in the figures instead of hiding (docs/transport.md). Outstanding publishes
are bounded (paho loses messages silently past 65,535 unacknowledged QoS 1 publishes); when the
bound is reached the driver waits, which again shows as latency.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
import aiomqtt

from ecallgw.codecs import msd as msd_codec
from ecallgw.codecs.document import MSD_MEDIA_TYPE
from ecallgw.codecs.envelope import encode_envelope
from ecallgw.model import MsdSignal
from ecallgw.simulators.scenarios import Scenario, timeline

__all__ = ["Outgoing", "SendLog", "build_outgoing", "drive_http", "drive_mqtt", "open_loop"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    """One pre-encoded signal and when to send it (epoch seconds).

    ``payload`` is the msgpack envelope; ``raw_msd`` the bare UPER MSD of an ``msd`` signal, for the
    RFC 8147 form of HTTP ingest.
    """

    at: float
    scenario: str
    tps: str
    vehicle: str
    kind: str
    call_id: str
    payload: bytes
    raw_msd: bytes = b""


class SendLog:
    """What the driver did, per outgoing signal (parallel arrays, index = position in the schedule).

    Attributes:
        started: when the publish was handed to the client (NaN if never).
        acked: when the broker's PUBACK or the gateway's HTTP 2xx arrived (NaN if never).
        errors: error text per index, None when fine.
    """

    def __init__(self, n: int) -> None:
        nan = float("nan")
        self.started = [nan] * n
        self.acked = [nan] * n
        self.errors: list[str | None] = [None] * n

    @property
    def sent(self) -> int:
        """Signals handed to the transport."""
        return sum(1 for s in self.started if not math.isnan(s))

    @property
    def acknowledged(self) -> int:
        """Signals the broker or gateway acknowledged."""
        return sum(1 for a in self.acked if not math.isnan(a))


def build_outgoing(scenarios: Sequence[Scenario]) -> list[Outgoing]:
    """Encode every signal of ``scenarios`` into envelopes, in send order."""
    out: list[Outgoing] = []
    for at, scenario, timed in timeline(scenarios):
        sig = timed.signal
        out.append(
            Outgoing(
                at=at,
                scenario=scenario.id,
                tps=sig.tps,
                vehicle=sig.vehicle,
                kind=timed.kind,
                call_id=sig.call_id,
                payload=encode_envelope(sig),
                raw_msd=msd_codec.encode(sig.msd) if isinstance(sig, MsdSignal) else b"",
            )
        )
    return out


async def _pace(at: float) -> None:
    delay = at - time.time()
    if delay > 0.0005:
        await asyncio.sleep(delay)


async def open_loop(
    outgoing: Sequence[Outgoing],
    log: SendLog,
    send: Callable[[int, Outgoing], Awaitable[None]],
    *,
    max_outstanding: int,
    on_progress: Callable[[int], None] | None,
) -> None:
    """Hand each signal to ``send`` at its scheduled time, with at most ``max_outstanding`` in flight.

    ``send`` records the outcome in ``log`` (acked or error); the loop records when it started and
    returns once every send has finished, so a driver stops by itself at the end of its schedule.
    If cancelled, it cancels the sends in flight and waits for them before it returns.
    """
    gate = asyncio.Semaphore(max_outstanding)
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int, item: Outgoing) -> None:
        try:
            await send(i, item)
        finally:
            gate.release()

    try:
        for i, item in enumerate(outgoing):
            await _pace(item.at)
            await gate.acquire()
            log.started[i] = time.time()
            task = asyncio.create_task(one(i, item))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if on_progress is not None and i % 1000 == 999:
                on_progress(i + 1)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        # Cancelled (or failed): no send may start or run on after we return, because the caller
        # then closes the transport (a publish on a disconnecting MQTT client queues a write for a
        # socket about to close).
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def drive_mqtt(
    outgoing: Sequence[Outgoing],
    *,
    host: str,
    port: int,
    topic_prefix: str = "ecall/v1",
    max_outstanding: int = 2000,
    client_id: str = "ecallgw-loadtest",
    timeout_s: float = 30.0,
    on_progress: Callable[[int], None] | None = None,
    tls_context: ssl.SSLContext | None = None,
) -> SendLog:
    """Publish every signal with QoS 1 at its scheduled time over one MQTT connection.

    Args:
        outgoing: the schedule, in time order.
        host: broker host.
        port: broker port.
        topic_prefix: topics are ``{topic_prefix}/{tps}/{vehicle}/{kind}``.
        max_outstanding: most publishes awaiting PUBACK at once.
        client_id: MQTT client id.
        timeout_s: how long one publish may wait for its PUBACK.
        on_progress: called with the number of signals handed over so far, about every 1000.
        tls_context: connect over TLS with this context (`ecallgw.gateway.tls.client_context`);
            None: plain MQTT.

    Returns:
        The send log.

    Raises:
        ValueError: ``max_outstanding`` outside 1..65535.
    """
    if not 1 <= max_outstanding <= 65_535:
        # paho's packet ids wrap past 65,535 unacknowledged QoS 1 publishes and messages vanish.
        raise ValueError(f"max_outstanding must be in 1..65535, got {max_outstanding}")
    log = SendLog(len(outgoing))
    async with aiomqtt.Client(
        host,
        port,
        identifier=client_id,
        clean_session=True,
        max_inflight_messages=max_outstanding,
        timeout=timeout_s,
        tls_context=tls_context,
    ) as client:
        # Many concurrent publishes are the point here; aiomqtt would warn on each one past 10.
        client.pending_calls_threshold = max_outstanding + 1

        async def publish(i: int, item: Outgoing) -> None:
            try:
                await client.publish(
                    f"{topic_prefix}/{item.tps}/{item.vehicle}/{item.kind}", item.payload, qos=1
                )
                log.acked[i] = time.time()
            except aiomqtt.MqttError as exc:
                log.errors[i] = f"mqtt: {exc}"

        await open_loop(outgoing, log, publish, max_outstanding=max_outstanding, on_progress=on_progress)
    return log


async def drive_http(
    outgoing: Sequence[Outgoing],
    *,
    base_url: str,
    tokens: dict[str, str],
    max_outstanding: int = 256,
    timeout_s: float = 30.0,
    raw_msd: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> SendLog:
    """POST every signal's envelope to ``{base_url}/v1/ecall/{tps}/{vehicle}/{kind}`` on schedule.

    Args:
        outgoing: the schedule, in time order.
        base_url: the gateway's HTTP base URL.
        tokens: provider bearer token per tps.
        max_outstanding: most requests in flight at once.
        timeout_s: one request's timeout.
        raw_msd: send MSDs in the RFC 8147 form (the bare MSD as
            ``application/EmergencyCallData.eCall.MSD`` with a ``Call-Id`` header) instead of the
            msgpack envelope; cancels and positions stay envelopes.
        on_progress: called with the number of signals handed over so far, about every 1000.

    Returns:
        The send log; a non-202 answer is recorded as an error.
    """
    log = SendLog(len(outgoing))
    connector = aiohttp.TCPConnector(limit=max_outstanding)
    async with aiohttp.ClientSession(base_url=base_url.rstrip("/") + "/", connector=connector) as session:

        async def post(i: int, item: Outgoing) -> None:
            headers = {"Authorization": f"Bearer {tokens.get(item.tps, '')}"}
            if raw_msd and item.raw_msd:
                body = item.raw_msd
                headers |= {"Content-Type": MSD_MEDIA_TYPE, "Call-Id": item.call_id}
            else:
                body = item.payload
                headers["Content-Type"] = "application/msgpack"
            try:
                async with (
                    asyncio.timeout(timeout_s),
                    session.post(
                        f"v1/ecall/{item.tps}/{item.vehicle}/{item.kind}",
                        data=body,
                        headers=headers,
                    ) as resp,
                ):
                    await resp.read()
                    if resp.status == 202:
                        log.acked[i] = time.time()
                    else:
                        log.errors[i] = f"http {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.errors[i] = f"http: {type(exc).__name__}"

        await open_loop(outgoing, log, post, max_outstanding=max_outstanding, on_progress=on_progress)
    return log
