"""Replicas on one PostgreSQL: two ``ecallgw serve`` processes, faults mid-stream, nothing lost.

Each test runs two replicas (``r1``, ``r2``: their own replica id, MQTT client id and HTTP port; one
MQTT share group, one PSAP webhook; ``lease_s`` 2, ``outbox_lease_s`` 3), streams ``N`` first MSDs
through the shared subscription, injects a fault mid-stream (kill -9 of the sequencer or of the
other replica, SIGSTOP of the sequencer beyond its lease, a PostgreSQL restart), then publishes the
updates and cancels of `faultkit.followups` and holds the result to the bar of a single gateway
(`faultkit.assert_nothing_lost`): every signal stored once, one incident per vehicle, every revision
delivered, in order per incident, repeats only under a key already seen, no dead letters.

Who wrote what is traced by triggers the test adds to its database (`TRACE`): every sequenced
journal row and every revision records the writer's session (client port, ``application_name``) and
the lease (epoch, leader) its transaction saw. The writer is found by its session's client port,
mapped to replica processes from ``/proc`` (`PortMap`), rather than by the ``application_name`` the
replica gives itself (`test_pooled_sessions_carry_the_replica_id` checks that one). So the fence is
checked from the server's side: no row was ever sequenced by a replica that was not the leader of
the epoch it wrote under. A replica that exits without being killed is noted, started again (as a
supervisor would, so that the other guarantees are still checked) and fails the test at the end.

mosquitto (2.0.11 here) keeps handing a shared subscription's messages round-robin to a member whose
persistent session outlives its connection, and keeps a dead member's unacknowledged messages in
that session: nothing goes to the survivor in their place. A killed replica's share of the stream
therefore waits for it to come back with its client id; the tests restart it (as a supervisor
would) and print how many signals waited. The followups are published once every first MSD is
stored (updates, then cancels once the updates are stored), so that no vehicle's later signal
overtakes an earlier one parked in a dead replica's session or in the other replica's backlog.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ecallgw.config import Secret, StoreConfig
from ecallgw.gateway.leadership import Leadership
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.store.postgres import PostgresStore
from ecallgw.simulators.pgserver import PgServer
from tests.gateway.broker import Mosquitto, free_port
from tests.gateway.faultkit import (
    PgInspector,
    StoreSpec,
    assert_nothing_lost,
    expected_deliveries,
    followups,
    publish_all,
    readyz,
    settle,
    settle_async,
    start_serve,
    stop_serve,
    stream,
    tail,
    until_count,
    wait_ready,
    write_config,
)
from tests.gateway.harness import gateway_config, running_gateway
from tests.gateway.receiver import Receiver

pytestmark = pytest.mark.slow

N = 2000
LEASE_S = 2.0
OUTBOX_LEASE_S = 3.0

TRACE = """
CREATE TABLE test_trace (
    id BIGSERIAL PRIMARY KEY, what TEXT NOT NULL, seq BIGINT, app TEXT NOT NULL, port INTEGER,
    pid INTEGER NOT NULL, epoch BIGINT NOT NULL, leader TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL DEFAULT extract(epoch from clock_timestamp())
);
CREATE FUNCTION test_trace_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_trace (what, seq, app, port, pid, epoch, leader)
    SELECT TG_TABLE_NAME, NEW.seq, current_setting('application_name'), inet_client_port(),
        pg_backend_pid(), l.epoch, l.leader
    FROM sequencer_lease l WHERE l.id = 1;
    RETURN NULL;
END $$;
CREATE FUNCTION test_trace_lease() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_trace (what, seq, app, port, pid, epoch, leader)
    VALUES ('lease', NULL, current_setting('application_name'), inet_client_port(), pg_backend_pid(),
        NEW.epoch, NEW.leader);
    RETURN NULL;
END $$;
CREATE TRIGGER test_trace_sequenced AFTER UPDATE OF seq ON journal FOR EACH ROW
    WHEN (OLD.seq IS NULL AND NEW.seq IS NOT NULL) EXECUTE FUNCTION test_trace_row();
