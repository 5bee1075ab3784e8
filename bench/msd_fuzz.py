"""Does anything but DecodeError ever escape the MSD decoder? N fuzzed inputs, counted by outcome.

Inputs are drawn (seeded) from five mutation kinds of random valid MSDs of all versions
(tests/codecs/_strategies.py ``mutate``): random bytes behind a version octet, 1-8 bit flips,
truncations, appended bytes (zero or random, sometimes filling a 140-octet frame) and overwritten
runs. Every input goes through ``ecallgw.codecs.msd.decode``. Counted: decoded, DecodeError, any
other exception (a bug: printed). For a sample of inputs, the generated fast path and the
interpreted construct schema are also compared (they must agree on success and on value).

    nice .venv/bin/python bench/msd_fuzz.py --count 1000000
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecallgw.codecs import msd as codec
from ecallgw.errors import DecodeError
from tests.codecs._strategies import MUTATIONS, mutate, random_msd


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fuzzer; exit status 1 if any exception other than DecodeError escaped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="fuzzed inputs (default 100000)")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--pool", type=int, default=3000, help="valid MSDs to mutate (default 3000)")
    parser.add_argument("--compare-every", type=int, default=25, help="cross-check 1 input in N")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    pool = []
    for _ in range(args.pool):
        msd = random_msd(rng, rng.choice((1, 2, 3)))
        pool.append(codec.encode(msd, canonical=rng.random() < 0.7))
    outcomes: collections.Counter[str] = collections.Counter()
    by_kind: collections.Counter[tuple[str, str]] = collections.Counter()
    disagreements = 0
    start = time.perf_counter()
    for i in range(args.count):
        kind = MUTATIONS[i % len(MUTATIONS)]
        data = mutate(rng, rng.choice(pool), kind)
        try:
            value = codec.decode(data)
            outcome = "decoded"
        except DecodeError:
            value = None
            outcome = "DecodeError"
        except Exception:  # the bug this script hunts: report it, keep going
            outcome = "other exception"
            if outcomes[outcome] < 5:
                print(f"input {data.hex()}:")
                traceback.print_exc()
        outcomes[outcome] += 1
        by_kind[kind, outcome] += 1
        if i % args.compare_every == 0 and data and data[0] in codec._FAST:
            fast = codec._FAST[data[0]].decode(data)
            try:
                slow = codec._decode_interpreted(data)
            except DecodeError:
                slow = None
            if (fast is not None and fast != slow) or value != slow:
                disagreements += 1
                print(f"fast path and schema disagree on {data.hex()}")
        if (i + 1) % 100_000 == 0:
            print(f"  {i + 1} inputs, {time.perf_counter() - start:.0f} s, {dict(outcomes)}", flush=True)
    elapsed = time.perf_counter() - start
    print(f"{args.count} fuzzed inputs in {elapsed:.0f} s: {dict(outcomes)}")
    for kind in MUTATIONS:
        row = {o: by_kind[kind, o] for o in ("decoded", "DecodeError", "other exception")}
        print(f"  {kind:>9}: {row}")
    checked = (args.count + args.compare_every - 1) // args.compare_every
    print(f"fast path vs interpreted schema on {checked} sampled inputs: {disagreements} disagreements")
    return 1 if outcomes["other exception"] or disagreements else 0


if __name__ == "__main__":
    raise SystemExit(main())
