"""Parse the command line and run one sub-command."""

from __future__ import annotations

import argparse
import importlib
import os
import select
import signal
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
    try:
        status: int = module.run(args)
        sys.stdout.flush()  # here, not at exit: a reader that left shows up inside the try
    except BrokenPipeError:
        if not _stdout_gone():
            raise  # a socket's, not ours to hide
        # `ecallgw decode … | head -c1`: the reader has what it wanted. The recipe of Python's
        # signal module docs: stdout onto devnull, so the interpreter's flush at exit stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE  # what a shell reports for a writer SIGPIPE ended (141)
    return status


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll reports POLLERR on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False
