"""Scale-out: one replica on SQLite, one and two on PostgreSQL, and the sequencer's failover, in one run.

    .venv/bin/python bench/scale_out.py [--quick] [--kills 10] [--freezes 1] [--only sqlite,pg1,pg2,failover]

Every setup gets a private mosquitto and a local PSAP webhook (``Broker`` and ``Receiver`` of
bench/gateway.py), and real ``ecallgw serve`` subprocesses; the PostgreSQL setups share one private
server (``ecallgw.simulators.pgserver.PgServer``, fsync on) with a fresh database each.

1. **Sustained rate**, per setup (SQLite ×1, PostgreSQL ×1, PostgreSQL ×2 with a shared
   subscription): an open-loop publisher (a process of its own) sends automatic eCalls of new
   vehicles (``envelope`` of bench/gateway.py) for ``--step-seconds`` at a rate raised by
   ``--factor`` from ``--start-rate`` until a step fails. A step is sustainable when every signal
   reaches the PSAP (publish → stored → triaged → delivered) within the drain time, none twice,
   p99 from scheduled send to arrival ≤ 1 s, and the delivered rate ≥ 95 % of the offered rate.
   The gateways run on through the steps (the journal grows from step to step).
2. **Added latency** at half of each sustainable rate: the same publisher for ``--seconds``, once to
   a bare aiomqtt subscriber on another topic (the gateways idle beside it), once through the
   gateways; added = gateway minus bare, percentile by percentile (as bench/gateway.py does).
3. **CPU per signal** by process during the highest sustainable step (from /proc), and for
   PostgreSQL the WAL bytes and transactions per signal: what the scaling note computes with.
4. **Failover** (two replicas on PostgreSQL, ``--preload`` signals already in the journal, a steady
   ``--failover-rate``): ``--kills`` times, kill -9 the leader, time kill → first journal row
   sequenced under the new epoch (polling ``sequencer_lease`` and ``max(seq)`` every 10 ms), then
   restart the killed replica. The new leader's log gives the breakdown (elected, state rebuilt,
   first decision). ``--freezes`` times, SIGSTOP the leader instead (the lease has to expire),
   SIGCONT it once replaced. Every steady signal must reach the PSAP, none twice.

Prints markdown tables, the bars marked met / not met. Absolute figures move with whatever else
runs on the machine; compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import asyncpg
import msgpack
import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/gateway.py
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from gateway import SRE_TOKEN, Broker, Receiver, envelope, free_port, pct, proc_cpu_s

from ecallgw.simulators.pgserver import PgServer

MS = 1000.0
MAX_P99_S = 1.0  # a step's p99 (scheduled send → PSAP) above this is not sustainable
MIN_SHARE = 0.95  # delivered rate below this share of the offered rate is not sustainable
MAX_LAG_S = 0.1  # publisher p99 behind schedule above this: the harness, not the gateway, fell behind
BARE_ROOT = "bare/v1"  # the bare subscriber's topic root (the gateways subscribe to ecall/v1/+/+/+)
LETTERS = "abcdefghijklmnopqrstuvw"  # prefix of phase k (23: envelope's VIN uses ord(prefix[0]) % 23)

BAR_RATIO = 0.70
BAR_ADDED_P99_MS = 20.0
BAR_FAILOVER_P50_S = 3.0
BAR_FAILOVER_MAX_S = 10.0


def note(text: str) -> None:
    print(f"scale_out {time.strftime('%H:%M:%S')}: {text}", file=sys.stderr, flush=True)


# --- the publisher (a child process) ---------------------------------------------------------------


async def publish(port: int, n: int, rate: float, start: float, offset: int, prefix: str, root: str) -> None:
    """Publish ``n`` envelopes open-loop at ``rate`` from ``start``; print lag and CPU as JSON."""
    items = []
    for i in range(n):
        topic, body = envelope(offset + i, start + i / rate, prefix)
        items.append((topic.replace("ecall/v1", root, 1), body))
    lags: list[float] = []
    gate = asyncio.Semaphore(1000)
    cpu0 = time.process_time()
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=1000, timeout=60) as client:
        client.pending_calls_threshold = 2000
        tasks: set[asyncio.Task[None]] = set()

        async def one(topic: str, body: bytes) -> None:
            try:
                await client.publish(topic, body, qos=1)
            finally:
                gate.release()

        for i, (topic, body) in enumerate(items):
            due = start + i / rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            lags.append(time.time() - due)
            t = asyncio.create_task(one(topic, body))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    print(
        json.dumps({"lag_p99": pct(lags, 0.99), "lag_max": max(lags), "cpu_s": time.process_time() - cpu0}),
        flush=True,
    )


@dataclass
class Published:
    """A publisher process and what it was asked to send."""

    proc: asyncio.subprocess.Process
    n: int
    rate: float
    start: float
    offset: int
    prefix: str

    def due(self, call_id: str) -> float:
        """The scheduled send time of a call id of this run."""
        return self.start + (int(call_id[len(self.prefix) :]) - self.offset) / self.rate

    async def result(self) -> dict[str, float]:
        out, _ = await self.proc.communicate()
        if self.proc.returncode:
            raise RuntimeError(f"publisher exited with {self.proc.returncode}")
        found: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
        return found


async def spawn_publisher(
    port: int, n: int, rate: float, offset: int, prefix: str, root: str = "ecall/v1"
) -> Published:
    # Encoding costs ~50 µs a message before the first send: start late enough for it.
    start = time.time() + 1.0 + n * 100e-6
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "publish",
        str(port),
        str(n),
        repr(rate),
        repr(start),
        str(offset),
        prefix,
        root,
        stdout=subprocess.PIPE,
    )
    return Published(proc, n, rate, start, offset, prefix)


# --- receivers -------------------------------------------------------------------------------------


class PsapReceiver(Receiver):
    """bench/gateway.py's webhook PSAP, also counting every document of the current run (duplicates)."""

    def __init__(self, broker_port: int) -> None:
        super().__init__("http", broker_port)
        self.docs = 0

    def reset(self, prefix: str, expect: int) -> None:
        self.arrivals = {}
        self.docs = 0
        self.prefix, self.expect = prefix, expect
        self.done.clear()

    def _record(self, body: bytes, now: float) -> None:
        call_id = orjson.loads(body)["call"]["call_id"]
        if call_id.startswith(self.prefix):
            self.docs += 1
            self.arrivals.setdefault(call_id, now)
            if len(self.arrivals) >= self.expect:
                self.done.set()


