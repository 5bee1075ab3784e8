"""``ecallgw loadtest``: a fleet, a gateway and a simulated PSAP; report rate, latency, loss, triage."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ecallgw.commands.argtypes import mix_text, non_negative_float, positive_float, positive_int

if TYPE_CHECKING:
    from ecallgw.simulators.scenarios import Mix

HELP = "load-test a gateway: open-loop fleet over MQTT/HTTP, simulated PSAP, report (text, JSON, PNG)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's options."""
    parser.add_argument("--rate", type=positive_float, default=200.0, help="offered signals per second")
    parser.add_argument("--duration", type=positive_float, default=10.0, help="seconds of sending per run")
    parser.add_argument("--seed", type=int, default=1, help="scenario seed (same seed, same traffic)")
    parser.add_argument(
        "--profile",
        choices=("throughput", "realistic"),
        default="throughput",
        help="throughput: one automatic crash per signal (every signal must reach a receiver); "
        "realistic: the UK 2024 mix with an operator bot, for triage quality",
    )
    parser.add_argument(
        "--mix", type=mix_text, default="", help="override shares, e.g. 'storm=0.001,redial=0.1'"
    )
    parser.add_argument(
        "--operator-delay-scale",
        type=float,
        default=1.0,
        help="realistic profile: multiply the operator's labelled reaction times (0.1 = ten times faster)",
    )
    parser.add_argument(
        "--transport",
        choices=("mqtt", "http", "http-raw"),
        default="mqtt",
        help="http-raw: MSDs as RFC 8147 bodies (application/EmergencyCallData.eCall.MSD + Call-Id)",
    )
    parser.add_argument(
        "--drain", type=non_negative_float, default=30.0, help="seconds to wait for documents after sending"
    )
    parser.add_argument(
        "--max-outstanding", type=positive_int, default=2000, help="unacknowledged publishes at most"
    )
    parser.add_argument("--step", action="store_true", help="raise the rate until latency or loss breaks")
    parser.add_argument(
        "--start-rate", type=positive_float, default=50.0, help="first rate of the step search"
    )
    parser.add_argument("--factor", type=float, default=1.5, help="rate multiplier between steps")
    parser.add_argument("--max-rate", type=float, default=100_000.0, help="step mode: stop raising here")
    parser.add_argument(
        "--same-gateway",
        action="store_true",
        help="step mode: one gateway for all steps (default: fresh per step)",
    )
    parser.add_argument("--max-p99-ms", type=float, default=1000.0, help="sustainable: p99 latency at most")
    parser.add_argument(
        "--out", default="loadtest-out", help="directory for report.json, report.txt, plot.png"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument(
        "--broker", default="", metavar="HOST:PORT", help="use this broker, not a private one"
    )
    parser.add_argument(
        "--gateway",
        default="",
        metavar="URL",
        help="target a running gateway (docs/simulators.md); use a new --seed per run, or it sees the "
        "same vehicles and calls again and rightly folds them into the incidents it has",
    )
    parser.add_argument(
        "--operator-token",
        default="",
        help="with --gateway: its operator bearer token (for the operator bot)",
    )
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TPS=TOKEN",
        help="with --gateway: HTTP provider tokens",
    )
    parser.add_argument("--psap-port", type=int, default=0, help="the simulated PSAP's port (0: any)")
    parser.add_argument("--psap-delay", type=float, default=0.0, help="PSAP answers after this many seconds")
    parser.add_argument("--psap-errors", type=float, default=0.0, help="share of PSAP answers that are 503")
    parser.add_argument("--psap-throttle", type=float, default=0.0, help="share of PSAP answers that are 429")
    parser.add_argument(
        "--psap-outage",
        default="",
        metavar="AT:SECONDS",
        help="the PSAP goes down AT s into the run for SECONDS",
    )
    parser.add_argument("--workdir", default="", help="broker/gateway files (default: a temporary directory)")


