"""The MQTT source: QoS 1 subscription, persistent session, acknowledgement only after the store.

aiomqtt 2.x lets paho PUBACK a QoS 1 message as soon as it is queued, before we stored it. We switch
paho to manual acknowledgement before connecting (``manual_ack_set(True)`` on the wrapped client;
aiomqtt has no public API for it yet, issue #345, hence the pinned minor version and the redelivery
test) and PUBACK each message, in arrival order, once the store committed it.

Backpressure: at most ``max_inflight`` messages are received and not yet acknowledged. At the bound
we stop reading; the broker's inflight window then holds further messages on the broker side, so a
slow store slows the broker instead of growing our memory or dropping anything.

A redelivered message (PUBACK lost in a crash or disconnect) reaches the pipeline again; the
pipeline recognises it by its digest and acknowledges it without triaging it twice.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt

from ecallgw.config import MqttConfig
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.records import RawSignal
from ecallgw.gateway.retry import backoff_s
from ecallgw.gateway.slots import Slots

__all__ = ["MqttSource", "Submit"]

Submit = Callable[[RawSignal], Awaitable["asyncio.Future[Any]"]]
"""Hands a raw signal to the pipeline (waiting while its queue is full) and returns a future that
resolves once the signal is durably stored (or fails if it could not be)."""

log = logging.getLogger("ecallgw.mqtt")

_PER_TURN = 32  # messages taken from the queue between two yields to the event loop
_DRAIN_PING_S = 2.0  # how long a graceful stop waits for the broker to confirm it read our PUBACKs


class _Connection:
    """Acknowledgement state of one broker connection (mids are per connection)."""

    def __init__(self, client: aiomqtt.Client, limit: int, metrics: Metrics | None) -> None:
        self.client = client
        self.pending: collections.deque[tuple[int, int, asyncio.Future[Any]]] = collections.deque()
        self.slots = Slots(limit)
        self.open = True
        self.metrics = metrics
        self.acked = 0

    def track(self, mid: int, qos: int, stored: asyncio.Future[Any]) -> None:
        self.pending.append((mid, qos, stored))
        stored.add_done_callback(self._drain)

    def _drain(self, _: asyncio.Future[Any]) -> None:
        # PUBACK in arrival order: only the head of the queue may be acknowledged.
        pending = self.pending
        while pending and pending[0][2].done():
            mid, qos, stored = pending.popleft()
            self.slots.release()
            if stored.cancelled() or stored.exception() is not None:
                # Not stored: leave it unacknowledged; the broker redelivers it on the next connection.
                log.error("store failed, message left unacknowledged", extra={"mid": mid})
                continue
            if self.open and qos > 0:
                self.client._client.ack(mid, qos)  # private: see module docstring
                self.acked += 1
        if self.metrics is not None:
            self.metrics.mqtt_inflight.set(len(pending))


async def _broker_has_read(client: aiomqtt.Client, *, timeout_s: float) -> None:
    """Wait until the broker has read every packet sent so far on this connection.

    A broker reads a connection in order, so its PINGRESP to a PINGREQ queued after our last
    PUBACKs proves it has processed them. Without this barrier, mosquitto can drop the last PUBACKs
    sent just before a DISCONNECT (seen 1 in ~50 graceful stops), and messages already stored here
    come back after the restart. They would be recognised as redeliveries, but a drain should leave
    nothing behind. Private paho calls (module docstring). A broker that does not answer in time
    costs only that redelivery, so the wait is short.
    """
    paho = client._client
    if paho._send_pingreq() != 0:  # not MQTT_ERR_SUCCESS: the link is already gone
        return
    try:
        async with asyncio.timeout(timeout_s):
            # paho clears _ping_t on PINGRESP and offers no callback for it; shutdown-only polling.
            while paho._ping_t != 0 and not client._disconnected.done():  # noqa: ASYNC110
                await asyncio.sleep(0.001)
    except TimeoutError:
        log.warning("broker did not answer the drain ping; the last acknowledgements may be resent")


class MqttSource:
    """Subscribe to the ingest topics and feed every message to the pipeline; reconnect forever.

    Use as an async context manager and run `run` in the application's TaskGroup.

    Args:
        config: the ``[mqtt]`` table.
        submit: the pipeline's entry (see `Submit`).
        metrics: where to report connection state and messages in flight.
        rng: jitter of the reconnect backoff.
    """

    def __init__(
        self,
        config: MqttConfig,
        submit: Submit,
        metrics: Metrics | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._submit = submit
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()
        self.received = 0
        self.connections = 0
        self._conn: _Connection | None = None

    @property
    def topic(self) -> str:
        """The subscription filter (shared when a group is configured)."""
        base = f"{self._config.topic_prefix}/+/+/+"
        return f"$share/{self._config.share_group}/{base}" if self._config.share_group else base

    @property
    def inflight(self) -> int:
        """Messages of the current connection received and not yet acknowledged."""
        return len(self._conn.pending) if self._conn is not None else 0

    async def __aenter__(self) -> MqttSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop taking messages (drain); what is not yet stored stays unacknowledged with the broker."""
        self._stopping.set()

    async def run(self) -> None:
        """Connect, consume, and reconnect with capped jittered backoff until `stop`."""
        attempt = 0
        while not self._stopping.is_set():
            connections = self.connections
            try:
                await self._connection()
                attempt = 0
            except aiomqtt.MqttError as exc:
                # A connection that was up starts the backoff afresh; only failures in a row grow it.
                attempt = 1 if self.connections > connections else attempt + 1
                delay = backoff_s(
                    attempt,
                    base_s=self._config.reconnect_min_s,
                    cap_s=self._config.reconnect_max_s,
                    rng=self._rng,
                )
                log.warning(
                    "mqtt connection lost, reconnecting",
                    extra={"error": str(exc), "retry_in_s": round(delay, 3), "attempt": attempt},
                )
                try:
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
                except TimeoutError:
                    pass
            finally:
                self.connected.clear()
                if self._metrics is not None:
                    self._metrics.mqtt_connected.set(0)
                    self._metrics.mqtt_inflight.set(0)

    async def _connection(self) -> None:
        cfg = self._config
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=cfg.client_id,
            clean_session=False,
            keepalive=cfg.keepalive_s,
            username=cfg.username or None,
            password=cfg.password.reveal() or None,
            timeout=10,
        )
        client._client.manual_ack_set(True)  # before connect; module docstring
        conn = _Connection(client, cfg.max_inflight, self._metrics)
        try:
            async with client:
                self._conn = conn
                await client.subscribe(self.topic, qos=1)
                self.connections += 1
                self.connected.set()
                if self._metrics is not None:
                    self._metrics.mqtt_connected.set(1)
                log.info("mqtt connected", extra={"broker": f"{cfg.host}:{cfg.port}", "topic": self.topic})
                consume = asyncio.create_task(self._consume(client, conn))
                stop = asyncio.create_task(self._stopping.wait())
                try:
                    await asyncio.wait((consume, stop), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    consume.cancel()
                    await asyncio.gather(consume, stop, return_exceptions=True)
                if consume.done() and not consume.cancelled() and consume.exception() is not None:
                    raise consume.exception()  # type: ignore[misc]
                # Draining: let what is already in the pipeline be stored and acknowledged.
                if conn.pending:
                    await asyncio.wait([conn.pending[-1][2]], timeout=self._config.keepalive_s)
                await _broker_has_read(client, timeout_s=_DRAIN_PING_S)
        finally:
            # Acks of this connection's mids must never go out on a later connection.
            conn.open = False
            self._conn = None

    async def _consume(self, client: aiomqtt.Client, conn: _Connection) -> None:
        prefix_parts = self._config.topic_prefix.count("/") + 1
        messages = aiter(client.messages)
        queued = client._queue  # private, pinned aiomqtt: see below
        disconnected = client._disconnected
        taken = 0
        while True:
            # Stop reading at the in-flight bound: backpressure onto the broker's window.
            await conn.slots.acquire()
            taken += 1
            if taken % _PER_TURN == 0:
                # With a backlog queued, nothing here would yield: give the loop back now and then,
                # so this turn's units reach the store and deliveries go out while we decode on.
                await asyncio.sleep(0)
            if queued.qsize() and not disconnected.done():
                # aiomqtt's iterator creates a task and an asyncio.wait per message (~25 us) to
                # watch for a disconnect; with messages already queued there is nothing to wait for.
                message = queued.get_nowait()
            else:
                message = await anext(messages)
            topic = message.topic.value
            parts = topic.split("/")[prefix_parts:]
            valid = len(parts) == 3
            payload = message.payload
            raw = RawSignal(
                transport="mqtt",
                kind=parts[2] if valid else "invalid",
                tps=parts[0] if valid else "",
                vehicle=parts[1] if valid else "",
                payload=payload if isinstance(payload, bytes) else str(payload).encode(),
                received_at=time.time(),
                source=topic,
            )
            self.received += 1
            stored = await self._submit(raw)
            conn.track(message.mid, message.qos, stored)