async def bare_latencies(port: int, m: int, ready: asyncio.Event) -> list[float]:
    """Receive ``m`` messages under ``BARE_ROOT`` doing nothing else; latency from their sent_at."""
    lat: list[float] = []
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-bare-lat", clean_session=True) as c:
        await c.subscribe(f"{BARE_ROOT}/+/+/+", qos=1)
        ready.set()
        async with asyncio.timeout(300):
            async for message in c.messages:
                payload = message.payload
                assert isinstance(payload, bytes)
                lat.append(time.time() - msgpack.unpackb(payload)["sent_at"])
                if len(lat) == m:
                    break
    return lat


# --- gateways --------------------------------------------------------------------------------------


class Serve:
    """One ``ecallgw serve`` subprocess with its own configuration file and log."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        broker: Broker,
        receiver: Receiver,
        store_toml: str,
        mqtt_extra: str,
        log_level: str,
    ) -> None:
        self.name = name
        self.http_port = free_port()
        self.config = workdir / f"{name}.toml"
        self.config.write_text(
            store_toml
            + f'[mqtt]\nport = {broker.port}\nclient_id = "bench-{name}"\n{mqtt_extra}'
            + f"[http]\nport = {self.http_port}\n"
            + f'[[auth.tokens]]\nname = "sre"\nrole = "sre"\ntoken = "{SRE_TOKEN}"\n'
            + receiver.receiver_toml()
            + f'[log]\nlevel = "{log_level}"\n'
        )
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ecallgw", "serve", "--config", str(self.config)], stderr=err
            )

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as http, asyncio.timeout(60):
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: see {self.log}")
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
        return proc_cpu_s(self.pid) if self.proc is not None and self.proc.poll() is None else 0.0

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.send(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def log_events(self, since: float) -> list[dict[str, Any]]:
        """This replica's JSON log lines written at or after ``since`` (epoch seconds)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                rec = json.loads(line)
                ts = datetime.fromisoformat(rec["ts"]).timestamp()
            except (ValueError, KeyError):
                continue
            if ts >= since - 0.001:
                rec["_t"] = ts
                out.append(rec)
        return out


