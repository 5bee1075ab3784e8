"""How much of the load test's figure is the harness? The gateway beside a bare relay, same run.

The reference replaces ``ecallgw serve`` with the thinnest possible gateway: a separate process that
subscribes with aiomqtt (QoS 1), unpacks each envelope's ``call_id`` and posts a minimal incident
document to the simulated operator desk and PSAP, storing nothing and deciding nothing. Everything
else (fleet, open-loop driver, mosquitto, simulated PSAP, report) is the load test's own. If the
reference keeps up at rates where the gateway does not, the gateway is what limits the figure in
docs/performance.md, not the harness.

    nice .venv/bin/python bench/loadtest_reference.py --rates 200,400,600 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import aiohttp
import aiomqtt
import msgpack

from ecallgw.simulators.load import LoadSpec, environment, run_load
from ecallgw.simulators.report import LoadReport


async def relay(broker_port: int, psap_port: int) -> None:
    """The reference 'gateway': MQTT in, two JSON posts out, nothing in between."""
    gate = asyncio.Semaphore(256)
    tasks: set[asyncio.Task[None]] = set()
    async with (
        aiohttp.ClientSession() as session,
        aiomqtt.Client("127.0.0.1", broker_port, identifier="reference-relay") as client,
    ):
        await client.subscribe("ecall/v1/+/+/+", qos=1)
        print("ready", flush=True)

        async def forward(tps: str, vehicle: str, call_id: str) -> None:
            doc = json.dumps(
                {
                    "incident_id": call_id,
                    "revision": 1,
                    "status": "open",
                    "call": {"tps": tps, "vehicle": vehicle, "call_id": call_id},
                }
            ).encode()
            try:
                for receiver in ("operator", "psap-fallback"):
                    async with (
                        asyncio.timeout(10),
                        session.post(
                            f"http://127.0.0.1:{psap_port}/{receiver}",
                            data=doc,
                            headers={"Content-Type": "application/json", "Idempotency-Key": f"{call_id}:1"},
                        ) as resp,
                    ):
                        await resp.read()
            finally:
                gate.release()

        async for message in client.messages:
            _, _, tps, vehicle, kind = str(message.topic).split("/")
            if kind != "msd" or not isinstance(message.payload, bytes):
                continue
            call_id = str(msgpack.unpackb(message.payload)["call_id"])
            await gate.acquire()
            task = asyncio.create_task(forward(tps, vehicle, call_id))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


async def _run(rate: float, duration: float, workdir: Path, *, reference: bool) -> LoadReport:
    spec = LoadSpec(rate=rate, duration_s=duration, seed=int(rate), drain_s=30.0)
    if not reference:
        async with environment(workdir) as env:
            report, *_ = await run_load(spec, env)
            return report
    # No gateway is spawned when a URL is given; the relay stands in for it.
    async with environment(workdir, gateway_url="http://127.0.0.1:9") as env:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "relay",
            str(env.mqtt_port),
            str(env.psap.port),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(10):
                await proc.stdout.readline()
            report, *_ = await run_load(spec, env)
            return report
        finally:
            proc.terminate()
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()


def _row(name: str, rate: float, r: LoadReport) -> str:
    return (
        f"{name:<10} {rate:8.0f} {r.delivered_rate:11.0f} {r.latency.p50 * 1000:8.1f} "
        f"{r.latency.p99 * 1000:8.1f} {r.latency.max * 1000:8.1f} {r.lost:5d} {r.duplicates:4d}"
    )


async def main(rates: list[float], duration: float) -> None:
    print(
        f"{'':<10} {'offered/s':>8} {'delivered/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'lost':>5} {'dup':>4}"
    )
    with tempfile.TemporaryDirectory(prefix="ecallgw-bench-load-") as tmp:
        for i, rate in enumerate(rates):
            ref = await _run(rate, duration, Path(tmp) / f"ref{i}", reference=True)
            print(_row("reference", rate, ref), flush=True)
            gw = await _run(rate, duration, Path(tmp) / f"gw{i}", reference=False)
            print(_row("ecallgw", rate, gw), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "relay":
        import uvloop

        uvloop.run(relay(int(sys.argv[2]), int(sys.argv[3])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="200,400,600", help="comma-separated offered rates (signals/s)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    args = parser.parse_args()
    import uvloop

    uvloop.run(main([float(r) for r in args.rates.split(",")], args.duration))
