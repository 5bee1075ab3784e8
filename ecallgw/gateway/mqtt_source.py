"""The MQTT source: QoS 1 subscription, persistent session, acknowledgement only after the store.

aiomqtt 2.x lets paho PUBACK a QoS 1 message as soon as it is queued, before we stored it. We switch
paho to manual acknowledgement before connecting (`mqtt_adapter.enable_manual_ack`: aiomqtt has no
public API for it yet, issue #345, hence the pinned minor version and the redelivery test) and PUBACK
each message, in arrival order, once the store committed it. Every private aiomqtt or paho attribute
used here is reached through `ecallgw.gateway.mqtt_adapter`, which says why no public API serves.

Backpressure: at most ``max_inflight`` messages are received and not yet acknowledged. At the bound
we stop reading; the broker's inflight window then holds further messages on the broker side, so a
slow store slows the broker instead of growing our memory or dropping anything.

A redelivered message (PUBACK lost in a crash or disconnect) reaches the pipeline again; the
pipeline recognises it by its digest and acknowledges it without triaging it twice.

Client id conflicts: two processes with one client id take the session from each other, the broker
closing the older connection each time. With MQTT 3.1.1 (what this source speaks) the broker just
closes the socket; an MQTT 5 DISCONNECT with reason 0x8E "Session taken over" would say it, but
mosquitto sends it only since 2.0.15 (Debian's 2.0.11 does not), so the source detects the pattern:
``_CONFLICT_CLOSES`` accepted connections (CONNACK received) lost within ``_CONFLICT_WINDOW_S``,
not by our stop nor a keepalive timeout, open a conflict episode. It logs one WARNING
(``mqtt_client_id_conflict``) and, while it lasts, reconnects after a doubling, jittered delay
capped at ``mqtt.conflict_backoff_max_s`` instead of at once. The episode ends (one INFO) once a
connection stays up for ``_quiet_s``: longer than the other client's delays, capped alike, can be.
A link that drops that often is reported the same way (the line says "most likely").

TLS (``mqtt.tls``): the context is built once, at construction (`broker_tls_context`; a file that
cannot be loaded is a ConfigError naming its key). A refused handshake is logged (WARNING) once per
distinct reason (``mqtt_tls_failed``; repeats at DEBUG until a connection succeeds) and retried
with the ordinary backoff: a broker whose certificate is fixed is reached without a restart. A
broker refusing our client certificate under TLS 1.3 does so after our side of the handshake
completed, by closing the connection before the CONNACK; aiomqtt would wait out its timeout and say
"Operation timed out", so `_fail_before_connack` ends the attempt at once with paho's reason.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from ecallgw.config import MqttConfig
from ecallgw.gateway import mqtt_adapter
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.records import RawSignal
from ecallgw.gateway.retry import backoff_s
from ecallgw.gateway.slots import Slots
from ecallgw.gateway.tls import client_context

__all__ = ["MqttSource", "Submit", "broker_tls_context", "derive_client_id"]

Submit = Callable[[RawSignal], Awaitable["asyncio.Future[Any]"]]
"""Hands a raw signal to the pipeline (waiting while its queue is full) and returns a future that
resolves once the signal is durably stored (or fails if it could not be)."""

log = logging.getLogger("ecallgw.mqtt")

_PER_TURN = 32  # messages taken from the queue between two yields to the event loop
_DRAIN_PING_S = 2.0  # how long a graceful stop waits for the broker to confirm it read our PUBACKs
_CONFLICT_CLOSES = 3  # this many connections closed by the broker ...
_CONFLICT_WINDOW_S = 60.0  # ... within this long: another client uses our client id
_CONFLICT_BACKOFF_MIN_S = 1.0  # the first delay of a conflict episode (doubling up to the cap)
_UNSPECIFIED_ERROR = 128  # paho's reason for MQTT_ERR_CONN_LOST
_CLIENT_ID_MAX = 64
_CLIENT_ID_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_CLIENT_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def derive_client_id(configured: str, replica_id: str) -> str:
    """The MQTT client id of this replica: ``configured`` when set, else ``ecallgw-{replica_id}``.

    The derived id is always ``[A-Za-z0-9_-]{1,64}``. A replica id that does not fit as it is (other
    characters, or too long) is cleaned (runs of other characters become ``_``), cut, and followed
    by 8 hex digits of its SHA-256, so that two replica ids that clean or cut to the same text still
    get two client ids. Deterministic: a replica keeps its id, and its persistent session, across
    restarts. Without a replica id (one process) it is ``ecallgw``, the id of earlier versions.

    >>> derive_client_id("", "host-1")
    'ecallgw-host-1'
    >>> derive_client_id("gw-a", "host-1")
    'gw-a'
    >>> derive_client_id("", "host.example/1")
    'ecallgw-host_example_1-51d16fda'
    """
    if configured:
        return configured
    if not replica_id:
        return "ecallgw"
    plain = f"ecallgw-{replica_id}"
    if len(plain) <= _CLIENT_ID_MAX and _CLIENT_ID_SAFE.fullmatch(plain):
        return plain
    digest = hashlib.sha256(replica_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    cleaned = _CLIENT_ID_UNSAFE.sub("_", plain)[: _CLIENT_ID_MAX - len(digest) - 1]
    return f"{cleaned}-{digest}"


def broker_tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """The TLS client context of the ``[mqtt]`` broker link; None when ``mqtt.tls`` is off.

    Shared by the source and the MQTT publish sink. Verifies the broker's chain against
    ``mqtt.ca_file`` (the system's CAs when empty) and, with ``mqtt.check_hostname``, that its
    certificate names ``mqtt.host``; presents ``mqtt.cert_file`` when set (mutual TLS).

    Raises:
        ConfigError: a file that cannot be read or loaded, naming its ``mqtt.*`` key.
    """
    if not config.tls:
        return None
    ctx = client_context(
        ca_file=config.ca_file, cert_file=config.cert_file, key_file=config.key_file, where="mqtt."
    )
    ctx.check_hostname = config.check_hostname  # the chain is still verified (CERT_REQUIRED)
    if config.tls_min_version == "TLSv1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.sslsocket_class = _ClosingSSLSocket
    return ctx


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSLSocket that closes itself when its handshake fails.

    paho wraps and handshakes the socket itself and drops it unclosed when the handshake raises
    (a refused certificate): every refused attempt would leave the socket to the garbage collector
    (a ResourceWarning, an open descriptor until then).
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _fail_before_connack(client: aiomqtt.Client) -> None:
    """Make a connection the broker closes before its CONNACK fail at once, with paho's reason.

    aiomqtt ignores a disconnect before the CONNACK and waits for its timeout, then reports
    "Operation timed out" (module docstring: a refused client certificate). paho logs the socket
    error first (``failed to receive on socket: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] ...``);
    its latest error line becomes the attempt's error. Private, pinned aiomqtt (`mqtt_adapter`).
    """
    loop = asyncio.get_running_loop()
    paho_client = mqtt_adapter.paho_client(client)
    errors: list[str] = []
    aiomqtt_on_disconnect = paho_client.on_disconnect

    def on_log(_client: paho.Client, _userdata: Any, level: int, buf: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            errors[:] = [buf]

    first = mqtt_adapter.connected_future(client)  # replaced after a failed attempt: leave that one

    def fail() -> None:
        connected = mqtt_adapter.connected_future(client)
        if connected is first and not connected.done():
            reason = errors[-1] if errors else "no reason given"
            connected.set_exception(
                aiomqtt.MqttError(f"the broker closed the connection before its CONNACK: {reason}")
            )

    def on_disconnect(*args: Any) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(fail)  # paho may call back from aiomqtt's connect thread
        if aiomqtt_on_disconnect is not None:
            aiomqtt_on_disconnect(*args)

    paho_client.on_log = on_log
    paho_client.on_disconnect = on_disconnect


class _ClosedByBroker(aiomqtt.MqttError):
    """An accepted connection ended because the broker closed it (not a timeout, not our stop)."""


async def _subscribe(client: aiomqtt.Client, topic: str) -> None:
    """Subscribe with QoS 1, failing at once when the connection drops before the SUBACK.

    aiomqtt's ``subscribe`` waits for the SUBACK until its timeout (10 s) even when the connection
    is already gone, which is what a client id conflict does between CONNACK and SUBACK.
    """
    subscribe = asyncio.ensure_future(client.subscribe(topic, qos=1))
    disconnected = mqtt_adapter.disconnected_future(client)
    try:
        await asyncio.wait((subscribe, disconnected), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not subscribe.done():
            subscribe.cancel()
            await asyncio.gather(subscribe, return_exceptions=True)
    if subscribe.cancelled():
        raise aiomqtt.MqttError("disconnected before the SUBACK") from disconnected.exception()
    subscribe.result()


def _closed_by_broker(client: aiomqtt.Client, exc: aiomqtt.MqttError) -> bool:
    """Whether an accepted connection ended as lost (EOF or a socket error), not a keepalive timeout.

    paho reports "the broker closed the socket" and "the socket failed" alike, as MQTT_ERR_CONN_LOST
    (reason "Unspecified error", 128, in its version-2 callbacks). Only the pattern (several within
    a minute, each after a CONNACK) tells a conflict from a network fault. A close right after the
    CONNACK is forgotten by aiomqtt (``__aenter__`` resets a completed ``_disconnected``); the
    subscribe that follows then fails with MQTT_ERR_NO_CONN, which says the same.
    """
    if _code(exc) == paho.MQTT_ERR_NO_CONN:
        return True
    done = mqtt_adapter.disconnected_future(client)
    if not done.done() or done.cancelled():
        return False
    cause = done.exception()
    return isinstance(cause, aiomqtt.MqttError) and _code(cause) in (
        paho.MQTT_ERR_CONN_LOST,
        _UNSPECIFIED_ERROR,
    )


def _code(exc: BaseException) -> int | None:
    """The paho error code of an aiomqtt error, or the value of its MQTT reason code (None: none)."""
    if not isinstance(exc, aiomqtt.MqttCodeError) or exc.rc is None:
        return None
    return exc.rc.value if isinstance(exc.rc, ReasonCode) else int(exc.rc)


class _Connection:
    """Acknowledgement state of one broker connection (mids are per connection)."""

    def __init__(self, client: aiomqtt.Client, limit: int) -> None:
        self.client = client
        self.pending: collections.deque[tuple[int, int, asyncio.Future[Any]]] = collections.deque()
        self.slots = Slots(limit)
        self.open = True
        self.acked = 0
        self.store_failed = asyncio.Event()  # a message could not be stored: reconnect (below)
        self._drain_cb = self._drain  # one bound method for every message (heap.py)

    def track(self, mid: int, qos: int, stored: asyncio.Future[Any]) -> None:
        self.pending.append((mid, qos, stored))
        stored.add_done_callback(self._drain_cb)

    def _drain(self, _: asyncio.Future[Any]) -> None:
        # PUBACK in arrival order: only the head of the queue may be acknowledged.
        pending = self.pending
        while pending and pending[0][2].done():
            mid, qos, stored = pending.popleft()
            self.slots.release()
            if stored.cancelled() or stored.exception() is not None:
                # Not stored: leave it unacknowledged; the broker redelivers it on the next connection.
                _unstored(mid, stored)
                if not stored.cancelled():
                    # A store that refused it (and may recover: a PostgreSQL restart): reconnect,
                    # so that the broker redelivers it. A cancelled one means we are stopping.
                    self.store_failed.set()
                continue
            if self.open and qos > 0:
                mqtt_adapter.ack(self.client, mid, qos)
                self.acked += 1


_UNSTORED_QUIET_S = 60.0  # one WARNING per this long for messages left unacknowledged
_unstored_quiet_until = 0.0


def _unstored(mid: int, stored: asyncio.Future[Any]) -> None:
    """Say that a message was left unacknowledged: WARNING once a minute, DEBUG in between.

    A store that refuses writes (full, read-only) refuses every message; the store's own WARNING
    ``store not writable`` says why, and a line per message would bury it.
    """
    global _unstored_quiet_until
    now = time.monotonic()
    extra = {"mid": mid, "reason": "stopping" if stored.cancelled() else str(stored.exception())[:300]}
    if stored.cancelled() or now < _unstored_quiet_until:  # a stop is no news: the drain said it
        log.debug("message not stored, left unacknowledged", extra=extra)
        return
    _unstored_quiet_until = now + _UNSTORED_QUIET_S
    log.warning(
        "message not stored, left unacknowledged for the broker to redeliver (more at DEBUG for a minute)",
        extra=extra,
    )


async def _broker_has_read(client: aiomqtt.Client, *, timeout_s: float) -> None:
    """Wait until the broker has read every packet sent so far on this connection.

    A broker reads a connection in order, so its PINGRESP to a PINGREQ queued after our last
    PUBACKs proves it has processed them. Without this barrier, mosquitto can drop the last PUBACKs
    sent just before a DISCONNECT (seen 1 in ~50 graceful stops), and messages already stored here
    come back after the restart. They would be recognised as redeliveries, but a drain should leave
    nothing behind. Private paho calls (`mqtt_adapter`). A broker that does not answer in time
    costs only that redelivery, so the wait is short.
    """
    if mqtt_adapter.send_pingreq(client) != 0:  # not MQTT_ERR_SUCCESS: the link is already gone
        return
    disconnected = mqtt_adapter.disconnected_future(client)
    try:
        async with asyncio.timeout(timeout_s):
            # paho offers no callback for the PINGRESP; shutdown-only polling.
            while not mqtt_adapter.broker_answered_ping(client) and not disconnected.done():  # noqa: ASYNC110
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
        client_id: the effective client id (`derive_client_id`); None takes ``config.client_id``,
            or ``ecallgw`` when that is empty (one process without a replica id).
    """

    def __init__(
        self,
        config: MqttConfig,
        submit: Submit,
        metrics: Metrics | None = None,
        *,
        rng: random.Random | None = None,
        client_id: str | None = None,
    ) -> None:
        self._config = config
        self._submit = submit
        self._metrics = metrics
        if metrics is not None:
            # Read at scrape time: exact, and no lock taken per message to keep a value up to date.
            metrics.mqtt_inflight.set_function(lambda: self.inflight)
        self._rng = rng or random.Random()
        self.client_id = client_id if client_id is not None else derive_client_id(config.client_id, "")
        if not self.client_id:
            raise ValueError("a persistent session needs a client id")
        self._tls = broker_tls_context(config)
        self._tls_failure = ""  # the TLS refusal logged (WARNING) last, until a connection succeeds
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()
        self.received = 0
        self.connections = 0
        self._conn: _Connection | None = None
        # Client id conflict (module docstring): when the broker closed our recent connections.
        self._broker_closes: collections.deque[float] = collections.deque()
        self._conflict_attempt = 0  # > 0 during a conflict episode: closes counted in it
        self.conflicts = 0  # connections closed by the broker during conflict episodes
        self.conflict_episodes = 0

    @property
    def in_conflict(self) -> bool:
        """Whether another client is taking our client id over (a conflict episode is open)."""
        return self._conflict_attempt > 0

    @property
    def _quiet_s(self) -> float:
        # Up this long without being closed: the other client, whose delays are capped the same
        # way, has stopped; the episode is over.
        return max(2 * self._config.conflict_backoff_max_s, _CONFLICT_WINDOW_S)

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
                conflict_delay = self._broker_closed() if isinstance(exc, _ClosedByBroker) else None
                if conflict_delay is not None:
                    delay = conflict_delay
                else:
                    delay = backoff_s(
                        attempt,
                        base_s=self._config.reconnect_min_s,
                        cap_s=self._config.reconnect_max_s,
                        rng=self._rng,
                    )
                    if self._tls is not None and "[SSL" in str(exc):
                        self._tls_refused(str(exc), delay, attempt)
                    elif self.connections == 0:
                        self._unreachable_at_start(str(exc), delay, attempt)
                    else:
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

    def _unreachable_at_start(self, error: str, delay: float, attempt: int) -> None:
        """No connection yet since start: one WARNING naming mqtt.host:port, DEBUG while it repeats.

        The gateway keeps running (HTTP ingest, the operator API) and keeps retrying; "connection
        lost" would be wrong before any connection.
        """
        broker = f"{self._config.host}:{self._config.port}"
        extra = {
            "event": "mqtt_unreachable",
            "broker": broker,
            "error": error,
            "retry_in_s": round(delay, 3),
            "attempt": attempt,
        }
        if attempt > 1:
            log.debug("mqtt broker still unreachable", extra=extra)
            return
        log.warning(
            "mqtt broker unreachable at mqtt.host:mqtt.port %s: %s; retrying with backoff, logged once "
            "until a connection succeeds",
            broker,
            error,
            extra=extra,
        )

    def _tls_refused(self, error: str, delay: float, attempt: int) -> None:
        """Log a refused TLS handshake: WARNING once per distinct reason, DEBUG while it repeats."""
        extra = {
            "event": "mqtt_tls_failed",
            "broker": f"{self._config.host}:{self._config.port}",
            "error": error,
            "retry_in_s": round(delay, 3),
            "attempt": attempt,
        }
        if error == self._tls_failure:
            log.debug("mqtt TLS handshake refused again", extra=extra)
            return
        self._tls_failure = error
        log.warning(
            "mqtt TLS handshake refused: %s; check mqtt.ca_file (the CA of the broker's certificate), "
            "mqtt.check_hostname (the certificate must name mqtt.host), and mqtt.cert_file/key_file "
            "(the broker's CA must have signed our client certificate). Retrying with backoff; "
            "logged once until it changes or a connection succeeds",
            error,
            extra=extra,
        )

    def _broker_closed(self) -> float | None:
        """Account for a connection the broker closed; the delay before the next one in a conflict.

        None while this is not (yet) a conflict: the ordinary reconnect applies.
        """
        now = time.monotonic()
        closes = self._broker_closes
        closes.append(now)
        while closes and closes[0] < now - _CONFLICT_WINDOW_S:
            closes.popleft()
        if not self.in_conflict and len(closes) < _CONFLICT_CLOSES:
            return None
        self._conflict_attempt += 1
        self.conflicts += 1
        cap = self._config.conflict_backoff_max_s
        ceiling = min(cap, _CONFLICT_BACKOFF_MIN_S * 2.0 ** min(self._conflict_attempt - 1, 62))
        delay = ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)  # jittered, at least half the ceiling
        if self._conflict_attempt == 1:
            self.conflict_episodes += 1
            log.warning(
                "mqtt client id conflict: the broker closed our connection %d times in %.0f s, most "
                "likely because another client connects with the same client id %r; give each replica "
                "its own mqtt.client_id (or leave it empty to derive it from the replica id). "
                "Reconnecting with a backoff of up to %g s; logged once per episode",
                len(closes),
                _CONFLICT_WINDOW_S,
                self.client_id,
                cap,
                extra={
                    "event": "mqtt_client_id_conflict",
                    "client_id": self.client_id,
                    "closes": len(closes),
                    "retry_in_s": round(delay, 3),
                },
            )
        else:
            log.debug(
                "mqtt client id conflict continues",
                extra={
                    "client_id": self.client_id,
                    "closes": self._conflict_attempt,
                    "retry_in_s": round(delay, 3),
                },
            )
        return delay

    def _conflict_over(self) -> None:
        log.info(
            "mqtt client id conflict over: connected without interruption",
            extra={
                "event": "mqtt_client_id_conflict_over",
                "client_id": self.client_id,
                "closes": self._conflict_attempt,
                "connected_s": self._quiet_s,
            },
        )
        self._conflict_attempt = 0
        self._broker_closes.clear()

    async def _connection(self) -> None:
        cfg = self._config
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=self.client_id,
            clean_session=False,
            keepalive=cfg.keepalive_s,
            username=cfg.username or None,
            password=cfg.password.reveal() or None,
            timeout=10,
            tls_context=self._tls,
        )
        mqtt_adapter.enable_manual_ack(client)  # before connect; module docstring
        _fail_before_connack(client)
        conn = _Connection(client, cfg.max_inflight)
        quiet: asyncio.TimerHandle | None = None
        accepted = False
        try:
            async with client:
                accepted = True  # CONNACK
                # paho formats every log line for an ``on_log`` (two per message); its errors
                # matter only before the CONNACK (`_fail_before_connack`).
                mqtt_adapter.paho_client(client).on_log = None
                self._conn = conn
                await _subscribe(client, self.topic)
                self._tls_failure = ""
                self.connections += 1
                self.connected.set()
                if self._metrics is not None:
                    self._metrics.mqtt_connected.set(1)
                log.info(
                    "mqtt connected",
                    extra={
                        "broker": f"{cfg.host}:{cfg.port}",
                        "tls": cfg.tls,
                        "topic": self.topic,
                        "client_id": self.client_id,
                    },
                )
                if self.in_conflict:
                    quiet = asyncio.get_running_loop().call_later(self._quiet_s, self._conflict_over)
                consume = asyncio.create_task(self._consume(client, conn))
                stop = asyncio.create_task(self._stopping.wait())
                failed = asyncio.create_task(conn.store_failed.wait())
                try:
                    await asyncio.wait((consume, stop, failed), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    consume.cancel()
                    failed.cancel()
                    await asyncio.gather(consume, stop, failed, return_exceptions=True)
                if consume.done() and not consume.cancelled() and consume.exception() is not None:
                    raise consume.exception()  # type: ignore[misc]
                if conn.store_failed.is_set() and not self._stopping.is_set():
                    # A broker redelivers an unacknowledged message only on a new connection (and
                    # it holds a slot of its inflight window until then): with a store that
                    # recovers by itself (a PostgreSQL restart), reconnect after the backoff.
                    raise aiomqtt.MqttError("a message could not be stored: reconnecting for its redelivery")
                # Draining: let what is already in the pipeline be stored and acknowledged.
                if conn.pending:
                    await asyncio.wait([conn.pending[-1][2]], timeout=self._config.keepalive_s)
                await _broker_has_read(client, timeout_s=_DRAIN_PING_S)
        except aiomqtt.MqttError as exc:
            if accepted and not self._stopping.is_set() and _closed_by_broker(client, exc):
                raise _ClosedByBroker(f"the broker closed the connection ({exc})") from exc
            raise
        finally:
            if quiet is not None:
                quiet.cancel()
            # Acks of this connection's mids must never go out on a later connection.
            conn.open = False
            self._conn = None

    async def _consume(self, client: aiomqtt.Client, conn: _Connection) -> None:
        prefix_parts = self._config.topic_prefix.count("/") + 1
        messages = aiter(client.messages)
        queued = mqtt_adapter.message_queue(client)  # private, pinned aiomqtt: see below
        disconnected = mqtt_adapter.disconnected_future(client)
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