def pg_cpu_s(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL server: the postmaster (with reaped children) and live children."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(f) for f in fields[11:15]) / tick
        elif ppid == postmaster:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Setup:
    """A broker, a PSAP receiver and ``replicas`` gateways on one store."""

    def __init__(
        self,
        label: str,
        workdir: Path,
        replicas: int,
        *,
        dsn: str = "",
        log_level: str = "warning",
        share: bool = False,
    ) -> None:
        self.label = label
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dsn = dsn
        self.broker = Broker(workdir / "mosquitto")
        self.receiver = PsapReceiver(self.broker.port)
        self.serves: list[Serve] = []
        mqtt_extra = 'share_group = "bench"\n' if share else ""
        for k in range(replicas):
            name = f"r{k + 1}"
            if dsn:
                store = (
                    f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\nreplica_id = "{name}"\nlease_s = 5.0\n'
                )
            else:
                store = f'[store]\npath = "{workdir / f"{name}.sqlite3"}"\nsynchronous = "full"\n'
            self.serves.append(Serve(workdir, name, self.broker, self.receiver, store, mqtt_extra, log_level))

    async def start(self) -> None:
        await self.receiver.start()
        for s in self.serves:
            s.start()
        for s in self.serves:
            await s.ready()

    async def stop(self) -> None:
        for s in self.serves:
            s.stop()
        await self.receiver.stop()
        self.broker.stop()

    def by_name(self, name: str) -> Serve:
        return next(s for s in self.serves if s.name == name)


# --- sustained rate ----------------------------------------------------------------------------------


@dataclass
class Step:
    rate: float
    n: int
    delivered: int = 0
    docs: int = 0
    delivered_rate: float = 0.0
    p50: float = float("nan")
    p99: float = float("nan")
    max: float = float("nan")
    lag_p99: float = float("nan")
    failures: list[str] = field(default_factory=list)
    cpu_us: dict[str, float] = field(default_factory=dict)  # µs of CPU per signal by process
    wal_bytes: float = float("nan")  # per signal
    xacts: float = float("nan")  # committed transactions per signal


@dataclass
class Result:
    label: str
    steps: list[Step] = field(default_factory=list)
    best: Step | None = None
    half_rate: float = 0.0
    bare: tuple[float, float] = (float("nan"), float("nan"))
    gw: tuple[float, float] = (float("nan"), float("nan"))
    gw_max: float = float("nan")

    @property
    def added(self) -> tuple[float, float]:
        return self.gw[0] - self.bare[0], self.gw[1] - self.bare[1]


class Meter:
    """CPU of every process of a setup (and WAL/transactions of its database) between two marks."""

    def __init__(self, setup: Setup, pg: PgServer | None, db: Any) -> None:
        self.setup, self.pg, self.db = setup, pg, db
        self._t0: dict[str, float] = {}
        self._wal0: tuple[str, int] | None = None

    async def _stats(self) -> tuple[str, int] | None:
        if self.db is None:
            return None
        row = await self.db.fetchrow(
            "SELECT pg_current_wal_lsn()::text, (SELECT xact_commit FROM pg_stat_database "
            "WHERE datname = current_database())"
        )
        assert row is not None
        return str(row[0]), int(row[1])

    def _cpu(self) -> dict[str, float]:
        out = {s.name: s.cpu_s() for s in self.setup.serves}
        out["mosquitto"] = proc_cpu_s(self.setup.broker.proc.pid)
        out["receiver (bench)"] = time.process_time()
        if self.pg is not None:
            out["postgresql"] = pg_cpu_s(self.pg.pid)
        return out

    async def mark(self) -> None:
        self._wal0 = await self._stats()
        if self.db is not None:
            await self.db.execute("SELECT pg_stat_clear_snapshot()")
        self._t0 = self._cpu()

    async def since(self, n: int, step: Step) -> None:
        now = self._cpu()
        step.cpu_us = {k: (now[k] - v) / n * 1e6 for k, v in self._t0.items() if k in now}
        await asyncio.sleep(0.6)  # table statistics reach pg_stat_database at most every 500 ms
        if self.db is not None and self._wal0 is not None:
            await self.db.execute("SELECT pg_stat_clear_snapshot()")
            wal1 = await self._stats()
            assert wal1 is not None
            diff = await self.db.fetchval(
                "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)", wal1[0], self._wal0[0]
            )
            step.wal_bytes = float(diff) / n
            step.xacts = (wal1[1] - self._wal0[1]) / n


async def run_step(
    setup: Setup, meter: Meter, rate: float, seconds: float, drain_s: float, phase: int
) -> Step:
    n = max(50, int(rate * seconds))
    step = Step(rate=rate, n=n)
    prefix = LETTERS[phase % len(LETTERS)]
    rx = setup.receiver
    rx.reset(prefix, n)
    await meter.mark()
    pub = await spawn_publisher(setup.broker.port, n, rate, phase * 1_000_000, prefix)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(pub.start - time.time() + seconds + drain_s):
            await rx.done.wait()
    await meter.since(n, step)
    lag = await pub.result()
    step.lag_p99 = lag["lag_p99"]
    step.cpu_us["publisher (bench)"] = lag["cpu_s"] / n * 1e6
    arrived = dict(rx.arrivals)
    step.delivered, step.docs = len(arrived), rx.docs
    lat = [t - pub.due(cid) for cid, t in arrived.items()]
    if lat:
        step.p50, step.p99, step.max = pct(lat, 0.5), pct(lat, 0.99), max(lat)
    times = sorted(arrived.values())
    if len(times) > 1:
        step.delivered_rate = (len(times) - 1) / (times[-1] - times[0])
    if step.delivered < n:
        step.failures.append(f"{n - step.delivered} not delivered within {drain_s:.0f} s")
    if step.docs > step.delivered:
        step.failures.append(f"{step.docs - step.delivered} duplicates")
    if not step.p99 <= MAX_P99_S:
        step.failures.append(f"p99 {step.p99 * MS:.0f} ms > {MAX_P99_S * MS:.0f} ms")
    if step.delivered_rate < MIN_SHARE * rate:
        step.failures.append(f"delivered {step.delivered_rate:.0f}/s < {MIN_SHARE:.0%} of offered")
    if step.lag_p99 > MAX_LAG_S:
        step.failures.append(f"publisher lag p99 {step.lag_p99 * MS:.0f} ms (harness)")
    if step.delivered < n:
        # Let the backlog clear before anything else is measured; what never comes is lost.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(300):
                await rx.done.wait()
        if len(rx.arrivals) < n:
            step.failures.append(f"{n - len(rx.arrivals)} lost (not delivered after 300 s more)")
    return step


def report_step(label: str, step: Step) -> None:
    verdict = "ok" if not step.failures else "FAILED: " + "; ".join(step.failures)
    note(
        f"{label} {step.rate:.0f}/s: delivered {step.delivered_rate:.0f}/s, p50 {step.p50 * MS:.1f} "
        f"p99 {step.p99 * MS:.1f} ms, publisher lag p99 {step.lag_p99 * MS:.1f} ms -> {verdict}"
    )


async def measure(setup: Setup, pg: PgServer | None, args: argparse.Namespace, res: Result) -> None:
    db = await asyncpg.connect(setup.dsn) if setup.dsn else None
    meter = Meter(setup, pg, db)
    try:
        # Warm-up (not judged): the first signals after a start pay for caches, imports, connections.
        warm = await run_step(setup, meter, args.start_rate / 2, 2.0, 60.0, 0)
        note(f"{setup.label} warm-up at {warm.rate:.0f}/s: p50 {fmt_ms(warm.p50)}, p99 {fmt_ms(warm.p99)} ms")
        rate, phase = args.start_rate, 1
        failed: float | None = None
        while rate <= args.max_rate:
            step = await run_step(setup, meter, rate, args.step_seconds, args.drain, phase)
            phase += 1
            res.steps.append(step)
            report_step(setup.label, step)
            if step.failures:
                failed = rate
                break
            res.best = step
            rate *= args.factor
        if failed is not None and res.best is not None:
            # One step between the last sustainable rate and the first failed one (geometric mean).
            step = await run_step(
                setup, meter, (res.best.rate * failed) ** 0.5, args.step_seconds, args.drain, phase
            )
            phase += 1
            res.steps.append(step)
            report_step(setup.label, step)
            if not step.failures:
                res.best = step
            res.steps.sort(key=lambda st: st.rate)
        if res.best is None:
            return
        # Added latency at half the sustainable rate: bare subscriber (gateways idle), then gateways.
        res.half_rate = res.best.rate / 2
        m = max(100, int(res.half_rate * args.seconds))
        ready = asyncio.Event()
        bare_task = asyncio.create_task(bare_latencies(setup.broker.port, m, ready))
        await ready.wait()
        pub = await spawn_publisher(
            setup.broker.port, m, res.half_rate, phase * 1_000_000, LETTERS[phase], BARE_ROOT
        )
        bare = await bare_task
        await pub.result()
        phase += 1
        res.bare = (pct(bare, 0.5), pct(bare, 0.99))
        prefix = LETTERS[phase]
        setup.receiver.reset(prefix, m)
        pub = await spawn_publisher(setup.broker.port, m, res.half_rate, phase * 1_000_000, prefix)
        async with asyncio.timeout(pub.start - time.time() + args.seconds + 300):
            await setup.receiver.done.wait()
        lag = await pub.result()
        lat = [t - pub.due(cid) for cid, t in setup.receiver.arrivals.items()]
        res.gw = (pct(lat, 0.5), pct(lat, 0.99))
        res.gw_max = max(lat)
        a50, a99 = res.added
        note(
            f"{setup.label} at {res.half_rate:.0f}/s: "
            f"bare p50/p99 {fmt_ms(res.bare[0])}/{fmt_ms(res.bare[1])} ms, "
            f"gateway {fmt_ms(res.gw[0])}/{fmt_ms(res.gw[1])} ms, added {fmt_ms(a50)}/{fmt_ms(a99)} ms "
            f"(publisher lag p99 {fmt_ms(lag['lag_p99'])} ms)"
        )
    finally:
        if db is not None:
            await db.close()


# --- failover ----------------------------------------------------------------------------------------


@dataclass
class Failover:
    how: str  # "kill -9" or "SIGSTOP"
    victim: str
    total_s: float  # kill -> first journal row sequenced under the new epoch (polled)
    elected_s: float  # kill -> new epoch seen (polled)
    log_elected_s: float = float("nan")  # kill -> "this replica is the sequencer now" (new leader's log)
    log_rebuilt_s: float = float("nan")  # replay seconds (log)
    replayed: int = 0
    log_first_s: float = float("nan")  # kill -> "first decision as sequencer" (log)


@dataclass
class FailoverResult:
    events: list[Failover] = field(default_factory=list)
    preload: int = 0
    steady_rate: float = 0.0
    sent: int = 0
    delivered: int = 0
    docs: int = 0
    p50: float = float("nan")
    p99: float = float("nan")
    max: float = float("nan")
    woken: list[str] = field(default_factory=list)  # what a frozen leader logged when woken


async def steady(
    port: int, rate: float, offset: int, prefix: str, stop: asyncio.Event, due: dict[str, float]
) -> None:
    """Publish at ``rate`` from this process until ``stop``; records each call id's scheduled time."""
    start = time.time() + 0.2
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-steady", timeout=60) as client:
        tasks: set[asyncio.Task[None]] = set()
        i = 0
        while not stop.is_set():
            at = start + i / rate
            delay = at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            topic, body = envelope(offset + i, at, prefix)
            due[f"{prefix}{offset + i}"] = at
            t = asyncio.create_task(client.publish(topic, body, qos=1))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks)