CREATE TRIGGER test_trace_journal AFTER INSERT ON journal FOR EACH ROW
    WHEN (NEW.seq IS NOT NULL) EXECUTE FUNCTION test_trace_row();
CREATE TRIGGER test_trace_revisions AFTER INSERT ON revisions FOR EACH ROW EXECUTE FUNCTION test_trace_row();
CREATE TRIGGER test_trace_epoch AFTER UPDATE OF epoch ON sequencer_lease FOR EACH ROW
    WHEN (OLD.epoch IS DISTINCT FROM NEW.epoch) EXECUTE FUNCTION test_trace_lease();
"""


@dataclass
class Replica:
    """One ``ecallgw serve`` process of the pair, restartable with the same configuration."""

    name: str
    config: Path
    http_port: int
    log: Path
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    killed: set[int] = field(default_factory=set)  # pids the test killed

    async def start(self) -> None:
        self.proc = await start_serve(self.config, self.log)
        self.starts += 1

    async def ready(self, timeout_s: float = 30.0) -> float:
        assert self.proc is not None
        return await wait_ready(self.proc, self.http_port, self.log, timeout_s=timeout_s)

    async def kill(self) -> None:
        assert self.proc is not None
        self.killed.add(self.proc.pid)
        os.kill(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None and self.proc.returncode is None
        os.kill(self.proc.pid, sig)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    @property
    def crashed(self) -> bool:
        """It exited although the test neither killed nor stopped it."""
        return self.proc is not None and not self.alive and self.proc.pid not in self.killed

    async def stop(self) -> None:
        if self.proc is not None and not self.crashed:
            await stop_serve(self.proc, self.log)

    def events(self, since_line: int = 0) -> list[dict[str, Any]]:
        """The JSON log lines (from line ``since_line``)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines()[since_line:]:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def lines(self) -> int:
        return len(self.log.read_text(errors="replace").splitlines()) if self.log.exists() else 0


def tcp_ports(pid: int) -> set[int]:
    """Local ports of the TCP sockets process ``pid`` holds (Linux ``/proc``)."""
    inodes: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return set()
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[9] in inodes:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


@dataclass
class PortMap:
    """Which replica process held which local TCP port when: who a server session belongs to."""

    seen: dict[int, list[list[Any]]] = field(default_factory=dict)  # port -> [[replica, first, last]]

    def sample(self, replicas: list[Replica]) -> None:
        now = time.time()
        for r in replicas:
            if r.proc is None or r.proc.returncode is not None:
                continue
            for port in tcp_ports(r.proc.pid):
                spans = self.seen.setdefault(port, [])
                if spans and spans[-1][0] == r.name:
                    spans[-1][2] = now
                else:
                    spans.append([r.name, now, now])

    def owner(self, port: int | None, at: float, slack_s: float = 0.3) -> str | None:
        """The replica that held ``port`` at ``at`` (None: unknown or ambiguous)."""
        names = {
            name
            for name, first, last in self.seen.get(port or -1, [])
            if first - slack_s <= at <= last + slack_s
        }
        return names.pop() if len(names) == 1 else None

    async def run(self, replicas: list[Replica]) -> None:
        while True:
            self.sample(replicas)
            await asyncio.sleep(0.05)


