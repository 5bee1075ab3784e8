"""The MQTT links over TLS against a real mosquitto with a TLS listener and a test-time PKI.

Mutual TLS end to end (source in, publish sink out); refusals on both sides: our CA does not
know the broker, the broker does not know us (no certificate, a rogue one), the broker's
certificate names another host. Refusals never connect, and say so in one line without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from ecallgw.codecs import document
from ecallgw.config import MqttConfig, ReceiverConfig, load_config
from ecallgw.errors import ConfigError, TransientDeliveryError
from ecallgw.gateway.mqtt_source import MqttSource
from ecallgw.gateway.records import OutboxItem, RawSignal
from ecallgw.gateway.sinks.mqtt_publish import MqttPublishSink
from ecallgw.simulators.drivers import Outgoing, drive_mqtt
from tests.gateway.broker import Mosquitto
from tests.gateway.harness import gateway_config, running_gateway
from tests.gateway.helpers import make_msd, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver
from tests.tlskit import Pair, Pki


@contextmanager
def tls_broker(
    pki: Pki, *, server: Pair | None = None, require_certificate: bool = True
) -> Iterator[Mosquitto]:
    """A mosquitto with a TLS listener (``tls_port``) presenting ``server`` (default: pki.server)."""
    pair = server or pki.server
    with Mosquitto(
        cafile=pki.ca, certfile=pair.cert, keyfile=pair.key, require_certificate=require_certificate
    ) as broker:
        yield broker


def tls_keys(broker: Mosquitto, pki: Pki, **overrides: Any) -> dict[str, Any]:
    """The ``[mqtt]`` keys of a mutual-TLS link to ``broker``'s TLS listener."""
    assert broker.tls_port is not None
    keys: dict[str, Any] = {
        "port": broker.tls_port,
        "tls": True,
        "ca_file": str(pki.ca),
        "cert_file": str(pki.client.cert),
        "key_file": str(pki.client.key),
    }
    keys.update(overrides)
    return keys


def source_config(broker: Mosquitto, pki: Pki, **overrides: Any) -> MqttConfig:
    keys = tls_keys(broker, pki, **overrides)
    return MqttConfig(host=broker.host, client_id="gw-tls", reconnect_min_s=0.05, reconnect_max_s=0.2, **keys)


async def stored(raw: RawSignal) -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


@asynccontextmanager
async def running(source: MqttSource) -> AsyncIterator[MqttSource]:
    async with source, asyncio.TaskGroup() as tg:
        tg.create_task(source.run())
        yield source
        source.stop()


async def publish_tls(broker: Mosquitto, pki: Pki, topic: str, payload: bytes) -> None:
    async with (
        asyncio.timeout(10),
        aiomqtt.Client(broker.host, broker.tls_port or 0, tls_context=pki.client_context()) as pub,
    ):
        await pub.publish(topic, payload, qos=1)


# --- end to end -----------------------------------------------------------------------------------


async def test_a_signal_goes_end_to_end_over_mutual_tls(tmp_path: Path, pki: Pki, receiver: Receiver) -> None:
    now = time.time()
    msd = make_msd(vin=vin_for(71), timestamp=int(now), automatic=True)
    with tls_broker(pki) as broker:
        cfg = gateway_config(tmp_path, broker=broker, psap_url=receiver.url, mqtt=tls_keys(broker, pki))
        async with running_gateway(cfg) as gw:
            assert gw.mqtt is not None and gw.mqtt.connections == 1
            await publish_tls(
                broker, pki, "ecall/v1/acme/car-71/msd", msd_envelope(msd, call_id="t71", sent_at=now)
            )
            await until(lambda: len(receiver.accepted) == 1)
            [row] = await gw.store.list_incidents()
        log = broker.log()
    assert document.parse_json_document(receiver.accepted[0].body)["incident_id"] == row.incident_id
    assert "error" not in log.lower(), log


