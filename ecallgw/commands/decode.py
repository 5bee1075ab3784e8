"""``ecallgw decode``: an MSD as hex (or raw bytes on stdin with ``-``) → one JSON object."""

from __future__ import annotations

import argparse
import json
import re
import sys

from ecallgw.errors import DecodeError

_HEX_TEXT = re.compile(rb"\s*(?:0[xX])?[0-9A-Fa-f\s]+")

HELP = "decode an EN 15722 MSD (hex argument, or raw bytes on stdin with '-') and print it as JSON"


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``decode``."""
    parser.add_argument(
        "msd", metavar="HEX|-", help="the MSD as hex (spaces allowed), or '-' for raw bytes on stdin"
    )
    parser.add_argument("--indent", type=int, default=1, help="JSON indentation (default 1; 0 = one line)")


def run(args: argparse.Namespace) -> int:
    """Decode and print; exit status 2 with one line on stderr for a malformed MSD."""
    from ecallgw.codecs import msd

    if args.msd == "-":
        data = sys.stdin.buffer.read()
    else:
        text = "".join(args.msd.split())
        text = text[2:] if text[:2].lower() == "0x" else text
        try:
            data = bytes.fromhex(text)
        except ValueError:
            print(f"ecallgw decode: {args.msd!r} is not hex", file=sys.stderr)
            return 2
    try:
        value = msd.decode(data)
    except DecodeError as exc:
        where = f" in field {exc.path}" if exc.path else ""
        at = f" at bit {exc.bit_offset}" if exc.bit_offset is not None else ""
        hint = ""
        if args.msd == "-" and data.strip() and _HEX_TEXT.fullmatch(data):
            # A common slip: `echo 015c06... | ecallgw decode -` sends the hex digits as the MSD.
            hint = " (standard input is hex text; '-' reads raw bytes: pass hex as the argument)"
        print(f"ecallgw decode: malformed MSD{where}{at}: {exc.reason}{hint}", file=sys.stderr)
        return 2
    indent = args.indent or None
    print(json.dumps(msd.to_json_dict(value), indent=indent))
    return 0
