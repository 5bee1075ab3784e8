"""How long does a group commit take when the event loop's thread keeps the GIL busy?

    .venv/bin/python bench/store_commit.py [--commits 200] [--units 20]

The store writes from a thread of its own, and every sqlite3 step releases the GIL and has to take
it back from the other thread, which keeps it for up to the switch interval (5 ms) while it has
work. This times commits of ``units`` journal rows on the gateway's schema (WAL,
synchronous=full): one INSERT per row (how the store wrote until 1682eb2) beside one multi-row
INSERT (how it writes now), each alone and beside a thread that spins in Python, as a loaded event
loop does. Prints p50 / p90 / max per variant, all measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

from ecallgw.gateway.store.migrations import migrate_sqlite

ROW = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"


def commits(path: Path, n: int, units: int, *, multirow: bool, busy: bool) -> list[float]:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    migrate_sqlite(conn)  # every migration: the newest alone is no longer the whole schema
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            for i in range(1000):
                x += i

    spinner = threading.Thread(target=spin) if busy else None
    if spinner is not None:
        spinner.start()
    payload = os.urandom(80)
    seq = 0
    times: list[float] = []
    try:
        for _ in range(n):
            rows = []
            for _ in range(units):
                seq += 1
                rows.append(
                    (seq, "signal", time.time(), "mqtt", "msd", "bench", f"v{seq}", f"c{seq}", payload, "t")
                    + (None,) * 5
                )
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            if multirow:
                sql = "INSERT INTO journal VALUES " + ",".join([ROW] * len(rows))
                conn.execute(sql, [v for r in rows for v in r])
            else:
                for r in rows:
                    conn.execute(f"INSERT INTO journal VALUES {ROW}", r)
            conn.execute("COMMIT")
            times.append(time.perf_counter() - t0)
    finally:
        stop.set()
        if spinner is not None:
            spinner.join()
        conn.close()
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--units", type=int, default=20, help="rows per commit")
    a = parser.parse_args()
    print(
        f"# bench/store_commit.py  {a.commits} commits of {a.units} rows, switch interval "
        f"{sys.getswitchinterval() * 1000:.0f} ms"
    )
    print("| statements | other thread | p50 ms | p90 ms | max ms |")
    print("|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.sqlite3"
        for busy in (False, True):
            for multirow in (False, True):
                t = commits(path, a.commits, a.units, multirow=multirow, busy=busy)
                what = "one multi-row INSERT" if multirow else "one INSERT per row"
                print(
                    f"| {what} | {'spinning' if busy else 'idle'} | {t[len(t) // 2] * 1e3:.2f} | "
                    f"{t[int(len(t) * 0.9)] * 1e3:.2f} | {t[-1] * 1e3:.2f} |"
                )


if __name__ == "__main__":
    main()
