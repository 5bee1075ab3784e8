"""Does ecallgw's MSD codec agree with asn1tools? A differential check on N random MSDs per version.

For every random valid MSD (tests/codecs/_strategies.py: every OPTIONAL present or absent, full
integer ranges, known and unknown optional additional data, some needing the long length form):
  1. ecallgw's encoding equals asn1tools' encoding of the same value, byte for byte;
  2. ecallgw decodes asn1tools' encoding back to the value (decode(encode(x)) == x);
  3. asn1tools decodes ecallgw's encoding to ecallgw's JSON of the value;
  4. for known additional data (ERA-GLONASS 1.4.1/1.4.2, Euro NCAP 8.1) that decodes, asn1tools
     reads the data octets to the same value, and both encode that value to the same octets (the
     generator also puts arbitrary octets under known OIDs: some decode, non-canonically).
A mismatch is counted and the first few are printed with their hex.

    nice .venv/bin/python bench/msd_differential.py --count 100000
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecallgw.codecs import msd as codec
from ecallgw.codecs import oad
from tests.codecs import _oracle as oracle
from tests.codecs._strategies import Version, random_msd


def check_version(version: Version, count: int, seed: int, show: int) -> tuple[int, int]:
    """Returns (mismatches, MSDs with optional additional data checked)."""
    rng = random.Random(f"{seed}-{version}")
    mismatches = 0
    with_oad = 0
    for i in range(count):
        msd = random_msd(rng, version)
        ours = codec.encode(msd)
        as_json = codec.to_json_dict(msd)
        theirs = oracle.encode(as_json)
        problems = []
        if ours != theirs:
            problems.append(f"encode: ecallgw {ours.hex()} asn1tools {theirs.hex()}")
        if codec.decode(theirs) != msd:
            problems.append("ecallgw's decode of asn1tools' encoding differs from the value")
        expected = dict(as_json)
        extra = msd.msd.optional_additional_data
        if extra is not None:
            with_oad += 1
            message = dict(as_json["msd"])
            message["optionalAdditionalData"] = {"oid": extra.oid, "data": extra.data.hex()}
            expected["msd"] = message
            if extra.decoded is not None:
                # The data may be any encoding of the scheme (the generator also draws arbitrary
                # octets under a known OID): asn1tools must read it to our decoded value, and both
                # must encode that value to the same canonical octets.
                as_json = oad.oad_to_json(extra.decoded)
                theirs_oad: object
                try:
                    theirs_oad = oracle.decode_oad(extra.oid, extra.data)
                except Exception as exc:  # asn1tools refusing what we decoded is a mismatch
                    theirs_oad = f"refused: {exc}"
                if theirs_oad != as_json:
                    problems.append(f"OAD {extra.oid}: asn1tools reads {extra.data.hex()} differently")
                if oad.encode_oad(extra.decoded) != oracle.encode_oad(extra.oid, as_json):
                    problems.append(f"OAD {extra.oid}: canonical encodings differ")
        if oracle.decode(ours) != expected:
            problems.append("asn1tools' decode of ecallgw's encoding differs from ecallgw's JSON")
        if problems:
            mismatches += 1
            if mismatches <= show:
                print(f"  v{version} #{i}: " + "; ".join(problems))
    return mismatches, with_oad


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; exit status 1 on any mismatch."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="random MSDs per version (default 10000)")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--versions", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3])
    parser.add_argument("--show", type=int, default=5, help="mismatches to print per version")
    args = parser.parse_args(argv)
    total = 0
    for version in args.versions:
        start = time.perf_counter()
        mismatches, with_oad = check_version(version, args.count, args.seed, args.show)
        total += mismatches
        print(
            f"v{version}: {args.count} random MSDs ({with_oad} with optional additional data), "
            f"{mismatches} mismatches vs asn1tools ({time.perf_counter() - start:.0f} s)"
        )
    return 1 if total else 0


if __name__ == "__main__":
    raise SystemExit(main())
