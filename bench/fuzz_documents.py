"""Do the envelope, NMEA, CAP and JSON decoders raise only DecodeError on fuzzed input?

For each decoder, seeded inputs: a share of random bytes (or text), the rest valid inputs with one to
four random bytes (characters) changed. Each input goes to our decoder and, as the reference in the
same run, to the library underneath it (msgpack.unpackb, pynmea2.parse per line, ElementTree,
json.loads): the reference shows how many foreign exception types our codecs translate. The bar is
0 exceptions other than DecodeError; the script exits 1 otherwise.

Run from the repository root, on one core:

    nice taskset -c 0 .venv/bin/python bench/fuzz_documents.py --count 100000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgpack
import pynmea2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecallgw.codecs import msd as msd_codec
from ecallgw.codecs.document import parse_cap, parse_json_document, render_cap, render_json
from ecallgw.codecs.envelope import decode_envelope, encode_envelope
from ecallgw.codecs.nmea import GNSS_TALKERS, decode_nmea, encode_gll, encode_gns, encode_nmea
from ecallgw.errors import DecodeError
from ecallgw.model import (
    CancelSignal,
    IncidentSnapshot,
    MsdSignal,
    Position,
    PositionSignal,
    Reason,
    Severity,
)

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests/codecs/vectors/msd-public.json").read_text())
RAW = bytes.fromhex(VECTORS[0]["hex"])
T0 = 1_764_158_400.0


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        buf[rng.randrange(len(buf))] = rng.randrange(256)
    return bytes(buf)


def _position(rng: random.Random) -> Position:
    return Position(
        lat=rng.uniform(-90, 90),
        lon=rng.uniform(-180, 180),
        trusted=True,
        source="nmea",
        quality=rng.choice(["gps", "dgps", "rtk", "estimated"]),
        speed_kmh=rng.choice([None, rng.uniform(0, 200)]),
        altitude_m=rng.choice([None, rng.uniform(-100, 3000)]),
        satellites=rng.choice([None, rng.randint(0, 30)]),
        hdop=rng.choice([None, rng.uniform(0.5, 10)]),
    )


def _nmea_text(rng: random.Random) -> str:
    p, at, talker = _position(rng), T0 + rng.uniform(-3600, 3600), rng.choice(sorted(GNSS_TALKERS))
    parts = [encode_nmea(p, at=at, talker=talker)]
    if rng.random() < 0.5:
        parts.append(encode_gns(p, at=at, talker=talker, mode=rng.choice(["AA", "DN", "NN"])))
    if rng.random() < 0.5:
        parts.append(encode_gll(p, at=at, talker=talker, status=rng.choice("AV")))
    return "\r\n".join(parts)


def _envelope(rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["msd", "cancel", "position"])
    if kind == "msd":
        signal: MsdSignal | CancelSignal | PositionSignal = MsdSignal(
            tps="t", vehicle="v", call_id="call-1", sent_at=T0, msd=msd_codec.decode(RAW), lang="de"
        )
    elif kind == "cancel":
        signal = CancelSignal(tps="t", vehicle="v", call_id="call-1", sent_at=T0, reason="cancelled")
    else:
        signal = PositionSignal(tps="t", vehicle="v", call_id="c", sent_at=T0, position=_position(rng))
    return kind, encode_envelope(signal)


def _snapshot(revision: int) -> IncidentSnapshot:
    return IncidentSnapshot(
        incident_id="inc-4f1c2a9e0b7d6c5a3e2f1d0c",
        revision=revision,
        status="open" if revision == 1 else "updated",
        severity=Severity(level="high", score=60, reasons=(Reason(code="a", text="automatic"),)),
        tps="t",
        vehicle="v",
        call_id="c",
        automatic=True,
        test=False,
        received_at=T0,
        updated_at=T0 + 1,
        msd=msd_codec.decode(RAW),
        position=Position(lat=48.3, lon=11.6, trusted=True, source="msd"),
    )


class Tally:
    """Outcomes of one decoder over the inputs."""

    def __init__(self) -> None:
        self.accepted = 0
        self.decode_errors = 0
        self.other: Counter[str] = Counter()
        self.seconds = 0.0

    def run(self, fn: Callable[..., object], *args: object) -> None:
        start = time.perf_counter()
        try:
            fn(*args)
            self.accepted += 1
        except DecodeError:
            self.decode_errors += 1
        except Exception as exc:  # the point is to count what escapes
            self.other[type(exc).__name__] += 1
        self.seconds += time.perf_counter() - start


def _reference_nmea(text: str) -> None:
    for line in text.splitlines():
        if line:
            pynmea2.parse(line, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--count", type=int, default=20000, help="inputs per decoder (JSON and CAP get 1/10)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    alert = render_cap(_snapshot(1), sender="ecallgw", forwarded_at=T0)
    update = render_cap(_snapshot(2), sender="ecallgw", forwarded_at=T0, first_sent_at=T0)
    document = render_json(_snapshot(2), forwarded_at=T0)
    rows = []

    ours, ref = Tally(), Tally()
    for _ in range(args.count):
        kind, payload = _envelope(rng)
        data = _mutate(rng, payload) if rng.random() < 0.8 else rng.randbytes(rng.randrange(64))
        ours.run(decode_envelope, kind, "t", "v", data)
        ref.run(msgpack.unpackb, data)
    rows.append(("envelope", "msgpack.unpackb", ours, ref))

    ours, ref = Tally(), Tally()
    for _ in range(args.count):
        text = _nmea_text(rng)
        if rng.random() < 0.8:
            text = _mutate(rng, text.encode("latin-1")).decode("latin-1")
        else:
            chars = (rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x3000)]) for _ in range(80))
            text = "".join(map(chr, chars))
        ours.run(lambda t: decode_nmea(t, reference_time=T0), text)
        ref.run(_reference_nmea, text)
    rows.append(("nmea", "pynmea2.parse", ours, ref))

    ours, ref = Tally(), Tally()
    for _ in range(max(1, args.count // 10)):
        data = _mutate(rng, rng.choice([alert, update]))
        ours.run(parse_cap, data)
        ref.run(ET.fromstring, data)
    rows.append(("cap", "ElementTree", ours, ref))

    ours, ref = Tally(), Tally()
    for _ in range(max(1, args.count // 10)):
        data = _mutate(rng, document)
        ours.run(parse_json_document, data)
        ref.run(json.loads, data)
    rows.append(("json", "json.loads", ours, ref))

    head = f"{'decoder':10} {'inputs':>8} {'accepted':>9} {'DecodeError':>12} {'other':>6} {'µs/input':>9}"
    print(head + "   reference: exceptions escaping the library (types)")
    failed = False
    for name, ref_name, o, r in rows:
        n = o.accepted + o.decode_errors + sum(o.other.values())
        failed |= bool(o.other)
        print(
            f"{name:10} {n:8d} {o.accepted:9d} {o.decode_errors:12d} {sum(o.other.values()):6d} "
            f"{1e6 * o.seconds / n:9.1f}   {ref_name}: {sum(r.other.values())} "
            f"({', '.join(sorted(r.other)) or '-'}), {1e6 * r.seconds / n:.1f} µs/input"
        )
        if o.other:
            print(f"  ESCAPED from {name}: {dict(o.other)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