@dataclass
class Pair:
    """Two replicas on one database, the store seen from outside, the PSAP, the stream."""

    replicas: dict[str, Replica]
    store: PgInspector
    recv: Receiver
    broker: Mosquitto
    publisher: asyncio.Task[None] | None = None
    ports: PortMap = field(default_factory=PortMap)
    frozen: set[str] = field(default_factory=set)  # replicas the test stopped (SIGSTOP)
    renewal_gap: dict[int, float] = field(default_factory=dict)  # epoch -> longest gap between renewals
    stall: dict[str, float] = field(default_factory=dict)  # replica -> slowest /healthz answer
    crashed: dict[int, str] = field(default_factory=dict)  # pid -> replica and why it exited by itself

    async def watch(self) -> None:
        """Every 0.1 s: the lease's renewals (server clock) and each running replica's /healthz time."""
        store = PgInspector(self.store.dsn)
        try:
            await self._watch(store)
        finally:
            await store.close()

    async def _watch(self, store: PgInspector) -> None:
        last: tuple[int, float] | None = None
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    epoch, _, renewed = await store.lease()
                except Exception:  # the server may be restarting
                    epoch, renewed = -1, 0.0
                if epoch > 0 and last is not None and last[0] == epoch and renewed > last[1]:
                    self.renewal_gap[epoch] = max(self.renewal_gap.get(epoch, 0.0), renewed - last[1])
                if epoch > 0 and (last is None or renewed != last[1]):
                    last = (epoch, renewed)
                for r in self.replicas.values():
                    if not r.alive or r.name in self.frozen:
                        continue
                    t0 = time.monotonic()
                    try:
                        async with http.get(
                            f"http://127.0.0.1:{r.http_port}/healthz", timeout=aiohttp.ClientTimeout(total=10)
                        ) as resp:
                            await resp.read()
                    except (aiohttp.ClientError, TimeoutError):
                        continue
                    self.stall[r.name] = max(self.stall.get(r.name, 0.0), time.monotonic() - t0)
                await asyncio.sleep(0.1)

    def note_crashes(self) -> None:
        """Record replicas that exited although the test did not kill them (and their last error)."""
        for r in self.replicas.values():
            if not r.crashed or r.proc is None or r.proc.pid in self.crashed:
                continue
            errors = [
                line.strip(" |")
                for line in r.log.read_text(errors="replace").splitlines()
                if re.match(r"^[\s|+]*[\w.]+(Error|Exception|Group): ", line)
            ]
            self.crashed[r.proc.pid] = (
                f"{r.name}, exit status {r.proc.returncode}: {errors[-1] if errors else '?'}"
            )

    async def revive(self) -> None:
        """Until cancelled: note a replica that crashed and start it again (as a supervisor would)."""
        while True:
            self.note_crashes()
            for r in self.replicas.values():
                if r.crashed:
                    print(
                        f"  restarting {r.name} after a crash: {self.crashed[r.proc.pid] if r.proc else ''}"
                    )
                    await r.start()
            await asyncio.sleep(0.5)

    def report(self) -> str:
        gaps = ", ".join(f"epoch {e}: {g:.2f} s" for e, g in sorted(self.renewal_gap.items()))
        stalls = ", ".join(f"{n}: {s:.2f} s" for n, s in sorted(self.stall.items()))
        return f"longest gap between lease renewals: {gaps}; slowest /healthz: {stalls}"

    def writer(self, app: str, port: int | None, at: float) -> str | None:
        """The replica of a traced session: the process that held its client port (else the name in
        its ``application_name``); a session whose port and name disagree is reported as such."""
        owner = self.ports.owner(port, at)
        named = app.split(":")[1] if app.count(":") == 2 else ""
        if owner is not None and named in self.replicas and named != owner:
            return f"{owner} (named {named})"
        return owner if owner is not None else (named if named in self.replicas else None)

    async def trace(self, where: str = "true") -> list[tuple[str, int | None, str | None, int, str, float]]:
        """Traced writes: (what, seq, writer, epoch, leader, server time), oldest first."""
        rows = await self.store._rows(
            f"SELECT what, seq, app, port, epoch, leader, at FROM test_trace WHERE {where} ORDER BY id"
        )
        return [
            (w, seq, self.writer(app, port, at), epoch, leader, at)
            for w, seq, app, port, epoch, leader, at in rows
        ]

    async def leader(self) -> tuple[int, Replica]:
        epoch, leader, _ = await self.store.lease()
        return epoch, self.replicas[leader]

    def other(self, replica: Replica) -> Replica:
        return next(r for r in self.replicas.values() if r is not replica)

    def diagnostics(self) -> str:
        return "\n".join(f"--- {r.name} ---\n{tail(r.log, 3000)}" for r in self.replicas.values())


