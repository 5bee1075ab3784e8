"""``ecallgw demo``: the gateway on embedded defaults with a simulated fleet, PSAP and operator.

It starts a private mosquitto on a free port when the binary is installed (otherwise the fleet
sends over the HTTP source, and says so), a simulated PSAP and operator desk (``ecallgw.simulators``),
the gateway itself in this process, and the fleet: scenarios in the UK 2024 mix, sent at their
scheduled times. An operator bot acts on what the desk receives as each scenario's label says. A
summary line is printed every two seconds. Ctrl-C (or ``--duration``) stops everything.

With ``--replicas N`` (N >= 2) the store is a private PostgreSQL server in the demo's directory
(`ecallgw.simulators.pgserver.PgServer`) and N gateways run in this process as replicas r1..rN:
one elected sequencer, all ingesting (one MQTT shared subscription, or the fleet's HTTP sends
spread over them) and all delivering (docs/scaling.md). ``--kill-leader-after`` then stops the
leader abruptly, a crash simulated inside this process (`_kill` says how far that goes), and
reports the takeover; ``--restart-after`` brings the killed replica back, as a supervisor would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import logging
import random
import secrets
import shutil
import signal
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecallgw.commands.argtypes import non_negative_float, positive_float, positive_int

if TYPE_CHECKING:
    from ecallgw.app import Gateway
    from ecallgw.config import Config
    from ecallgw.simulators.drivers import Outgoing, SendLog
    from ecallgw.simulators.psap import SimulatedPsap

HELP = "run the gateway with a simulated fleet, PSAP and operator, and print a live summary"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument(
        "--duration", type=non_negative_float, default=0.0, help="stop after this many seconds (0: at Ctrl-C)"
    )
    parser.add_argument(
        "--rate", type=positive_float, default=2.0, help="new eCall scenarios per second (default 2)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the fleet and scenarios")
    parser.add_argument(
        "--http", action="store_true", help="send over the HTTP source even if mosquitto exists"
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory (store, broker data)")
    parser.add_argument(
        "--replicas",
        type=positive_int,
        default=1,
        metavar="N",
        help="run N gateways in this process as replicas r1..rN of one private PostgreSQL store (each "
        "its own MQTT client id in one shared subscription, or with --http the fleet's sends spread "
        "over their HTTP ports); the summary shows each one's role, signals in and deliveries out. "
        "Needs the PostgreSQL server binaries. Default 1: one gateway on SQLite",
    )
    parser.add_argument(
        "--kill-leader-after",
        type=float,
        default=None,
        metavar="S",
        help="with --replicas 2 or more: stop the leader (the elected sequencer) abruptly S seconds in "
        "(default 20; 0: never) and report which replica takes over and how fast. The crash is "
        "simulated inside this one process, where kill -9 is not possible: all of the replica's tasks "
        "are cancelled at once and its PostgreSQL connections cut (closed on its side, any left ended "
        "by pg_terminate_backend), with no drain; its MQTT connection closes and its HTTP port stops "
        "answering. Unlike kill -9, its cancelled code still runs its cleanup and its MQTT client may "
        "say DISCONNECT. For a real kill -9 of one of several processes see docs/scaling.md",
    )
    parser.add_argument(
        "--restart-after",
        type=float,
        default=10.0,
        metavar="S",
        help="restart the killed replica S seconds after the kill, as a supervisor would (default 10; "
        "0: never). Over MQTT this is what brings its share home: mosquitto keeps queueing a share of "
        "the shared subscription for a member that is gone, in its persistent session, until that "
        "client id reconnects",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C or ``--duration``."""
    import uvloop

    if args.replicas < 1:
        _say("demo: --replicas must be 1 or more")
        return 2
    if args.replicas == 1:
        if args.kill_leader_after:
            _say("demo: --kill-leader-after needs --replicas 2 or more (one gateway has no one to take over)")
            return 2
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(_demo(args))
        return 0
    from ecallgw.simulators.pgserver import find_bindir

    try:
        find_bindir()
    except RuntimeError as exc:
        _say(f"demo: --replicas needs a PostgreSQL server: {exc}")
        return 2
    if args.kill_leader_after is None:
        args.kill_leader_after = 20.0
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_replicas_demo(args))
    return 0


def _say(text: str) -> None:
    print(text, flush=True)


def _mosquitto() -> str | None:
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