async def test_the_publish_sink_delivers_over_mutual_tls(tmp_path: Path, pki: Pki) -> None:
    now = time.time()
    msd = make_msd(vin=vin_for(72), timestamp=int(now), automatic=True)
    with tls_broker(pki) as broker:
        cfg = gateway_config(
            tmp_path,
            broker=broker,
            psap_url="http://127.0.0.1:1/unused",
            mqtt=tls_keys(broker, pki),
            receivers={"psap-fallback": {"kind": "mqtt"}},
        )
        assert broker.tls_port is not None
        async with aiomqtt.Client(broker.host, broker.tls_port, tls_context=pki.client_context()) as psap:
            await psap.subscribe("psap/v1/psap-fallback/incidents", qos=1)
            async with running_gateway(cfg) as gw:
                await publish_tls(
                    broker, pki, "ecall/v1/acme/car-72/msd", msd_envelope(msd, call_id="t72", sent_at=now)
                )
                async with asyncio.timeout(10):
                    message = await anext(aiter(psap.messages))
                [row] = await gw.store.list_incidents()
    assert isinstance(message.payload, bytes)
    doc = document.parse_json_document(message.payload)
    assert (doc["incident_id"], doc["revision"]) == (row.incident_id, 1)


async def test_the_publish_sink_refuses_a_broker_it_cannot_verify(pki: Pki) -> None:
    item = OutboxItem(id=1, incident_id="inc", revision=1, receiver="psap", signal_at=time.time())
    with tls_broker(pki) as broker:
        good = MqttPublishSink(ReceiverConfig(name="psap", kind="mqtt"), source_config(broker, pki))
        rogue = MqttPublishSink(
            ReceiverConfig(name="psap", kind="mqtt"), source_config(broker, pki, ca_file=str(pki.other_ca))
        )
        try:
            assert await good.deliver(item, b"{}", "application/json") is None
            with pytest.raises(TransientDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
                await rogue.deliver(item, b"{}", "application/json")
        finally:
            await good.aclose()
            await rogue.aclose()


async def test_the_load_driver_publishes_over_mutual_tls(pki: Pki) -> None:
    now = time.time()
    outgoing = [
        Outgoing(
            at=now, scenario="s", tps="acme", vehicle=f"car-{i}", kind="msd", call_id=f"c{i}", payload=b"x"
        )
        for i in range(5)
    ]
    with tls_broker(pki) as broker:
        assert broker.tls_port is not None
        sent = await drive_mqtt(
            outgoing, host=broker.host, port=broker.tls_port, tls_context=pki.client_context(), timeout_s=10
        )
    assert sent.acknowledged == 5 and sent.errors == [None] * 5


# --- refusals -------------------------------------------------------------------------------------


def tls_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "mqtt_tls_failed"]


