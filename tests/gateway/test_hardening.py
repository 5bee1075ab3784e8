"""Production hardening of the HTTP server and the keys: auth failures, limits, error bodies, key file."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ecallgw.codecs.envelope import MAX_ENVELOPE_BYTES
from ecallgw.config import load_config
from ecallgw.errors import ConfigError
from ecallgw.gateway import http_source
from ecallgw.gateway.http_source import AuthThrottle
from ecallgw.gateway.keyfile import load_key_file
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.pipeline import QUARANTINE_PREFIX_BYTES, quarantine_unit
from ecallgw.gateway.records import RawSignal
from tests.gateway.harness import OPERATOR_TOKEN, PROVIDER_TOKEN, SRE_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import make_msd, msd_envelope, vin_for
from tests.gateway.receiver import Receiver

BAD_TOKEN = "Bearer guessed-token-0000000000"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ingest_headers() -> dict[str, str]:
    return {**bearer(PROVIDER_TOKEN), "Content-Type": "application/msgpack"}


# --- configuration ------------------------------------------------------------------------------


def test_a_token_used_twice_or_too_short_is_refused_naming_the_entry() -> None:
    def tokens(*items: tuple[str, str]) -> dict[str, Any]:
        return {
            "auth": {
                "tokens": [{"name": n, "role": "operator", "token": t} for n, t in items],
            }
        }

    with pytest.raises(ConfigError) as info:
        load_config(base=tokens(("a", "x" * 20), ("b", "y" * 20), ("c", "x" * 20)))
    assert info.value.key == "auth.tokens[2].token"
    assert "auth.tokens[0]" in info.value.reason
    assert "x" * 20 not in str(info.value)  # the token itself is never printed
    with pytest.raises(ConfigError) as info:
        load_config(base=tokens(("a", "x" * 20), ("b", "y" * 15)))
    assert info.value.key == "auth.tokens[1].token"


@pytest.mark.parametrize(
    ("key", "value"),
    [("http.read_timeout_s", "0"), ("http.read_timeout_s", "nan"), ("http.max_sse_subscribers", "0")],
)
def test_limits_must_be_positive(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides={key: value})
    assert info.value.key == key


async def test_no_tokens_at_all_is_said_at_start(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url, auth={"tokens": []})
    with caplog.at_level(logging.WARNING, "ecallgw.http"):
        async with running_gateway(cfg) as gw:
            assert gw.http is not None
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{gw.http.port}/metrics") as resp,
            ):
                assert resp.status == 401
    [warning] = [r for r in caplog.records if getattr(r, "event", "") == "no_tokens"]
    assert "refuses every request" in warning.getMessage()


# --- the log pseudonym key file -----------------------------------------------------------------


def test_the_key_file_is_created_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "pseudonym.key"
    key = load_key_file(path)
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert len(path.read_text().strip()) == 64
    assert load_key_file(path) == key  # the same key on the next start
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize(
    ("mode", "text", "words"), [(0o640, "k" * 64, "group or others"), (0o600, "short", "characters")]
)
def test_a_readable_or_short_key_file_is_refused(tmp_path: Path, mode: int, text: str, words: str) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_text(text)
    os.chmod(path, mode)
    with pytest.raises(ConfigError) as info:
        load_key_file(path)
    assert info.value.key == "pipeline.pseudonym_key_file"
    assert words in info.value.reason
    assert "k" * 64 not in str(info.value)


def test_serve_refuses_a_readable_key_file_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_text("k" * 64)
    os.chmod(path, 0o644)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ecallgw",
            "serve",
            "--set",
            f"pipeline.pseudonym_key_file={path}",
            "--set",
            f"store.path={tmp_path / 'gw.sqlite3'}",
            "--set",
            "mqtt.enabled=false",
            "--set",
            "http.port=0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "pipeline.pseudonym_key_file" in done.stderr
    assert "Traceback" not in done.stderr


async def test_rotating_the_log_key_changes_log_pseudonyms_not_incident_ids(
    tmp_path: Path, receiver: Receiver
) -> None:
    key_file = tmp_path / "secrets" / "pseudonym.key"

    def config() -> Any:
        return gateway_config(
            tmp_path, broker=None, psap_url=receiver.url, pipeline={"pseudonym_key_file": str(key_file)}
        )

    now = time.time()
    msd = make_msd(vin=vin_for(7), timestamp=int(now), automatic=True)
    async with running_gateway(config()) as gw:
        assert gw.http is not None
        first_log_key = gw.log_key
        assert first_log_key == load_key_file(key_file)
        assert first_log_key != await gw.store.key("pseudonym")  # logs and triage: two keys
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{gw.http.port}/v1/ecall/acme/car-7/msd",
                data=msd_envelope(msd, call_id="c7", sent_at=now),
                headers=ingest_headers(),
            ) as resp,
        ):
            assert resp.status == 202
            incident_id = (await resp.json())["incident_id"]
    key_file.unlink()  # rotation: a new key file (here: generated on start)
    async with running_gateway(config()) as gw:
        assert gw.log_key != first_log_key
        assert gw.pipeline.replayed >= 1
        [row] = await gw.store.list_incidents()
        assert row.incident_id == incident_id  # the replay under the same triage key agrees
        assert gw.pipeline.engine.get(incident_id) is not None


# --- failed authentication ----------------------------------------------------------------------


def test_the_throttle_blocks_an_address_for_a_while_and_stays_bounded() -> None:
    now = [0.0]
    t = AuthThrottle(limit=3, window_s=10.0, block_s=5.0, max_addresses=100, clock=lambda: now[0])
    assert not t.failed("a") and not t.failed("a")
    assert t.retry_after("a") is None
    assert t.failed("a")  # the third within 10 s
    assert t.retry_after("a") == 5 and t.retry_after("b") is None
    now[0] = 4.5
    assert t.retry_after("a") == 1
    now[0] = 5.0
    assert t.retry_after("a") is None  # over
    now[0] = 100.0
    for _ in range(2):
        t.failed("slow")
        now[0] += 20.0  # spread beyond the window: never blocked
    assert not t.failed("slow")
    for n in range(1000):  # many addresses: memory stays bounded
        for _ in range(3):
            t.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(t) <= 200


async def test_failed_authentications_are_logged_and_throttled_per_address(
    tmp_path: Path,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_source, "_AUTH_BLOCK_S", 1.0)
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url)
    with caplog.at_level(logging.INFO, "ecallgw.http"):
        async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
            assert gw.http is not None
            base = f"http://127.0.0.1:{gw.http.port}"
            for _ in range(12):  # no token at all: logged, not counted (nothing was guessed)
                async with http.get(f"{base}/metrics") as resp:
                    assert resp.status == 401
            statuses = []
            for n in range(10):
                async with http.get(
                    f"{base}/v1/incidents/inc-{n}", headers={"Authorization": BAD_TOKEN}
                ) as resp:
                    statuses.append(resp.status)
            assert statuses == [401] * 10
            # Blocked now, whatever the request carries: a guesser must not learn a right guess.
            async with http.get(f"{base}/v1/incidents", headers=bearer(OPERATOR_TOKEN)) as resp:
                assert resp.status == 429
                assert 1 <= int(resp.headers["Retry-After"]) <= 1
                assert "error" in await resp.json()
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200  # liveness is not behind auth
            await asyncio.sleep(1.1)
            async with http.get(f"{base}/v1/incidents", headers=bearer(OPERATOR_TOKEN)) as resp:
                assert resp.status == 200
            async with http.get(f"{base}/metrics", headers=bearer(OPERATOR_TOKEN)) as resp:
                assert resp.status == 403
    failed = [r for r in caplog.records if getattr(r, "event", "") == "auth_failed"]
    assert len(failed) == 22
    assert {(r.remote, r.door, r.reason) for r in failed} == {  # type: ignore[attr-defined]
        ("127.0.0.1", "/metrics", "no bearer token (nor a known client certificate)"),
        ("127.0.0.1", "/v1/incidents/{id}", "unknown token"),
    }
    throttled = [r for r in caplog.records if getattr(r, "event", "") == "auth_throttled"]
    assert len(throttled) == 1
    refused = [r for r in caplog.records if getattr(r, "event", "") == "auth_refused"]
    assert [(r.holder, r.door) for r in refused] == [("alice", "/metrics")]  # type: ignore[attr-defined]
    text = caplog.text + "".join(json.dumps(r.__dict__, default=str) for r in caplog.records)
    assert "guessed-token" not in text and OPERATOR_TOKEN not in text


# --- limits -------------------------------------------------------------------------------------


async def test_a_client_that_sends_half_a_header_is_closed_within_the_read_timeout(
    tmp_path: Path, receiver: Receiver
) -> None:
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url, http={"read_timeout_s": 0.5})
    async with running_gateway(cfg) as gw:
        assert gw.http is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.http.port)
        t0 = time.monotonic()
        writer.write(b"POST /v1/ecall/acme/car/msd HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        await writer.drain()
        async with asyncio.timeout(5):
            rest = await reader.read()  # EOF once the server closes
        elapsed = time.monotonic() - t0
        writer.close()
        assert rest == b""
        assert 0.4 <= elapsed < 2.0
        # A connection that never sends anything is closed too.
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.http.port)
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()


async def test_a_body_that_does_not_arrive_gets_408(tmp_path: Path, receiver: Receiver) -> None:
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url, http={"read_timeout_s": 0.5})
    async with running_gateway(cfg) as gw:
        assert gw.http is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.http.port)
        writer.write(
            b"POST /v1/ecall/acme/car/msd HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + PROVIDER_TOKEN.encode() + b"\r\n"
            b"Content-Type: application/msgpack\r\nContent-Length: 200\r\n\r\n" + b"\x81" * 10
        )
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408")
            length = int(
                next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
            )
            body = json.loads(await reader.readexactly(length))
        writer.close()
        assert "error" in body
        assert (await gw.store.counts())["journal"] == 0


async def test_event_streams_are_capped(tmp_path: Path, receiver: Receiver) -> None:
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url, http={"max_sse_subscribers": 2})
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
        assert gw.http is not None
        url = f"http://127.0.0.1:{gw.http.port}/v1/incidents/events"
        first = await http.get(url, headers=bearer(OPERATOR_TOKEN))
        second = await http.get(url, headers=bearer(OPERATOR_TOKEN))
        assert first.status == second.status == 200
        async with http.get(url, headers=bearer(OPERATOR_TOKEN)) as third:
            assert third.status == 503
            assert "Retry-After" in third.headers
            assert "error" in await third.json()
        first.close()  # one leaves: room for another
        for _ in range(100):
            async with http.get(url, headers=bearer(OPERATOR_TOKEN)) as again:
                if again.status == 200:
                    break
            await asyncio.sleep(0.02)
        assert again.status == 200
        second.close()


async def test_a_payload_over_the_envelope_limit_is_413_and_kept_as_a_prefix(
    tmp_path: Path, receiver: Receiver
) -> None:
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url)
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
        assert gw.http is not None
        base = f"http://127.0.0.1:{gw.http.port}/v1/ecall/acme/car"
        big = b"\x81" + b"z" * (MAX_ENVELOPE_BYTES + 5000)
        async with http.post(f"{base}/msd", data=big, headers=ingest_headers()) as resp:
            assert resp.status == 413
            answer = await resp.json()
        assert "exceeds" in answer["error"]
        raw_msd = {
            **bearer(PROVIDER_TOKEN),
            "Content-Type": "application/EmergencyCallData.eCall.MSD",
            "Call-Id": "c1",
        }
        async with http.post(f"{base}/msd", data=b"\x00" * (MAX_ENVELOPE_BYTES + 1), headers=raw_msd) as resp:
            assert resp.status == 413
        async with http.post(f"{base}/msd", data=b"z" * 70000, headers=ingest_headers()) as resp:
            assert resp.status == 413  # over http.max_body_bytes: not even read
            assert "error" in await resp.json()
        async with http.post(f"{base}/msd", data=b"\xc1" * 3000, headers=ingest_headers()) as resp:
            assert resp.status == 400  # under the limit: a decode error, kept whole
        rows = await gw.store.quarantined()
    by_size = sorted(rows, key=lambda r: r["id"])
    assert [len(bytes(r["payload"])) for r in by_size] == [
        QUARANTINE_PREFIX_BYTES,
        QUARANTINE_PREFIX_BYTES,
        3000,
    ]
    assert bytes(by_size[0]["payload"]) == big[:QUARANTINE_PREFIX_BYTES]
    assert f"payload of {len(big)} bytes" in by_size[0]["reason"]


def test_quarantine_keeps_a_prefix_of_any_oversized_payload_mqtt_too() -> None:
    raw = RawSignal(
        transport="mqtt",
        kind="position",
        tps="acme",
        vehicle="car",
        payload=b"y" * 1_000_000,
        received_at=1.0,
        source="ecall/v1/acme/car/position",
    )
    from ecallgw.codecs.envelope import decode_envelope
    from ecallgw.errors import DecodeError

    with pytest.raises(DecodeError) as info:
        decode_envelope("position", "acme", "car", raw.payload)
    unit, error = quarantine_unit(raw, info.value, Metrics())
    assert unit.quarantine is not None
    assert unit.quarantine.signal.payload == b"y" * QUARANTINE_PREFIX_BYTES
    assert "1000000 bytes" in unit.quarantine.reason
    assert error is info.value


async def test_every_error_body_is_json(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url)
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
        assert gw.http is not None
        base = f"http://127.0.0.1:{gw.http.port}"

        async def broken() -> list[dict[str, Any]]:
            raise RuntimeError("a bug")

        monkeypatch.setattr(gw.store, "dead_letters", broken)
        cases = [
            ("GET", "/nowhere", {}, 404),
            ("GET", "/v1/ecall/acme/car/msd", ingest_headers(), 405),
            ("DELETE", "/v1/incidents", bearer(OPERATOR_TOKEN), 405),
            ("GET", "/v1/dead-letters", bearer(SRE_TOKEN), 500),
            (
                "POST",
                "/v1/incidents/inc-x/actions",
                {**bearer(OPERATOR_TOKEN), "Content-Type": "application/json"},
                413,
            ),
        ]
        for method, path, headers, status in cases:
            data = b"[" * 70000 if status == 413 else None
            async with http.request(method, base + path, headers=headers, data=data) as resp:
                assert resp.status == status, (method, path)
                assert resp.content_type == "application/json", (method, path)
                body = await resp.json()
                assert isinstance(body.get("error"), str) and body["error"], (method, path)
                if status == 405:
                    assert "Allow" in resp.headers
                if status == 500:
                    assert "a bug" not in body["error"]  # no internals to the client