class _Broker:
    """A private mosquitto: free port, persistence in the demo's directory."""

    def __init__(self, binary: str, directory: Path) -> None:
        from ecallgw.simulators.load import free_port

        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)  # started as root it runs as 'mosquitto' and must write here
        conf = directory / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {directory}/\nmax_inflight_messages 1000\nmax_queued_messages 0\n"
            f"log_dest file {directory}/mosquitto.log\n"
        )
        self._argv = [binary, "-c", str(conf)]
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> _Broker:
        import socket

        # Its own session: a terminal's Ctrl-C goes to the whole foreground process group, and a
        # broker killed by it at once would drop the gateway's and the fleet's connections under
        # them mid-write (aiomqtt then adds a writer for a closed socket: an asyncio error). The
        # demo stops the clients first and terminates the broker last (__aexit__).
        self._proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        async with asyncio.timeout(5):
            while True:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
                ):
                    return self
                await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()


def _gateway_tree(
    workdir: Path, psap_url: Any, mqtt_port: int | None, tokens: dict[str, str], operator: str
) -> dict[str, Any]:
    return {
        "store": {"path": str(workdir / "ecallgw.sqlite3")},
        "mqtt": {"port": mqtt_port, "client_id": "ecallgw-demo"} if mqtt_port else {"enabled": False},
        "http": {"port": 0},
        "auth": {
            "tokens": [
                *({"name": tps, "role": "provider", "tps": tps, "token": tok} for tps, tok in tokens.items()),
                {"name": "demo-operator", "role": "operator", "token": operator},
            ]
        },
        "receivers": {
            "operator": {"kind": "http", "url": psap_url("operator")},
            "test": {"kind": "http", "url": psap_url("test")},
            "psap-fallback": {"kind": "http", "url": psap_url("psap-fallback"), "format": "cap"},
        },
        "log": {"level": "warning"},
    }


async def _demo(args: argparse.Namespace) -> None:
    from ecallgw.app import Gateway
    from ecallgw.config import load_config
    from ecallgw.simulators.fleet import TPS_NAMES
    from ecallgw.simulators.psap import OperatorBot, SimulatedPsap

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP too: the broker is in its own session (see _Broker), so a closed terminal reaches only
    # the demo, which must then stop the broker itself.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    workdir = Path(tempfile.mkdtemp(prefix="ecallgw-demo-"))
    binary = None if args.http else _mosquitto()
    if binary is None:
        reason = "--http given" if args.http else "mosquitto is not installed"
        _say(f"demo: {reason}; the fleet sends over the gateway's HTTP source instead of MQTT")
    tokens = {tps: secrets.token_urlsafe(24) for tps in TPS_NAMES}
    operator = secrets.token_urlsafe(24)
    try:
        async with contextlib.AsyncExitStack() as stack:
            broker = (
                await stack.enter_async_context(_Broker(binary, workdir / "mosquitto")) if binary else None
            )
            psap = await stack.enter_async_context(SimulatedPsap(random.Random(args.seed)))
            tree = _gateway_tree(workdir, psap.url, broker.port if broker else None, tokens, operator)
            # issue 14: a simulated SMS gateway and assistance providers; breakdowns, shared positions
            from ecallgw.simulators.callers import CallerSide

            callers = await stack.enter_async_context(CallerSide(random.Random(args.seed)))
            tree.update(callers.config_tree())
            gw = await stack.enter_async_context(Gateway(load_config(base=tree), configure_log=True))
            assert gw.http is not None
            api = f"http://127.0.0.1:{gw.http.port}"
            gateway_task = asyncio.create_task(gw.run())
            _say(
                f"demo: gateway up - HTTP {api} (operator API, /metrics), "
                + (f"MQTT 127.0.0.1:{broker.port}" if broker else "MQTT off")
                + f", simulated PSAP http://127.0.0.1:{psap.port}, store {workdir / 'ecallgw.sqlite3'}"
            )
            _say(f"demo: operator token {operator}  (curl -H 'Authorization: Bearer …' {api}/v1/incidents)")
            _say(f"demo: operator console {api}/console/  (sign in there with that token)")
            _say("demo: Ctrl-C stops everything")
            callers.start(api, operator, tokens, _say)  # issue 14
            plan: dict[tuple[str, str], tuple[str, float]] = {}
            bot = await stack.enter_async_context(OperatorBot(api, operator, plan))
            psap.subscribe(bot.on_arrival)
            from ecallgw.simulators.drivers import drive_http, drive_mqtt

            async def send(outgoing: list[Outgoing], batch: int) -> object:
                if broker is not None:
                    return await drive_mqtt(
                        outgoing, host="127.0.0.1", port=broker.port, client_id=f"ecallgw-demo-fleet-{batch}"
                    )
                return await drive_http(outgoing, base_url=api, tokens=tokens)

            fleet = asyncio.create_task(_fleet(args, send, plan))
            t0 = time.time()
            try:
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(2.0):
                            await stop.wait()
                    if stop.is_set():
                        break
                    _say(await _summary(gw, psap, time.time() - t0) + f"  callers: {callers.summary()}")
                    if args.duration and time.time() - t0 >= args.duration:
                        break
                    if fleet.done() and fleet.exception() is not None:
                        raise fleet.exception()  # type: ignore[misc]
            finally:
                fleet.cancel()
                await asyncio.gather(fleet, return_exceptions=True)
                gw.stop()
                await gateway_task
            _say(await _summary(gw, psap, time.time() - t0))
    finally:
        if args.keep:
            _say(f"demo: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def _fleet(
    args: argparse.Namespace,
    send: Callable[[list[Outgoing], int], Awaitable[object]],
    plan: dict[tuple[str, str], tuple[str, float]],
) -> None:
    """Send scenarios batch by batch (30 s each), forever, at their scheduled times, with ``send``."""
    from ecallgw.simulators import DEFAULT_MIX, generate
    from ecallgw.simulators.drivers import build_outgoing

    batch_s = 30.0
    start = time.time() + 0.5
    batch = 0
    while True:
        n = max(1, round(args.rate * batch_s))
        scenarios = generate(
            random.Random(args.seed * 1000 + batch), n, DEFAULT_MIX, start=start, mean_gap_s=1.0 / args.rate
        )
        outgoing = build_outgoing(scenarios)
        shift = max(0.0, time.time() + 0.2 - start)
        outgoing = [replace(o, at=o.at + shift) for o in outgoing]
        for s in scenarios:  # the operator bot acts as each label prescribes
            if s.label.operator_action is not None and s.label.operator_delay_s is not None:
                for t in s.signals:
                    plan[(t.signal.tps, t.signal.vehicle)] = (
                        s.label.operator_action,
                        s.start + shift + s.label.operator_delay_s,
                    )
        await send(outgoing, batch)
        start += batch_s
        batch += 1


