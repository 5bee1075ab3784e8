"""Parse the command line and run one sub-command."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["COMMANDS", "main"]

# name -> module under ecallgw.commands; imported lazily so `ecallgw decode` stays fast.
COMMANDS: dict[str, str] = {
    "serve": "serve",
    "demo": "demo",
    "decode": "decode",
    "encode": "encode",
    "triage": "triage",
    "simulate": "simulate",
    "loadtest": "loadtest",
    "store": "store",
    "config": "config",
    "send": "send",
}


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"ecallgw.commands.{COMMANDS[name]}")
    except ModuleNotFoundError as exc:
        if exc.name == f"ecallgw.commands.{COMMANDS[name]}":
            return None
        raise


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Build the parser; only the chosen sub-command's module is imported."""
    from ecallgw import __version__

    parser = argparse.ArgumentParser(prog="ecallgw", description="eCall signal gateway and triage daemon")
    parser.add_argument("--version", action="version", version=f"ecallgw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name in COMMANDS:
        if chosen is not None and name != chosen:
            sub.add_parser(name)
            continue
        module = _load(name)
        if module is None:
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ecallgw`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    module: ModuleType | None = getattr(args, "_module", None)
    if module is None:
        parser.error(f"command {args.command!r} is not available in this build")
    status: int = module.run(args)
    return status
