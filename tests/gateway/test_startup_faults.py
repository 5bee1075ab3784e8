"""Start-up faults of ``ecallgw serve`` (issue 11), each on a real subprocess.

A configuration the machine cannot honour (``http.port`` taken, ``store.path`` unusable) exits 2, a
store server that refuses exits 1, each with one line on stderr naming the key and no traceback
(``--debug`` adds it). A broker unreachable at start is no reason to exit: the gateway logs one
WARNING naming ``mqtt.host:port`` and keeps retrying.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from ecallgw.app import Gateway
from ecallgw.cli import main
from ecallgw.config import Config
from ecallgw.gateway.store import SqliteStore
from tests.gateway.broker import free_port
from tests.gateway.harness import PROVIDER_TOKEN, SRE_TOKEN, gateway_config

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, *, store: str, http_port: int, mqtt_port: int) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(
        f"""
{store}
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
reconnect_min_s = 0.02
reconnect_max_s = 0.1
[http]
port = {http_port}
[[auth.tokens]]
name = "bob"
role = "sre"
token = "{SRE_TOKEN}"
[log]
level = "warning"
"""
    )
    return path


def _sqlite(path: Path) -> str:
    return f'[store]\npath = "{path}"\n'


def _serve(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecallgw", "serve", "--config", str(config), *extra],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


def test_http_port_in_use_exits_2_naming_http_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(
            tmp_path, store=_sqlite(tmp_path / "s" / "gw.sqlite3"), http_port=port, mqtt_port=free_port()
        )
        done = _serve(config)
    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    assert line.startswith("ecallgw: ") and "'http.port'" in line and str(port) in line, line
    assert "in use" in line, line


@pytest.mark.parametrize("kind", ["parent is a file", "path is a directory"])
def test_unusable_store_path_exits_2_naming_store_path(tmp_path: Path, kind: str) -> None:
    # Tests may run as root, which reads and writes through any mode: use paths no mode can fix.
    if kind == "parent is a file":
        (tmp_path / "file").write_text("x")
        store = tmp_path / "file" / "gw.sqlite3"
    else:
        store = tmp_path / "dir"
        store.mkdir(mode=0o700)
    config = _config(tmp_path, store=_sqlite(store), http_port=free_port(), mqtt_port=free_port())
    done = _serve(config)
    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    assert "'store.path'" in line and str(store) in line, line


def test_debug_prints_the_traceback_too(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    store = tmp_path / "file" / "gw.sqlite3"
    config = _config(tmp_path, store=_sqlite(store), http_port=free_port(), mqtt_port=free_port())
    done = _serve(config, "--debug")
    assert done.returncode == 2, done.stderr
    assert "Traceback" in done.stderr and "StorePathError" in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1].startswith("ecallgw: config 'store.path'"), done.stderr


def test_postgresql_store_that_refuses_exits_1_naming_store_dsn(tmp_path: Path) -> None:
    dsn = f"postgresql://ecallgw@127.0.0.1:{free_port()}/ecallgw"  # nothing listens there
    store = f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n'
    config = _config(tmp_path, store=store, http_port=free_port(), mqtt_port=free_port())
    done = _serve(config)
    assert done.returncode == 1, done.stderr
    line = _one_line(done.stderr)
    assert "store.dsn" in line and "refused" in line.lower(), line


def test_broker_unreachable_at_start_logs_one_line_and_keeps_running(tmp_path: Path) -> None:
    mqtt_port = free_port()  # nothing listens there
    config = _config(
        tmp_path, store=_sqlite(tmp_path / "s" / "gw.sqlite3"), http_port=free_port(), mqtt_port=mqtt_port
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecallgw", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 20
        while "mqtt_unreachable" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        time.sleep(1.5)  # reconnect_max_s = 0.1: a dozen more attempts, none of them logged at WARNING
        assert proc.poll() is None, log.read_text()  # still running, still retrying
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    text = log.read_text()
    assert proc.returncode == 0 and "Traceback" not in text, text
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    mqtt = [r for r in records if r.get("logger") == "ecallgw.mqtt"]
    assert len(mqtt) == 1, mqtt
    assert mqtt[0]["event"] == "mqtt_unreachable" and mqtt[0]["broker"] == f"127.0.0.1:{mqtt_port}"
    assert "mqtt.host" in mqtt[0]["msg"] and "connection lost" not in text


def test_a_store_that_fails_while_running_exits_1_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store that breaks while serving (here its journal table is gone: an error that is neither a
    full nor a read-only disk, which the gateway waits out, test_disk_full.py): the gateway
    fail-stops (nothing more acknowledged; the restart replays the journal) and ``serve`` says so
    in one line, exit 1, not a traceback."""
    cfg = gateway_config(tmp_path, broker=None, psap_url="http://127.0.0.1:9/psap")

    async def run_until_full(config: Config, **_: object) -> None:  # serve passes reload=
        async with Gateway(config) as gw:
            assert gw.http is not None
            task = asyncio.create_task(gw.run())
            async with asyncio.timeout(10):
                await gw.ready.wait()
            store = gw.store
            assert isinstance(store, SqliteStore)
            await store.run(lambda c: c.execute("DROP TABLE journal"))
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"http://127.0.0.1:{gw.http.port}/v1/ecall/acme/full/msd",
                    data=b"\xc1" * 8000,
                    headers={
                        "Authorization": f"Bearer {PROVIDER_TOKEN}",
                        "Content-Type": "application/msgpack",
                    },
                ) as resp,
            ):
                assert resp.status == 503
            async with asyncio.timeout(10):
                await task

    monkeypatch.setattr("ecallgw.config.load_config", lambda *a, **k: cfg)
    monkeypatch.setattr("ecallgw.app.run_gateway", run_until_full)
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    [line] = [x for x in err.splitlines() if x.startswith("ecallgw: ")]
    assert line.startswith("ecallgw: the store failed;") and "no such table" in line, err