async def _summary(gw: Any, psap: Any, elapsed: float) -> str:
    return f"[{elapsed:6.1f}s] {_totals([gw], gw.forwarder.pending)}  PSAP duplicates {psap.duplicates}"


def _value(gw: Any, name: str, labels: dict[str, str] | None = None) -> int:
    v = gw.metrics.registry.get_sample_value(name, labels or {})
    return int(v) if v is not None else 0


def _totals(gws: list[Any], pending: int | str) -> str:
    """Today's summary figures, summed over gateways (replicas, and their earlier lives)."""

    def value(name: str, labels: dict[str, str] | None = None) -> int:
        return sum(_value(gw, name, labels) for gw in gws)

    levels = " ".join(
        f"{lv} {value('ecallgw_incidents_total', {'level': lv})}"
        for lv in ("critical", "high", "medium", "low")
    )
    signals = sum(
        value("ecallgw_signals_received_total", {"transport": t, "kind": k})
        for t in ("mqtt", "http")
        for k in ("msd", "cancel", "position", "msd_raw", "invalid")
    )
    delivered = " ".join(
        f"{r} {value('ecallgw_deliveries_total', {'receiver': r, 'outcome': 'delivered'})}"
        for r in ("operator", "psap-fallback", "test")
    )
    dead = sum(
        value("ecallgw_deliveries_total", {"receiver": r, "outcome": "dead_lettered"})
        for r in gws[0].forwarder.lanes
    )
    quarantined = sum(
        int(s.value)
        for gw in gws
        for m in gw.metrics.registry.collect()
        if m.name == "ecallgw_decode_errors"
        for s in m.samples
        if s.name.endswith("_total")
    )
    return (
        f"signals {signals}  incidents: {levels}  delivered: {delivered}  "
        f"pending {pending}  dead letters {dead}  quarantined {quarantined}"
    )


# --- replicas on PostgreSQL (--replicas N) ------------------------------------------------------