async def refused(source: MqttSource, caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    """Run ``source`` for several attempts; it must never connect, and log one WARNING line."""
    caplog.set_level(logging.DEBUG, logger="ecallgw.mqtt")
    async with running(source):
        await until(lambda: len(tls_records(caplog)) >= 3, timeout_s=8)
        assert not source.connected.is_set()
    assert source.connections == 0
    errors = [r for r in tls_records(caplog) if r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # repeats go to DEBUG
    [line] = errors
    assert line.levelno == logging.WARNING and line.exc_info is None
    assert "\n" not in line.getMessage()
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("ecallgw"))
    return line


async def test_a_broker_signed_by_another_ca_is_refused(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    with tls_broker(pki) as broker:
        line = await refused(
            MqttSource(source_config(broker, pki, ca_file=str(pki.other_ca)), stored), caplog
        )
    assert "CERTIFICATE_VERIFY_FAILED" in line.getMessage()
    assert "mqtt.ca_file" in line.getMessage()


@pytest.mark.parametrize("client", ["none", "rogue"])
async def test_the_broker_refuses_a_client_without_a_certificate_it_trusts(
    pki: Pki, caplog: pytest.LogCaptureFixture, client: str
) -> None:
    overrides: dict[str, Any] = (
        {"cert_file": "", "key_file": ""}
        if client == "none"
        else {"cert_file": str(pki.rogue_client.cert), "key_file": str(pki.rogue_client.key)}
    )
    with tls_broker(pki) as broker:
        started = time.monotonic()
        line = await refused(MqttSource(source_config(broker, pki, **overrides), stored), caplog)
        # Refused at once (the broker closes before its CONNACK), not after a 10 s CONNACK timeout.
        assert time.monotonic() - started < 8
        log = broker.log()
    expected = "CERTIFICATE_REQUIRED" if client == "none" else "UNKNOWN_CA"
    assert expected in line.getMessage().upper()
    says = "peer did not return a certificate" if client == "none" else "certificate verify failed"
    assert says in log, log


async def test_a_certificate_for_another_host_is_refused_when_checking_the_host_name(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with tls_broker(pki, server=pki.wrong_host) as broker:
        line = await refused(MqttSource(source_config(broker, pki), stored), caplog)
        assert "mismatch" in line.getMessage()
        # Without the host name check the chain still counts: ours connects, a rogue CA's does not.
        async with running(MqttSource(source_config(broker, pki, check_hostname=False), stored)) as source:
            async with asyncio.timeout(5):
                await source.connected.wait()
    with tls_broker(pki, server=pki.rogue_server) as rogue:
        caplog.clear()
        line = await refused(MqttSource(source_config(rogue, pki, check_hostname=False), stored), caplog)
        assert "CERTIFICATE_VERIFY_FAILED" in line.getMessage()


async def test_tls_1_3_only_still_connects(pki: Pki) -> None:
    with tls_broker(pki) as broker:
        source = MqttSource(source_config(broker, pki, tls_min_version="TLSv1.3"), stored)
        async with running(source):
            async with asyncio.timeout(5):
                await source.connected.wait()


# --- configuration --------------------------------------------------------------------------------


def test_the_tls_keys_default_to_off_and_checked(tmp_path: Path) -> None:
    mqtt = load_config().mqtt
    assert (mqtt.tls, mqtt.ca_file, mqtt.cert_file, mqtt.key_file) == (False, "", "", "")
    assert (mqtt.check_hostname, mqtt.tls_min_version) == (True, "TLSv1.2")
    cfg = load_config(environ={"ECALLGW_MQTT__TLS": "true", "ECALLGW_MQTT__CHECK_HOSTNAME": "false"})
    assert cfg.mqtt.tls is True and cfg.mqtt.check_hostname is False


@pytest.mark.parametrize(
    ("keys", "named", "says"),
    [
        ({"tls": "true", "ca_file": "/nonexistent/ca.pem"}, "mqtt.ca_file", "cannot read"),
        ({"tls": "true", "cert_file": "{client_cert}"}, "mqtt.key_file", "needs its key"),
        ({"tls": "true", "key_file": "{client_key}"}, "mqtt.cert_file", "needs its key"),
        ({"tls": "true", "cert_file": "{dir}", "key_file": "{client_key}"}, "mqtt.cert_file", "cannot read"),
        ({"ca_file": "{ca}"}, "mqtt.ca_file", "mqtt.tls is false"),
        ({"tls": "true", "tls_min_version": "TLSv1.1"}, "mqtt.tls_min_version", "must be one of"),
    ],
)
def test_bad_tls_keys_are_refused_naming_the_key(
    pki: Pki, tmp_path: Path, keys: dict[str, str], named: str, says: str
) -> None:
    paths = {"client_cert": pki.client.cert, "client_key": pki.client.key, "ca": pki.ca, "dir": tmp_path}
    overrides = {f"mqtt.{k}": v.format(**{n: str(p) for n, p in paths.items()}) for k, v in keys.items()}
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert err.value.key == named and says in str(err.value)


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"ca_file": "{client_key}"}, "mqtt.ca_file"),  # readable, but not a certificate
        ({"cert_file": "{client_cert}", "key_file": "{server_key}"}, "mqtt.cert_file"),  # not its key
    ],
)
def test_files_that_do_not_load_refuse_the_source_and_the_sink(
    pki: Pki, keys: dict[str, str], named: str
) -> None:
    paths = {"client_cert": pki.client.cert, "client_key": pki.client.key, "server_key": pki.server.key}
    files: dict[str, Any] = {k: v.format(**{n: str(p) for n, p in paths.items()}) for k, v in keys.items()}
    config = MqttConfig(tls=True, **files)  # built directly: the load-time checks cannot see this
    with pytest.raises(ConfigError) as err:
        MqttSource(config, stored, client_id="gw")
    assert err.value.key == named
    with pytest.raises(ConfigError):
        MqttPublishSink(ReceiverConfig(name="psap", kind="mqtt"), config)


def test_serve_refuses_a_ca_file_that_is_not_a_certificate_in_one_line(pki: Pki, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ecallgw", "serve",
         "--set", f"store.path={tmp_path / 'gw.sqlite3'}", "--set", "http.enabled=false",
         "--set", "mqtt.tls=true", "--set", f"mqtt.ca_file={pki.client.key}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "'mqtt.ca_file'" in line and "Traceback" not in done.stderr
