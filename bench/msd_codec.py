"""How fast is the MSD codec? ecallgw beside asn1tools on the same random MSDs, in one run.

For each version, ``--count`` random valid MSDs (seeded; ~30 % with optional additional data) are
encoded once; then, in ``--rounds`` interleaved rounds, both codecs decode all the octets and
encode all the values, and the best round of each is reported (per MSD, µs) with the ratio.

The asn1tools reference does the same job where it can: for v2/v3 it decodes the ECallMessage
and then the contained MSDMessage (asn1tools treats CONTAINING as plain octets); its encode gets
its own value form ready-made (OID as octets). It does not decode the ERA-GLONASS / Euro NCAP
additional data, which ecallgw does, so the comparison is conservative.

Run from the repository root, on one core:

    nice taskset -c 0 .venv/bin/python bench/msd_codec.py --count 1000
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecallgw.codecs import msd as codec
from tests.codecs import _oracle as oracle
from tests.codecs._strategies import Version, random_msd


def _best(fn: Callable[[Any], object], items: Sequence[Any]) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - start


def run(version: Version, count: int, rounds: int, seed: int) -> dict[str, float]:
    """Time both codecs on the same MSDs; returns best per-MSD times in µs."""
    rng = random.Random(seed + version)
    values = [random_msd(rng, version) for _ in range(count)]
    octets = [codec.encode(v) for v in values]
    spec = oracle._spec(version)

    if version == 1:

        def ref_decode(data: bytes) -> object:
            return spec.decode("ECallMessage", data)

        ref_values: list[Any] = [ref_decode(d) for d in octets]

        def ref_encode(value: Any) -> bytes:
            out: bytes = spec.encode("ECallMessage", value)
            return out

    else:

        def ref_decode(data: bytes) -> object:
            return spec.decode("MSDMessage", spec.decode("ECallMessage", data)["msd"])

        ref_values = [ref_decode(d) for d in octets]

        def ref_encode(value: Any) -> bytes:
            inner = spec.encode("MSDMessage", value)
            out: bytes = spec.encode("ECallMessage", {"msdVersion": version, "msd": inner})
            return out

    # Same bytes both ways before timing anything.
    assert [ref_encode(v) for v in ref_values] == octets
    assert [codec.decode(d) for d in octets] == values

    times: dict[str, list[float]] = {"ref_dec": [], "dec": [], "ref_enc": [], "enc": []}
    for _ in range(rounds):  # interleaved, so a noisy neighbour hurts both sides alike
        times["ref_dec"].append(_best(ref_decode, octets))
        times["dec"].append(_best(codec.decode, octets))
        times["ref_enc"].append(_best(ref_encode, ref_values))
        times["enc"].append(_best(codec.encode, values))
    out = {k: min(v) / count * 1e6 for k, v in times.items()}
    # What docs/msd-codec.md quotes for operators: the interpreted construct parse, which only
    # malformed input pays (to name the field and bit offset), and the fast path without OAD.
    plain = [d for d, v in zip(octets, values, strict=True) if v.msd.optional_additional_data is None]
    interp = [_best(codec._decode_interpreted, octets) for _ in range(min(rounds, 3))]
    out["interp"] = min(interp) / count * 1e6
    out["dec_plain"] = min(_best(codec.decode, plain) for _ in range(rounds)) / max(len(plain), 1) * 1e6
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table; exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="random MSDs per version (default 1000)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds, best counts (default 9)")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--versions", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3])
    args = parser.parse_args(argv)
    print(f"{args.count} random MSDs per version, best of {args.rounds} rounds, µs per MSD")
    print(
        f"{'version':>7} | {'decode asn1tools':>16} {'ecallgw':>8} {'ratio':>6} | "
        f"{'encode asn1tools':>16} {'ecallgw':>8} {'ratio':>6}"
    )
    extra = []
    for version in args.versions:
        r = run(version, args.count, args.rounds, args.seed)
        dec, enc = r["ref_dec"] / r["dec"], r["ref_enc"] / r["enc"]
        print(
            f"{'v' + str(version):>7} | {r['ref_dec']:16.2f} {r['dec']:8.2f} {dec:5.1f}x | "
            f"{r['ref_enc']:16.2f} {r['enc']:8.2f} {enc:5.1f}x"
        )
        extra.append(
            f"v{version}: decode without optional additional data {r['dec_plain']:.2f} µs; interpreted "
            f"construct parse (malformed input only) {r['interp']:.0f} µs, {r['interp'] / r['dec']:.0f}x "
            "the fast path"
        )
    print("\n".join(extra))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