_LEASE_S = 3.0  # store.lease_s: a frozen leader is replaced after this long (a dead one sooner)
_OUTBOX_LEASE_S = 6.0  # store.outbox_lease_s: a dead replica's claimed deliveries move on after this
_SHARE_GROUP = "ecallgw-demo"
_HTTP_TRIES = 6  # the fleet over HTTP: a send refused by one replica is tried on the next
_HTTP_TIMEOUT_S = 5.0
_SETTLE_S = 5.0  # at the end: how long to wait for what is in flight to be stored, triaged, delivered

_log = logging.getLogger("ecallgw.demo")


class _Life:
    """One run of one replica, and every task started on its behalf (recorded by `_task_factory`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


_LIFE: contextvars.ContextVar[_Life | None] = contextvars.ContextVar("ecallgw_demo_life", default=None)


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    """The loop's task factory: a task created in a replica's context is recorded as that replica's.

    A crash has to stop all of them at once, the store's writer and the HTTP handlers included,
    not only the gateway's run task.
    """
    task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
    context = kwargs.get("context")
    life = context.get(_LIFE) if context is not None else _LIFE.get()
    if life is not None:
        life.tasks.add(task)
    return task


class _ReplicaLogFilter(logging.Filter):
    """Name the replica a log line comes from: all of them share this process and its stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        life = _LIFE.get()
        if life is not None and not hasattr(record, "replica"):
            record.replica = life.name
        return True


@dataclass
class _Node:
    """One replica: its configuration, its current gateway, and the gateways of its earlier lives."""

    name: str
    config: Config
    role: str  # its own PostgreSQL role: every session of it can be found, whatever the pool names it
    gw: Gateway | None = None
    task: asyncio.Task[None] | None = None
    life: _Life | None = None
    killed: bool = False
    led: int | None = None  # the epoch it last led, as last seen
    past: list[Gateway] = field(default_factory=list)
    past_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    reaper: asyncio.Task[None] | None = None

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return [
            *self.past_tasks,
            *([self.task] if self.task is not None else []),
            *([self.reaper] if self.reaper is not None else []),
        ]

    @property
    def lives(self) -> list[Gateway]:
        return [*self.past, *([self.gw] if self.gw is not None else [])]

    @property
    def epoch(self) -> int | None:
        """Its epoch while it leads (and is alive), else None."""
        if self.killed or self.gw is None or self.gw.leadership is None:
            return None
        if self.gw.leadership.epoch is not None:
            self.led = self.gw.leadership.epoch
        return self.gw.leadership.epoch

    @property
    def api(self) -> str:
        assert self.gw is not None and self.gw.http is not None
        return f"http://127.0.0.1:{self.gw.http.port}"


