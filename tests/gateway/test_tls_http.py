"""HTTPS on both HTTP links (issue 11): the gateway's server (tokens, client certificates) and webhooks.

Real TLS on 127.0.0.1 with certificates made for the session (tests/tlskit.py): the gateway serves
HTTPS with the test CA's server certificate and optional client certificates; a PSAP webhook serves
HTTPS and requires the gateway's client certificate.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ecallgw.config import Config, ReceiverConfig, load_config
from ecallgw.errors import ConfigError, PermanentDeliveryError, TransientDeliveryError
from ecallgw.gateway.records import OutboxItem
from ecallgw.gateway.sinks.http_webhook import HttpWebhookSink
from tests.gateway.harness import OPERATOR_TOKEN, PROVIDER_TOKEN, SRE_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import make_msd, msd_envelope, until, vin_for
from tests.gateway.receiver import Receiver
from tests.tlskit import Pki

PSAP = "psap-fallback"
ITEM = OutboxItem(id=1, incident_id="inc-tls", revision=1, receiver="psap", signal_at=0.0)
BODY = b'{"incident_id":"inc-tls"}'


def _tokens(**acme_cert: str) -> dict[str, object]:
    """The harness's tokens, plus provider ``acme-cert`` (tps acme) named by a client certificate."""
    return {
        "tokens": [
            {"name": "acme", "role": "provider", "tps": "acme", "token": PROVIDER_TOKEN},
            {"name": "acme-cert", "role": "provider", "tps": "acme", **acme_cert},
            {"name": "alice", "role": "operator", "token": OPERATOR_TOKEN},
            {"name": "bob", "role": "sre", "token": SRE_TOKEN},
        ]
    }


def https_gateway(tmp_path: Path, pki: Pki, psap_url: str, **acme_cert: str) -> Config:
    return gateway_config(
        tmp_path,
        broker=None,
        psap_url=psap_url,
        http={
            "tls_cert_file": str(pki.server.cert),
            "tls_key_file": str(pki.server.key),
            "client_ca_file": str(pki.ca),
        },
        auth=_tokens(**(acme_cert or {"cert_cn": "acme"})),
    )


def _signal(n: int) -> bytes:
    now = time.time()
    return msd_envelope(
        make_msd(vin=vin_for(n), timestamp=int(now), automatic=True), call_id=f"c{n}", sent_at=now
    )


async def _ingest(
    port: int, ctx: ssl.SSLContext, n: int, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    url = f"https://127.0.0.1:{port}/v1/ecall/acme/car-{n}/msd"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url,
            data=_signal(n),
            headers={"Content-Type": "application/msgpack", **(headers or {})},
            ssl=ctx,
        ) as resp,
    ):
        return resp.status, await resp.json()


# --- the gateway's HTTPS server ----------------------------------------------------------------------


async def test_https_ingest_with_a_bearer_token(tmp_path: Path, pki: Pki, receiver: Receiver) -> None:
    async with running_gateway(https_gateway(tmp_path, pki, receiver.url)) as gw:
        assert gw.http is not None
        status, answer = await _ingest(
            gw.http.port,
            pki.client_context(with_cert=False),  # no client certificate: the token says who
            1,
            {"Authorization": f"Bearer {PROVIDER_TOKEN}"},
        )
        assert (status, answer["outcome"]) == (202, "new_incident")
        await until(lambda: len(receiver.accepted) == 1)
        # Plain HTTP on the TLS port gets no answer it could take for one.
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{gw.http.port}/healthz") as resp:
                    await resp.read()


