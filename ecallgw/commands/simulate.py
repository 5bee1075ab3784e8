"""``ecallgw simulate``: print a seeded, labelled scenario sequence, or publish it to a gateway."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from ecallgw.commands.argtypes import mix_text, non_negative_float, positive_int, start_time
from ecallgw.model import CancelSignal, MsdSignal, PositionSignal
from ecallgw.simulators.scenarios import (
    ALL_KINDS_MIX,
    DEFAULT_MIX,
    DEFAULT_START,
    KINDS,
    Kind,
    Mix,
    Scenario,
    generate,
    timeline,
)

HELP = "print a seeded scenario sequence with ground-truth labels as JSON lines, or publish it"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sub-command's options."""
    parser.add_argument("--seed", type=int, default=1, help="random seed (same seed, same output)")
    parser.add_argument("-n", "--count", type=positive_int, default=20, help="number of scenarios")
    parser.add_argument(
        "--mix",
        type=mix_text,
        default="",
        help="override shares and modifiers, e.g. 'crash=0.2,storm=0.01,redial=0.1'; kinds: "
        + ", ".join(KINDS),
    )
    parser.add_argument("--all-kinds", action="store_true", help="start from a mix with every kind equally")
    parser.add_argument(
        "--kinds", default="", help="comma-separated kinds to cycle through instead of drawing"
    )
    parser.add_argument(
        "--start",
        type=start_time,
        default="",
        help="epoch seconds of the first scenario, or 'now' (default: a fixed epoch; 'now' when publishing)",
    )
    parser.add_argument(
        "--gap", type=non_negative_float, default=60.0, help="mean seconds between scenario starts"
    )
    parser.add_argument(
        "--format",
        choices=("scenarios", "log"),
        default="scenarios",
        help="scenarios: one scenario per line with its label; log: the signals in send order as the "
        "signal log `ecallgw triage replay` reads (journal form, arrival = send time)",
    )
    parser.add_argument(
        "--publish",
        default="",
        metavar="URL",
        help="send instead of printing: mqtt://host:port or http://host:port (the gateway)",
    )
    parser.add_argument(
        "--token", action="append", default=[], metavar="TPS=TOKEN", help="HTTP provider token (repeatable)"
    )


def _signal_json(offset_s: float, sig: MsdSignal | CancelSignal | PositionSignal) -> dict[str, Any]:
    out: dict[str, Any] = {
        "offset_s": offset_s,
        "tps": sig.tps,
        "vehicle": sig.vehicle,
        "call_id": sig.call_id,
        "sent_at": sig.sent_at,
    }
    if isinstance(sig, MsdSignal):
        from ecallgw.codecs import msd as msd_codec

        raw = msd_codec.encode(sig.msd)
        out |= {"kind": "msd", "msd": msd_codec.to_json_dict(sig.msd), "msd_hex": raw.hex()}
        out |= {k: v for k, v in (("callback", sig.callback), ("lang", sig.lang)) if v is not None}
    elif isinstance(sig, CancelSignal):
        out |= {"kind": "cancel", "reason": sig.reason}
    else:
        out |= {"kind": "position", "position": asdict(sig.position)}
    return out


def scenario_json(s: Scenario) -> dict[str, Any]:
    """One scenario as a JSON-ready dict: id, start, label, vehicles (VIN and class), signals."""
    label = asdict(s.label)
    label["physics"] = {key: p for key, p in label["physics"]}
    return {
        "id": s.id,
        "start": s.start,
        "label": label,
        "vehicles": [
            {
                "tps": v.tps,
                "vehicle": v.key,
                "vin": v.vin,
                "vehicle_type": v.vehicle_type.name,
                "propulsion": v.propulsion,
                "msd_version": v.msd_version,
            }
            for v in s.vehicles
        ],
        "signals": [_signal_json(t.offset_s, t.signal) for t in s.signals],
    }


def signal_log(scenarios: list[Scenario]) -> Iterator[str]:
    """The scenarios' signals as JSON lines of the triage signal log (docs/triage.md §7).

    Journal form: the envelope exactly as a provider sends it (``payload_b64``), with ``at`` the
    scheduled send time as the receipt time. Labels are not part of it; operator actions cannot be,
    since incident ids only exist once triage has run.
    """
    from ecallgw.codecs.envelope import encode_envelope

    for at, _scenario, timed in timeline(scenarios):
        sig = timed.signal
        yield json.dumps(
            {
                "type": "signal",
                "at": round(at, 3),
                "kind": timed.kind,
                "tps": sig.tps,
                "vehicle": sig.vehicle,
                "payload_b64": base64.b64encode(encode_envelope(sig)).decode("ascii"),
            }
        )


def _mix(args: argparse.Namespace) -> Mix:
    return Mix.parse(args.mix, ALL_KINDS_MIX if args.all_kinds else DEFAULT_MIX)


def run(args: argparse.Namespace) -> int:
    """Print or publish the scenarios; 0 on success, 2 on a bad option."""
    try:
        mix = _mix(args)
    except ValueError as exc:
        print(f"ecallgw simulate: --mix: {exc}", file=sys.stderr)
        return 2
    kinds: list[Kind] = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        print(f"ecallgw simulate: unknown kinds {unknown}; kinds: {', '.join(KINDS)}", file=sys.stderr)
        return 2
    if args.start == "now" or (args.publish and not args.start):
        start = time.time() + 1.0
    else:
        start = float(args.start) if args.start else DEFAULT_START
    scenarios = generate(
        random.Random(args.seed),
        args.count,
        mix,
        start=start,
        mean_gap_s=args.gap,
        kinds=kinds or None,
    )
    if not args.publish:
        lines = (
            (json.dumps(scenario_json(s), sort_keys=True) for s in scenarios)
            if args.format == "scenarios"
            else signal_log(scenarios)
        )
        try:
            for line in lines:
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            sys.stderr.close()
        return 0
    return asyncio.run(_publish(args, scenarios))


async def _publish(args: argparse.Namespace, scenarios: list[Scenario]) -> int:
    from ecallgw.simulators.drivers import build_outgoing, drive_http, drive_mqtt

    outgoing = build_outgoing(scenarios)
    url = urlsplit(args.publish)
    if url.scheme == "mqtt":
        log = await drive_mqtt(outgoing, host=url.hostname or "127.0.0.1", port=url.port or 1883)
    elif url.scheme in ("http", "https"):
        tokens = dict(t.split("=", 1) for t in args.token)
        log = await drive_http(outgoing, base_url=args.publish, tokens=tokens)
    else:
        print(f"ecallgw simulate: --publish needs mqtt:// or http://, got {args.publish!r}", file=sys.stderr)
        return 2
    errors = [e for e in log.errors if e is not None]
    print(f"sent {log.sent}, acknowledged {log.acknowledged}, errors {len(errors)}", file=sys.stderr)
    return 0 if not errors else 1