async def _start(node: _Node) -> None:
    """Open and run a gateway for ``node`` in a task of its own; return once it is ready."""
    from ecallgw.app import Gateway

    opened: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()

    life = _Life(node.name)

    async def main() -> None:
        _LIFE.set(life)  # this task's context, inherited by every task the gateway starts
        async with Gateway(node.config) as gw:
            opened.set_result(gw)
            await gw.run()

    task = asyncio.create_task(main(), name=f"demo-{node.name}")
    ready: asyncio.Future[Any] | None = None
    try:
        first: set[asyncio.Future[Any]] = {task, opened}
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if not opened.done():
            task.result()  # its failure to open
            raise RuntimeError(f"replica {node.name} stopped before it opened")
        gw = opened.result()
        ready = asyncio.ensure_future(gw.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not gw.ready.is_set():
            task.result()
            raise RuntimeError(f"replica {node.name} stopped before it was ready")
    except BaseException:  # cancelled (Ctrl-C) or failed while starting: no gateway left behind
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    finally:
        if ready is not None:
            ready.cancel()
    if node.gw is not None:
        node.past.append(node.gw)
    if node.task is not None:
        node.past_tasks.append(node.task)
    node.gw, node.task, node.life, node.killed, node.led = gw, task, life, False, None


_SESSIONS_OF = "WHERE pid <> pg_backend_pid() AND (usename = $1 OR application_name LIKE $2)"


async def _kill(node: _Node, admin: Any) -> tuple[float, int, int, set[tuple[str, str]]]:
    """Stop a replica as a crash would.

    In one process there is no kill -9, so this is a simulation. The steps that decide the outcome
    happen at once, with no await between them: its connection pool is terminated (every pooled
    socket closed on our side, no new connection possible, so nothing it has queued commits) and
    every task it started is cancelled (`_task_factory` recorded them: sequencer, leadership,
    listener, claimer, forwarder, MQTT source, the store's writer, HTTP handlers). They stop where
    they are: no drain, no release of its outbox claims; what their cancellation still runs closes
    their own connections or fails on closed ones. Then any session of its PostgreSQL role the
    server still has is ended with ``pg_terminate_backend``, so its advisory lock and any open
    transaction go now. Its gateway's exit (HTTP port, sinks) follows, as the system reclaims a
    dead process's sockets. Unlike a kill -9, its MQTT client may say DISCONNECT on the way out;
    the broker keeps its persistent session, and what it had not acknowledged, either way.

    Returns:
        When (monotonic); its PostgreSQL sessions before; those still open after, ended by
        ``pg_terminate_backend``; the (receiver, Idempotency-Key) of the deliveries it had claimed.
    """
    from ecallgw.gateway.store.postgres import PostgresStore

    assert node.gw is not None and node.task is not None and node.life is not None
    store = node.gw.store
    assert isinstance(store, PostgresStore)
    who = (node.role, f"ecallgw:{node.name}:%")
    had = await admin.fetchval(f"SELECT count(*) FROM pg_stat_activity {_SESSIONS_OF}", *who)
    node.killed = True
    when = time.monotonic()
    store.pool.terminate()
    doomed = [t for t in node.life.tasks if not t.done()]
    node.task.cancel()
    for task in doomed:
        task.cancel()
    ended = await admin.fetchval(
        f"SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity {_SESSIONS_OF}", *who
    )
    node.reaper = asyncio.create_task(_reap(node.name, node.task, doomed))
    # Its claims: deliveries it held, some perhaps accepted by the receiver in the instant before the
    # crash but not yet recorded. Another replica sends those again (same Idempotency-Key) when
    # the claims' leases run out: at least once, by design (forwarder.py).
    rows = await admin.fetch(
        "SELECT receiver, incident_id, revision FROM outbox WHERE state = 'pending' AND claimed_by = $1",
        node.name,
    )
    return when, int(had), int(ended), {(r[0], f"{r[1]}:{r[2]}") for r in rows}


async def _reap(name: str, root: asyncio.Task[None], doomed: list[asyncio.Task[Any]]) -> None:
    """Cancel again, until its gateway is gone, any task of a killed replica that outlived its cancel.

    A task that turns the CancelledError into another error (a rollback that fails on a closed
    connection, caught as a store error) and carries on would keep the dead replica's gateway from
    ever closing. A crash leaves nothing running: so do we, and say which tasks needed it.
    """
    again: set[str] = set()
    for _ in range(120):
        await asyncio.sleep(0.5)
        if root.done():
            break
        for task in doomed:
            if not task.done():
                again.add(task.get_name())
                task.cancel()
    if again:
        _log.warning(
            "tasks of a killed replica outlived their cancellation by 0.5 s or more; cancelled again",
            extra={"replica": name, "tasks": sorted(again), "closed": root.done()},
        )


async def _chaos(
    args: argparse.Namespace,
    nodes: list[_Node],
    admin: Any,
    t0: float,
    on_kill: Callable[[_Node, set[tuple[str, str]]], None],
) -> None:
    """Kill the leader at ``--kill-leader-after``, report the takeover, restart it later."""
    await asyncio.sleep(max(0.0, t0 + args.kill_leader_after - time.time()))
    while True:  # between two terms, the next leader is the one to kill
        leader = next((n for n in nodes if n.epoch is not None), None)
        if leader is not None:
            break
        await asyncio.sleep(0.05)
    epoch = leader.epoch
    at = time.time() - t0
    killed, had, ended, held = await _kill(leader, admin)
    on_kill(leader, held)
    _say(
        f"demo: leader {leader.name} killed at {at:.1f} s (epoch {epoch}): a simulated crash - its tasks "
        f"cancelled and its {had} PostgreSQL sessions cut under it ({ended} still open, ended by "
        "pg_terminate_backend), no drain"
    )
    if leader.config.mqtt.enabled:
        _say(
            f"demo: while {leader.name} is down, mosquitto queues its share of the shared subscription in "
            f"its persistent session: 'fleet sent' runs ahead of 'stored' until {leader.name} is back"
        )
    deadline = killed + 60.0
    while time.monotonic() < deadline:
        new = next((n for n in nodes if n.epoch is not None), None)
        if new is not None and new.gw is not None and new.gw.leadership is not None:
            since = new.gw.leadership.since or time.monotonic()
            _say(f"demo: {new.name} took over after {since - killed:.1f} s (epoch {new.epoch})")
            break
        await asyncio.sleep(0.02)
    else:
        _say("demo: no replica took over within 60 s")
    if args.restart_after > 0:
        await asyncio.sleep(max(0.0, killed + args.restart_after - time.monotonic()))
        await _start(leader)
        _say(
            f"demo: {leader.name} restarted at {time.time() - t0:.1f} s with the same replica id"
            + (" and MQTT client id (the broker hands it what it kept)" if leader.config.mqtt.enabled else "")
        )


async def _publish_mqtt(outgoing: list[Outgoing], log: SendLog, port: int, client_id: str) -> None:
    """`drive_mqtt` with a send log the summary can read while it runs."""
    import aiomqtt

    from ecallgw.simulators.drivers import open_loop

    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=client_id, clean_session=True, max_inflight_messages=2000, timeout=30.0
    ) as client:
        client.pending_calls_threshold = 2001

        async def publish(i: int, item: Outgoing) -> None:
            try:
                await client.publish(f"ecall/v1/{item.tps}/{item.vehicle}/{item.kind}", item.payload, qos=1)
                log.acked[i] = time.time()
            except aiomqtt.MqttError as exc:
                log.errors[i] = f"mqtt: {exc}"

        await open_loop(outgoing, log, publish, max_outstanding=2000, on_progress=None)


