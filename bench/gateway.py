"""How fast is the gateway end to end, beside a bare aiomqtt subscriber measured in the same run?

    .venv/bin/python bench/gateway.py [--n 20000] [--seconds 10]

1. Bare receive rate: a persistent aiomqtt (uvloop) subscriber that only counts, draining ``n`` QoS 1
   MSD envelopes the broker queued for it while it was away (so the publisher cannot be the limit).
2. Gateway rate: ``ecallgw serve`` (a subprocess, embedded defaults: synchronous=full, group commit)
   draining ``n`` queued automatic eCalls of ``n`` vehicles: each is decoded, triaged, stored with its
   outbox entries, acknowledged, and delivered as a JSON document by HTTP POST to a local receiver
   (and to the in-process operator stream). Rate = documents confirmed per second at the receiver.
3. Floor: a minimal relay in a subprocess, the least any gateway with our duties does per message
   in this stack: aiomqtt (uvloop) with manual acknowledgement, the envelope unpacked for its call
   id, one row per message in SQLite (WAL, synchronous=full, one commit per event-loop turn, in a
   writer thread), PUBACK after the commit, and one small JSON document POSTed to the same receiver
   through the gateway's own keep-alive HTTP/1.1 client. No MSD decode, no triage, no revisions,
   outbox or retries. Rate = documents confirmed per second at the receiver.
4. Added latency at half the gateway's rate: an open-loop publisher (another process) sends for
   ``seconds`` at half the rate of step 2; latency runs from each message's scheduled send time to
   its arrival, for the bare subscriber and for the gateway's receiver; the gateway's added latency
   is the difference of the two distributions' percentiles.

Prints one table. Absolute figures drift by up to 30 % between runs on shared machines (transport.md);
compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import msgpack
import uvloop
from aiohttp import web

from ecallgw.codecs import msd as msd_codec
from ecallgw.gateway import mqtt_adapter
from ecallgw.model import (
    ControlType,
    Msd,
    MsdMessage,
    MsdStructure,
    VehicleIdentificationNumber,
    VehicleLocation,
    VehiclePropulsionStorageType,
    VehicleType,
)

SRE_TOKEN = "bench-sre-token-0000000001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def envelope(i: int, sent_at: float, prefix: str) -> tuple[str, bytes]:
    """An automatic eCall of vehicle ``i`` (its own VIN and key), call id ``{prefix}{i}``."""
    serial = f"{i:06d}"[-6:]
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    # A VIN of its own per phase: the same VIN calling again would be a redial (joins an incident).
    vin = f"WVWZZZ1KZ{letters[(i // 1_000_000) % 23]}{letters[ord(prefix[0]) % 23]}{serial}"
    value = Msd(
        version=2,
        msd=MsdMessage(
            msd_structure=MsdStructure(
                message_identifier=1,
                control=ControlType(
                    automatic_activation=True,
                    test_call=False,
                    position_can_be_trusted=True,
                    vehicle_type=VehicleType.passengerVehicleClassM1,
                ),
                vehicle_identification_number=VehicleIdentificationNumber.from_vin(vin),
                vehicle_propulsion_storage_type=VehiclePropulsionStorageType(gasoline_tank_present=True),
                timestamp=int(sent_at),
                # Spread over Europe (36..60 N, 9 W..30 E): crashes of one place are rare, and
                # triage links incidents within 300 m into scenes.
                vehicle_location=VehicleLocation(
                    position_latitude=int((36 + (i * 7919 % 24_000) / 1000) * 3_600_000),
                    position_longitude=int((-9 + (i * 104_729 % 39_000) / 1000) * 3_600_000),
                ),
                vehicle_direction=10,
                number_of_passengers=1,
            )
        ),
    )
    body = msgpack.packb(
        {"call_id": f"{prefix}{i}", "msd": msd_codec.encode(value), "sent_at": sent_at}, use_bin_type=True
    )
    return f"ecall/v1/bench/{prefix}{i}/msd", body


# --- the publisher (a child process) ---------------------------------------------------------------


async def publish(port: int, n: int, rate: float, start: float, prefix: str) -> None:
    """Publish ``n`` envelopes with QoS 1: as fast as possible (rate 0) or open-loop at ``rate``."""
    items = [envelope(i, start + (i / rate if rate else 0.0), prefix) for i in range(n)]
    gate = asyncio.Semaphore(1000)
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=1000, timeout=60) as client:
        client.pending_calls_threshold = 2000
        tasks = set()

        async def one(topic: str, body: bytes) -> None:
            try:
                await client.publish(topic, body, qos=1)
            finally:
                gate.release()

        for i, (topic, body) in enumerate(items):
            if rate:
                delay = start + i / rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await gate.acquire()
            t = asyncio.create_task(one(topic, body))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


def spawn_relay(port: int, url: str, db: Path, n: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "relay", str(port), url, str(db), str(n)], stdout=subprocess.PIPE
    )


def spawn_publisher(port: int, n: int, rate: float, start: float, prefix: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "publish", str(port), str(n), str(rate), str(start), prefix]
    )


# --- the floor relay (a child process) ------------------------------------------------------------


async def relay(port: int, url: str, db: str, n: int) -> None:
    """Receive → store (group commit) → PUBACK → POST, nothing else, until ``n`` are confirmed."""
    import sqlite3
    import threading

    import orjson

    from ecallgw.gateway.sinks.http_webhook import _Http11Pool

    loop = asyncio.get_running_loop()
    pool = _Http11Pool(url, 64, {"Content-Type": "application/json"}, 10.0)
    done = asyncio.Event()
    confirmed = 0
    jobs: list[tuple[int, str, bytes]] = []
    batches: list[list[tuple[int, str, bytes]] | None] = []
    wake = threading.Condition()

    def writer() -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY, topic TEXT, payload BLOB)")
        while True:
            with wake:
                while not batches:
                    wake.wait()
                batch = batches.pop(0)
            if batch is None:
                return
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO journal (topic, payload) VALUES (?, ?)", [j[1:] for j in batch])
            conn.execute("COMMIT")
            loop.call_soon_threadsafe(committed, batch)

    outgoing: asyncio.Queue[str] = asyncio.Queue()

    async def poster() -> None:  # 64 of them, as the gateway's lane has `concurrency` workers
        nonlocal confirmed
        while True:
            call_id = await outgoing.get()
            body = orjson.dumps({"incident_id": call_id, "revision": 1, "call": {"call_id": call_id}})
            answer = await pool.post(body, {"Idempotency-Key": f"{call_id}:1"})
            assert 200 <= answer[0] < 300, answer[0]
            confirmed += 1
            if confirmed >= n:
                done.set()

    def committed(batch: list[tuple[int, str, bytes]]) -> None:
        for mid, _, payload in batch:
            mqtt_adapter.ack(client, mid, 1)
            outgoing.put_nowait(msgpack.unpackb(payload)["call_id"])

    def hand_over() -> None:
        batch = jobs[:]
        jobs.clear()
        with wake:
            batches.append(batch)
            wake.notify()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    client = aiomqtt.Client("127.0.0.1", port, identifier="bench-relay", clean_session=False)
    mqtt_adapter.enable_manual_ack(client)  # as the gateway's MQTT source does

    async def consume() -> None:
        # Queued messages straight from aiomqtt's queue, as the gateway's source takes them (its
        # iterator makes a task per message).
        messages = aiter(client.messages)
        queued = mqtt_adapter.message_queue(client)
        while True:
            message = queued.get_nowait() if queued.qsize() else await anext(messages)
            assert isinstance(message.payload, bytes)
            if not jobs:
                loop.call_soon(hand_over)
            jobs.append((message.mid, message.topic.value, message.payload))

    async with client:
        await client.subscribe("ecall/v1/+/+/+", qos=1)
        cpu0 = time.process_time()  # start-up (imports, connect) is not per-message work
        workers = [asyncio.create_task(poster()) for _ in range(64)]
        consumer = asyncio.create_task(consume())
        async with asyncio.timeout(600):
            await done.wait()
        print(time.process_time() - cpu0, flush=True)
        for task in [consumer, *workers]:
            task.cancel()
        await asyncio.gather(consumer, *workers, return_exceptions=True)
    with wake:
        batches.append(None)
        wake.notify()
    await pool.aclose()


# --- the parts of the run --------------------------------------------------------------------------


class Broker:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)
        self.port = free_port()
        conf = directory / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_inflight_messages 1000\nmax_queued_messages 0\n"
        )
        binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
        assert binary, "mosquitto is not installed"
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


async def bare_subscriber(
    port: int, n: int, *, latency: bool, client_id: str = "bench-bare"
) -> tuple[float, list[float]]:
    """Receive ``n`` messages doing nothing else; rate and (from the envelope's sent_at) latencies.

    The default client id has a persistent session subscribed before (its queue is drained);
    another id gets a clean session.
    """
    lat: list[float] = []
    persistent = client_id == "bench-bare"
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=client_id, clean_session=not persistent
    ) as client:
        await client.subscribe("ecall/v1/+/+/+", qos=1)
        count = 0
        first = last = 0.0
        async with asyncio.timeout(300):
            async for message in client.messages:
                now = time.time()
                if count == 0:
                    first = now
                count += 1
                last = now
                if latency:
                    payload = message.payload
                    assert isinstance(payload, bytes)
                    lat.append(now - msgpack.unpackb(payload)["sent_at"])
                if count == n:
                    break
    return (n - 1) / (last - first), lat


async def subscribe_once(port: int, client_id: str) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier=client_id, clean_session=False) as client:
        await client.subscribe("ecall/v1/+/+/+", qos=1)


class Receiver:
    """The local PSAP: counts documents, records arrival times by call id.

    ``sink`` http: a webhook (aiohttp server) the gateway POSTs to; mqtt: a subscriber of
    ``psap/v1/psap-fallback/incidents`` the gateway publishes to (QoS 1).
    """

    def __init__(self, sink: str, broker_port: int) -> None:
        self.sink = sink
        self.broker_port = broker_port
        self.port = free_port()
        self.arrivals: dict[str, float] = {}
        self.keys: set[str] = set()
        self.done = asyncio.Event()
        self.expect = 0
        self.prefix = ""
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None

    def _record(self, body: bytes, now: float) -> None:
        doc = json.loads(body)
        self.keys.add(f"{doc['incident_id']}:{doc['revision']}")
        call_id = doc["call"]["call_id"]
        if call_id.startswith(self.prefix):
            self.arrivals.setdefault(call_id, now)
        if len(self.arrivals) >= self.expect:
            self.done.set()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self._record(body, time.time())
        return web.Response(status=200)

    async def _subscribe(self, ready: asyncio.Event) -> None:
        async with aiomqtt.Client(
            "127.0.0.1", self.broker_port, identifier="bench-psap", clean_session=False
        ) as c:
            await c.subscribe("psap/v1/psap-fallback/incidents", qos=1)
            ready.set()
            async for message in c.messages:
                assert isinstance(message.payload, bytes)
                self._record(message.payload, time.time())

    async def start(self) -> None:
        if self.sink == "mqtt":
            ready = asyncio.Event()
            self._task = asyncio.create_task(self._subscribe(ready))
            await ready.wait()
            return
        app = web.Application()
        app.router.add_post("/psap", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    @property
    def url(self) -> str:
        """The webhook's address."""
        return f"http://127.0.0.1:{self.port}/psap"

    def receiver_toml(self) -> str:
        if self.sink == "mqtt":
            return '[receivers.psap-fallback]\nkind = "mqtt"\nconcurrency = 64\n'
        return (
            f'[receivers.psap-fallback]\nkind = "http"\nurl = "http://127.0.0.1:{self.port}/psap"\n'
            "concurrency = 64\n"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()


class Gateway:
    def __init__(
        self, workdir: Path, broker: Broker, receiver: Receiver, synchronous: str, dsn: str = ""
    ) -> None:
        self.http_port = free_port()
        self.config = workdir / "gw.toml"
        store = (
            f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\nreplica_id = "bench"\n'
            if dsn
            else f'[store]\npath = "{workdir / "gw.sqlite3"}"\nsynchronous = "{synchronous}"\n'
        )
        self.config.write_text(
            store + f'[mqtt]\nport = {broker.port}\nclient_id = "bench-gateway"\n'
            f"[http]\nport = {self.http_port}\n"
            f'[[auth.tokens]]\nname = "sre"\nrole = "sre"\ntoken = "{SRE_TOKEN}"\n'
            + receiver.receiver_toml()
            + '[log]\nlevel = "warning"\n'
        )
        self.log = workdir / "gw.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ecallgw", "serve", "--config", str(self.config)], stderr=err
            )

    async def ready(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            while True:
                try:
                    async with http.get(
                        f"http://127.0.0.1:{self.http_port}/readyz",
                        headers={"Authorization": f"Bearer {SRE_TOKEN}"},
                    ) as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the gateway process used so far (Linux /proc)."""
        assert self.proc is not None
        return proc_cpu_s(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
            self.proc = None


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def note(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(
    n: int, seconds: float, synchronous: str, sink: str, latency_rate: float, dsn: str = ""
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="ecallgw-bench-"))
    broker = Broker(workdir / "mosquitto")
    receiver = Receiver(sink, broker.port)
    await receiver.start()
    gateway = Gateway(workdir, broker, receiver, synchronous, dsn)
    try:
        # 1. bare receive rate
        note("bare: queueing")
        await subscribe_once(broker.port, "bench-bare")
        pub = spawn_publisher(broker.port, n, 0.0, time.time(), "a")
        await asyncio.to_thread(pub.wait)
        note("bare: draining")
        bare_rate, _ = await bare_subscriber(broker.port, n, latency=False)
        note(f"bare: {bare_rate:.0f} msg/s; gateway: subscribing")

        # 2. the floor: a minimal relay draining its own queue to the same receiver
        await subscribe_once(broker.port, "bench-relay")
        pub = spawn_publisher(broker.port, n, 0.0, time.time(), "f")
        await asyncio.to_thread(pub.wait)
        receiver.expect, receiver.prefix = n, "f"
        note("floor: draining")
        floor = spawn_relay(broker.port, receiver.url, workdir / "relay.db", n)
        async with asyncio.timeout(600):
            await receiver.done.wait()
        out, _ = await asyncio.to_thread(floor.communicate)
        floor_cpu = float(out.split()[-1])
        times = sorted(receiver.arrivals.values())
        floor_rate = (len(times) - 1) / (times[-1] - times[0])
        assert len(receiver.keys) == n, f"{len(receiver.keys)} distinct keys for {n} documents"
        receiver.arrivals.clear()
        receiver.keys.clear()
        receiver.done.clear()
        note(f"floor: {floor_rate:.0f} msg/s")

        # 3. gateway end-to-end rate (queued while it was away, then drained)
        gateway.start()
        await gateway.ready()
        gateway.stop()
        pub = spawn_publisher(broker.port, n, 0.0, time.time(), "g")
        await asyncio.to_thread(pub.wait)
        receiver.expect = n
        receiver.prefix = "g"
        note("gateway: draining")
        gateway.start()
        await gateway.ready()  # start-up (imports, replay) is not part of the per-message CPU
        cpu0 = gateway.cpu_s()
        # The other processes on the machine during the drain: this one (the receiver) and the broker.
        recv0, broker0 = time.process_time(), proc_cpu_s(broker.proc.pid)
        async with asyncio.timeout(600):
            await receiver.done.wait()
        gw_cpu = gateway.cpu_s() - cpu0
        recv_cpu, broker_cpu = time.process_time() - recv0, proc_cpu_s(broker.proc.pid) - broker0
        times = sorted(receiver.arrivals.values())
        gw_rate = (len(times) - 1) / (times[-1] - times[0])
        assert len(receiver.keys) == n, f"{len(receiver.keys)} distinct keys for {n} incidents"

        # 3. latency at half the gateway's rate: bare, then the gateway
        note(f"gateway: {gw_rate:.0f} msg/s; latency phases")
        rate = latency_rate or gw_rate / 2
        m = max(100, int(rate * seconds))
        gateway.stop()  # alone on the machine while the bare subscriber is measured
        bare_task = asyncio.create_task(
            bare_subscriber(broker.port, m, latency=True, client_id="bench-bare-lat")
        )
        await asyncio.sleep(0.5)
        start = time.time() + 1.0
        pub = spawn_publisher(broker.port, m, rate, start, "l")
        note(f"bare: latency phase, {m} messages at {rate:.0f}/s")
        _, bare_lat = await bare_task
        await asyncio.to_thread(pub.wait)
        note("gateway: draining the latency backlog")

        # The gateway's session queued those too: let it drain them before measuring.
        receiver.arrivals.clear()
        receiver.done.clear()
        receiver.prefix, receiver.expect = "l", m
        gateway.start()
        await gateway.ready()
        async with asyncio.timeout(600):
            await receiver.done.wait()
        note("gateway: latency phase")
        receiver.arrivals.clear()
        receiver.done.clear()
        receiver.prefix, receiver.expect = "h", m
        start = time.time() + 1.0
        pub = spawn_publisher(broker.port, m, rate, start, "h")
        async with asyncio.timeout(600):
            await receiver.done.wait()
        await asyncio.to_thread(pub.wait)
        gw_lat = [receiver.arrivals[f"h{i}"] - (start + i / rate) for i in range(m)]
    finally:
        gateway.stop()
        await receiver.stop()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    ms = 1000.0
    b50, b99 = pct(bare_lat, 0.5) * ms, pct(bare_lat, 0.99) * ms
    g50, g99 = pct(gw_lat, 0.5) * ms, pct(gw_lat, 0.99) * ms
    rows = [
        ("bare aiomqtt+uvloop receive rate (QoS 1, counting only)", f"{bare_rate:,.0f} msg/s"),
        (
            f"gateway end-to-end rate (MQTT → stored → delivered by {sink}, 1 incident each)",
            f"{gw_rate:,.0f} msg/s",
        ),
        ("gateway / bare", f"{gw_rate / bare_rate:.1%}"),
        ("floor: minimal relay (receive → 1 row, group commit → PUBACK → POST)", f"{floor_rate:,.0f} msg/s"),
        ("floor / bare", f"{floor_rate / bare_rate:.1%}"),
        ("floor CPU per message while draining (all threads)", f"{floor_cpu / n * 1e6:,.0f} µs"),
        ("gateway CPU per message while draining (all threads)", f"{gw_cpu / n * 1e6:,.0f} µs"),
        ("receiver (aiohttp, this process) CPU per document, same drain", f"{recv_cpu / n * 1e6:,.0f} µs"),
        ("mosquitto CPU per message, same drain", f"{broker_cpu / n * 1e6:,.0f} µs"),
        (
            "cores in use during the drain (gateway + receiver + broker)",
            f"{(gw_cpu + recv_cpu + broker_cpu) * gw_rate / n:.2f} of {os.cpu_count()}",
        ),
        (f"bare latency p50 / p99 at {rate:.0f} msg/s", f"{b50:.1f} / {b99:.1f} ms"),
        (f"gateway latency p50 / p99 at {rate:.0f} msg/s (publish → PSAP)", f"{g50:.1f} / {g99:.1f} ms"),
        ("added by the gateway p50 / p99", f"{g50 - b50:.1f} / {g99 - b99:.1f} ms"),
        ("mean gateway latency", f"{statistics.fmean(gw_lat) * ms:.1f} ms"),
    ]
    print(
        f"# bench/gateway.py  n={n}  latency {seconds:.0f} s  synchronous={synchronous}  sink={sink}  "
        f"store={'postgresql' if dsn else 'sqlite'}"
    )
    print("| what | figure |")
    print("|---|---|")
    for what, figure in rows:
        print(f"| {what} | {figure} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "relay":
        _, _, port, url, db, count = sys.argv
        uvloop.run(relay(int(port), url, db, int(count)))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "publish":
        _, _, port, count, rate, start, prefix = sys.argv
        uvloop.run(publish(int(port), int(count), float(rate), float(start), prefix))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="messages in the rate phases")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full", help="store.synchronous")
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=0.0,
        help="rate of the latency phase (default: half the gateway's)",
    )
    parser.add_argument(
        "--sink", choices=["http", "mqtt"], default="http", help="how the local PSAP receives"
    )
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="the gateway's store; postgresql: one replica on a private server (fsync on)",
    )
    a = parser.parse_args()
    if a.backend == "postgresql":
        from ecallgw.simulators.pgserver import PgServer

        with PgServer() as pg:
            uvloop.run(main(a.n, a.seconds, a.synchronous, a.sink, a.latency_rate, pg.create_database()))
    else:
        uvloop.run(main(a.n, a.seconds, a.synchronous, a.sink, a.latency_rate))