def _check_bounds(args: argparse.Namespace) -> None:
    """Refuse options that would divide by zero, never end or pre-encode more than memory holds."""
    from ecallgw.simulators.load import MAX_SIGNALS

    if not (args.rate > 0 and args.duration > 0 and args.drain >= 0 and args.start_rate > 0):
        raise ValueError("--rate, --start-rate and --duration must be > 0, --drain >= 0")
    if args.step and not args.factor > 1:
        raise ValueError("--factor must be > 1, or the step search never ends")
    if not 1 <= args.max_outstanding <= 65_535:
        # paho's packet ids wrap past 65,535 unacknowledged QoS 1 publishes and messages vanish.
        raise ValueError("--max-outstanding must be in 1..65535")
    top = max(args.rate, min(args.max_rate, args.start_rate * args.factor**64) if args.step else args.rate)
    if top * args.duration > MAX_SIGNALS:
        raise ValueError(
            f"--rate x --duration may schedule at most {MAX_SIGNALS:,} signals per run (all are encoded "
            "before the first send); shorten --duration or lower --max-rate"
        )


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the load test; 0 when the run (or the step search) ended sustainable, 1 otherwise."""
    from ecallgw.simulators.load import THROUGHPUT_MIX
    from ecallgw.simulators.scenarios import DEFAULT_MIX, Mix

    try:
        mix = Mix.parse(args.mix, THROUGHPUT_MIX if args.profile == "throughput" else DEFAULT_MIX)
        outage = tuple(float(x) for x in args.psap_outage.split(":")) if args.psap_outage else ()
        if outage and len(outage) != 2:
            raise ValueError("--psap-outage needs AT:SECONDS")
        broker = None
        if args.broker:
            host, _, port = args.broker.rpartition(":")
            broker = (host or "127.0.0.1", int(port))
        if any("=" not in t for t in args.token):
            raise ValueError("--token needs TPS=TOKEN")
        if args.gateway and args.transport == "mqtt" and not args.broker:
            raise ValueError("--gateway with MQTT needs --broker HOST:PORT (the broker that gateway reads)")
        _check_bounds(args)
    except ValueError as exc:
        print(f"ecallgw loadtest: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import uvloop  # the simulated fleet and PSAP share one process: give them the faster loop

    if args.workdir:
        return uvloop.run(_main(args, mix, outage, broker, Path(args.workdir), out))
    with tempfile.TemporaryDirectory(prefix="ecallgw-loadtest-") as tmp:
        return uvloop.run(_main(args, mix, outage, broker, Path(tmp), out))


async def _main(
    args: argparse.Namespace,
    mix: Mix,
    outage: tuple[float, ...],
    broker: tuple[str, int] | None,
    workdir: Path,
    out: Path,
) -> int:
    from ecallgw.simulators.load import (
        Environment,
        LoadSpec,
        Sustainability,
        environment,
        judge,
        run_load,
        step_search,
    )
    from ecallgw.simulators.psap import Behaviour
    from ecallgw.simulators.report import write_plot

    behaviour = Behaviour(
        delay_s=args.psap_delay, error_rate=args.psap_errors, throttle_rate=args.psap_throttle
    )
    spec = LoadSpec(
        rate=args.rate,
        duration_s=args.duration,
        seed=args.seed,
        mix=mix,
        transport=args.transport,
        drain_s=args.drain,
        operator_bot=args.profile == "realistic",
        operator_delay_scale=args.operator_delay_scale,
        max_outstanding=args.max_outstanding,
    )
    limits = Sustainability(max_p99_s=args.max_p99_ms / 1000.0)
    counter = itertools.count()

    def make_env() -> contextlib.AbstractAsyncContextManager[Environment]:
        return environment(
            workdir / f"env{next(counter)}",
            seed=args.seed,
            behaviour=behaviour,
            broker=broker,
            gateway_url=args.gateway or None,
            psap_port=args.psap_port,
            tokens=dict(t.split("=", 1) for t in args.token) or None,
            operator_token=args.operator_token or None,
        )

    if args.step:
        # A fresh gateway (empty store) per step unless told otherwise, so a step's result does not
        # depend on the ones before it; a running gateway (--gateway) is necessarily shared.
        shared = args.same_gateway or bool(args.gateway)
        async with contextlib.AsyncExitStack() as stack:
            target: Environment | Callable[[], contextlib.AbstractAsyncContextManager[Environment]] = make_env
            if shared:
                target = await stack.enter_async_context(make_env())
            best, steps = await step_search(
                target,
                spec,
                start_rate=args.start_rate,
                factor=args.factor,
                max_rate=args.max_rate,
                limits=limits,
                progress=_say,
            )
            lines = [
                f"{'rate/s':>8} {'delivered/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
                "lost dup  verdict"
            ]
            for st in steps:
                r = st.report
                lines.append(
                    f"{st.rate:8.0f} {r.delivered_rate:11.0f} {r.latency.p50 * 1000:8.1f} "
                    f"{r.latency.p99 * 1000:8.1f} {r.latency.max * 1000:8.1f} {r.lost:4d} {r.duplicates:3d}  "
                    + ("ok" if not st.failures else "; ".join(st.failures))
                )
            if best is None:
                lines.append("no sustainable rate: even the first step failed")
                (out / "steps.txt").write_text("\n".join(lines) + "\n")
                print("\n".join(lines))
                return 1
            lines.append(f"highest sustainable rate: {best:.0f} signals/s")
            print("\n".join(lines), flush=True)
            _say(f"confirming at half of it: {best / 2:.0f}/s")
            spec = dataclasses.replace(spec, rate=best / 2, seed=spec.seed + 1000)
            if isinstance(target, Environment):
                report, *_ = await run_load(spec, target, progress=_say)
            else:
                async with make_env() as env:
                    report, *_ = await run_load(spec, env, progress=_say)
            lines.append(f"at half ({best / 2:.0f}/s):")
            lines.append(report.to_text())
            (out / "steps.txt").write_text("\n".join(lines) + "\n")
    else:
        async with make_env() as env:
            _say(
                f"gateway {env.gateway_url}, broker {env.mqtt_host}:{env.mqtt_port}, "
                f"PSAP port {env.psap.port}"
            )
            outage_task: asyncio.Task[None] | None = None

            async def outage_at(when: float) -> None:
                await asyncio.sleep(max(0.0, when - time.time()))
                _say(f"PSAP goes down for {outage[1]:.0f} s")
                await env.psap.go_down(outage[1])

            def schedule_outage(first_send: float) -> None:
                # AT seconds after the first scheduled send, however long the schedule took to build.
                nonlocal outage_task
                if outage:
                    outage_task = asyncio.create_task(outage_at(first_send + outage[0]))

            report, *_ = await run_load(spec, env, progress=_say, on_schedule=schedule_outage)
            if outage_task is not None:
                outage_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await outage_task
    text = report.to_text()
    print(text)
    (out / "report.txt").write_text(text + "\n")
    (out / "report.json").write_text(report.to_json() + "\n")
    if not args.no_plot:
        problem = write_plot(report, out / "plot.png")
        _say(problem if problem is not None else f"plot: {out / 'plot.png'}")
    failures = judge(report, limits)
    if failures:
        _say("not sustainable: " + ", ".join(failures))
    return 0 if not failures else 1
