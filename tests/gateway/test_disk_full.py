"""Disk full under a running ``ecallgw serve``: a real small filesystem, filled, then freed.

The store lives on a tmpfs of 32 MiB mounted for the test (skipped where ``mount`` is refused; the
store-level test ``tests/gateway/store/test_unwritable.py`` simulates a full disk with SQLite's
``max_page_count`` instead). Once a filler file takes the last byte, the daemon must say so
(``/readyz`` 503 with the reason, ``ecallgw_store_writable`` 0, one WARNING), refuse HTTP ingest
with 503 and Retry-After, stop acknowledging MQTT (the broker keeps what was published), keep
answering reads, and never exit; when the filler goes it writes what it held and what the broker
kept, each signal once, without a restart (one INFO).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.gateway.broker import Mosquitto, free_port
from tests.gateway.faultkit import (
    RECEIVER,
    StoreSpec,
    publish_all,
    readyz,
    scrape,
    serve,
    stream,
    tail,
    until_count,
    write_config,
)
from tests.gateway.harness import PROVIDER_TOKEN, SRE_TOKEN
from tests.gateway.helpers import make_msd, msd_envelope, vin_for
from tests.gateway.receiver import Receiver

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def small_disk(path: Path, size: str = "32m") -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` (root in a container may mount one)."""
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here: {done.stderr.strip()} (store/test_unwritable.py simulates it)"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` with one file; returns it (delete it to give the space back)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            chunk = b"\0" * size
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


async def post_msd(http: aiohttp.ClientSession, port: int, vehicle: str, n: int) -> aiohttp.ClientResponse:
    now = time.time()
    body = msd_envelope(make_msd(vin=vin_for(n), timestamp=int(now)), call_id=f"http-{n}", sent_at=now)
    async with http.post(
        f"http://127.0.0.1:{port}/v1/ecall/acme/{vehicle}/msd",
        data=body,
        headers={"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"},
    ) as resp:
        await resp.read()
        return resp


def calls(n: int, *, first: int) -> list[tuple[str, bytes]]:
    """``n`` automatic eCalls, each its own vehicle and call (VINs from ``vin_for(first)`` on)."""
    now = time.time()
    return [
        (
            f"ecall/v1/acme/v{first + i}/msd",
            msd_envelope(
                make_msd(vin=vin_for(first + i), timestamp=int(now)), call_id=f"c{first + i}", sent_at=now
            ),
        )
        for i in range(n)
    ]


async def _zero(count: Callable[[], Awaitable[int]]) -> int:
    return int(await count() == 0)


