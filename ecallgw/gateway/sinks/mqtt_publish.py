"""MQTT sink: publish each revision (QoS 1) to ``psap/v1/{receiver}/incidents``; confirmed by PUBACK.

The publish goes to paho's public ``publish`` directly and waits on a future that aiomqtt's own
``on_publish`` resolves (its table of pending publishes: private, pinned aiomqtt, reached through
`mqtt_adapter.pending_publishes`, which says why): ``aiomqtt.Client.publish`` spends ~70 us per call
around the same paho call (a task for ``asyncio.wait_for``, an Event, a list of every pending call to
count them). The end-to-end test with the default MQTT PSAP sink covers it.

With ``mqtt.tls`` it connects over TLS with the source's context (`broker_tls_context`, built once
here at start); a refused handshake is a transient delivery error (retried, the breaker opens).
"""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt
import paho.mqtt.client as paho

from ecallgw.config import MqttConfig, ReceiverConfig
from ecallgw.errors import TransientDeliveryError
from ecallgw.gateway import mqtt_adapter
from ecallgw.gateway.mqtt_source import broker_tls_context
from ecallgw.gateway.records import OutboxItem

__all__ = ["MqttPublishSink"]


class MqttPublishSink:
    """Publish revisions to the broker of ``[mqtt]``, connecting on first use and after a loss.

    Args:
        config: the receiver.
        broker: the broker connection settings.
        client_id: this replica's MQTT client id (gets a ``-pub-{receiver}`` suffix).
    """

    confirmed_at_commit = False

    def __init__(self, config: ReceiverConfig, broker: MqttConfig, *, client_id: str = "") -> None:
        self._config = config
        self._broker = broker
        # Each replica's publisher needs its own id too, or two replicas kick each other off.
        self._client_id = f"{client_id or broker.client_id or 'ecallgw'}-pub-{config.name}"
        self._tls = broker_tls_context(broker)  # a ConfigError here refuses the start
        self._client: aiomqtt.Client | None = None
        self._lock = asyncio.Lock()
        self.topic = f"psap/v1/{config.name}/incidents"

    async def _connected(self) -> aiomqtt.Client:
        async with self._lock:
            if self._client is None:
                b = self._broker
                client = aiomqtt.Client(
                    b.host,
                    b.port,
                    identifier=self._client_id,
                    username=b.username or None,
                    password=b.password.reveal() or None,
                    timeout=self._config.timeout_s,
                    # paho loses queued QoS 1 publishes past 65,535 (transport.md): our concurrency
                    # bound keeps us far below; the warning threshold follows it.
                    max_inflight_messages=max(20, self._config.concurrency),
                    tls_context=self._tls,
                )
                client.pending_calls_threshold = self._config.concurrency * 4 + 10
                await client.__aenter__()
                self._client = client
            return self._client

    async def deliver(self, item: OutboxItem, body: bytes, content_type: str) -> int | None:
        """Publish one revision with QoS 1 and wait for the broker's PUBACK.

        Raises:
            TransientDeliveryError: the broker is unreachable or did not confirm in time.
        """
        try:
            client = await self._connected()
            await self._publish(client, body)
        except (aiomqtt.MqttError, OSError) as exc:
            await self._drop()
            raise TransientDeliveryError(self._config.name, "mqtt", str(exc)[:200]) from exc
        except TimeoutError as exc:
            await self._drop()
            raise TransientDeliveryError(
                self._config.name, "mqtt", f"no PUBACK within {self._config.timeout_s} s"
            ) from exc
        return None

    async def _publish(self, client: aiomqtt.Client, body: bytes) -> None:
        info = mqtt_adapter.paho_client(client).publish(self.topic, body, 1)  # module docstring
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        if info.is_published():
            return
        confirmed = _Confirmation(asyncio.get_running_loop().create_future())
        pending = mqtt_adapter.pending_publishes(client)
        pending[info.mid] = confirmed  # aiomqtt only calls .set()
        try:
            async with asyncio.timeout(self._config.timeout_s):
                await confirmed.future
        finally:
            if pending.get(info.mid) is confirmed:
                del pending[info.mid]

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    async def aclose(self) -> None:
        """Disconnect."""
        await self._drop()


class _Confirmation:
    """What aiomqtt's ``on_publish`` expects in its table (an object with ``set()``), as a future."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future

    def set(self) -> None:
        if not self.future.done():
            self.future.set_result(None)