@pytest.mark.parametrize("identity", ["cert_cn", "cert_sha256"])
async def test_a_client_certificate_is_a_provider_without_a_token(
    tmp_path: Path, pki: Pki, receiver: Receiver, identity: str
) -> None:
    value = "acme" if identity == "cert_cn" else pki.client.fingerprint_sha256.upper()
    async with running_gateway(https_gateway(tmp_path, pki, receiver.url, **{identity: value})) as gw:
        assert gw.http is not None
        status, answer = await _ingest(gw.http.port, pki.client_context(), 2)
        assert (status, answer["outcome"]) == (202, "new_incident")
        async with aiohttp.ClientSession() as http:
            ctx = pki.client_context()
            async with http.get(f"https://127.0.0.1:{gw.http.port}/v1/incidents", ssl=ctx) as resp:
                assert resp.status == 403  # it is the provider acme-cert, not an operator
            # A token sent beside the certificate decides, and a wrong one is refused (no fallback).
            async with http.get(
                f"https://127.0.0.1:{gw.http.port}/v1/incidents",
                ssl=ctx,
                headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
            ) as resp:
                assert resp.status == 200
            status, _ = await _ingest(
                gw.http.port, ctx, 3, {"Authorization": "Bearer not-a-known-token-at-all"}
            )
            assert status == 401
            # Without a certificate and without a token: nobody.
            status, _ = await _ingest(gw.http.port, pki.client_context(with_cert=False), 4)
            assert status == 401
        await until(lambda: len(receiver.accepted) == 1)


async def test_a_client_certificate_from_another_ca_is_refused(
    tmp_path: Path, pki: Pki, receiver: Receiver
) -> None:
    async with running_gateway(https_gateway(tmp_path, pki, receiver.url)) as gw:
        assert gw.http is not None
        rogue = ssl.create_default_context(cafile=str(pki.ca))
        rogue.load_cert_chain(str(pki.rogue_client.cert), str(pki.rogue_client.key))  # CN acme, other CA
        with pytest.raises(aiohttp.ClientError):
            await _ingest(gw.http.port, rogue, 5)
        assert (await gw.store.counts())["journal"] == 0


async def test_a_client_trusting_another_ca_cannot_connect(
    tmp_path: Path, pki: Pki, receiver: Receiver
) -> None:
    async with running_gateway(https_gateway(tmp_path, pki, receiver.url)) as gw:
        assert gw.http is not None
        wrong = ssl.create_default_context(cafile=str(pki.other_ca))
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await _ingest(gw.http.port, wrong, 6, {"Authorization": f"Bearer {PROVIDER_TOKEN}"})
        assert (await gw.store.counts())["journal"] == 0


