"""MQTT sink: publish each revision (QoS 1) to ``psap/v1/{receiver}/incidents``; confirmed by PUBACK."""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt

from ecallgw.config import MqttConfig, ReceiverConfig
from ecallgw.errors import TransientDeliveryError
from ecallgw.gateway.records import OutboxItem

__all__ = ["MqttPublishSink"]


class MqttPublishSink:
    """Publish revisions to the broker of ``[mqtt]``, connecting on first use and after a loss.

    Args:
        config: the receiver.
        broker: the broker connection settings (client id gets a ``-pub-{receiver}`` suffix).
    """

    needs_body = True

    def __init__(self, config: ReceiverConfig, broker: MqttConfig) -> None:
        self._config = config
        self._broker = broker
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
                    identifier=f"{b.client_id}-pub-{self._config.name}",
                    username=b.username or None,
                    password=b.password.reveal() or None,
                    timeout=self._config.timeout_s,
                    # paho loses queued QoS 1 publishes past 65,535 (transport.md): our concurrency
                    # bound keeps us far below; the warning threshold follows it.
                    max_inflight_messages=max(20, self._config.concurrency),
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
            await client.publish(self.topic, body, qos=1, timeout=self._config.timeout_s)
        except (aiomqtt.MqttError, OSError) as exc:
            await self._drop()
            raise TransientDeliveryError(self._config.name, "mqtt", str(exc)[:200]) from exc
        return None

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    async def aclose(self) -> None:
        """Disconnect."""
        await self._drop()
