"""``ecallgw serve``: run the gateway daemon."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

HELP = "run the gateway daemon (MQTT/HTTP ingest, triage, store, forwarding, operator API)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument(
        "--config", metavar="FILE", help="TOML configuration file (embedded defaults without)"
    )
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one key by its dotted name, e.g. --set mqtt.port=1884 (repeatable; wins over "
        "the file and ECALLGW_* variables)",
    )
    parser.add_argument("--store", metavar="PATH", help="SQLite store file (same as --set store.path=PATH)")
    parser.add_argument("--mqtt-port", type=int, metavar="PORT", help="broker port (mqtt.port)")
    parser.add_argument("--http-port", type=int, metavar="PORT", help="HTTP port (http.port)")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on a start-up error, print the traceback as well as the one line naming the key",
    )


def overrides_from(args: argparse.Namespace) -> dict[str, str]:
    """The dotted-key overrides given on the command line."""
    out: dict[str, str] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"ecallgw: --set needs KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    if args.store:
        out["store.path"] = args.store
    if args.mqtt_port is not None:
        out["mqtt.port"] = str(args.mqtt_port)
    if args.http_port is not None:
        out["http.port"] = str(args.http_port)
    return out


def run(args: argparse.Namespace) -> int:
    """Load the configuration and run until SIGTERM/SIGINT; 2 on a configuration error."""
    from ecallgw.app import run_gateway
    from ecallgw.config import Config, load_config
    from ecallgw.errors import ConfigError

    def load() -> Config:  # at start, and again on SIGHUP (the same file, environment and --set)
        return load_config(args.config, environ=os.environ, overrides=overrides_from(args))

    try:
        config = load()
    except ConfigError as exc:
        return _refuse(args, exc, 2)
    import uvloop

    from ecallgw.errors import StoreError
    from ecallgw.gateway.store.migrations import SchemaTooNewError

    try:
        uvloop.run(run_gateway(config, reload=load))
    except (ConfigError, SchemaTooNewError) as exc:
        # Checks that need the policy or the store; http.port taken, store.path unusable.
        return _refuse(args, exc, 2)
    except StoreError as exc:  # the store's server cannot be reached: one line, not a traceback
        return _refuse(args, exc, 1)
    except ExceptionGroup as group:
        # A store that breaks while running stops the gateway (fail-stop: nothing more is
        # acknowledged; a restart replays the journal). A full or read-only disk does not: the
        # gateway holds its commits and waits (docs/operations.md, Store not writable).
        stored, rest = group.split(StoreError)
        if stored is None or rest is not None:
            raise
        first: BaseException = stored
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        if getattr(args, "debug", False):
            traceback.print_exception(group)
        print(f"ecallgw: the store failed; a restart replays the journal: {first}", file=sys.stderr)
        return 1
    return 0


def _refuse(args: argparse.Namespace, exc: BaseException, status: int) -> int:
    """One line on stderr naming the key or path (the traceback before it with ``--debug``)."""
    if getattr(args, "debug", False):
        traceback.print_exception(exc)
    print(f"ecallgw: {exc}", file=sys.stderr)
    return status