async def failover(pg: PgServer, workdir: Path, args: argparse.Namespace, out: FailoverResult) -> None:
    dsn = pg.create_database("failover")
    setup = Setup("failover", workdir / "failover", 2, dsn=dsn, log_level="info", share=True)
    await setup.start()
    db = await asyncpg.connect(dsn)
    try:
        out.preload = args.preload
        if args.preload:
            note(f"failover: preloading {args.preload} signals into the journal")
            setup.receiver.reset("a", args.preload)
            pub = await spawn_publisher(setup.broker.port, args.preload, args.preload_rate, 0, "a")
            async with asyncio.timeout(pub.start - time.time() + args.preload / args.preload_rate + 600):
                await setup.receiver.done.wait()
            await pub.result()
        prefix = "b"
        rx = setup.receiver
        rx.reset(prefix, 10**9)
        due: dict[str, float] = {}
        stop = asyncio.Event()
        out.steady_rate = args.failover_rate
        sender = asyncio.create_task(
            steady(setup.broker.port, args.failover_rate, 1_000_000, prefix, stop, due)
        )
        await asyncio.sleep(2.0)
        plan = ["kill -9"] * args.kills + ["SIGSTOP"] * args.freezes
        for k, how in enumerate(plan):
            await asyncio.sleep(args.settle)
            for s in setup.serves:
                await s.ready()
            epoch0, leader = await db.fetchrow("SELECT epoch, leader FROM sequencer_lease WHERE id = 1")
            victim = setup.by_name(leader)
            heir = next(s for s in setup.serves if s is not victim)
            t_kill = time.time()
            if how == "kill -9":
                victim.kill9()
            else:
                victim.send(signal.SIGSTOP)
            elected: float | None = None
            base = 0
            async with asyncio.timeout(120):
                while True:
                    epoch, maxseq = await db.fetchrow(
                        "SELECT epoch, (SELECT coalesce(max(seq), 0) FROM journal) "
                        "FROM sequencer_lease WHERE id = 1"
                    )
                    now = time.time()
                    if elected is None:
                        if epoch > epoch0:
                            # The epoch bump waited for the old leader's transaction on the lease
                            # row: its last commit is in this snapshot, later rows are the heir's.
                            elected, base = now, maxseq
                    elif maxseq > base:
                        first = now
                        break
                    await asyncio.sleep(0.01)
            ev = Failover(how=how, victim=victim.name, total_s=first - t_kill, elected_s=elected - t_kill)
            await asyncio.sleep(0.5)  # the log lines are flushed by now
            for rec in heir.log_events(t_kill):
                if rec.get("event") == "leader" and math.isnan(ev.log_elected_s):
                    ev.log_elected_s = rec["_t"] - t_kill
                elif rec.get("msg") == "sequencer state rebuilt from the journal" and not ev.replayed:
                    ev.replayed = int(rec.get("journal_entries", 0))
                    ev.log_rebuilt_s = float(rec.get("seconds", float("nan")))
                elif rec.get("event") == "first_decision" and math.isnan(ev.log_first_s):
                    ev.log_first_s = rec["_t"] - t_kill
            if how == "SIGSTOP":
                victim.send(signal.SIGCONT)
                await asyncio.sleep(3.0)
                # The woken leader must find itself replaced (lease renewal refused, or a fenced commit).
                woke = [
                    r.get("reason") or r.get("msg", "")
                    for r in victim.log_events(t_kill)
                    if r.get("event") == "leader_lost"
                ]
                out.woken.append("; ".join(str(w) for w in woke) or "(no leader_lost line)")
                note(f"failover: woke {victim.name}: {out.woken[-1]}")
            else:
                victim.start()
            await victim.ready()
            out.events.append(ev)
            note(
                f"failover {k + 1}/{len(plan)} ({how} {victim.name}): {ev.total_s:.3f} s to the first "
                f"decision (new epoch seen after {ev.elected_s:.3f} s; log: elected "
                f"{ev.log_elected_s:.3f} s, replay {ev.replayed} rows in {ev.log_rebuilt_s:.3f} s, "
                f"first decision {ev.log_first_s:.3f} s)"
            )
        stop.set()
        await sender
        out.sent = len(due)
        rx.expect = len(due)
        if len(rx.arrivals) >= rx.expect:
            rx.done.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(120):
                await rx.done.wait()
        out.delivered, out.docs = len(rx.arrivals), rx.docs
        lat = [t - due[cid] for cid, t in rx.arrivals.items() if cid in due]
        if lat:
            out.p50, out.p99, out.max = pct(lat, 0.5), pct(lat, 0.99), max(lat)
    finally:
        await db.close()
        await setup.stop()