def _serve(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    sets = [
        "mqtt.enabled=false",
        f"store.path={tmp_path / 'gw.sqlite3'}",
        "receivers.psap-fallback.kind=operator",
        *overrides,
    ]
    return subprocess.run(
        [sys.executable, "-m", "ecallgw", "serve", *(a for s in sets for a in ("--set", s))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (("http.host=0.0.0.0",), "http.host"),
        (("http.host=::",), "http.host"),
        (("http.tls_cert_file=CERT",), "http.tls_key_file"),
        (("http.tls_cert_file=/nonexistent/cert.pem", "http.tls_key_file=KEY"), "http.tls_cert_file"),
        (("http.tls_cert_file=CERT", "http.tls_key_file=OTHER_KEY"), "http.tls_cert_file"),
        (
            ("http.tls_cert_file=CERT", "http.tls_key_file=KEY", "http.client_ca_file=/nonexistent"),
            "http.client_ca_file",
        ),
    ],
)
def test_serve_refuses_plaintext_off_loopback_and_bad_tls_files(
    tmp_path: Path, pki: Pki, overrides: tuple[str, ...], key: str
) -> None:
    files = {"CERT": pki.server.cert, "OTHER_KEY": pki.client.key, "KEY": pki.server.key}
    sets = [
        o.split("=", 1)[0] + "=" + str(files.get(o.split("=", 1)[1], o.split("=", 1)[1])) for o in overrides
    ]
    done = _serve(tmp_path, "http.port=0", *sets)
    assert done.returncode == 2, done.stderr
    # One line says why (a file is loaded at start, after the JSON log lines of the start so far).
    [line] = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert line.startswith(f"ecallgw: config {key!r}"), done.stderr
    assert "Traceback" not in done.stderr
    if key == "http.host":
        assert done.stderr.strip() == line  # refused before anything starts


async def test_plaintext_off_loopback_only_when_allowed(tmp_path: Path, pki: Pki, receiver: Receiver) -> None:
    with pytest.raises(ConfigError) as info:
        gateway_config(tmp_path, broker=None, psap_url=receiver.url, http={"host": "0.0.0.0"})
    assert info.value.key == "http.host"
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        gateway_config(tmp_path, broker=None, psap_url=receiver.url, http={"host": host})
    # HTTPS may listen anywhere.
    gateway_config(
        tmp_path,
        broker=None,
        psap_url=receiver.url,
        http={"host": "0.0.0.0", "tls_cert_file": str(pki.server.cert), "tls_key_file": str(pki.server.key)},
    )
    cfg = gateway_config(
        tmp_path, broker=None, psap_url=receiver.url, http={"host": "0.0.0.0", "allow_plaintext": True}
    )
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
        assert gw.http is not None
        async with http.get(f"http://127.0.0.1:{gw.http.port}/healthz") as resp:
            assert resp.status == 200


def test_tls_configuration_is_checked(tmp_path: Path, pki: Pki) -> None:
    def refused(tree: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as info:
            load_config(base=tree)
        return info.value.key

    cert = {"tls_cert_file": str(pki.server.cert), "tls_key_file": str(pki.server.key)}
    assert refused({"http": {"client_ca_file": str(pki.ca)}}) == "http.client_ca_file"
    assert refused({"http": {**cert, "require_client_cert": True}}) == "http.require_client_cert"
    no_ca = {"auth": {"tokens": [{"name": "a", "role": "provider", "tps": "a", "cert_cn": "a"}]}}
    assert refused({"http": cert, **no_ca}) == "auth.tokens[0].cert_cn"
    bad_fp = {"auth": {"tokens": [{"name": "a", "role": "provider", "tps": "a", "cert_sha256": "abc"}]}}
    assert (
        refused({"http": {**cert, "client_ca_file": str(pki.ca)}, **bad_fp}) == "auth.tokens[0].cert_sha256"
    )
    nothing = {"auth": {"tokens": [{"name": "a", "role": "provider", "tps": "a"}]}}
    assert refused(nothing) == "auth.tokens[0].token"
    twice = {
        "auth": {
            "tokens": [
                {"name": "a", "role": "provider", "tps": "a", "cert_cn": "acme"},
                {"name": "b", "role": "provider", "tps": "b", "cert_cn": "acme"},
            ]
        }
    }
    assert refused({"http": {**cert, "client_ca_file": str(pki.ca)}, **twice}) == "auth.tokens[1].cert_cn"

    def receiver(**table: object) -> dict[str, Any]:
        return {"receivers": {"psap": {"kind": "http", **table}}}

    assert refused(receiver(url="http://psap.example/in")) == "receivers.psap.url"
    assert refused(receiver(url="http://10.0.0.1/in")) == "receivers.psap.url"
    load_config(base=receiver(url="http://psap.example/in", allow_plaintext=True))
    load_config(base=receiver(url="http://127.0.0.1:9/in"))
    assert refused(receiver(url="http://127.0.0.1:9/in", ca_file=str(pki.ca))) == "receivers.psap.ca_file"
    https = "https://psap.example/in"
    assert refused(receiver(url=https, cert_file=str(pki.client.cert))) == "receivers.psap.key_file"
    assert refused(receiver(url=https, pin_sha256="12ab")) == "receivers.psap.pin_sha256"
    pins = f"{pki.server.spki_sha256},{pki.rogue_server.fingerprint_sha256.upper()}"
    assert load_config(base=receiver(url=https, pin_sha256=pins)).receivers["psap"].pin_sha256 == pins
    with pytest.raises(ConfigError) as info:  # files are loaded when the sink is made, at start
        HttpWebhookSink(ReceiverConfig(name="psap", url=https, ca_file=str(tmp_path / "none.pem")))
    assert info.value.key == "receivers.psap.ca_file"
    with pytest.raises(ConfigError) as info:
        HttpWebhookSink(
            ReceiverConfig(
                name="psap", url=https, cert_file=str(pki.client.cert), key_file=str(pki.server.key)
            )
        )
    assert info.value.key == "receivers.psap.cert_file"


# --- HTTPS receivers --------------------------------------------------------------------------------


def psap_context(pki: Pki) -> ssl.SSLContext:
    """The PSAP's server side: the test CA's certificate for 127.0.0.1, a client certificate required."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.server.cert), str(pki.server.key))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@pytest.fixture
async def tls_psap(pki: Pki) -> Any:
    recv = Receiver(tls=psap_context(pki))
    await recv.start()
    try:
        yield recv
    finally:
        await recv.stop()


def psap_table(url: str, **tls: object) -> dict[str, object]:
    return {
        PSAP: {
            "kind": "http",
            "url": url,
            "backoff_base_s": 0.02,
            "backoff_cap_s": 0.1,
            "breaker_cooldown_s": 0.2,
            "breaker_probe_initial_s": 0.1,
            **tls,
        }
    }


async def _post_plain(gw_port: int, n: int) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{gw_port}/v1/ecall/acme/car-{n}/msd",
            data=_signal(n),
            headers={"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"},
        ) as resp,
    ):
        assert resp.status == 202


async def test_an_https_receiver_with_mutual_tls_gets_the_document(
    tmp_path: Path, pki: Pki, tls_psap: Receiver
) -> None:
    client = {"ca_file": str(pki.ca), "cert_file": str(pki.client.cert), "key_file": str(pki.client.key)}
    cfg = gateway_config(
        tmp_path, broker=None, psap_url=tls_psap.url, receivers=psap_table(tls_psap.url, **client)
    )
    assert tls_psap.url.startswith("https://127.0.0.1:")
    async with running_gateway(cfg) as gw:
        assert gw.http is not None
        await _post_plain(gw.http.port, 7)
        await until(lambda: len(tls_psap.accepted) == 1)
        [row] = await gw.store.list_incidents()
    [got] = tls_psap.accepted
    assert got.key == f"{row.incident_id}:1"
    assert got.client_cn == "acme"  # the gateway presented its client certificate


async def test_an_https_receiver_with_an_unknown_ca_is_retried_not_delivered(
    tmp_path: Path, pki: Pki, tls_psap: Receiver
) -> None:
    client = {
        "ca_file": str(pki.other_ca),
        "cert_file": str(pki.client.cert),
        "key_file": str(pki.client.key),
    }
    cfg = gateway_config(
        tmp_path, broker=None, psap_url=tls_psap.url, receivers=psap_table(tls_psap.url, **client)
    )
    async with running_gateway(cfg) as gw:
        assert gw.http is not None
        await _post_plain(gw.http.port, 8)
        sample = gw.metrics.registry.get_sample_value

        def attempts(result: str) -> float:
            return sample("ecallgw_delivery_attempts_total", {"receiver": PSAP, "result": result}) or 0.0

        await until(lambda: attempts("transient") >= 3)
        assert await gw.store.dead_letters() == []
        assert attempts("ok") == 0
    assert tls_psap.requests == []
    # The sink says why: the certificate, transiently (a receiver mid-rotation may come right).
    sink = HttpWebhookSink(
        ReceiverConfig(
            name="psap",
            url=tls_psap.url,
            timeout_s=2.0,
            ca_file=str(pki.other_ca),
            cert_file=str(pki.client.cert),
            key_file=str(pki.client.key),
        )
    )
    try:
        with pytest.raises(TransientDeliveryError) as info:
            await sink.deliver(ITEM, BODY, "application/json")
    finally:
        await sink.aclose()
    assert info.value.reason == "tls"
    assert "certificate" in info.value.detail.lower()


async def test_a_pin_mismatch_is_dead_lettered_tls_pin(tmp_path: Path, pki: Pki, tls_psap: Receiver) -> None:
    client = {
        "ca_file": str(pki.ca),
        "cert_file": str(pki.client.cert),
        "key_file": str(pki.client.key),
        "pin_sha256": pki.rogue_server.spki_sha256,  # not the key the PSAP serves
    }
    cfg = gateway_config(
        tmp_path, broker=None, psap_url=tls_psap.url, receivers=psap_table(tls_psap.url, **client)
    )
    async with running_gateway(cfg) as gw:
        assert gw.http is not None
        await _post_plain(gw.http.port, 9)
        async with asyncio.timeout(10):
            while not (dead := await gw.store.dead_letters()):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    [letter] = dead
    assert (letter["receiver"], letter["reason"], letter["attempts"]) == (PSAP, "tls_pin", 1)
    assert pki.server.fingerprint_sha256 in letter["detail"]  # what it saw instead
    assert f"receivers.{PSAP}.pin_sha256" in letter["detail"]
    assert tls_psap.requests == []  # nothing was sent to the impostor


@pytest.mark.parametrize("which", ["spki", "cert", "second"])
async def test_a_matching_pin_delivers(pki: Pki, tls_psap: Receiver, which: str) -> None:
    pin = {
        "spki": pki.server.spki_sha256,
        "cert": ":".join(pki.server.fingerprint_sha256[i : i + 2] for i in range(0, 64, 2)).upper(),
        "second": f"{pki.rogue_server.spki_sha256}, {pki.server.spki_sha256}",
    }[which]
    sink = HttpWebhookSink(
        ReceiverConfig(
            name="psap",
            url=tls_psap.url,
            timeout_s=2.0,
            ca_file=str(pki.ca),
            cert_file=str(pki.client.cert),
            key_file=str(pki.client.key),
            pin_sha256=pin,
        )
    )
    try:
        assert await sink.deliver(ITEM, BODY, "application/json") == 200
        assert await sink.deliver(ITEM, BODY, "application/json") == 200  # a kept-alive connection
    finally:
        await sink.aclose()
    assert [r.body for r in tls_psap.accepted] == [BODY, BODY]


async def test_a_wrong_host_certificate_or_missing_client_cert_is_transient(pki: Pki) -> None:
    # The PSAP serves a certificate of the right CA for another host name.
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.wrong_host.cert), str(pki.wrong_host.key))
    recv = Receiver(tls=ctx)
    await recv.start()
    strict = Receiver(tls=psap_context(pki))
    await strict.start()
    sinks = [
        HttpWebhookSink(ReceiverConfig(name="psap", url=recv.url, timeout_s=2.0, ca_file=str(pki.ca))),
        HttpWebhookSink(ReceiverConfig(name="psap", url=strict.url, timeout_s=2.0, ca_file=str(pki.ca))),
    ]
    try:
        for sink in sinks:
            with pytest.raises(TransientDeliveryError):
                await sink.deliver(ITEM, BODY, "application/json")
    finally:
        for sink in sinks:
            await sink.aclose()
        await recv.stop()
        await strict.stop()
    assert recv.requests == [] and strict.requests == []


async def test_pin_mismatch_is_permanent_at_the_sink(pki: Pki, tls_psap: Receiver) -> None:
    sink = HttpWebhookSink(
        ReceiverConfig(
            name="psap",
            url=tls_psap.url,
            timeout_s=2.0,
            ca_file=str(pki.ca),
            cert_file=str(pki.client.cert),
            key_file=str(pki.client.key),
            pin_sha256=pki.client.fingerprint_sha256,
        )
    )
    try:
        with pytest.raises(PermanentDeliveryError) as info:
            await sink.deliver(ITEM, BODY, "application/json")
    finally:
        await sink.aclose()
    assert info.value.reason == "tls_pin"
    assert tls_psap.requests == []