async def _post_http(
    outgoing: list[Outgoing], log: SendLog, targets: Callable[[], list[str]], tokens: dict[str, str]
) -> None:
    """Spread the sends over the replicas' HTTP ports, round robin; a refused send goes to the next.

    What a provider behind a load balancer sees: a replica that is gone refuses or fails the
    request (a 503, a reset, a refused connection), and the send is retried on another one. A
    signal counts as taken when a replica answered for it: 202 (stored) or 400 (quarantined).
    """
    import aiohttp

    from ecallgw.simulators.drivers import open_loop

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def post(i: int, item: Outgoing) -> None:
            headers = {
                "Authorization": f"Bearer {tokens.get(item.tps, '')}",
                "Content-Type": "application/msgpack",
            }
            why = "no answer"
            for attempt in range(_HTTP_TRIES):
                urls = targets()
                url = f"{urls[(i + attempt) % len(urls)]}/v1/ecall/{item.tps}/{item.vehicle}/{item.kind}"
                try:
                    async with (
                        asyncio.timeout(_HTTP_TIMEOUT_S),
                        session.post(url, data=item.payload, headers=headers) as resp,
                    ):
                        await resp.read()
                        if resp.status in (202, 400):
                            log.acked[i] = time.time()
                            return
                        why = f"http {resp.status}"
                        if resp.status < 500 and resp.status != 429:
                            break
                except (aiohttp.ClientError, TimeoutError) as exc:
                    why = f"http: {type(exc).__name__}"
                await asyncio.sleep(0.2)
            log.errors[i] = why

        await open_loop(outgoing, log, post, max_outstanding=256, on_progress=None)


async def _store_figures(admin: Any) -> tuple[int, int, int]:
    """(signals stored, journal rows not yet sequenced, outbox entries not yet delivered)."""
    row = await admin.fetchrow(
        "SELECT (SELECT count(DISTINCT digest) FROM journal WHERE type = 'signal') "
        "+ (SELECT count(*) FROM quarantine), "
        "(SELECT count(*) FROM journal WHERE seq IS NULL), "
        "(SELECT count(*) FROM outbox WHERE state = 'pending')"
    )
    return int(row[0]), int(row[1]), int(row[2])


def _resent(psap: SimulatedPsap, held: set[tuple[str, str]]) -> str:
    """How many PSAP duplicates are deliveries a killed replica had claimed, sent again by another."""
    n = sum(1 for a in psap.arrivals if a.duplicate and (a.receiver, a.key or "") in held)
    return f" ({n} re-sent after the crash: same Idempotency-Key)" if n else ""


