"""``ecallgw triage replay FILE``: run a recorded signal log through triage and print the decisions.

Judge a rule or threshold change on real traffic before deploying it: export the journal as JSON
lines (``ecallgw triage export``; docs/triage.md "Signal log"), replay it with the candidate
``--config``, and diff the output against a replay with the current one. Output is one JSON object
per decision, in order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ecallgw.config import StoreConfig
    from ecallgw.triage.replay import Record

HELP = "triage tools: export the journal as a JSON-lines signal log; replay a log, one decision per line"

# A fixed key for replays without the gateway's key: decisions are the same, incident ids are not.
_REPLAY_KEY = b"ecallgw-replay-key-not-a-secret!"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``replay`` and ``export`` sub-commands and their options."""
    sub = parser.add_subparsers(dest="triage_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("replay", help="replay a JSON-lines signal log", description=__doc__)
    p.add_argument("file", metavar="FILE", help="the log, one JSON record per line ('-' for stdin)")
    p.add_argument("--config", metavar="TOML", help="configuration file whose [triage] table is the policy")
    p.add_argument(
        "--key-hex",
        metavar="HEX",
        help="the gateway's triage key in hex, to reproduce its incident ids (default: from --config's "
        "pipeline.pseudonym_key or --store, else a fixed replay key)",
    )
    p.add_argument(
        "--store",
        metavar="SQLITE",
        help="the gateway's store file: read (read-only) the generated pseudonym key from it",
    )
    p.add_argument(
        "--tick-each",
        action="store_true",
        help="run escalation timers before every record (for hand-written logs without tick records)",
    )
    p.add_argument(
        "--until", type=float, metavar="EPOCH_S", help="after the log, fire timers due by this time"
    )
    p.set_defaults(_triage_run=_run_replay)

    e = sub.add_parser(
        "export",
        help="print the gateway's journal as a JSON-lines signal log",
        description="Print the journal of a gateway's store (signals as received, operator actions, "
        "timer ticks, prunes) as the JSON-lines signal log that `ecallgw triage replay` reads.",
    )
    e.add_argument("--config", metavar="TOML", help="configuration file naming the store ([store] path)")
    e.add_argument("--store", metavar="SQLITE", help="the store file (overrides the configuration)")
    e.add_argument(
        "--after", type=int, default=0, metavar="SEQ", help="only journal rows after this sequence"
    )
    e.set_defaults(_triage_run=_run_export)


def run(args: argparse.Namespace) -> int:
    """Run the chosen triage sub-command."""
    status: int = args._triage_run(args)
    return status


def _run_export(args: argparse.Namespace) -> int:
    """Print the journal as JSON lines; exit 2 when the store cannot be read."""
    import asyncio
    import os

    from ecallgw.config import load_config
    from ecallgw.errors import ConfigError, StoreError

    try:
        cfg = load_config(args.config) if args.config else load_config()
    except ConfigError as exc:
        print(f"ecallgw triage export: {exc}", file=sys.stderr)
        return 2
    path = args.store or cfg.store.path
    # Opening a store creates it; exporting from a path that does not exist is a mistake.
    if not os.path.isfile(path):
        print(f"ecallgw triage export: no store at {path}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_export(replace(cfg.store, path=path), args.after))
    except StoreError as exc:
        print(f"ecallgw triage export: {exc}", file=sys.stderr)
        return 2
    return 0


async def _export(store_cfg: StoreConfig, after: int) -> None:
    import base64

    from ecallgw.gateway.store import SqliteStore

    out = sys.stdout
    async with SqliteStore(store_cfg) as store:
        seq = after
        while rows := await store.journal(seq, 5000):
            for row in rows:
                rec: dict[str, object] = {"type": row.type, "at": row.at}
                if row.signal is not None:
                    sig = row.signal
                    rec |= {"kind": sig.kind, "tps": sig.tps, "vehicle": sig.vehicle}
                    if sig.call_id is not None:
                        rec["call_id"] = sig.call_id
                    rec["payload_b64"] = base64.b64encode(sig.payload).decode()
                elif row.action is not None:
                    a = row.action
                    rec |= {"incident_id": a.incident_id, "action": a.action, "actor": a.actor}
                out.write(json.dumps(rec) + "\n")
            seq = rows[-1].seq
    out.flush()


def _run_replay(args: argparse.Namespace) -> int:
    """Replay the log; exit 0, or 1 when some records could not be replayed (they are reported)."""
    from ecallgw.config import load_config
    from ecallgw.errors import ConfigError, DecodeError
    from ecallgw.triage import TriageEngine, TriagePolicy
    from ecallgw.triage.replay import LogError, TickRecord, decision_to_json, parse_record, replay

    try:
        cfg = load_config(args.config) if args.config else None
        policy = TriagePolicy.from_mapping(cfg.triage) if cfg is not None else TriagePolicy()
    except ConfigError as exc:
        print(f"ecallgw triage replay: {exc}", file=sys.stderr)
        return 2
    # The same key as `ecallgw serve` (app.py): sha256 of the configured pseudonym_key, else the
    # random key the store generated; so the replay reproduces the gateway's incident ids.
    key = _REPLAY_KEY
    secret = cfg.pipeline.pseudonym_key.reveal() if cfg is not None else ""
    if args.key_hex:
        try:
            key = bytes.fromhex(args.key_hex)
        except ValueError:
            print("ecallgw triage replay: --key-hex is not hex", file=sys.stderr)
            return 2
    elif secret:
        key = hashlib.sha256(secret.encode()).digest()
    elif args.store:
        stored = _store_key(args.store)
        if stored is None:
            print(f"ecallgw triage replay: no pseudonym key in {args.store}", file=sys.stderr)
            return 2
        key = stored
    try:
        engine = TriageEngine(policy, key)
    except ValueError as exc:
        print(f"ecallgw triage replay: {exc}", file=sys.stderr)
        return 2

    bad = 0
    out = sys.stdout

    def records(stream: TextIO) -> Iterator[Record]:
        nonlocal bad
        for n, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                yield parse_record(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                bad += 1
                _report(n, f"not JSON: {exc}")
            except (LogError, DecodeError) as exc:
                bad += 1
                _report(n, str(exc))

    try:
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        print(f"ecallgw triage replay: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    with stream:
        for rec, decision in replay(engine, records(stream), tick_each=args.tick_each):
            out.write(json.dumps(decision_to_json(rec, decision), ensure_ascii=False) + "\n")
    if args.until is not None:
        tick = TickRecord(at=args.until)
        for decision in engine.due(args.until):
            out.write(json.dumps(decision_to_json(tick, decision), ensure_ascii=False) + "\n")
    out.flush()
    return 1 if bad else 0


def _store_key(path: str) -> bytes | None:
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'pseudonym'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return bytes(row[0]) if row is not None else None


def _report(line: int, why: str) -> None:
    print(json.dumps({"line": line, "error": why}), file=sys.stderr)