def events(log: Path, name: str) -> list[dict[str, object]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == name:
                out.append(record)
    return out


async def test_disk_full_holds_then_recovers_without_restart(tmp_path: Path, mosquitto: Mosquitto) -> None:
    recv = Receiver()
    await recv.start()
    http_port = free_port()
    log = tmp_path / "serve.log"
    before, during = stream(40, prefix="a"), calls(300, first=1000)
    with small_disk(tmp_path / "disk") as disk:
        spec = StoreSpec("sqlite", sqlite_path=disk / "store" / "gw.sqlite3")
        config = write_config(
            tmp_path / "gw.toml", mosquitto, recv, http_port, spec, client_id="gw-full", log_level="info"
        )
        # Small windows, so that most of what is published while full waits on the broker.
        config.write_text(
            config.read_text().replace(
                "reconnect_max_s = 0.5\n", "reconnect_max_s = 0.5\nmax_inflight = 20\n"
            )
            + "[pipeline]\nqueue_size = 50\n"
            + f'[[auth.tokens]]\nname = "acme"\nrole = "provider"\ntps = "acme"\ntoken = "{PROVIDER_TOKEN}"\n'
        )
        store = spec.inspector()
        async with serve(config, http_port, log) as proc, aiohttp.ClientSession() as http:
            await publish_all(mosquitto, before)
            await until_count(store.signals, len(before), timeout_s=30)
            filler = fill(disk)
            publisher = asyncio.create_task(publish_all(mosquitto, during))
            body: dict[str, object] = {}
            async with asyncio.timeout(30):  # the store notices at the first commit that needs space
                while True:
                    status, body = await readyz(http, http_port)
                    if status == 503:
                        break
                    await asyncio.sleep(0.05)
            assert body["checks"]["store_writable"] is False, body  # type: ignore[index]
            assert "disk full" in body["reasons"]["store_writable"], body  # type: ignore[index]
            resp = await post_msd(http, http_port, "h1", 10_000)
            assert resp.status == 503 and int(resp.headers["Retry-After"]) > 0
            async with http.get(  # reads stay up
                f"http://127.0.0.1:{http_port}/v1/dead-letters",
                headers={"Authorization": f"Bearer {SRE_TOKEN}"},
            ) as dead:
                assert dead.status == 200
            assert await scrape(http_port, "ecallgw_store_writable") == 0
            async with asyncio.timeout(60):
                await publisher  # the broker took them all: it keeps what we do not acknowledge
            await asyncio.sleep(2.0)  # held commits retried (and refused) meanwhile
            assert proc.returncode is None, tail(log)
            held_at = await store.signals()
            assert held_at < len(before) + len(during), "everything was stored: the disk was not full"
            assert await store.signals() == held_at  # nothing stored while full
            assert len(events(log, "store_unwritable")) == 1, tail(log)
            # Nothing logged as done before it is committed: a "new incident" line per stored one.
            assert log.read_text().count('"msg": "new incident"') == held_at

            filler.unlink()  # space is back
            total = len(before) + len(during)
            await until_count(store.signals, total, timeout_s=60)
            async with asyncio.timeout(30):
                while (await readyz(http, http_port))[0] != 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert await scrape(http_port, "ecallgw_store_writable") == 1
            resp = await post_msd(http, http_port, "h1", 10_000)  # the provider's retry
            assert resp.status == 202
            await until_count(lambda: _zero(store.pending), 1, timeout_s=60)  # every delivery made
            await asyncio.sleep(0.5)  # a signal stored twice would show up by now
            # Each signal once: nothing lost, no duplicate (redeliveries recognised by digest); one
            # incident per vehicle (triage may add one of its own: a storm of calls has no vehicle).
            assert await store.signals() == total + 1
            vehicles = await store._rows(
                "SELECT vehicle, count(*) FROM incidents WHERE vehicle <> '' GROUP BY vehicle"
            )
            assert len(vehicles) == total + 1 and {n for _, n in vehicles} == {1}
            routed = {f"{i}:{r}" for i, r, receiver, _ in await store.outbox() if receiver == RECEIVER}
            assert recv.keys == routed and len(routed) >= total + 1
            assert proc.returncode is None
        assert len(events(log, "store_unwritable")) == 1 and len(events(log, "store_writable")) == 1, tail(
            log
        )
        assert "Traceback" not in log.read_text(), tail(log)
    await recv.stop()


async def test_stop_while_full_then_restart_loses_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """SIGTERM while commits are held: a prompt, clean exit; what was held was not acknowledged,
    so the broker hands it to the next start, which stores each signal once."""
    recv = Receiver()
    await recv.start()
    http_port = free_port()
    log = tmp_path / "serve.log"
    before, during = calls(10, first=4000), calls(100, first=5000)
    with small_disk(tmp_path / "disk") as disk:
        spec = StoreSpec("sqlite", sqlite_path=disk / "store" / "gw.sqlite3")
        config = write_config(
            tmp_path / "gw.toml", mosquitto, recv, http_port, spec, client_id="gw-full-stop", log_level="info"
        )
        store = spec.inspector()
        async with serve(config, http_port, log), aiohttp.ClientSession() as http:
            await publish_all(mosquitto, before)
            await until_count(store.signals, len(before), timeout_s=30)
            filler = fill(disk)
            await publish_all(mosquitto, during)
            async with asyncio.timeout(30):
                while (await readyz(http, http_port))[0] != 503:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            t0 = time.monotonic()
        stopped_in = time.monotonic() - t0  # serve() sent SIGTERM and saw exit code 0
        assert stopped_in < 10, stopped_in
        assert len(events(log, "store_unwritable_stop")) == 1, tail(log)
        held_at = await store.signals()
        assert held_at < len(before) + len(during)
        filler.unlink()
        total = len(before) + len(during)
        async with serve(config, http_port, log):
            await until_count(store.signals, total, timeout_s=60)
            await until_count(lambda: _zero(store.pending), 1, timeout_s=60)
            await asyncio.sleep(0.5)
            assert await store.signals() == total  # each once: nothing lost, nothing twice
        assert "Traceback" not in log.read_text(), tail(log)
    await recv.stop()