@asynccontextmanager
async def pair(tmp_path: Path, broker: Mosquitto, dsn: str) -> AsyncIterator[Pair]:
    """Start r1 then r2 (r1 is elected first), trace the database, stop both afterwards."""
    recv = Receiver()
    await recv.start()
    spec = StoreSpec("postgresql", dsn=dsn, lease_s=LEASE_S, outbox_lease_s=OUTBOX_LEASE_S)
    replicas: dict[str, Replica] = {}
    for name in ("r1", "r2"):
        port = free_port()
        config = write_config(
            tmp_path / f"{name}.toml",
            broker,
            recv,
            port,
            spec,
            replica_id=name,
            client_id=f"gw-{name}",
            share_group="gw",
            log_level="info",
        )
        replicas[name] = Replica(name, config, port, tmp_path / f"{name}.log")
    store = PgInspector(dsn)
    p = Pair(replicas, store, recv, broker)
    sampler = asyncio.create_task(p.ports.run(list(replicas.values())))
    watcher = asyncio.create_task(p.watch())
    try:
        for r in replicas.values():
            await r.start()
            await r.ready()
        await store.execute(TRACE)
        async with asyncio.timeout(10):
            while not (await store.lease())[1]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        yield p
    except BaseException:
        print(p.diagnostics())
        raise
    finally:
        sampler.cancel()
        watcher.cancel()
        await asyncio.gather(sampler, watcher, return_exceptions=True)
        print(f"  {p.report()}")
        if p.publisher is not None and not p.publisher.done():
            p.publisher.cancel()
        try:
            for r in replicas.values():
                await r.stop()
        finally:
            await store.close()
            await recv.stop()


