"""``ecallgw send`` against a real gateway: one MSD over HTTP or MQTT becomes an incident."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from ecallgw.cli import main
from ecallgw.codecs import msd
from ecallgw.commands.send import SAMPLE_HEX
from tests.gateway.broker import Mosquitto
from tests.gateway.harness import OPERATOR_TOKEN, PROVIDER_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import until
from tests.gateway.receiver import Receiver


async def _incidents(base: str) -> list[dict[str, object]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/v1/incidents", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}) as resp,
    ):
        body = await resp.json()
    items: list[dict[str, object]] = body["incidents"]
    return items


async def test_send_over_http_makes_an_incident(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url)
    async with running_gateway(cfg) as gw:
        assert gw.http is not None
        base = f"http://127.0.0.1:{gw.http.port}"
        argv = ["send", "--to", base, "--tps", "acme", "--token", PROVIDER_TOKEN]
        assert await asyncio.to_thread(main, argv) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["status"] == 202 and out["answer"]["incident_id"]
        assert [i["incident_id"] for i in await _incidents(base)] == [out["answer"]["incident_id"]]
        # A wrong token: refused, status 1, the gateway's answer shown.
        assert await asyncio.to_thread(main, [*argv[:-1], "not-a-provider-token-00"]) == 1
        assert json.loads(capsys.readouterr().out)["status"] == 401


async def test_send_over_mqtt_with_a_json_msd_and_a_fresh_timestamp(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = msd.to_json_dict(msd.decode(bytes.fromhex(SAMPLE_HEX)))
    assert tree["msd"]["msdStructure"]["timestamp"] < time.time() - 86400  # the sample is old
    f = tmp_path / "msd.json"
    f.write_text(json.dumps(tree))
    cfg = gateway_config(tmp_path, broker=mosquitto, psap_url=receiver.url)
    async with running_gateway(cfg) as gw:
        assert gw.http is not None
        base = f"http://127.0.0.1:{gw.http.port}"
        argv = ["send", str(f), "--to", f"mqtt://{mosquitto.host}:{mosquitto.port}", "--vehicle", "car-9"]
        assert await asyncio.to_thread(main, argv) == 0
        assert json.loads(capsys.readouterr().out)["topic"] == "ecall/v1/acme/car-9/msd"
        await until(lambda: gw.processed >= 1, timeout_s=10)
        await gw.settled()
        incidents = await _incidents(base)
        assert len(incidents) == 1
    rows = await asyncio.to_thread(_stored_msd_timestamps, cfg.store.path)
    assert rows and all(abs(ts - time.time()) < 60 for ts in rows)


def _stored_msd_timestamps(path: str) -> list[int]:
    import sqlite3

    import msgpack

    db = sqlite3.connect(path)
    try:
        payloads = [bytes(r[0]) for r in db.execute("SELECT payload FROM journal WHERE payload IS NOT NULL")]
    finally:
        db.close()
    out = []
    for p in payloads:
        env = msgpack.unpackb(p)
        out.append(msd.to_json_dict(msd.decode(env["msd"]))["msd"]["msdStructure"]["timestamp"])
    return out


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "zz-not-hex", "--to", "http://127.0.0.1:9"]) == 2
    assert main(["send", "--to", "http://127.0.0.1:9"]) == 2  # HTTP without a token
    assert main(["send", "--to", "ftp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "neither a file nor hex" in err and "token" in err
