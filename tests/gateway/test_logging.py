"""JSON log lines with pseudonymised VINs."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import random
import time
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from ecallgw.app import Gateway
from ecallgw.gateway.logging import configure_logging, pseudonymise_vin
from ecallgw.simulators.drivers import build_outgoing, drive_http, drive_mqtt
from ecallgw.simulators.fleet import TPS_NAMES
from ecallgw.simulators.scenarios import ALL_KINDS_MIX, generate
from tests.gateway.broker import Mosquitto
from tests.gateway.harness import OPERATOR_TOKEN, gateway_config
from tests.gateway.helpers import until
from tests.gateway.receiver import Receiver

KEY = b"k" * 32
VIN = "WVWZZZ1KZAW000123"


def test_json_lines_with_fields_and_vins_pseudonymised() -> None:
    stream = io.StringIO()
    handler = configure_logging("info", KEY, stream)
    try:
        log = logging.getLogger("ecallgw.test")
        log.info("vehicle %s called", VIN, extra={"receiver": "psap", "note": f"vin={VIN}", "attempt": 2})
        log.debug("not at info level")
        try:
            raise ValueError(VIN)
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert VIN not in stream.getvalue()
    pseudonym = pseudonymise_vin(KEY, VIN)
    assert first["msg"] == f"vehicle {pseudonym} called"
    assert first["note"] == f"vin={pseudonym}"
    assert (first["level"], first["logger"], first["receiver"], first["attempt"]) == (
        "info",
        "ecallgw.test",
        "psap",
        2,
    )
    assert pseudonym in second["exc"]


def test_pseudonyms_are_keyed_and_stable() -> None:
    assert pseudonymise_vin(KEY, VIN) == pseudonymise_vin(KEY, VIN)
    assert pseudonymise_vin(KEY, VIN) != pseudonymise_vin(b"x" * 32, VIN)
    assert pseudonymise_vin(KEY, VIN).startswith("vin:") and len(pseudonymise_vin(KEY, VIN)) == 20


def test_other_17_character_tokens_are_left_alone() -> None:
    stream = io.StringIO()
    handler = configure_logging("info", KEY, stream)
    try:
        # All digits (a timestamp-like id) and a 24-hex incident id are not VINs.
        logging.getLogger("ecallgw.test").info("ids 12345678901234567 inc-0123456789abcdef01234567")
    finally:
        logging.getLogger().removeHandler(handler)
    assert json.loads(stream.getvalue())["msg"] == "ids 12345678901234567 inc-0123456789abcdef01234567"


def test_vins_are_found_in_any_case_and_in_every_field() -> None:
    stream = io.StringIO()
    handler = configure_logging("info", KEY, stream)
    lower = VIN.lower()
    mixed = VIN[:8].lower() + VIN[8:]
    try:
        logging.getLogger("ecallgw.test").info(
            "topic ecall/v1/acme/%s/msd and car_%s-x",
            lower,
            mixed,
            extra={
                "source": f"/v1/ecall/acme/{lower}/msd",
                "rows": {VIN: [f"vin={lower}", (1, {"deep": mixed})]},
                "payload": VIN.encode(),
                "path": type("P", (), {"__str__": lambda self: f"/x/{VIN}"})(),
                VIN: "a field named by a VIN",
            },
            stack_info=False,
        )
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert VIN not in text.upper()  # no spelling of it, anywhere in the line
    line = json.loads(text)
    pseudonym = pseudonymise_vin(KEY, VIN)
    assert pseudonymise_vin(KEY, lower) == pseudonym  # one vehicle, one pseudonym, whatever the case
    assert line["msg"] == f"topic ecall/v1/acme/{pseudonym}/msd and car_{pseudonym}-x"
    assert line["source"] == f"/v1/ecall/acme/{pseudonym}/msd"
    assert line["rows"] == {pseudonym: [f"vin={pseudonym}", [1, {"deep": pseudonym}]]}
    assert line["payload"] == pseudonym
    assert line["path"] == f"/x/{pseudonym}"
    assert line[pseudonym] == "a field named by a VIN"


def test_a_field_cannot_overwrite_the_line_s_own_keys() -> None:
    stream = io.StringIO()
    handler = configure_logging("info", KEY, stream)
    try:
        logging.getLogger("ecallgw.test").warning("x", extra={"level": "high", "ts": 1, "logger": "fake"})
    finally:
        logging.getLogger().removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert (line["level"], line["logger"]) == ("warning", "ecallgw.test")
    assert (line["field_level"], line["field_ts"], line["field_logger"]) == ("high", 1, "fake")


def test_longer_alphanumeric_runs_are_not_vins() -> None:
    stream = io.StringIO()
    handler = configure_logging("info", KEY, stream)
    try:
        logging.getLogger("ecallgw.test").info(f"x{VIN} {VIN}9 inc-0123456789abcdef01234567")
    finally:
        logging.getLogger().removeHandler(handler)
    assert json.loads(stream.getvalue())["msg"] == f"x{VIN} {VIN}9 inc-0123456789abcdef01234567"


async def test_no_vin_of_a_simulated_fleet_reaches_the_logs_at_debug_level(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    scenarios = generate(random.Random(2024), 40, ALL_KINDS_MIX, start=time.time(), mean_gap_s=0)
    vin_of = {v.key: v.vin for s in scenarios for v in s.vehicles}
    vins = set(vin_of.values())
    assert len(vins) >= 40
    now = time.time()
    outgoing = []
    for i, item in enumerate(build_outgoing(scenarios)):
        # Some providers key their vehicles by VIN: every other vehicle here, in either case.
        vin = vin_of[item.vehicle]
        vehicle = item.vehicle if sum(map(ord, vin)) % 2 else (vin if i % 2 else vin.lower())
        outgoing.append(dataclasses.replace(item, at=now + i * 0.001, vehicle=vehicle))
    tokens = {tps: f"{tps}-provider-token-0001" for tps in TPS_NAMES}
    cfg = gateway_config(
        tmp_path,
        broker=mosquitto,
        psap_url=receiver.url,
        log={"level": "debug"},
        auth={
            "tokens": [
                *({"name": t, "role": "provider", "tps": t, "token": tok} for t, tok in tokens.items()),
                {"name": "alice", "role": "operator", "token": OPERATOR_TOKEN},
            ]
        },
    )
    sample = sorted(vins)[:3]
    async with Gateway(cfg, configure_log=True) as gw:  # the JSON-lines handler on (captured) stderr
        task = asyncio.create_task(gw.run())
        try:
            async with asyncio.timeout(10):
                await gw.ready.wait()
                assert gw.mqtt is not None and gw.http is not None
                await gw.mqtt.connected.wait()
            base = f"http://127.0.0.1:{gw.http.port}"
            mqtt_log = await drive_mqtt(outgoing[0::2], host=mosquitto.host, port=mosquitto.port)
            http_log = await drive_http(outgoing[1::2], base_url=base, tokens=tokens)
            assert mqtt_log.acknowledged + http_log.acknowledged == len(outgoing)
            # What cannot be decoded, cannot be routed or is refused, with a VIN where a sender put one.
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
                await pub.publish(f"ecall/v1/northstar/{sample[0]}/msd", b"\xc1" + sample[0].encode(), qos=1)
                await pub.publish(f"ecall/v1/northstar/{sample[1].lower()}", b"x", qos=1)
            async with aiohttp.ClientSession() as http:
                for path, token in (
                    (f"/v1/ecall/northstar/{sample[2].lower()}/msd", "not-a-known-token-0000"),
                    (f"/v1/ecall/northstar/{sample[2].lower()}/msd", tokens["northstar"]),
                    (f"/v1/ecall/northstar/{sample[2]}/nonsense", tokens["northstar"]),
                    (f"/v1/ecall/vialink/{sample[2]}/cancel", tokens["northstar"]),
                ):
                    async with http.post(
                        base + path,
                        data=sample[2].lower().encode(),
                        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/msgpack"},
                    ):
                        pass
                async with http.get(
                    f"{base}/v1/incidents/{sample[0]}", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
                ):
                    pass
            assert logging.getLogger("ecallgw").getEffectiveLevel() == logging.DEBUG
            for _ in range(500):  # the two undecodable ones (a topic without a kind is not kept)
                if len(await gw.store.quarantined()) >= 2:
                    break
                await asyncio.sleep(0.01)
            await until(lambda: gw.forwarder.pending == 0, timeout_s=20)
        finally:
            gw.stop()
            async with asyncio.timeout(20):
                await task
    logs = capsys.readouterr().err
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line["msg"] == "signal quarantined" for line in lines)
    assert any(line.get("event") == "auth_failed" for line in lines)
    assert "vin:" in logs  # VINs reached the log calls, pseudonymised
    upper = logs.upper()
    leaked = sorted(v for v in vins if v in upper)
    assert not leaked, f"{len(leaked)} VINs of the fleet in the logs"


def test_secrets_in_lines_a_library_logs_are_redacted() -> None:
    """aiohttp logs a request line it cannot parse as it came: a caller link's token, a bearer
    token or a console session cookie must not reach the log with it."""
    stream = io.StringIO()
    handler = configure_logging("info", KEY, stream)
    token = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcd"
    try:
        log = logging.getLogger("aiohttp.server")
        log.error("Error handling request from 127.0.0.1: GET /t/%s\x01 HTTP/1.1", token)
        log.error("bad header", extra={"line": f"Authorization: Bearer {token}"})
        log.error("bad cookie: __Host-ecallgw_session=%s; theme=dark", token)
        log.warning("GET /assist/%s and /l/%s", token, token)
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert token not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert "GET /t/[secret]" in lines[0]["msg"]
    assert lines[1]["line"] == "Authorization: Bearer [secret]"
    assert "__Host-ecallgw_session=[secret]; theme=dark" in lines[2]["msg"]
    assert lines[3]["msg"] == "GET /assist/[secret] and /l/[secret]"


async def test_a_link_token_in_a_request_the_server_cannot_parse_stays_out_of_the_log(
    tmp_path: Path, receiver: Receiver, capfd: pytest.CaptureFixture[str]
) -> None:
    token = "ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210_-zyxw"
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url, log={"level": "debug"})
    async with Gateway(cfg, configure_log=True) as gw:
        task = asyncio.create_task(gw.run())
        try:
            async with asyncio.timeout(10):
                await gw.ready.wait()
            assert gw.http is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.http.port)
            writer.write(f"GET /t/{token}\x01 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(4096), 10)
            writer.close()
            assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")  # to the sender only
        finally:
            gw.stop()
            await task
    err = capfd.readouterr().err
    assert token not in err