async def start_stream(p: Pair) -> None:
    """Publish the N first MSDs in the background; return once a quarter is stored (mid-stream)."""
    p.publisher = asyncio.create_task(publish_all(p.broker, stream(N)))
    await until_count(p.store.signals, N // 4, timeout_s=30)


async def finish(p: Pair) -> int:
    """After the fault: the rest of the stream, dead replicas back, the followups, the bar.

    Returns the deliveries repeated (under keys already seen).
    """
    assert p.publisher is not None
    async with asyncio.timeout(60):
        await p.publisher
    alive = [r for r in p.replicas.values() if r.alive]
    stored = await settle_async(p.store.signals, N, stall_s=3, timeout_s=30)
    p.note_crashes()
    # A dead replica's share waits in its broker session (module docstring): restart it.
    dead = [r for r in p.replicas.values() if not r.alive]
    for r in dead:
        await r.start()
    for r in dead:
        await r.ready()
    if dead:
        print(
            f"  {N - stored} of {N} first MSDs waited in the broker session of "
            f"{', '.join(r.name for r in dead)} until it restarted ({len(alive)} replica(s) alive)"
        )
    reviver = asyncio.create_task(p.revive())  # a crash from here on: noted, restarted
    try:
        await until_count(p.store.signals, N, timeout_s=30)
        async with asyncio.timeout(30):
            while await p.store.unsequenced():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        # Updates, then cancels, each phase once the one before is stored: two replicas store signals
        # published milliseconds apart in their own commit order, where a vehicle's are seconds apart.
        items = followups(N)
        updates, cancels = items[: N // 10], items[N // 10 :]
        await publish_all(p.broker, updates)
        await until_count(p.store.signals, N + len(updates), timeout_s=30)
        await publish_all(p.broker, cancels)
        await settle(lambda: len(p.recv.keys), expected_deliveries(N), stall_s=10, timeout_s=60)
        await asyncio.sleep(0.3)  # anything wrongly delivered twice would show up now
    finally:
        reviver.cancel()
        await asyncio.gather(reviver, return_exceptions=True)
    extra = await assert_nothing_lost(p.store, p.recv, n=N, signals=N + len(items))
    await assert_fenced(p)
    copies = await p.store.copies()
    print(f"  deliveries repeated under a seen key: {extra}; transport copies recognised: {copies}")
    p.note_crashes()
    return extra


class ReplicaCrashedError(AssertionError):
    """A replica the test did not kill exited by itself (its store guarantees may still hold)."""


def assert_no_crash(p: Pair) -> None:
    """Only what the test killed died: every other replica rode the fault out (checked last, so
    that a crash does not hide what the other assertions would say)."""
    if p.crashed:
        raise ReplicaCrashedError(f"replicas exited by themselves: {sorted(p.crashed.values())}")


async def assert_fenced(p: Pair) -> None:
    """Every row sequenced and every revision written by the leader of the epoch it was written under."""
    rows = await p.trace("what <> 'lease'")
    unknown = [r for r in rows if r[2] is None]
    wrong = [r for r in rows if r[2] is not None and r[2] != r[4]]
    assert (wrong[:5], unknown[:5]) == ([], []), "written by a replica that was not the leader (or unknown)"
    assert sum(1 for r in rows if r[0] == "journal") >= N  # the trace saw the whole stream sequenced


async def first_sequenced_after(p: Pair, epoch: int, timeout_s: float) -> tuple[float, str | None]:
    """(server time, writer) of the first row sequenced under an epoch above ``epoch``."""
    async with asyncio.timeout(timeout_s):
        while True:
            rows = await p.trace(f"what = 'journal' AND epoch > {int(epoch)}")
            if rows:
                return rows[0][5], rows[0][2]
            await asyncio.sleep(0.02)


async def claims_of(p: Pair, replica: Replica) -> int:
    return int(
        await p.store._value(
            f"SELECT count(*) FROM outbox WHERE state = 'pending' AND claimed_by = '{replica.name}'"
        )
    )


# --- a. kill -9 of the sequencer ------------------------------------------------------------------


async def test_kill_9_of_the_sequencer_mid_stream(tmp_path: Path, mosquitto: Mosquitto, pg_dsn: str) -> None:
    async with pair(tmp_path, mosquitto, pg_dsn) as p:
        await start_stream(p)
        epoch, leader = await p.leader()
        survivor = p.other(leader)
        killed_at = time.time()
        await leader.kill()
        stored_at_kill = await p.store.signals()
        at, app = await first_sequenced_after(p, epoch, timeout_s=15)
        failover_s = at - killed_at
        new_epoch, new_leader = await p.leader()
        print(
            f"\n  sequencer {leader.name} killed with {stored_at_kill}/{N} stored: {survivor.name} "
            f"sequenced its first row {failover_s:.3f} s later (epoch {epoch} -> {new_epoch})"
        )
        assert stored_at_kill < N, "the stream was over before the kill"
        assert new_leader is survivor and new_epoch > epoch and app == survivor.name
        assert failover_s <= 10.0
        await finish(p)


# --- b. kill -9 of the other replica --------------------------------------------------------------


async def test_kill_9_of_a_non_leader_mid_stream(tmp_path: Path, mosquitto: Mosquitto, pg_dsn: str) -> None:
    async with pair(tmp_path, mosquitto, pg_dsn) as p:
        await start_stream(p)
        epoch, leader = await p.leader()
        victim = p.other(leader)
        # Wait until the victim holds deliveries: the kill must leave claims for the leader to take.
        async with asyncio.timeout(30):
            while await claims_of(p, victim) == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await victim.kill()
        killed_at = time.time()
        stored_at_kill = await p.store.signals()
        held = await claims_of(p, victim)
        print(f"\n  {victim.name} killed with {stored_at_kill}/{N} stored, holding {held} outbox claims")
        assert stored_at_kill < N, "the stream was over before the kill"
        # Its claims pass to the survivor once their lease ran out, while it is still dead.
        async with asyncio.timeout(OUTBOX_LEASE_S + 15):
            while await claims_of(p, victim):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        print(f"  its claims were taken over or delivered {time.time() - killed_at:.2f} s after the kill")
        assert await p.leader() == (epoch, leader)  # the sequencer was not disturbed
        await finish(p)


# --- c. SIGSTOP of the sequencer beyond its lease ------------------------------------------------


async def test_sequencer_frozen_beyond_its_lease_is_fenced(
    tmp_path: Path, mosquitto: Mosquitto, pg_dsn: str
) -> None:
    async with pair(tmp_path, mosquitto, pg_dsn) as p:
        await start_stream(p)
        epoch, leader = await p.leader()
        other = p.other(leader)
        log_from, other_from = leader.lines(), other.lines()
        # Just after a renewal: frozen between two, as a stalled or partitioned process would be.
        _, _, renewed = await p.store.lease()
        async with asyncio.timeout(5):
            while (await p.store.lease())[2] == renewed:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        stopped_at = time.time()
        p.frozen.add(leader.name)
        leader.signal(signal.SIGSTOP)
        try:
            at, app = await first_sequenced_after(p, epoch, timeout_s=LEASE_S + 10)
            takeover = await p.store._rows(
                f"SELECT at, epoch, leader FROM test_trace WHERE what = 'lease' AND epoch > {epoch} "
                "ORDER BY epoch LIMIT 1"
            )
            took_at, new_epoch, new_leader = float(takeover[0][0]), int(takeover[0][1]), takeover[0][2]
            stored_at_stop = await p.store.signals()
            await asyncio.sleep(max(0.0, stopped_at + 3 * LEASE_S - time.time()))
        finally:
            leader.signal(signal.SIGCONT)
            p.frozen.discard(leader.name)
        ended = [e for e in other.events(other_from) if e.get("event") == "lease_expired"]
        print(
            f"\n  sequencer {leader.name} stopped with {stored_at_stop}/{N} stored; {other.name} took the "
            f"lease {took_at - stopped_at:.3f} s later (epoch {epoch} -> {new_epoch}; it ended "
            f"{ended[0].get('sessions') if ended else '?'} session(s) of {leader.name}) and sequenced its "
            f"first row {at - stopped_at:.3f} s after the stop; {leader.name} continued after "
            f"{3 * LEASE_S:.0f} s"
        )
        assert stored_at_stop < N, "the stream was over before the stop"
        assert new_leader == other.name and new_epoch > epoch and app == other.name
        assert at - stopped_at <= 10.0
        # Woken, the old leader learns it lost the lease (or is fenced), and writes nothing after.
        async with asyncio.timeout(15):
            while not lost_events(leader, log_from):  # noqa: ASYNC110 (a log file: no event to wait on)
                await asyncio.sleep(0.1)
        said = lost_events(leader, log_from)[0]
        print(f"  {leader.name} said: {said['msg']} ({said.get('reason', said.get('error', ''))})")
        await finish(p)
        late = [r for r in await p.trace(f"what <> 'lease' AND at >= {took_at!r}") if r[2] != other.name]
        assert late == [], f"{len(late)} rows written after the takeover by another than {other.name}"
        assert_no_crash(p)


def lost_events(replica: Replica, since_line: int) -> list[dict[str, Any]]:
    """Log lines of a replica saying it stopped leading or was fenced."""
    return [
        e
        for e in replica.events(since_line)
        if e.get("event") == "leader_lost" or "fenced" in str(e.get("msg", ""))
    ]


# --- d. PostgreSQL restarted mid-stream -----------------------------------------------------------

RECOVERY_S = 20.0  # a replica is ready again this long after the server is back, at most


async def test_postgresql_restart_mid_stream(tmp_path: Path, mosquitto: Mosquitto) -> None:
    # A server of our own: the session's is shared by other tests.
    with PgServer(fsync=False) as server:
        dsn = server.create_database()
        async with pair(tmp_path, mosquitto, dsn) as p:
            await start_stream(p)
            seen: dict[str, list[tuple[float, int, dict[str, Any]]]] = {r: [] for r in p.replicas}
            watcher = asyncio.create_task(watch_ready(p, seen))
            stopped_at = time.monotonic()
            try:
                # In a thread: pg_ctl waits, and this loop runs the PSAP the replicas deliver to.
                await asyncio.to_thread(server.stop, "immediate")  # a crash: recovery from the WAL
                await asyncio.sleep(2.0)
                await asyncio.to_thread(server.start)
                up_at = time.monotonic()
                # Both replicas recover by themselves: ready again within a bounded time (or dead).
                async with asyncio.timeout(RECOVERY_S + 5):
                    while not all(  # noqa: ASYNC110
                        not p.replicas[name].alive or any(t >= up_at and code == 200 for t, code, _ in s)
                        for name, s in seen.items()
                    ):
                        await asyncio.sleep(0.1)
            finally:
                watcher.cancel()
            p.note_crashes()
            recovered: dict[str, float] = {}
            print(f"\n  PostgreSQL was down {up_at - stopped_at:.2f} s (immediate stop, start)")
            for name, statuses in seen.items():
                down = [checks for t, code, checks in statuses if code != 200]
                failing = sorted({k for checks in down for k, ok in checks.items() if not ok})
                first_ok = next((t for t, code, _ in statuses if t >= up_at and code == 200), None)
                if first_ok is not None:
                    recovered[name] = first_ok - up_at
                print(
                    f"  {name}: not ready in {len(down)} polls (failing: {', '.join(failing) or '-'}); "
                    + (
                        f"ready {recovered[name]:.2f} s after the server was back"
                        if name in recovered
                        else "never ready again: "
                        + next((why for why in p.crashed.values() if why.startswith(f"{name},")), "alive")
                    )
                )
            await finish(p)
        assert_no_crash(p)
        assert sorted(recovered) == sorted(p.replicas) and max(recovered.values()) <= RECOVERY_S


async def watch_ready(p: Pair, seen: dict[str, list[tuple[float, int, dict[str, Any]]]]) -> None:
    """Poll the running replicas' /readyz every 0.1 s: (monotonic time, status, checks) per replica."""
    async with aiohttp.ClientSession() as http:
        while True:
            for r in p.replicas.values():
                if r.alive:
                    status, body = await readyz(http, r.http_port)
                    checks = body.get("checks", body)
                    seen[r.name].append(
                        (time.monotonic(), status, checks if isinstance(checks, dict) else {})
                    )
            await asyncio.sleep(0.1)


# --- focused: what the scenarios above ran into ---------------------------------------------------


async def test_signals_refused_while_the_store_is_down_are_stored_once_it_is_back(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A signal whose journal append failed is left unacknowledged; it must still reach the store.

    The store is down before anything is routed (no deliveries in flight), so only intake is
    exercised: MQTT messages arrive, their group commit fails, PostgreSQL comes back.
    """
    recv = Receiver()
    await recv.start()
    n = 50
    with PgServer(fsync=False) as server:
        dsn = server.create_database()
        spec = StoreSpec("postgresql", dsn=dsn, lease_s=LEASE_S, outbox_lease_s=OUTBOX_LEASE_S)
        port = free_port()
        config = write_config(
            tmp_path / "solo.toml", mosquitto, recv, port, spec, replica_id="solo", client_id="gw-solo",
            log_level="info",
        )  # fmt: skip
        replica = Replica("solo", config, port, tmp_path / "solo.log")
        store = PgInspector(dsn)
        try:
            await replica.start()
            await replica.ready()
            await asyncio.to_thread(server.stop, "fast")
            await publish_all(mosquitto, stream(n, prefix="down"))
            await asyncio.sleep(2.0)  # the replica took them and failed to store them
            await asyncio.to_thread(server.start)
            stored = await settle_async(store.signals, n, stall_s=10, timeout_s=30)
            refused = sum(
                1 for e in replica.events() if str(e.get("msg", "")).startswith("message not stored")
            )  # one WARNING a minute (the rest at DEBUG)
            print(
                f"\n  {refused} appends failed while the store was down; "
                f"{stored}/{n} stored 10 s after it was back"
            )
            assert replica.alive, tail(replica.log)
            assert stored == n
            await settle(lambda: len(recv.keys), n, stall_s=10, timeout_s=30)
            assert len(recv.keys) == n
        finally:
            await replica.stop()
            await store.close()
            await recv.stop()


async def test_pooled_sessions_carry_the_replica_id(tmp_path: Path, pg_dsn: str) -> None:
    """Every session of a replica is named ``ecallgw:{replica_id}:{role}``: a takeover ends the
    frozen leader's sessions by that name (leadership.py), the sequencer's pooled one included."""
    recv = Receiver()
    cfg = gateway_config(
        tmp_path,
        broker=None,
        psap_url=recv.url,
        store={"backend": "postgresql", "dsn": pg_dsn, "replica_id": "r7", "lease_s": LEASE_S},
    )
    store = PgInspector(pg_dsn)
    try:
        async with running_gateway(cfg):
            rows = await store._rows(
                "SELECT application_name FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
    finally:
        await store.close()
    names = sorted({r[0] for r in rows})
    assert names and all(name.startswith("ecallgw:r7:") for name in names), names


async def test_a_renewal_on_a_session_the_server_ended_does_not_raise(
    pg_server: PgServer, pg_dsn: str
) -> None:
    """What a leader sees when it wakes after a takeover ended its session: asyncpg has read the
    server's FATAL ("terminating connection due to administrator command") but not yet the end of
    the stream. Its renewal must count as the lease lost, not escape `Leadership.run` (and with it
    `Gateway.run`: test_sequencer_frozen_beyond_its_lease_is_fenced saw the process exit 1).

    The steps of `Leadership.run` are called one by one, to renew exactly at that moment.
    """
    cfg = StoreConfig(backend="postgresql", dsn=Secret(pg_dsn), lease_s=LEASE_S)
    database = pg_dsn.rsplit("/", 1)[1]
    session = f"FROM pg_stat_activity WHERE datname = '{database}' AND application_name = 'ecallgw:r1:leader'"
    async with PostgresStore(cfg, Metrics(), replica_id="r1") as store:
        leadership = Leadership(store, "r1", LEASE_S, Metrics())
        await leadership._campaign()
        assert leadership.leading
        try:
            # Synchronously (psql): this process is "frozen" meanwhile, its event loop does not turn.
            assert pg_server.sql(f"SELECT count(pg_terminate_backend(pid)) {session}").strip() == "1"
            deadline = time.monotonic() + 10
            while pg_server.sql(f"SELECT count(*) {session}").strip() != "0":
                assert time.monotonic() < deadline, "the terminated session did not end"
                time.sleep(0.05)  # noqa: ASYNC251 (frozen on purpose)
            time.sleep(0.05)  # noqa: ASYNC251 (the FATAL and the end of the stream wait in the socket)
            await asyncio.sleep(0)  # one turn of the loop reads the FATAL ...
            await asyncio.sleep(0)  # ... and this task runs before the next reads the end
            await leadership._renew()
        finally:
            await leadership._drop_conn()


class SlowReceiver(Receiver):
    """A PSAP that takes 0.1 s per request: deliveries queue up in the lanes."""

    async def _handle(self, request: web.Request) -> web.Response:
        await asyncio.sleep(0.1)
        return await super()._handle(request)


async def test_deliveries_ride_out_a_store_outage(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A replica with a backlog of claimed deliveries while PostgreSQL is down for 2 s: it keeps
    running and delivers everything once the server is back."""
    recv = SlowReceiver()
    await recv.start()
    n = 1000
    with PgServer(fsync=False) as server:
        dsn = server.create_database()
        spec = StoreSpec("postgresql", dsn=dsn, lease_s=LEASE_S, outbox_lease_s=OUTBOX_LEASE_S)
        port = free_port()
        config = write_config(
            tmp_path / "solo.toml", mosquitto, recv, port, spec, replica_id="solo", client_id="gw-solo"
        )
        replica = Replica("solo", config, port, tmp_path / "solo.log")
        store = PgInspector(dsn)
        try:
            await replica.start()
            await replica.ready()
            await publish_all(mosquitto, stream(n, prefix="slow"))
            held = "SELECT count(*) FROM outbox WHERE state = 'pending' AND claimed_by = 'solo'"
            async with asyncio.timeout(30):
                while len(recv.keys) < 50 or int(await store._value(held)) < 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            await store.close()
            await asyncio.to_thread(server.stop, "fast")
            await asyncio.sleep(2.0)
            await asyncio.to_thread(server.start)
            await asyncio.sleep(3.0)
            if not replica.alive:
                errors = [
                    ln
                    for ln in replica.log.read_text().splitlines()
                    if re.search(r"\w(Error|Exception): ", ln)
                ]
                raise ReplicaCrashedError(
                    f"exit status {replica.returncode}: {errors[-1] if errors else '?'}"
                )
            await settle(lambda: len(recv.keys), n, stall_s=10, timeout_s=60)
            assert len(recv.keys) == n
        finally:
            if replica.alive:
                await replica.stop()
            await store.close()
            await recv.stop()
