"""Load test orchestration: broker, gateway, simulated PSAP, fleet; one run or a step search.

``environment`` starts what is missing (a private mosquitto, an ``ecallgw serve`` subprocess
configured to forward every receiver to the simulated PSAP, the PSAP itself). ``run_load`` generates
seeded scenarios whose signals add up to the target rate, publishes them open-loop, waits until the
PSAP's records show that everything has arrived (``_DrainWatch``; or the drain deadline passes), and
builds the report from what the driver and the PSAP recorded. ``step_search`` repeats that at rising
rates (a fresh gateway per step, or one shared) until latency, loss, duplicates or throughput break,
and reports the highest sustainable rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import aiohttp

from ecallgw.simulators.drivers import Outgoing, SendLog, build_outgoing, drive_http, drive_mqtt
from ecallgw.simulators.fleet import TPS_NAMES
from ecallgw.simulators.psap import Arrival, Behaviour, OperatorBot, SimulatedPsap, parse_document
from ecallgw.simulators.report import LoadReport, build_report
from ecallgw.simulators.scenarios import Mix, Scenario, generate

__all__ = [
    "MAX_SIGNALS",
    "PSAP_RECEIVERS",
    "THROUGHPUT_MIX",
    "Environment",
    "LoadSpec",
    "StepResult",
    "Sustainability",
    "environment",
    "free_port",
    "gateway_config",
    "judge",
    "run_load",
    "step_search",
]

MAX_SIGNALS = 1_000_000
"""Most signals one run schedules: all are encoded before the first send (a few hundred bytes each)."""

THROUGHPUT_MIX = Mix(shares={"crash": 1.0}, redial=0.0, retransmission=0.0, untrusted_position=0.0)
"""One automatic crash per signal, each from a new vehicle: every signal must reach a receiver."""

PSAP_RECEIVERS = ("psap-fallback", "psap-uk", "psap-dach")
"""The PSAP receivers the load test configures (the desk is ``operator``, test calls go to ``test``)."""

# Two PSAP areas as GeoJSON rectangles (lon, lat) so routing by position is exercised; the rest of
# Europe goes to the fallback PSAP.
_AREAS = {
    "psap-uk": [[[-8.7, 49.8], [1.9, 49.8], [1.9, 60.9], [-8.7, 60.9], [-8.7, 49.8]]],
    "psap-dach": [[[5.8, 45.8], [17.2, 45.8], [17.2, 55.1], [5.8, 55.1], [5.8, 45.8]]],
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _wait_port(
    host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with status {proc.returncode}")
            try:
                _, writer = await asyncio.open_connection(host, port)
                writer.close()
                await writer.wait_closed()
                return
            except OSError:
                await asyncio.sleep(0.05)


def _spawn_mosquitto(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    # A raised inflight window and an unbounded queue, as the gateway's own tests use.
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\n"
        f"max_queued_messages 0\nlog_type error\nlog_dest file {workdir}/mosquitto.log\n"
    )
    proc = subprocess.Popen(
        [_mosquitto_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return proc, port


def _spawn_gateway(workdir: Path, config_text: str) -> tuple[subprocess.Popen[bytes], Path]:
    config = workdir / "gateway.toml"
    config.write_text(config_text)
    log_path = workdir / "gateway.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecallgw", "serve", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # The configuration file is the whole truth: no ECALLGW_* variable of the caller leaks in.
            env={k: v for k, v in os.environ.items() if not k.startswith("ECALLGW_")},
        )
    return proc, log_path


def _mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto)")
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSpec:
    """One load test run.

    Attributes:
        rate: target signals per second (the schedule is Poisson around it).
        duration_s: length of the send schedule.
        seed: seed of the scenarios (and of the PSAP's failure rolls).
        mix: scenario mix; ``THROUGHPUT_MIX`` for pure rate and latency, ``DEFAULT_MIX`` for triage
            quality under realistic traffic.
        transport: "mqtt", "http" (msgpack envelopes) or "http-raw" (MSDs as RFC 8147 bodies).
        warmup_s: seconds between building the schedule and its first send.
        drain_s: after the last send, how long to wait for documents still on their way.
        operator_bot: act on desk incidents as the labels prescribe.
        operator_delay_scale: multiply the labels' operator delays (below 1 for demos and tests).
        max_outstanding: most unacknowledged publishes or requests.
    """

    rate: float
    duration_s: float
    seed: int = 1
    mix: Mix = THROUGHPUT_MIX
    transport: Literal["mqtt", "http", "http-raw"] = "mqtt"
    warmup_s: float = 1.0
    drain_s: float = 30.0
    operator_bot: bool = False
    operator_delay_scale: float = 1.0
    max_outstanding: int = 2000


@dataclass(slots=True, kw_only=True)
class Environment:
    """What the runs talk to: broker, gateway (HTTP API), PSAP, tokens."""

    mqtt_host: str
    mqtt_port: int
    gateway_url: str
    psap: SimulatedPsap
    provider_tokens: dict[str, str]
    operator_token: str
    log_path: Path | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def gateway_config(
    *,
    workdir: Path,
    mqtt_port: int,
    http_port: int,
    psap: SimulatedPsap,
    tokens: dict[str, str],
    operator: str,
) -> str:
    """The TOML configuration of a gateway under test: every receiver is a webhook to the PSAP."""
    lines = [
        "[store]",
        f"path = {_toml_str(str(workdir / 'ecallgw.sqlite3'))}",
        "",
        "[mqtt]",
        'host = "127.0.0.1"',
        f"port = {mqtt_port}",
        f"client_id = {_toml_str('ecallgw-loadtest-' + secrets.token_hex(4))}",
        "",
        "[http]",
        'host = "127.0.0.1"',
        f"port = {http_port}",
        # The load test is the provider here; its rate is the thing under test, not a quota.
        "provider_rate_per_s = 1000000.0",
        "provider_burst = 1000000.0",
        "",
        "[log]",
        'level = "warning"',
        "",
    ]
    for tps, token in tokens.items():
        lines += [
            "[[auth.tokens]]",
            f"name = {_toml_str('loadtest-' + tps)}",
            'role = "provider"',
            f"token = {_toml_str(token)}",
            f"tps = {_toml_str(tps)}",
            "",
        ]
    lines += [
        "[[auth.tokens]]",
        'name = "loadtest-operator"',
        'role = "operator"',
        f"token = {_toml_str(operator)}",
        "",
    ]
    for name, fmt in (("operator", "json"), ("test", "json"), *((p, "cap") for p in PSAP_RECEIVERS)):
        lines += [
            f"[receivers.{name}]",
            'kind = "http"',
            f"url = {_toml_str(psap.url(name))}",
            f'format = "{fmt}"',
            "",
        ]
    lines += ["[triage]", 'fallback_psap_receiver = "psap-fallback"', ""]
    for receiver, coords in _AREAS.items():
        lines += [
            "[[triage.psap_areas]]",
            f"receiver = {_toml_str(receiver)}",
            f'geometry = {{ type = "Polygon", coordinates = {coords} }}',
            "",
        ]
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def environment(
    workdir: Path,
    *,
    seed: int = 1,
    behaviour: Behaviour | None = None,
    broker: tuple[str, int] | None = None,
    gateway_url: str | None = None,
    psap_port: int = 0,
    tokens: dict[str, str] | None = None,
    operator_token: str | None = None,
) -> AsyncIterator[Environment]:
    """Start the PSAP, and a mosquitto and an ``ecallgw serve`` unless given; stop them after.

    Args:
        workdir: directory for the broker's and the gateway's files and logs.
        seed: seed of the PSAP's failure rolls.
        behaviour: the PSAP's initial behaviour.
        broker: (host, port) of a running broker instead of a private mosquitto.
        gateway_url: base URL of a running gateway instead of a subprocess (its receivers must
            point at ``http://127.0.0.1:{psap_port}/{receiver}`` and it must know the tokens).
        psap_port: the PSAP's port (0: any free port; give one when targeting a running gateway).
        tokens: provider tokens per tps for HTTP ingest (generated when None).
        operator_token: the operator API token (generated when None).
    """
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    tokens = tokens or {tps: secrets.token_hex(16) for tps in TPS_NAMES}
    operator_token = operator_token or secrets.token_hex(16)
    processes: list[subprocess.Popen[bytes]] = []
    async with SimulatedPsap(random.Random(seed), behaviour, port=psap_port) as psap:
        try:
            if broker is None:
                proc, port = await asyncio.to_thread(_spawn_mosquitto, workdir)
                processes.append(proc)
                await _wait_port("127.0.0.1", port, 10.0, proc)
                broker = ("127.0.0.1", port)
            log_path = None
            if gateway_url is None:
                http_port = free_port()
                text = gateway_config(
                    workdir=workdir,
                    mqtt_port=broker[1],
                    http_port=http_port,
                    psap=psap,
                    tokens=tokens,
                    operator=operator_token,
                )
                gw, log_path = await asyncio.to_thread(_spawn_gateway, workdir, text)
                processes.append(gw)
                gateway_url = f"http://127.0.0.1:{http_port}"
                try:
                    await _wait_port("127.0.0.1", http_port, 30.0, gw)
                    await _wait_ready(gateway_url)
                except (RuntimeError, TimeoutError) as exc:
                    tail = (await asyncio.to_thread(log_path.read_text, errors="replace"))[-2000:]
                    raise RuntimeError(f"the gateway did not start: {exc}; {log_path} ends:\n{tail}") from exc
            yield Environment(
                mqtt_host=broker[0],
                mqtt_port=broker[1],
                gateway_url=gateway_url,
                psap=psap,
                provider_tokens=tokens,
                operator_token=operator_token,
                log_path=log_path,
                processes=processes,
            )
        finally:
            for proc in reversed(processes):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.to_thread(proc.wait, 15.0)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        await asyncio.to_thread(proc.wait)


async def _wait_ready(url: str, timeout_s: float = 30.0) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)


def _scenarios_for(spec: LoadSpec, start: float) -> list[Scenario]:
    # Size the scenario rate from the mix's mean signals per scenario (a seeded pilot sample).
    pilot = generate(random.Random(spec.seed ^ 0x5EED), 200, spec.mix, mean_gap_s=0)
    per_scenario = sum(len(s.signals) for s in pilot) / len(pilot)
    if not (spec.rate > 0 and spec.duration_s > 0):
        raise ValueError(f"rate and duration must be > 0, got {spec.rate} and {spec.duration_s}")
    if spec.rate * spec.duration_s > MAX_SIGNALS:
        raise ValueError(f"{spec.rate}/s for {spec.duration_s} s is over {MAX_SIGNALS:,} signals")
    scenario_rate = spec.rate / per_scenario
    n = max(1, round(spec.duration_s * scenario_rate))
    return generate(random.Random(spec.seed), n, spec.mix, start=start, mean_gap_s=1.0 / scenario_rate)


class _DrainWatch:
    """Decides, from the PSAP's records alone, when a run's documents have all arrived.

    Done means: every tracked scenario reached some receiver (a second device or a redial may fold
    into the first vehicle's incident, so any of a scenario's vehicles counts); every real automatic
    emergency reached a PSAP receiver (triage sends those at once); and every document we refused
    (5xx, 429) was accepted on a later attempt. Incident ids are learnt from the JSON documents of
    the desk and test receivers (every incident reaches one of them), so the PSAPs' CAP copies are
    matched by their ``Idempotency-Key`` without parsing XML on the hot path.
    """

    def __init__(self, owners: dict[tuple[str, str], str], must_reach_psap: set[str]) -> None:
        self.owners = owners
        self.tracked = set(owners.values())
        self.must_psap = must_reach_psap & self.tracked
        self.seen: set[str] = set()
        self.psap_seen: set[str] = set()
        self.refused: set[tuple[str, str]] = set()
        self.incident_owner: dict[str, str] = {}
        self.psap_unmatched: set[str] = set()
        self.done = asyncio.Event()

    def on_arrival(self, a: Arrival) -> None:
        """Listener for ``SimulatedPsap.subscribe``."""
        key = (a.receiver, a.key or "")
        if not a.accepted:
            self.refused.add(key)
            return
        self.refused.discard(key)
        at_psap = a.receiver in PSAP_RECEIVERS
        if "xml" in a.content_type:
            incident = a.key.rsplit(":", 1)[0] if a.key else ""
            sid = self.incident_owner.get(incident)
            if sid is not None and at_psap:
                self.psap_seen.add(sid)
            elif at_psap:
                self.psap_unmatched.add(incident)
        else:
            info = parse_document(a.content_type, a.body)
            sid = self.owners.get((info.tps, info.vehicle)) if info is not None else None
            if info is not None and sid is not None:
                self.seen.add(sid)
                self.incident_owner[info.incident_id] = sid
                if at_psap or info.incident_id in self.psap_unmatched:
                    self.psap_seen.add(sid)
        if self.complete():
            self.done.set()

    def complete(self) -> bool:
        """Whether everything awaited has arrived."""
        return self.tracked <= self.seen and self.must_psap <= self.psap_seen and not self.refused


async def _wait_until(event: asyncio.Event, deadline: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, deadline - time.time())):
            await event.wait()


async def _quiet(psap: SimulatedPsap, *, quiet_s: float, deadline: float) -> None:
    """Return once no request reached the PSAP for ``quiet_s`` (or at ``deadline``)."""
    while True:
        last = psap.last_activity
        now = time.time()
        if now - last >= quiet_s or now >= deadline:
            return
        await asyncio.sleep(min(quiet_s - (now - last), max(0.0, deadline - now)) + 0.01)


def _owners(scenarios: Sequence[Scenario]) -> dict[tuple[str, str], str]:
    """(tps, vehicle) -> scenario id, for the scenarios whose arrival we wait for (not stale replays)."""
    return {
        (t.signal.tps, t.signal.vehicle): s.id
        for s in scenarios
        if s.label.kind != "stale_replay"
        for t in s.signals
    }


async def run_load(
    spec: LoadSpec,
    env: Environment,
    *,
    progress: Callable[[str], None] | None = None,
    on_schedule: Callable[[float], None] | None = None,
) -> tuple[LoadReport, list[Scenario], list[Outgoing], SendLog, list[Arrival]]:
    """Run one load test against ``env``.

    Args:
        spec: what to send.
        env: broker, gateway and PSAP (from ``environment``).
        progress: called about once a second with a status line.
        on_schedule: called on the event loop with the first send's epoch time once the schedule
            is built (for events timed relative to the run, like a PSAP outage).

    Returns:
        The report and the records it was built from (scenarios, schedule, send log, arrivals of
        this run only).
    """
    first_arrival = len(env.psap.arrivals)
    # Encoding costs a few hundred microseconds per signal: build the schedule first, then start it.
    t_build = time.time()

    def build() -> tuple[list[Scenario], list[Outgoing]]:
        scenarios = _scenarios_for(spec, start=t_build)
        return scenarios, build_outgoing(scenarios)

    # In a thread, so that the PSAP and a gateway sharing this loop (ecallgw demo) keep answering.
    scenarios, outgoing = await asyncio.to_thread(build)
    shift = time.time() + spec.warmup_s - t_build
    # The envelopes carry sent_at and MSD timestamps from generation; moving the whole schedule by the
    # build time (seconds) keeps them well inside the gateway's staleness window.
    outgoing = [replace(o, at=o.at + shift) for o in outgoing]
    if on_schedule is not None:
        on_schedule(outgoing[0].at if outgoing else time.time())
    owners = _owners(scenarios)
    watch = _DrainWatch(owners, {s.id for s in scenarios if s.label.real and s.label.automatic})
    all_seen = watch.done
    on_arrival = watch.on_arrival

    env.psap.subscribe(on_arrival)
    plan = {
        (t.signal.tps, t.signal.vehicle): (
            s.label.operator_action,
            s.start + shift + s.label.operator_delay_s * spec.operator_delay_scale,
        )
        for s in scenarios
        if s.label.operator_action is not None and s.label.operator_delay_s is not None
        for t in s.signals
    }
    bot = OperatorBot(env.gateway_url, env.operator_token, plan) if spec.operator_bot else None
    if bot is not None:
        env.psap.subscribe(bot.on_arrival)

    async def reporter() -> None:
        t0 = outgoing[0].at if outgoing else time.time()
        while True:
            await asyncio.sleep(1.0)
            if progress is not None:
                done = sum(1 for o in outgoing if o.at <= time.time())
                progress(
                    f"t={time.time() - t0:6.1f}s scheduled {done}/{len(outgoing)} "
                    f"scenarios at a receiver {len(watch.seen)}/{len(watch.tracked)}, "
                    f"documents {len(env.psap.arrivals) - first_arrival}"
                )

    async with contextlib.AsyncExitStack() as stack:
        if bot is not None:
            await stack.enter_async_context(bot)
        ticker = asyncio.create_task(reporter())
        try:
            if spec.transport == "mqtt":
                log = await drive_mqtt(
                    outgoing,
                    host=env.mqtt_host,
                    port=env.mqtt_port,
                    max_outstanding=spec.max_outstanding,
                    client_id=f"ecallgw-loadtest-{spec.seed}-{secrets.token_hex(3)}",
                )
            else:
                log = await drive_http(
                    outgoing,
                    base_url=env.gateway_url,
                    tokens=env.provider_tokens,
                    max_outstanding=min(spec.max_outstanding, 512),
                    raw_msd=spec.transport == "http-raw",
                )
            deadline = time.time() + spec.drain_s
            await _wait_until(all_seen, deadline)
            if bot is not None:
                # Let the operator act on every incident the labels give an action (the last one is
                # due at the latest planned time), and wait for those posts to finish.
                last_action = max((when for _, when in plan.values()), default=0.0)
                await asyncio.sleep(max(0.0, min(deadline, last_action + 0.5) - time.time()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.1, deadline - time.time())):
                        await bot.idle()
            # Then wait for quiet: the revisions those actions caused, and late duplicates (which we
            # count), arrive after the first documents; a refusal in the meantime means a retry to
            # wait for.
            while True:
                await _quiet(env.psap, quiet_s=min(1.0, spec.drain_s), deadline=deadline)
                if watch.complete() or time.time() >= deadline:
                    break
                all_seen.clear()
                await _wait_until(all_seen, deadline)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            env.psap.unsubscribe(on_arrival)
            if bot is not None:
                env.psap.unsubscribe(bot.on_arrival)
    arrivals = env.psap.arrivals[first_arrival:]
    report = build_report(
        transport=spec.transport,
        scenarios=scenarios,
        outgoing=outgoing,
        log=log,
        arrivals=arrivals,
        psap_receivers=PSAP_RECEIVERS,
    )
    if bot is not None:
        # The bot's own record: an action the operator API kept failing is a gateway fault, and
        # actions still pending at the end mean the triage-quality figures are not final.
        report = replace(
            report,
            operator_actions=dict(bot.stats.actions),
            operator_moot=bot.stats.moot,
            operator_failures=bot.stats.failures,
            operator_unfinished=bot.stats.unfinished,
        )
    return report, scenarios, outgoing, log, arrivals


@dataclass(frozen=True, slots=True, kw_only=True)
class Sustainability:
    """Limits a step must meet to count as sustainable."""

    max_p99_s: float = 1.0
    min_achieved_share: float = 0.95


def judge(report: LoadReport, limits: Sustainability) -> list[str]:
    """Why a run is not sustainable (empty when it is)."""
    why: list[str] = []
    if report.lost:
        why.append(f"{report.lost} lost")
    if not report.scenarios_tracked:
        why.append("no tracked scenario: nothing to judge loss by")
    if report.duplicates:
        why.append(f"{report.duplicates} duplicates")
    if report.undelivered:
        why.append(f"{report.undelivered} documents refused and never accepted later")
    if report.send_errors:
        why.append(f"{report.send_errors} send errors")
    if report.operator_failures:
        why.append(f"{report.operator_failures} operator actions failed")
    if report.signals_acked < report.signals_scheduled:
        why.append(f"{report.signals_scheduled - report.signals_acked} signals not acknowledged")
    bad = report.invalid_documents + report.unreadable_documents + report.key_mismatches + report.out_of_order
    if bad:
        why.append(
            f"{bad} bad documents (schema {report.invalid_documents}, unreadable "
            f"{report.unreadable_documents}, Idempotency-Key {report.key_mismatches}, "
            f"out of order {report.out_of_order})"
        )
    if not math.isfinite(report.latency.p99) or report.latency.p99 > limits.max_p99_s:
        why.append(f"p99 {report.latency.p99 * 1000:.0f} ms > {limits.max_p99_s * 1000:.0f} ms")
    if report.achieved_rate < limits.min_achieved_share * report.offered_rate:
        why.append(f"acknowledged {report.achieved_rate:.0f}/s < {limits.min_achieved_share:.0%} of offered")
    if report.delivered_rate < limits.min_achieved_share * report.scenario_rate:
        why.append(f"delivered {report.delivered_rate:.0f}/s < {limits.min_achieved_share:.0%} of offered")
    return why


@dataclass(frozen=True, slots=True, kw_only=True)
class StepResult:
    """One step of the search."""

    rate: float
    report: LoadReport
    failures: tuple[str, ...]


async def step_search(
    env: Environment | Callable[[], contextlib.AbstractAsyncContextManager[Environment]],
    base: LoadSpec,
    *,
    start_rate: float,
    factor: float = 1.5,
    max_rate: float = 100_000.0,
    limits: Sustainability | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[float | None, list[StepResult]]:
    """Raise the rate by ``factor`` from ``start_rate`` until a step fails.

    Args:
        env: one environment for every step, or a factory giving each step a fresh one (a new
            gateway with an empty store, so that a step's result does not depend on the ones before).
        base: the run's settings; ``rate`` and ``seed`` change per step.
        start_rate: the first step's rate.
        factor: rate multiplier between steps.
        max_rate: stop raising here.
        limits: what counts as sustainable.
        progress: status lines.

    Returns:
        The highest sustainable rate (None if even the first step failed) and every step's result.
    """
    limits = limits or Sustainability()
    steps: list[StepResult] = []
    best: float | None = None
    rate = start_rate
    index = 0
    while rate <= max_rate:
        spec = replace(base, rate=rate, seed=base.seed + index)
        if isinstance(env, Environment):
            report, *_ = await run_load(spec, env, progress=progress)
        else:
            async with env() as fresh:
                report, *_ = await run_load(spec, fresh, progress=progress)
        failures = tuple(judge(report, limits))
        steps.append(StepResult(rate=rate, report=report, failures=failures))
        if progress is not None:
            verdict = "ok" if not failures else "FAILED: " + ", ".join(failures)
            progress(
                f"step {rate:.0f}/s: delivered {report.delivered_rate:.0f}/s, "
                f"p99 {report.latency.p99 * 1000:.0f} ms, lost {report.lost}, "
                f"dup {report.duplicates} -> {verdict}"
            )
        if failures:
            break
        best = rate
        index += 1
        rate = rate * factor
    return best, steps