# --- the run -----------------------------------------------------------------------------------------


def met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def fmt_ms(s: float) -> str:
    return f"{s * MS:.1f}"


def row(*cells: object) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |")


def report(
    results: dict[str, Result], fo: FailoverResult | None, args: argparse.Namespace, header: str
) -> None:
    print(header)
    print()
    row("setup", "sustainable rate", "added p50 / p99 at half", "gateway p50 / p99 / max", "bare p50 / p99")
    print("|---|---:|---:|---:|---:|")
    for r in results.values():
        if r.best is None:
            row(r.label, "none: the first step failed", "", "", "")
            continue
        a50, a99 = r.added
        row(
            r.label,
            f"{r.best.rate:,.0f}/s",
            f"{fmt_ms(a50)} / {fmt_ms(a99)} ms at {r.half_rate:,.0f}/s",
            f"{fmt_ms(r.gw[0])} / {fmt_ms(r.gw[1])} / {fmt_ms(r.gw_max)} ms",
            f"{fmt_ms(r.bare[0])} / {fmt_ms(r.bare[1])} ms",
        )
    print()
    row("bar", "figure", "verdict")
    print("|---|---:|---|")
    best = {k: r.best for k, r in results.items() if r.best is not None}
    if "sqlite" in best and "pg1" in best:
        ratio = best["pg1"].rate / best["sqlite"].rate
        row(
            f"PostgreSQL ×1 / SQLite ×1 sustainable rate ≥ {BAR_RATIO:.0%}",
            f"{ratio:.0%}",
            met(ratio >= BAR_RATIO),
        )
    if "pg1" in best and "pg2" in best:
        row("PostgreSQL ×2 / PostgreSQL ×1 (no bar)", f"{best['pg2'].rate / best['pg1'].rate:.0%}", "")
    for key in ("sqlite", "pg1"):
        if key in best:
            r = results[key]
            a99 = r.added[1] * MS
            row(
                f"{r.label}: added p99 at half ≤ {BAR_ADDED_P99_MS:.0f} ms",
                f"{a99:.1f} ms",
                met(a99 <= BAR_ADDED_P99_MS),
            )
    kills = [e.total_s for e in fo.events if e.how == "kill -9"] if fo else []
    if kills:
        p50, mx = statistics.median(kills), max(kills)
        row(
            f"failover p50 ≤ {BAR_FAILOVER_P50_S:.0f} s ({len(kills)} kills)",
            f"{p50:.2f} s",
            met(p50 <= BAR_FAILOVER_P50_S),
        )
        row(f"failover max ≤ {BAR_FAILOVER_MAX_S:.0f} s", f"{mx:.2f} s", met(mx <= BAR_FAILOVER_MAX_S))
    for r in results.values():
        print()
        print(f"{r.label}, steps of {args.step_seconds:.0f} s (latency: scheduled send → PSAP):")
        print()
        row("offered/s", "delivered/s", "p50 ms", "p99 ms", "max ms", "publisher lag p99 ms", "verdict")
        print("|---:|---:|---:|---:|---:|---:|---|")
        for s in r.steps:
            verdict = "; ".join(s.failures) or ("**ok: highest sustainable**" if s is r.best else "ok")
            row(
                f"{s.rate:,.0f}",
                f"{s.delivered_rate:,.0f}",
                fmt_ms(s.p50),
                fmt_ms(s.p99),
                fmt_ms(s.max),
                fmt_ms(s.lag_p99),
                verdict,
            )
    if best:
        print()
        print("CPU per signal (µs, all threads, from /proc) during each setup's highest sustainable step:")
        print()
        row("process", *(results[k].label for k in best))
        print("|---|" + "---:|" * len(best))
        for name in sorted({n for b in best.values() for n in b.cpu_us}):
            row(name, *(f"{b.cpu_us[name]:,.0f}" if name in b.cpu_us else "" for b in best.values()))
        row("**total**", *(f"{sum(b.cpu_us.values()):,.0f}" for b in best.values()))
        row(
            "PostgreSQL WAL bytes per signal",
            *("" if math.isnan(b.wal_bytes) else f"{b.wal_bytes:,.0f}" for b in best.values()),
        )
        row(
            "PostgreSQL commits per signal",
            *("" if math.isnan(b.xacts) else f"{b.xacts:.2f}" for b in best.values()),
        )
    if fo and fo.events:
        print()
        print(
            f"Failover: two replicas on PostgreSQL, {fo.preload:,} signals preloaded, steady "
            f"{fo.steady_rate:.0f}/s; seconds from the signal to the first journal row sequenced under "
            "the new epoch (polled every 10 ms), "
            "and the new leader's own log:"
        )
        print()
        row(
            "#",
            "how",
            "victim",
            "total",
            "new epoch seen",
            "log: elected",
            "log: replayed rows in s",
            "log: first decision",
        )
        print("|---:|---|---|---:|---:|---:|---:|---:|")
        for k, e in enumerate(fo.events, 1):
            row(
                k,
                e.how,
                e.victim,
                f"{e.total_s:.3f}",
                f"{e.elected_s:.3f}",
                f"{e.log_elected_s:.3f}",
                f"{e.replayed:,} in {e.log_rebuilt_s:.3f}",
                f"{e.log_first_s:.3f}",
            )
        print()
        if kills:
            print(
                f"kill -9: p50 {statistics.median(kills):.3f} s, max {max(kills):.3f} s "
                f"over {len(kills)} kills."
            )
        for w in fo.woken:
            print(f"The frozen leader, woken (SIGCONT) after the takeover, logged: {w}.")
        print(
            f"Steady signals: {fo.sent:,} sent, {fo.delivered:,} delivered, "
            f"{fo.docs - fo.delivered} duplicates; "
            f"latency p50 {fmt_ms(fo.p50)} ms, p99 {fmt_ms(fo.p99)} ms, max {fmt_ms(fo.max)} ms."
        )