async def _replica_summary(
    nodes: list[_Node],
    psap: SimulatedPsap,
    admin: Any,
    sent: int,
    held: set[tuple[str, str]],
    elapsed: float,
    *,
    final: bool = False,
) -> str:
    try:
        stored, unsequenced, pending = await _store_figures(admin)
        store = f"  fleet sent {sent} stored {stored}  unsequenced {unsequenced}"
    except Exception as exc:  # the summary must not stop the demo
        pending, store = -1, f"  (store figures unavailable: {type(exc).__name__})"
    parts = []
    for n in nodes:
        taken = sum(gw.processed for gw in n.lives)
        made = sum(
            _value(gw, "ecallgw_deliveries_total", {"receiver": r, "outcome": "delivered"})
            for gw in n.lives
            for r in gw.forwarder.lanes
        )
        if n.killed:
            role = "KILLED"
        elif n.epoch is not None:
            role = f"leader (epoch {n.epoch})"
        elif final and n.led is not None:
            role = f"stopped (led epoch {n.led})"
        else:
            role = "stopped" if final else "follower"
        if n.past:
            role += f" (restarted{'' if len(n.past) == 1 else f' {len(n.past)} times'})"
        parts.append(f"{n.name} {role} in {taken} out {made}")
    gws = [gw for n in nodes for gw in n.lives]
    return (
        f"[{elapsed:6.1f}s] {' | '.join(parts)} || {_totals(gws, pending if pending >= 0 else '?')}  "
        f"PSAP duplicates {psap.duplicates}{_resent(psap, held)}{store}"
    )


async def _settle(admin: Any, sent: int, all_alive: bool) -> None:
    """Wait (bounded) until what the fleet sent is stored, sequenced and delivered.

    With a replica down, only for the sequencing: its share of MQTT messages and its claimed
    deliveries wait for it (or for their leases), not for us.
    """
    deadline = time.monotonic() + _SETTLE_S
    while time.monotonic() < deadline:
        try:
            stored, unsequenced, pending = await _store_figures(admin)
        except Exception:
            return
        if not unsequenced and (not all_alive or (stored >= sent and not pending)):
            return
        await asyncio.sleep(0.1)


