"""``ecallgw store migrate|version``: bring the configured store to this release's schema."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

HELP = "store maintenance: apply schema migrations (migrate) or print the schema version (version)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    from ecallgw.commands.serve import configure as serve_options

    parser.add_argument("action", choices=("migrate", "version"), help="what to do")
    serve_options(parser)


async def _migrate(config: object, apply: bool) -> tuple[int, int]:
    """(version found, version now) of the configured store."""
    from ecallgw.config import Config
    from ecallgw.gateway.store import migrations

    assert isinstance(config, Config)
    s = config.store
    if s.backend == "postgresql":
        import asyncpg

        conn = await asyncpg.connect(s.dsn.reveal(), timeout=10)
        try:
            found = await conn.fetchval(
                "SELECT CASE WHEN to_regclass('schema_version') IS NULL THEN 0 "
                "ELSE (SELECT coalesce(max(version), 0) FROM schema_version) END"
            )
            now = await migrations.migrate_postgres(conn, "store.dsn") if apply else found
        finally:
            await conn.close()
        return int(found), int(now)
    import sqlite3
    from pathlib import Path

    if not apply and not Path(s.path).exists():  # noqa: ASYNC240 (a CLI, nothing else on the loop)
        return 0, 0
    from ecallgw.gateway.store.sqlite import create_private

    create_private(Path(s.path))  # directory 0700, file 0600 (and so -wal, -shm), as serve makes them
    db = sqlite3.connect(s.path, isolation_level=None)
    try:
        (found,) = db.execute("PRAGMA user_version").fetchone()
        now = migrations.migrate_sqlite(db, s.path) if apply else found
    finally:
        db.close()
    return int(found), int(now)


def run(args: argparse.Namespace) -> int:
    """Migrate or report; 2 on a configuration error or a schema newer than this release."""
    from ecallgw.commands.serve import overrides_from
    from ecallgw.config import load_config
    from ecallgw.errors import ConfigError, StoreError
    from ecallgw.gateway.store.migrations import POSTGRES, SQLITE, SchemaTooNewError

    try:
        config = load_config(args.config, environ=os.environ, overrides=overrides_from(args))
    except ConfigError as exc:
        print(f"ecallgw: {exc}", file=sys.stderr)
        return 2
    known = len(POSTGRES) if config.store.backend == "postgresql" else len(SQLITE)
    try:
        found, now = asyncio.run(_migrate(config, args.action == "migrate"))
    except SchemaTooNewError as exc:
        print(f"ecallgw: {exc}", file=sys.stderr)
        return 2
    except (StoreError, OSError) as exc:
        print(f"ecallgw: cannot open the store: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a driver error (server down, bad DSN): one line, no traceback
        print(f"ecallgw: cannot open the store: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.action == "migrate":
        print(f"{config.store.backend} store: schema version {found} -> {now}")
    else:
        print(f"{config.store.backend} store: schema version {found} (this release knows {known})")
    return 0