def git_state() -> tuple[str, list[str]]:
    """The checked-out commit and the product files changed in the work tree (they are measured too)."""
    here = Path(__file__).resolve().parent.parent

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=here, capture_output=True, text=True, check=False).stdout

    dirty = [
        line[3:] for line in git("status", "--porcelain", "--untracked-files=no", "ecallgw").splitlines()
    ]
    return git("rev-parse", "--short", "HEAD").strip(), dirty


async def main(args: argparse.Namespace) -> None:
    only = set(args.only.split(","))
    root = Path(tempfile.mkdtemp(prefix="ecallgw-scale-"))
    commit, dirty = git_state()
    header = (
        f"# bench/scale_out.py at {commit}{' + uncommitted ' + ', '.join(dirty) if dirty else ''}; "
        f"load average before the run {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores"
    )
    note(header)
    results: dict[str, Result] = {}
    fo: FailoverResult | None = None
    pg: PgServer | None = None
    try:
        if only & {"pg1", "pg2", "failover"}:
            pg = PgServer(root / "pg")
            pg.start()
        for key, label, replicas in (
            ("sqlite", "SQLite ×1", 1),
            ("pg1", "PostgreSQL ×1", 1),
            ("pg2", "PostgreSQL ×2", 2),
        ):
            if key not in only:
                continue
            dsn = ""
            if key != "sqlite":
                assert pg is not None
                dsn = pg.create_database(key)
            setup = Setup(label, root / key, replicas, dsn=dsn, share=replicas > 1)
            note(f"{label}: starting")
            await setup.start()
            res = results[key] = Result(label)
            try:
                await measure(setup, pg if dsn else None, args, res)
            finally:
                await setup.stop()
        if "failover" in only:
            assert pg is not None
            fo = FailoverResult()
            await failover(pg, root, args, fo)
    finally:
        if pg is not None:
            pg.stop()
        if args.keep:
            note(f"kept {root}")
        else:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    report(results, fo, args, header)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="a short run: shorter steps, fewer kills")
    p.add_argument("--only", default="sqlite,pg1,pg2,failover", help="which parts to run (comma-separated)")
    p.add_argument("--start-rate", type=float, default=200.0, help="first step's offered rate (signals/s)")
    p.add_argument("--factor", type=float, default=1.25, help="rate multiplier between steps")
    p.add_argument("--max-rate", type=float, default=20_000.0, help="stop raising the rate here")
    p.add_argument("--step-seconds", type=float, default=10.0, help="length of a step")
    p.add_argument(
        "--drain", type=float, default=10.0, help="a step's signals must all arrive this long after it"
    )
    p.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    p.add_argument("--kills", type=int, default=10, help="kill -9 of the leader, this many times")
    p.add_argument("--freezes", type=int, default=1, help="SIGSTOP of the leader, this many times")
    p.add_argument("--preload", type=int, default=10_000, help="signals in the journal before the kills")
    p.add_argument("--preload-rate", type=float, default=250.0, help="their rate")
    p.add_argument("--failover-rate", type=float, default=20.0, help="steady rate during the kills")
    p.add_argument("--settle", type=float, default=2.0, help="pause after a restart before the next kill")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs, configs)")
    args = p.parse_args(argv)
    if args.quick:
        args.step_seconds, args.seconds, args.drain = 4.0, 4.0, 8.0
        args.start_rate, args.factor = 200.0, 1.5
        args.kills, args.freezes, args.preload = 3, 0, 2000
    return args


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "publish":
        _, _, port, count, rate, start, offset, prefix, topic_root = sys.argv
        uvloop.run(publish(int(port), int(count), float(rate), float(start), int(offset), prefix, topic_root))
        sys.exit(0)
    uvloop.run(main(parse(sys.argv[1:])))