async def _replicas_demo(args: argparse.Namespace) -> None:
    import asyncpg

    from ecallgw.config import load_config
    from ecallgw.gateway.logging import configure_logging
    from ecallgw.simulators.drivers import SendLog
    from ecallgw.simulators.fleet import TPS_NAMES
    from ecallgw.simulators.pgserver import PgServer
    from ecallgw.simulators.psap import OperatorBot, SimulatedPsap

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    loop.set_task_factory(_task_factory)
    workdir = Path(tempfile.mkdtemp(prefix="ecallgw-demo-"))
    binary = None if args.http else _mosquitto()
    if binary is None:
        reason = "--http given" if args.http else "mosquitto is not installed"
        _say(f"demo: {reason}; the fleet sends over the replicas' HTTP ports, spread over them, not MQTT")
    tokens = {tps: secrets.token_urlsafe(24) for tps in TPS_NAMES}
    operator = secrets.token_urlsafe(24)
    nodes: list[_Node] = []
    handler: logging.Handler | None = None
    logs: list[SendLog] = []  # the fleet's, batch by batch: what the broker or a replica took
    held: set[tuple[str, str]] = set()  # (receiver, Idempotency-Key) claimed by killed replicas

    def sent() -> int:
        return sum(log.acknowledged for log in logs)

    t0 = time.time()
    try:
        async with contextlib.AsyncExitStack() as stack:
            # pg_ctl starts the server in a session of its own: a terminal's Ctrl-C does not reach it.
            pg = stack.enter_context(PgServer(workdir / "postgresql"))
            database = "ecallgw_demo"
            await asyncio.to_thread(pg.create_database, database)
            admin = await asyncpg.create_pool(
                pg.dsn_for(database),
                min_size=1,
                max_size=3,
                server_settings={"application_name": "ecallgw-demo:admin"},
            )
            stack.push_async_callback(admin.close)
            broker = (
                await stack.enter_async_context(_Broker(binary, workdir / "mosquitto")) if binary else None
            )
            psap = await stack.enter_async_context(SimulatedPsap(random.Random(args.seed)))
            for i in range(1, args.replicas + 1):
                name = f"r{i}"
                role = f"ecallgw_{name}"
                # A role per replica: pg_terminate_backend can then find every session of it.
                await admin.execute(f'CREATE ROLE "{role}" LOGIN SUPERUSER')
                tree = _gateway_tree(workdir, psap.url, broker.port if broker else None, tokens, operator)
                tree["store"] = {
                    "backend": "postgresql",
                    "dsn": f"postgresql://{role}@127.0.0.1:{pg.port}/{database}",
                    "replica_id": name,
                    "lease_s": _LEASE_S,
                    "outbox_lease_s": _OUTBOX_LEASE_S,
                }
                if broker is not None:
                    tree["mqtt"] = {
                        "port": broker.port,
                        "client_id": f"ecallgw-demo-{name}",
                        "share_group": _SHARE_GROUP,
                    }
                nodes.append(_Node(name=name, config=load_config(base=tree), role=role))
            _say(f"demo: PostgreSQL on 127.0.0.1:{pg.port} (private, in {pg.base_dir}), database {database}")
            try:
                for node in nodes:
                    await _start(node)
                    assert node.gw is not None
                    if handler is None:  # one log handler for all replicas; each line names its replica
                        handler = configure_logging("warning", await node.gw.store.key("pseudonym"))
                        handler.addFilter(_ReplicaLogFilter())
                    _say(
                        f"demo: replica {node.name} up - HTTP {node.api}, "
                        + (
                            f"MQTT client id ecallgw-demo-{node.name} in $share/{_SHARE_GROUP}/..."
                            if broker
                            else "MQTT off"
                        )
                    )
                _say(f"demo: simulated PSAP http://127.0.0.1:{psap.port}; operator token {operator}")
                _say(f"demo: operator console {nodes[0].api}/console/ (any replica's; same token)")
                if args.kill_leader_after > 0:
                    _say(
                        f"demo: the leader will be killed at {args.kill_leader_after:g} s (a crash simulated "
                        "in this process: see --help)"
                    )
                _say("demo: Ctrl-C stops everything")

                async def send(outgoing: list[Outgoing], batch: int) -> None:
                    log = SendLog(len(outgoing))
                    logs.append(log)
                    if broker is not None:
                        await _publish_mqtt(outgoing, log, broker.port, f"ecallgw-demo-fleet-{batch}")
                    else:
                        await _post_http(outgoing, log, lambda: [n.api for n in nodes], tokens)

                plan: dict[tuple[str, str], tuple[str, float]] = {}
                bot = await stack.enter_async_context(OperatorBot(nodes[-1].api, operator, plan))
                psap.subscribe(bot.on_arrival)

                def on_kill(node: _Node, claimed: set[tuple[str, str]]) -> None:
                    held.update(claimed)
                    if bot.api == node.api:  # the desk's client fails over to a replica alive
                        bot.api = next(n.api for n in nodes if not n.killed)

                fleet = asyncio.create_task(_fleet(args, send, plan))
                t0 = time.time()
                chaos = (
                    asyncio.create_task(_chaos(args, nodes, admin, t0, on_kill))
                    if args.kill_leader_after > 0
                    else None
                )
                announced = False  # the first leader; a takeover is _chaos's to report
                try:
                    next_summary = t0 + 2.0
                    while not stop.is_set():
                        lead = next((n for n in nodes if n.epoch is not None), None)
                        if not announced and lead is not None:
                            _say(f"demo: {lead.name} leads (epoch {lead.epoch})")
                            announced = True
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(max(0.0, min(0.1, next_summary - time.time()))):
                                await stop.wait()
                        if stop.is_set() or time.time() < next_summary:
                            continue
                        next_summary += 2.0
                        _say(await _replica_summary(nodes, psap, admin, sent(), held, time.time() - t0))
                        if args.duration and time.time() - t0 >= args.duration:
                            break
                        for task in (fleet, chaos):
                            if task is not None and task.done() and task.exception() is not None:
                                raise task.exception()  # type: ignore[misc]
                finally:
                    for task in (fleet, chaos):
                        if task is not None:
                            task.cancel()
                    await asyncio.gather(fleet, *([chaos] if chaos else []), return_exceptions=True)
                    await _settle(admin, sent(), not any(n.killed for n in nodes))
            finally:
                for n in nodes:
                    if n.gw is not None and not n.killed:
                        n.gw.stop()
                await asyncio.gather(*(t for n in nodes for t in n.tasks), return_exceptions=True)
            _say(await _replica_summary(nodes, psap, admin, sent(), held, time.time() - t0, final=True))
            down = [n.name for n in nodes if n.killed]
            with contextlib.suppress(Exception):
                missing = sent() - (await _store_figures(admin))[0]
                if missing > 0 and down and broker is not None:
                    _say(
                        f"demo: {missing} signals the broker took are not in the store: queued at the "
                        f"broker for {', '.join(down)} (not restarted), which would take them when back"
                    )
                elif missing > 0:
                    _say(f"demo: {missing} signals the broker or a replica took are not in the store")
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
        if args.keep:
            _say(f"demo: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
