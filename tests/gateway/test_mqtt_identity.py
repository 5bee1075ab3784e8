"""The MQTT client id: derived per replica, validated, and a conflict (two processes, one id) detected.

The broker tests run two `MqttSource` instances against one real mosquitto on 127.0.0.1. With one
client id mosquitto closes the older connection whenever the other connects ("Client X already
connected, closing old connection." in its log, checked as confirmation only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiomqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecallgw.config import MqttConfig, load_config
from ecallgw.errors import ConfigError
from ecallgw.gateway import mqtt_adapter, mqtt_source
from ecallgw.gateway.mqtt_source import MqttSource, derive_client_id
from ecallgw.gateway.records import RawSignal
from tests.gateway.broker import Mosquitto
from tests.gateway.helpers import until

SAFE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
REPLICA = st.from_regex(r"^[A-Za-z0-9_-]{1,64}\Z")  # the form store.replica_id is validated to


# --- derive_client_id -------------------------------------------------------------------------------


def test_derive_client_id_examples() -> None:
    assert derive_client_id("", "host-1") == "ecallgw-host-1"
    assert derive_client_id("gw-a", "host-1") == "gw-a"  # configured wins
    assert derive_client_id("", "") == "ecallgw"  # one process, no replica id: the historical id
    long = "h" * 64
    derived = derive_client_id("", long)
    assert len(derived) == 64 and derived.startswith("ecallgw-hhh")
    assert derived != derive_client_id("", long[:-1] + "i")  # cut alike, still two ids
    assert derive_client_id("", "a.b") != derive_client_id("", "a/b")  # cleaned alike, still two ids


@given(st.text(max_size=200))
def test_derived_client_id_is_always_mqtt_safe_and_stable(replica_id: str) -> None:
    derived = derive_client_id("", replica_id)
    assert SAFE.match(derived), derived
    assert derive_client_id("", replica_id) == derived  # the persistent session keeps its id


@given(REPLICA)
def test_a_clean_short_replica_id_is_kept_readable(replica_id: str) -> None:
    derived = derive_client_id("", replica_id)
    if len(replica_id) <= 56:
        assert derived == f"ecallgw-{replica_id}"
    else:
        assert derived.startswith("ecallgw-") and len(derived) == 64


@given(REPLICA, REPLICA)
def test_distinct_replica_ids_get_distinct_client_ids(a: str, b: str) -> None:
    if a != b:
        assert derive_client_id("", a) != derive_client_id("", b)


# --- configuration ----------------------------------------------------------------------------------


def test_client_id_defaults_to_derived_and_a_set_one_is_validated() -> None:
    config = load_config()
    assert config.mqtt.client_id == ""
    assert config.mqtt.conflict_backoff_max_s == 30.0
    assert load_config(overrides={"mqtt.client_id": "gw-1_a"}).mqtt.client_id == "gw-1_a"
    for bad in ("gw 1", "gw/1", "x" * 65, "gw#"):
        with pytest.raises(ConfigError) as info:
            load_config(overrides={"mqtt.client_id": bad})
        assert info.value.key == "mqtt.client_id"
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"mqtt.conflict_backoff_max_s": "0"})
    assert info.value.key == "mqtt.conflict_backoff_max_s"


async def _never(raw: RawSignal) -> asyncio.Future[Any]:
    raise AssertionError("no message is published in these tests")


async def test_source_takes_the_effective_client_id() -> None:
    assert MqttSource(MqttConfig(), _never).client_id == "ecallgw"
    assert MqttSource(MqttConfig(client_id="gw-x"), _never).client_id == "gw-x"
    assert (
        MqttSource(MqttConfig(client_id="gw-x"), _never, client_id="ecallgw-h-2").client_id == "ecallgw-h-2"
    )


# --- conflicts against a real broker ----------------------------------------------------------------


def config(broker: Mosquitto, client_id: str, **kw: Any) -> MqttConfig:
    return MqttConfig(host=broker.host, port=broker.port, client_id=client_id, reconnect_min_s=0.05, **kw)


@asynccontextmanager
async def running(*sources: MqttSource) -> AsyncIterator[tuple[MqttSource, ...]]:
    async with AsyncExitStack() as stack:
        tg = await stack.enter_async_context(asyncio.TaskGroup())
        for source in sources:
            stack.callback(source.stop)  # runs before the TaskGroup waits for them
        for source in sources:
            tg.create_task(source.run())
        yield sources


def conflict_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "mqtt_client_id_conflict"]


async def test_two_sources_with_one_client_id_log_the_conflict_once_and_back_off(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ecallgw.mqtt")
    a, b = (MqttSource(config(mosquitto, "gw-dup"), _never) for _ in range(2))
    async with running(a, b):
        await asyncio.sleep(5.0)
        assert a.in_conflict or b.in_conflict  # still one episode: 5 s is far below the quiet period
    connections = a.connections + b.connections
    lines = conflict_lines(caplog)
    # Each source logs the conflict at most once in the episode, and at least one of them saw it.
    assert a.conflict_episodes <= 1 and b.conflict_episodes <= 1
    assert 1 <= len(lines) == a.conflict_episodes + b.conflict_episodes
    assert all(r.levelno == logging.WARNING and r.client_id == "gw-dup" for r in lines)  # type: ignore[attr-defined]
    assert "gw-dup" in lines[0].getMessage() and "mqtt.client_id" in lines[0].getMessage()
    # 3 quick closes open the episode; then 1 s, 2 s, 4 s ... (half to full, jittered) per source.
    assert connections <= 16, connections
    # The broker confirms why: it closed the older connection each time the other one connected.
    assert mosquitto.log().count("Client gw-dup already connected, closing old connection.") >= 3
    print(f"one client id, 5 s with the conflict backoff: {connections} connections")


async def test_without_the_conflict_backoff_two_sources_reconnect_in_a_tight_loop(
    mosquitto: Mosquitto,
) -> None:
    # The reference for the bound above: a cap of 1 ms is the old behaviour (reconnect at once).
    a, b = (MqttSource(config(mosquitto, "gw-dup", conflict_backoff_max_s=0.001), _never) for _ in range(2))
    async with running(a, b):
        await asyncio.sleep(2.0)
    connections = a.connections + b.connections
    print(f"one client id, 2 s without the conflict backoff: {connections} connections")
    assert connections > 40, connections


async def test_two_sources_with_their_own_client_ids_both_stay_connected(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    a = MqttSource(config(mosquitto, "x"), _never, client_id=derive_client_id("", "host-1"))
    b = MqttSource(config(mosquitto, "x"), _never, client_id=derive_client_id("", "host-2"))
    async with running(a, b):
        await until(lambda: a.connected.is_set() and b.connected.is_set())
        await asyncio.sleep(2.0)
        assert a.connected.is_set() and b.connected.is_set()
    assert (a.connections, b.connections) == (1, 1)
    assert conflict_lines(caplog) == [] and a.conflicts == b.conflicts == 0
    assert "already connected" not in mosquitto.log()


async def intrude(broker: Mosquitto, client_id: str, seconds: float) -> int:
    """Connect with ``client_id`` again and again for ``seconds`` (an old process without the backoff)."""
    loop = asyncio.get_running_loop()
    deadline, n = loop.time() + seconds, 0
    while loop.time() < deadline:
        client = aiomqtt.Client(broker.host, broker.port, identifier=client_id, clean_session=False)
        with contextlib.suppress(aiomqtt.MqttError):
            async with client:
                n += 1
                await asyncio.sleep(0.05)
        gone = mqtt_adapter.disconnected_future(client)
        if gone.done():  # taken over in turn: retrieve it (asyncio logs it otherwise)
            gone.exception()
    return n


async def test_a_conflict_is_logged_once_per_episode_and_the_episode_ends_when_the_other_is_gone(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shrunk to test speed: 3 closes within 1 s open an episode; 1 s connected ends it.
    monkeypatch.setattr(mqtt_source, "_CONFLICT_WINDOW_S", 1.0)
    caplog.set_level(logging.DEBUG, logger="ecallgw.mqtt")
    source = MqttSource(config(mosquitto, "gw-episode", conflict_backoff_max_s=0.2), _never)
    async with running(source):
        await until(source.connected.is_set)
        for episode in (1, 2):
            assert await intrude(mosquitto, "gw-episode", 2.0) > 3
            assert source.in_conflict and source.conflict_episodes == episode
            assert len(conflict_lines(caplog)) == episode  # not once per close
            # The intruder is gone: the source reconnects, stays up, and the episode ends.
            await until(lambda: not source.in_conflict and source.connected.is_set(), timeout_s=5)
    assert source.conflicts > 2 * 2  # several closes per episode, each after the first at DEBUG only
    over = [r for r in caplog.records if getattr(r, "event", None) == "mqtt_client_id_conflict_over"]
    assert len(over) == 2 and all(r.levelno == logging.INFO for r in over)
    # Inside an episode the source does not also warn "connection lost" for every close.
    lost = [r for r in caplog.records if r.getMessage() == "mqtt connection lost, reconnecting"]
    assert len(lost) <= 2 * (mqtt_source._CONFLICT_CLOSES - 1), [r.getMessage() for r in lost]
