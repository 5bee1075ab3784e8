"""``ecallgw demo``: the gateway on embedded defaults with a simulated fleet, PSAP and operator.

It starts a private mosquitto on a free port when the binary is installed (otherwise the fleet
sends over the HTTP source, and says so), a simulated PSAP and operator desk (``ecallgw.simulators``),
the gateway itself in this process, and the fleet: scenarios in the UK 2024 mix, sent at their
scheduled times. An operator bot acts on what the desk receives as each scenario's label says. A
summary line is printed every two seconds. Ctrl-C (or ``--duration``) stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import shutil
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HELP = "run the gateway with a simulated fleet, PSAP and operator, and print a live summary"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0: at Ctrl-C)"
    )
    parser.add_argument("--rate", type=float, default=2.0, help="new eCall scenarios per second (default 2)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the fleet and scenarios")
    parser.add_argument(
        "--http", action="store_true", help="send over the HTTP source even if mosquitto exists"
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory (store, broker data)")


def run(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C or ``--duration``."""
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_demo(args))
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
            _say("demo: Ctrl-C stops everything")
            plan: dict[tuple[str, str], tuple[str, float]] = {}
            bot = await stack.enter_async_context(OperatorBot(api, operator, plan))
            psap.subscribe(bot.on_arrival)
            fleet = asyncio.create_task(_fleet(args, broker.port if broker else None, api, tokens, plan))
            t0 = time.time()
            try:
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(2.0):
                            await stop.wait()
                    if stop.is_set():
                        break
                    _say(await _summary(gw, psap, time.time() - t0))
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
    mqtt_port: int | None,
    api: str,
    tokens: dict[str, str],
    plan: dict[tuple[str, str], tuple[str, float]],
) -> None:
    """Send scenarios batch by batch (30 s each), forever, at their scheduled times."""
    from ecallgw.simulators import DEFAULT_MIX, generate
    from ecallgw.simulators.drivers import build_outgoing, drive_http, drive_mqtt

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
        if mqtt_port is not None:
            await drive_mqtt(
                outgoing, host="127.0.0.1", port=mqtt_port, client_id=f"ecallgw-demo-fleet-{batch}"
            )
        else:
            await drive_http(outgoing, base_url=api, tokens=tokens)
        start += batch_s
        batch += 1


async def _summary(gw: Any, psap: Any, elapsed: float) -> str:
    reg = gw.metrics.registry

    def value(name: str, labels: dict[str, str] | None = None) -> int:
        v = reg.get_sample_value(name, labels or {})
        return int(v) if v is not None else 0

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
        for r in gw.forwarder.lanes
    )
    quarantined = sum(
        int(s.value)
        for m in reg.collect()
        if m.name == "ecallgw_decode_errors"
        for s in m.samples
        if s.name.endswith("_total")
    )
    return (
        f"[{elapsed:6.1f}s] signals {signals}  incidents: {levels}  delivered: {delivered}  "
        f"pending {gw.forwarder.pending}  dead letters {dead}  quarantined {quarantined}  "
        f"PSAP duplicates {psap.duplicates}"
    )
