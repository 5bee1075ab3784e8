"""``ecallgw config check FILE``: validate a configuration without starting anything.

Runs the checks ``serve`` runs before it opens a socket or the store: the file with the
``ECALLGW_*`` environment and ``--set`` layers, the ``[triage]`` policy, that every receiver triage
routes to is configured, and that every TLS certificate, key and CA file loads. Connects to nothing
and creates nothing (a missing ``pipeline.pseudonym_key_file`` is left for ``serve`` to create).
Prints ``ok:`` and a one-line summary (no secrets) and exits 0, or one line naming the key, exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys

HELP = "configuration tools: check a configuration file as serve would, without starting anything"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``check`` sub-command."""
    sub = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("check", help="validate a configuration file", description=__doc__)
    p.add_argument("file", metavar="FILE", help="TOML configuration file")
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one key by its dotted name, as serve --set (repeatable)",
    )


def check(config: object) -> str:
    """Run serve's start-up checks on a loaded configuration; the one-line summary.

    Raises:
        ConfigError: naming the key at fault.
    """
    from ecallgw.config import Config
    from ecallgw.errors import ConfigError
    from ecallgw.gateway.keyfile import load_key_file
    from ecallgw.gateway.mqtt_source import broker_tls_context
    from ecallgw.gateway.tls import client_context, server_context
    from ecallgw.triage import TriagePolicy

    assert isinstance(config, Config)
    policy = TriagePolicy.from_mapping(config.triage)
    for name in policy.receivers():  # the same check as Gateway._open
        if name not in config.receivers:
            raise ConfigError(f"receivers.{name}", None, "triage routes to this receiver: configure it")
    h = config.http
    if h.enabled and h.tls_cert_file:
        server_context(
            h.tls_cert_file,
            h.tls_key_file,
            client_ca_file=h.client_ca_file,
            require_client_cert=h.require_client_cert,
        )
    broker_tls_context(config.mqtt)
    for r in config.receivers.values():
        if r.kind == "http" and r.url.startswith("https://"):
            client_context(
                ca_file=r.ca_file, cert_file=r.cert_file, key_file=r.key_file, where=f"receivers.{r.name}."
            )
    key_file = config.pipeline.pseudonym_key_file
    if key_file and os.path.lexists(key_file):
        load_key_file(key_file)  # an existing file is read, never rewritten
    s = config.store
    store = f"{s.backend} {s.path}" if s.backend == "sqlite" else s.backend  # a DSN may hold a password
    receivers = ",".join(f"{n}({r.kind})" for n, r in sorted(config.receivers.items()))
    mqtt = (
        f"{config.mqtt.host}:{config.mqtt.port}{' tls' if config.mqtt.tls else ''}"
        if config.mqtt.enabled
        else "off"
    )
    http = f"{h.host}:{h.port}{' tls' if h.tls_cert_file else ''}" if h.enabled else "off"
    return f"store {store}; receivers {receivers}; tokens {len(config.auth.tokens)}; mqtt {mqtt}; http {http}"


def run(args: argparse.Namespace) -> int:
    """Check the file; 0 and a summary, or 2 and one line naming the key."""
    from ecallgw.config import ENV_PREFIX, load_config
    from ecallgw.errors import ConfigError

    overrides: dict[str, str] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            print(f"ecallgw config check: --set needs KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        overrides[key.strip()] = value
    try:
        config = load_config(args.file, environ=os.environ, overrides=overrides)
        summary = check(config)
    except ConfigError as exc:
        print(f"ecallgw config check: {exc}", file=sys.stderr)
        return 2
    env = sorted(n for n in os.environ if n.startswith(ENV_PREFIX) and len(n) > len(ENV_PREFIX))
    print(f"ok: {summary}" + (f"; from the environment: {', '.join(env)}" if env else ""))
    return 0
