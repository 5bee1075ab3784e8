"""Every access to aiomqtt's and paho's private attributes the gateway needs, one function each.

Everything else goes through their public APIs. Each function says why no public API serves; all
of them depend on the pinned aiomqtt minor version (pyproject.toml) and are covered by the MQTT
source's tests (tests/gateway/test_mqtt_source.py, test_mqtt_identity.py, test_tls_mqtt.py) and the
end-to-end test (the MQTT publish sink). An aiomqtt or paho upgrade starts by reading this file.

paho's ``Client`` methods used through `paho_client` (``manual_ack_set``, ``ack``, ``publish``,
``on_log``, ``on_disconnect``) are public paho API: only reaching paho's client through aiomqtt is
private.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

__all__ = [
    "ack",
    "broker_answered_ping",
    "connected_future",
    "disconnected_future",
    "enable_manual_ack",
    "message_queue",
    "paho_client",
    "pending_publishes",
    "send_pingreq",
]


def paho_client(client: aiomqtt.Client) -> paho.Client:
    """The paho client aiomqtt wraps.

    aiomqtt 2.5 has no public accessor for it; the gateway needs paho's own API where aiomqtt has
    no counterpart (manual acknowledgement, log and disconnect hooks, a publish without aiomqtt's
    per-call overhead).
    """
    inner: paho.Client = client._client  # noqa: SLF001  aiomqtt 2.5 exposes no accessor for its paho client
    return inner


def enable_manual_ack(client: aiomqtt.Client) -> None:
    """Switch to manual PUBACKs (`ack`), before connecting.

    aiomqtt lets paho acknowledge a QoS 1 message as soon as it is queued and has no public API to
    change that (aiomqtt issue #345); paho's ``manual_ack_set`` is public.
    """
    paho_client(client).manual_ack_set(True)


def ack(client: aiomqtt.Client, mid: int, qos: int) -> None:
    """Send the PUBACK of message ``mid`` (manual acknowledgement, `enable_manual_ack`).

    aiomqtt has no acknowledgement API (aiomqtt issue #345); paho's ``ack`` is public.
    """
    paho_client(client).ack(mid, qos)


def connected_future(client: aiomqtt.Client) -> asyncio.Future[None]:
    """aiomqtt's future of the current connection attempt (resolved by the CONNACK).

    aiomqtt 2.5 offers no way to end a connection attempt early: a broker closing before its
    CONNACK is only noticed at aiomqtt's timeout. Failing this future is the only way in. aiomqtt
    replaces it after a failed attempt.
    """
    fut: asyncio.Future[None] = client._connected  # noqa: SLF001  aiomqtt 2.5: no public connect-attempt state
    return fut


def disconnected_future(client: aiomqtt.Client) -> asyncio.Future[None]:
    """aiomqtt's future that completes when the connection ends (its exception: paho's reason).

    aiomqtt 2.5 has no public connection state or disconnect notification; its public API only
    reports a lost connection by failing the next call (or ``messages``) with ``MqttError``.
    aiomqtt replaces it on ``__aenter__`` when it was already done.
    """
    fut: asyncio.Future[None] = client._disconnected  # noqa: SLF001  aiomqtt 2.5: no public disconnect state
    return fut


def message_queue(client: aiomqtt.Client) -> asyncio.Queue[aiomqtt.Message]:
    """aiomqtt's queue of received messages, to take queued ones without waiting.

    Public: ``client.messages`` (iteration, and ``len()`` for the count). Its ``__anext__`` creates a
    task and an ``asyncio.wait`` per message (~25 us) to watch for a disconnect, even with messages
    already queued; ``get_nowait`` on the queue is the only way around it.
    """
    queue: asyncio.Queue[aiomqtt.Message] = client._queue  # noqa: SLF001  aiomqtt 2.5: no non-blocking take
    return queue


def pending_publishes(client: aiomqtt.Client) -> dict[int, Any]:
    """aiomqtt's table of publishes awaiting their PUBACK: mid -> an object whose ``set()`` it calls.

    The public ``aiomqtt.Client.publish`` spends ~70 us per call around the same paho publish (a
    task for ``asyncio.wait_for``, an Event, a scan of every pending call); the MQTT publish sink
    calls paho's public ``publish`` and registers its own confirmation here, which aiomqtt's
    ``on_publish`` (the callback it installs on paho, so not ours to replace) resolves.
    """
    table: dict[int, Any] = client._pending_publishes  # noqa: SLF001  aiomqtt 2.5: its on_publish resolves only this table
    return table


def send_pingreq(client: aiomqtt.Client) -> int:
    """Queue a PINGREQ now; paho's error code (0: ``MQTT_ERR_SUCCESS``, else the link is gone).

    paho 2.x sends PINGREQs only from its keepalive timer and has no public call for one.
    """
    rc: int = paho_client(client)._send_pingreq()  # noqa: SLF001  paho 2.x: no public PINGREQ
    return rc


def broker_answered_ping(client: aiomqtt.Client) -> bool:
    """Whether paho has no PINGREQ outstanding (the PINGRESP to `send_pingreq` came).

    paho clears ``_ping_t`` on PINGRESP and offers neither a callback nor a public attribute for it.
    """
    return bool(paho_client(client)._ping_t == 0)  # noqa: SLF001  paho 2.x: no public PINGRESP state
