"""Receiver kinds (``receivers.<name>.kind``): how a sink is built for each, by name.

Adding a kind is a sink module in this package (a class with the `Sink` protocol) and one line in
`SINK_KINDS`; the configuration accepts the name from then on (docs/architecture.md, "How to add").
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ecallgw.config import MqttConfig, ReceiverConfig
from ecallgw.gateway.sinks import Sink
from ecallgw.gateway.sinks.http_webhook import HttpWebhookSink
from ecallgw.gateway.sinks.mqtt_publish import MqttPublishSink
from ecallgw.gateway.sinks.operator_stream import OperatorSink

__all__ = ["SINK_KINDS", "SinkContext", "build_sink"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkContext:
    """What sinks may need beyond their receiver's table.

    Attributes:
        mqtt: the ``[mqtt]`` broker (kind ``mqtt`` publishes there).
        mqtt_client_id: this replica's MQTT client id.
    """

    mqtt: MqttConfig
    mqtt_client_id: str = ""


SINK_KINDS: Mapping[str, Callable[[ReceiverConfig, SinkContext], Sink]] = types.MappingProxyType(
    {
        "http": lambda r, ctx: HttpWebhookSink(r),
        "mqtt": lambda r, ctx: MqttPublishSink(r, ctx.mqtt, client_id=ctx.mqtt_client_id),
        "operator": lambda r, ctx: OperatorSink(),
    }
)
"""Receiver kind → sink builder."""


def build_sink(receiver: ReceiverConfig, context: SinkContext) -> Sink:
    """The sink of one receiver, by its kind (validated by the configuration)."""
    return SINK_KINDS[receiver.kind](receiver, context)
