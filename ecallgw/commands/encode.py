"""``ecallgw encode``: the JSON of ``ecallgw decode`` (a file, or ``-`` for stdin) → canonical UPER hex."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ecallgw.errors import DecodeError, EncodeError

HELP = "encode an MSD given as JSON (a file, or '-' for stdin) and print its canonical UPER hex"


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``encode``."""
    parser.add_argument("json", metavar="FILE|-", help="the MSD as JSON, in the form `ecallgw decode` prints")


def run(args: argparse.Namespace) -> int:
    """Encode and print; exit status 2 with one line on stderr when the JSON is not an encodable MSD."""
    from ecallgw.codecs import msd

    try:
        raw = sys.stdin.buffer.read() if args.json == "-" else Path(args.json).read_bytes()
    except OSError as exc:
        print(f"ecallgw encode: cannot read {args.json}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        value = msd.from_json_dict(json.loads(raw))  # bytes: UTF-8 (or -16/-32 with BOM), RFC 8259
        data = msd.encode(value)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        print(f"ecallgw encode: not JSON: {exc}", file=sys.stderr)
        return 2
    except RecursionError:
        print("ecallgw encode: not JSON: nested too deeply", file=sys.stderr)
        return 2
    except DecodeError as exc:
        where = f" in field {exc.path}" if exc.path else ""
        print(f"ecallgw encode: not an MSD{where}: {exc.reason}", file=sys.stderr)
        return 2
    except EncodeError as exc:
        print(f"ecallgw encode: cannot encode: {exc}", file=sys.stderr)
        return 2
    print(data.hex())
    return 0
