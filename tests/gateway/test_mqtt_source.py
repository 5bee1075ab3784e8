"""The MQTT source against a real mosquitto: ack only after store, redelivery, backpressure, reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import pytest

from ecallgw.config import MqttConfig
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.mqtt_source import MqttSource
from ecallgw.gateway.records import RawSignal
from tests.gateway.broker import Mosquitto
from tests.gateway.helpers import until


class Pipeline:
    """The source's downstream as the source sees it: a callable returning a 'stored' future.

    ``auto`` resolves futures at once (a fast store); otherwise the test resolves them.
    """

    def __init__(self, *, auto: bool) -> None:
        self.auto = auto
        self.items: list[tuple[RawSignal, asyncio.Future[Any]]] = []

    async def submit(self, raw: RawSignal) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.auto:
            fut.set_result(None)
        self.items.append((raw, fut))
        return fut

    @property
    def payloads(self) -> list[bytes]:
        return [r.payload for r, _ in self.items]


def config(broker: Mosquitto, client_id: str, **kw: Any) -> MqttConfig:
    return MqttConfig(host=broker.host, port=broker.port, client_id=client_id, reconnect_min_s=0.05, **kw)


@asynccontextmanager
async def running(source: MqttSource) -> AsyncIterator[MqttSource]:
    async with source, asyncio.TaskGroup() as tg:
        tg.create_task(source.run())
        async with asyncio.timeout(5):
            await source.connected.wait()
        yield source
        source.stop()


async def publish(broker: Mosquitto, items: list[tuple[str, bytes]]) -> None:
    async with asyncio.timeout(10), aiomqtt.Client(broker.host, broker.port) as pub:
        for topic, payload in items:
            await pub.publish(topic, payload, qos=1)


async def test_unacked_messages_are_redelivered_after_reconnect_and_acked_ones_are_not(
    mosquitto: Mosquitto,
) -> None:
    msgs = [(f"ecall/v1/acme/veh{i}/msd", b"m%d" % i) for i in range(10)]
    first = Pipeline(auto=False)
    async with running(MqttSource(config(mosquitto, "gw-redeliver"), first.submit)) as source:
        await publish(mosquitto, msgs)
        await until(lambda: len(first.items) == 10)
        for _, fut in first.items[:5]:
            fut.set_result(None)  # stored
        for _, fut in first.items[5:]:
            fut.cancel()  # never stored (a crash before the commit)
        await until(lambda: source.inflight == 0)
    assert [r.tps for r, _ in first.items] == ["acme"] * 10
    assert first.items[3][0].vehicle == "veh3" and first.items[3][0].kind == "msd"

    second = Pipeline(auto=True)
    async with running(MqttSource(config(mosquitto, "gw-redeliver"), second.submit)):
        await until(lambda: len(second.items) >= 5)
        await asyncio.sleep(0.3)  # anything more would be a wrongly redelivered message
    assert second.payloads == [p for _, p in msgs[5:]]

    third = Pipeline(auto=True)
    async with running(MqttSource(config(mosquitto, "gw-redeliver"), third.submit)):
        await asyncio.sleep(0.3)
    assert third.items == []


async def test_in_flight_bound_applies_backpressure_without_loss(mosquitto: Mosquitto) -> None:
    metrics = Metrics()
    slow = Pipeline(auto=False)
    cfg = config(mosquitto, "gw-backpressure", max_inflight=5)
    async with running(MqttSource(cfg, slow.submit, metrics)) as source:
        await publish(mosquitto, [("ecall/v1/acme/v/position", b"%d" % i) for i in range(60)])
        await until(lambda: len(slow.items) == 5)
        await asyncio.sleep(0.2)
        assert len(slow.items) == 5  # the source stopped reading at its bound
        assert source.inflight == 5
        # Nothing acknowledged yet: the gauge, read at scrape time, says so.
        assert metrics.registry.get_sample_value("ecallgw_mqtt_inflight_messages") == 5
        slow.auto = True
        for _, fut in slow.items:
            fut.set_result(None)
        await until(lambda: len(slow.items) == 60)
        await until(lambda: source.inflight == 0)
        assert metrics.registry.get_sample_value("ecallgw_mqtt_inflight_messages") == 0
    assert slow.payloads == [b"%d" % i for i in range(60)]  # all, once, in order


async def test_invalid_topic_reaches_the_pipeline_to_be_quarantined(mosquitto: Mosquitto) -> None:
    p = Pipeline(auto=True)
    async with running(MqttSource(config(mosquitto, "gw-invalid"), p.submit)):
        await publish(mosquitto, [("ecall/v1/acme/v/x/extra", b"?"), ("ecall/v1/acme/v/msd", b"ok")])
        await until(lambda: len(p.items) == 1)
    # 'ecall/v1/+/+/+' does not match five levels: the broker never delivers it.
    assert p.items[0][0].kind == "msd"


async def test_reconnects_after_broker_restart_and_gets_queued_messages(mosquitto: Mosquitto) -> None:
    metrics = Metrics()
    p = Pipeline(auto=True)
    async with running(MqttSource(config(mosquitto, "gw-restart"), p.submit, metrics)) as source:
        await publish(mosquitto, [("ecall/v1/acme/v/msd", b"before")])
        await until(lambda: len(p.items) == 1)
        await until(lambda: source.inflight == 0)
        await asyncio.sleep(1.2)  # let the broker autosave the session (autosave_interval 1)
        mosquitto.restart()
        # The restart blocks this loop, so the disconnect and the reconnect are seen together.
        await until(lambda: source.connections == 2 and source.connected.is_set(), timeout_s=10)
        await publish(mosquitto, [("ecall/v1/acme/v/msd", b"after")])
        await until(lambda: len(p.items) == 2)
        assert metrics.mqtt_connected._value.get() == 1
    assert p.payloads == [b"before", b"after"]


@pytest.mark.parametrize("group", ["", "g1"], ids=["plain", "shared"])
def test_topic_filter(group: str) -> None:
    async def submit(raw: RawSignal) -> asyncio.Future[Any]:
        raise AssertionError

    source = MqttSource(MqttConfig(share_group=group), submit)
    assert source.topic == (f"$share/{group}/ecall/v1/+/+/+" if group else "ecall/v1/+/+/+")


async def test_shared_subscription_splits_the_load_without_duplicates(mosquitto: Mosquitto) -> None:
    a, b = Pipeline(auto=True), Pipeline(auto=True)
    cfg_a = config(mosquitto, "gw-share-a", share_group="gateways")
    cfg_b = config(mosquitto, "gw-share-b", share_group="gateways")
    async with running(MqttSource(cfg_a, a.submit)), running(MqttSource(cfg_b, b.submit)):
        await publish(mosquitto, [(f"ecall/v1/acme/v{i}/msd", b"%d" % i) for i in range(40)])
        await until(lambda: len(a.items) + len(b.items) == 40)
        await asyncio.sleep(0.2)
    assert sorted(a.payloads + b.payloads) == sorted(b"%d" % i for i in range(40))  # each exactly once
    assert a.items and b.items  # both gateways took a share


class RecordingRelay:
    """A TCP relay on 127.0.0.1 between the source and the broker that logs every MQTT packet type
    in the order the relay forwarded it, both directions on one timeline."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.packets: list[tuple[str, int]] = []  # ("c2b" | "b2c", packet type 1..14)
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RecordingRelay:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _client(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        br, bw = await asyncio.open_connection(self.broker.host, self.broker.port)
        await asyncio.gather(self._pump("c2b", cr, bw), self._pump("b2c", br, cw))

    async def _pump(self, way: str, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while header := await r.read(1):
                length, shift, body = 0, 0, bytearray()
                while True:  # remaining length: MQTT variable byte integer
                    b = (await r.readexactly(1))[0]
                    body.append(b)
                    length |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                packet = header + bytes(body) + await r.readexactly(length)
                self.packets.append((way, header[0] >> 4))
                w.write(packet)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()


PUBACK, PINGREQ, PINGRESP, DISCONNECT = 4, 12, 13, 14


async def test_a_graceful_stop_disconnects_only_after_the_broker_has_read_the_last_ack(
    mosquitto: Mosquitto,
) -> None:
    # mosquitto may drop PUBACKs that arrive just before a DISCONNECT; the source first waits for
    # the answer to a PINGREQ sent after them, which the broker reads in order.
    msgs = [(f"ecall/v1/acme/veh{i}/msd", b"m%d" % i) for i in range(5)]
    p = Pipeline(auto=True)
    async with RecordingRelay(mosquitto) as relay:
        cfg = MqttConfig(host="127.0.0.1", port=relay.port, client_id="gw-barrier", reconnect_min_s=0.05)
        async with running(MqttSource(cfg, p.submit)) as source:
            await publish(mosquitto, msgs)
            await until(lambda: len(p.items) == 5 and source.inflight == 0)
        await until(lambda: ("c2b", DISCONNECT) in relay.packets)
    seen = relay.packets
    last_ack = max(i for i, pk in enumerate(seen) if pk == ("c2b", PUBACK))
    ping = seen.index(("c2b", PINGREQ), last_ack)
    pong = seen.index(("b2c", PINGRESP), ping)
    assert seen.index(("c2b", DISCONNECT)) > pong
    assert sum(pk == ("c2b", PUBACK) for pk in seen) == 5
