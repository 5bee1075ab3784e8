"""What does each envelope and document cost per message? Our codecs beside the bare libraries.

Per operation, the best of ``--rounds`` rounds over ``--count`` seeded inputs (random MSDs of every
version, positions, snapshots whose MSD carries its bytes as sent, as the gateway's decoded MSDs do),
in µs per input, with a reference that does the library part of the same job in the same run:

- decode_envelope (msd) vs msgpack.unpackb + codecs.msd.decode: the cost of our checks;
- decode_envelope (position) vs msgpack.unpackb + pynmea2.parse of each sentence;
- render_json vs json_document + stdlib json.dumps (what render_json did before orjson);
- json_document vs orjson.dumps of the same dict: building it (mostly the MSD's JSON form) against
  serialising it;
- render_cap vs render_json; parse_cap vs ElementTree.fromstring; parse_json_document vs json.loads.

Run from the repository root, on one core:

    nice taskset -c 0 .venv/bin/python bench/documents_cost.py --count 500
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pynmea2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecallgw.codecs import msd as msd_codec
from ecallgw.codecs.document import json_document, parse_cap, parse_json_document, render_cap, render_json
from ecallgw.codecs.envelope import decode_envelope, encode_envelope
from ecallgw.model import IncidentSnapshot, MsdSignal, Position, PositionSignal, Reason, Severity
from tests.codecs._strategies import random_msd

T0 = 1_764_158_400.0


def _time(fn: Callable[[Any], object], items: Sequence[Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return 1e6 * best / len(items)


def _snapshot(rng: random.Random, i: int) -> IncidentSnapshot:
    msd = random_msd(rng, rng.choice((1, 2, 3)))
    while len(msd_codec.encode(msd)) > 140:
        msd = random_msd(rng, rng.choice((1, 2, 3)))
    msd = replace(msd, raw=msd_codec.encode(msd))  # as decoded: documents carry the bytes sent
    return IncidentSnapshot(
        incident_id=f"inc-{i:024x}",
        revision=rng.randint(1, 5),
        status=rng.choice(["open", "updated"]),
        severity=Severity(
            level="high", score=60, reasons=(Reason(code="activation_automatic", text="automatic"),)
        ),
        tps="tps1",
        vehicle=f"veh-{i}",
        call_id=f"call-{i}",
        automatic=True,
        test=False,
        received_at=T0 + i,
        updated_at=T0 + i + 1,
        msd=msd,
        position=Position(lat=rng.uniform(-90, 90), lon=rng.uniform(-180, 180), trusted=True, source="msd"),
        callback="+4930123456",
        lang="de",
    )


def _stdlib_render(snapshot: IncidentSnapshot, *, forwarded_at: float) -> bytes:
    # render_json before orjson: the stdlib encoder with the document's settings.
    doc = json_document(snapshot, forwarded_at=forwarded_at)
    return json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _position_signal(rng: random.Random, i: int) -> PositionSignal:
    p = Position(lat=rng.uniform(-90, 90), lon=rng.uniform(-180, 180), trusted=True, source="nmea", at=T0 + i)
    return PositionSignal(tps="t", vehicle="v", call_id=f"call-{i}", sent_at=T0 + i + 2, position=p)


def main() -> int:
    ap = argparse.ArgumentParser(description="per-message cost of envelopes and documents")
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    snaps = [_snapshot(rng, i) for i in range(args.count)]
    msd_env = [
        encode_envelope(MsdSignal(tps="t", vehicle="v", call_id="c", sent_at=T0, msd=s.msd))
        for s in snaps
        if s.msd is not None
    ]
    pos_env = [encode_envelope(_position_signal(rng, i)) for i in range(args.count)]
    dicts = [json_document(s, forwarded_at=T0) for s in snaps]
    jsons = [render_json(s, forwarded_at=T0) for s in snaps]
    caps = [render_cap(s, sender="ecallgw", forwarded_at=T0) for s in snaps]

    def ref_pos(b: bytes) -> None:
        for line in msgpack.unpackb(b)["nmea"].split("\r\n"):
            pynmea2.parse(line, check=True)

    rows = [
        (
            "decode_envelope msd",
            _time(lambda b: decode_envelope("msd", "t", "v", b), msd_env, args.rounds),
            "unpackb + msd.decode",
            _time(lambda b: msd_codec.decode(msgpack.unpackb(b)["msd"]), msd_env, args.rounds),
        ),
        (
            "decode_envelope position",
            _time(lambda b: decode_envelope("position", "t", "v", b), pos_env, args.rounds),
            "unpackb + pynmea2.parse",
            _time(ref_pos, pos_env, args.rounds),
        ),
        (
            "render_json",
            _time(lambda s: render_json(s, forwarded_at=T0), snaps, args.rounds),
            "json_document + json.dumps",
            _time(lambda s: _stdlib_render(s, forwarded_at=T0), snaps, args.rounds),
        ),
        (
            "json_document",
            _time(lambda s: json_document(s, forwarded_at=T0), snaps, args.rounds),
            "orjson.dumps(dict)",
            _time(orjson.dumps, dicts, args.rounds),
        ),
        (
            "render_cap",
            _time(lambda s: render_cap(s, sender="ecallgw", forwarded_at=T0), snaps, args.rounds),
            "render_json",
            _time(lambda s: render_json(s, forwarded_at=T0), snaps, args.rounds),
        ),
        (
            "parse_cap",
            _time(parse_cap, caps, args.rounds),
            "ET.fromstring",
            _time(ET.fromstring, caps, args.rounds),
        ),
        (
            "parse_json_document",
            _time(parse_json_document, jsons, args.rounds),
            "json.loads",
            _time(json.loads, jsons, args.rounds),
        ),
    ]
    print(f"{'operation':26} {'µs':>8}   {'reference':26} {'µs':>8}  ratio")
    for name, ours, ref_name, ref in rows:
        print(f"{name:26} {ours:8.1f}   {ref_name:26} {ref:8.1f}  {ours / ref:5.1f}x")
    sizes = sum(map(len, jsons)) / len(jsons), sum(map(len, caps)) / len(caps)
    print(f"mean size: JSON {sizes[0]:.0f} bytes, CAP {sizes[1]:.0f} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
