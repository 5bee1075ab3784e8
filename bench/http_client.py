"""What does one webhook POST cost the gateway's process? Our plain-http client beside aiohttp's.

    nice .venv/bin/python bench/http_client.py [--n 20000] [--concurrency 64] [--rounds 3]

A local receiver (aiohttp on uvloop, in another process) answers every POST with 200 and a small
JSON body. In this process, on uvloop like ``ecallgw serve``, ``concurrency`` workers send ``n``
POSTs of a ~1.5 kB JSON document in total, through:

- ``HttpWebhookSink.deliver`` to an ``http://`` URL: our keep-alive HTTP/1.1 pool (``concurrency``
  connections), with the sink's timeout and answer classification, exactly as the forwarder calls it;
- aiohttp's ``ClientSession.post`` (``TCPConnector(limit=concurrency)``, a total timeout, body read),
  the reference: what the sink would cost on aiohttp.

The figure is CPU time of this (client) process per request, user + system, from
``time.process_time``; the receiver's CPU is not in it. Rounds alternate between the two clients; the
table shows the best and the median round. Absolute figures move with the load of a shared machine;
compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecallgw.config import ReceiverConfig
from ecallgw.gateway.records import OutboxItem
from ecallgw.gateway.sinks.http_webhook import HttpWebhookSink

ANSWER = b'{"accepted":true}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve(port: int) -> None:
    """The receiver process: 200 with a small JSON body to every POST."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/incidents", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def document() -> bytes:
    """A JSON document the size of a PSAP incident document."""
    doc = {
        "incident_id": "0193f2a4-7c1e-7b3a-9f00-5e2d1c0b9a87",
        "revision": 1,
        "severity": {"level": "high", "score": 0.83, "reasons": ["automatic", "rollover", "passengers"]},
        "msd": {
            "messageIdentifier": 1,
            "control": {"automaticActivation": True, "testCall": False, "positionCanBeTrusted": True},
            "vehicleLocation": {"positionLatitude": 174_400_000, "positionLongitude": 48_400_000},
            "vehicleDirection": 45,
            "numberOfPassengers": 2,
            "additionalData": "x" * 600,
        },
        "forwarded_at": "2026-11-26T13:45:00.123Z",
    }
    return json.dumps(doc).encode()


async def run_workers(n: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> tuple[float, float]:
    """Send ``n`` requests with ``concurrency`` workers; (CPU seconds, wall seconds)."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await one(i)

    cpu, wall = time.process_time(), time.perf_counter()
    async with asyncio.timeout(600):
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.process_time() - cpu, time.perf_counter() - wall


async def round_ours(url: str, n: int, concurrency: int, body: bytes) -> tuple[float, float]:
    sink = HttpWebhookSink(ReceiverConfig(name="psap", url=url, timeout_s=5.0, concurrency=concurrency))

    async def one(i: int) -> None:
        item = OutboxItem(id=i, incident_id=f"inc-{i}", revision=1, receiver="psap", signal_at=0.0)
        status = await sink.deliver(item, body, "application/json")
        if status != 200:
            raise RuntimeError(f"status {status}")

    try:
        await run_workers(concurrency, concurrency, one)  # open the connections outside the measurement
        return await run_workers(n, concurrency, one)
    finally:
        await sink.aclose()


async def round_aiohttp(url: str, n: int, concurrency: int, body: bytes) -> tuple[float, float]:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=5.0),
        headers={"User-Agent": "ecallgw"},
    )

    async def one(i: int) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"inc-{i}:1"}
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"status {resp.status}")

    try:
        await run_workers(concurrency, concurrency, one)
        return await run_workers(n, concurrency, one)
    finally:
        await session.close()


async def measure(args: argparse.Namespace, url: str) -> dict[str, list[tuple[float, float]]]:
    body = document()
    results: dict[str, list[tuple[float, float]]] = {"ours (sink.deliver)": [], "aiohttp ClientSession": []}
    for _ in range(args.rounds):
        results["ours (sink.deliver)"].append(await round_ours(url, args.n, args.concurrency, body))
        results["aiohttp ClientSession"].append(await round_aiohttp(url, args.n, args.concurrency, body))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="requests per round and client")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (and connections)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per client, alternating")
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None
        if receiver.stdout.readline().strip() != "ready":
            print("the receiver did not start", file=sys.stderr)
            return 1
        url = f"http://127.0.0.1:{port}/incidents"
        results = uvloop.run(measure(args, url))
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    print(
        f"{args.n} POSTs per round, {args.concurrency} in flight, {args.rounds} rounds,"
        f" ~{len(document())} B body"
    )
    print(f"{'client':<24} {'CPU us/request best':>20} {'median':>8} {'requests/s (wall) best':>24}")
    for name, rounds in results.items():
        per = [cpu / args.n * 1e6 for cpu, _ in rounds]
        rate = max(args.n / wall for _, wall in rounds)
        print(f"{name:<24} {min(per):>20.1f} {statistics.median(per):>8.1f} {rate:>24,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
