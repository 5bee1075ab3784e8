"""What does a metric update on the per-message path cost? The gateway's metrics beside a floor.

    nice .venv/bin/python bench/metrics.py [--number 200000] [--rounds 7]

For each operation the gateway does per message, the same call on ``ecallgw.gateway.metrics``
(prometheus-client objects, children held) and on bare attribute adds (the floor: what lock-free
instruments of our own cost, which the gateway used until issue 15), timed with ``timeit`` in this
process, rounds alternating. "per message" is the sequence one MSD that opens an incident and is
delivered to one receiver causes (received, outcome, incident, attempt, latency, delivery, in-flight
gauge, and the commit histograms' share of one group commit). Figures are ns per call (best and
median round); a no-op call is shown as the floor. The per-message difference over the gateway's
CPU per message (docs/performance.md) is the share that would justify instruments of our own (2 %).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from bisect import bisect_left
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecallgw.gateway.metrics import LATENCY_BUCKETS_S, Metrics


class _Add:
    """The least an instrument can do: one attribute add, no lock (a histogram: a bisect too)."""

    __slots__ = ("bounds", "counts", "value")

    def __init__(self, bounds: tuple[float, ...] = ()) -> None:
        self.value = 0.0
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.value += value

    def labels(self, *_: str) -> _Add:
        return self


class Floor:
    """The per-message instruments as bare adds: the floor any metrics library sits on."""

    def __init__(self) -> None:
        self.signals_duplicate = self.incidents = self.deliveries = self.delivery_attempts = _Add()
        self.end_to_end = _Add(LATENCY_BUCKETS_S)
        self.store_commit = _Add((0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
        self.store_commit_units = _Add((1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
        self.mqtt_inflight = _Add()
        self._received = _Add()

    def received(self, transport: str, kind: str) -> None:
        self._received.inc()

    def outcome(self, outcome: str, reason: str) -> None:
        self._received.inc()


Case = tuple[str, dict[str, Any]]
"""A ``timeit`` statement and its globals."""


def cases(m: Any) -> dict[str, Case]:
    """The timed operations on ``m`` (ours or the reference), as the gateway calls them."""
    ok = m.delivery_attempts.labels("psap", "ok")
    delivered = m.deliveries.labels("psap", "delivered")
    latency = m.end_to_end.labels("psap")
    commit, units, inflight = m.store_commit, m.store_commit_units, m.mqtt_inflight
    turn = 0

    def per_message() -> None:
        nonlocal turn
        m.received("mqtt", "msd")
        m.outcome("new_incident", "automatic")
        m.incidents.labels("high").inc()
        ok.inc()
        latency.observe(0.0042)
        delivered.inc()
        inflight.set(3)
        inflight.set(2)
        turn += 1
        if turn == 10:  # one group commit carries ~10 messages at load
            turn = 0
            commit.observe(0.0016)
            units.observe(10)

    return {
        "counter child .inc()": ("f()", {"f": ok.inc}),
        "histogram child .observe(4.2 ms), 17 buckets": ("f(0.0042)", {"f": latency.observe}),
        "histogram .observe(1.6 ms), unlabelled": ("f(0.0016)", {"f": commit.observe}),
        "histogram .observe(700 units), bucket 10 of 11": ("f(700)", {"f": units.observe}),
        "gauge .set(n)": ("f(3)", {"f": inflight.set}),
        ".labels(transport).inc() on every call": ("c.labels('mqtt').inc()", {"c": m.signals_duplicate}),
        "Metrics.received(transport, kind)": ("f('mqtt', 'msd')", {"f": m.received}),
        "one message (8 updates + 1/10 of a commit)": ("f()", {"f": per_message}),
    }


def fill(m: Any) -> None:
    """Series as after a while of traffic: 3 receivers, 5 kinds, 8 outcomes."""
    for t in ("mqtt", "http"):
        for k in ("msd", "cancel", "position", "msd_raw", "invalid"):
            m.received(t, k)
        m.signals_duplicate.labels(t).inc()
    for o in ("new_incident", "update", "duplicate", "false_trigger", "cancel", "test", "redial", "stale"):
        m.outcome(o, "automatic")
    for lv in ("critical", "high", "medium", "low"):
        m.incidents.labels(lv).inc()
    for r in ("psap", "operator", "psap-fallback"):
        for res in ("ok", "transient", "permanent"):
            m.delivery_attempts.labels(r, res).inc()
        m.deliveries.labels(r, "delivered").inc()
        m.end_to_end.labels(r).observe(0.003)
    m.store_commit.observe(0.001)
    m.store_commit_units.observe(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    ours, ref = Metrics(), Floor()
    ours_cases, ref_cases = cases(ours), cases(ref)

    def noop(_: object) -> None:
        pass

    def ns(case: Case, number: int) -> float:
        stmt, env = case
        return timeit.timeit(stmt, globals=env, number=number) / number * 1e9

    print(f"ns per call, best / median of {args.rounds} rounds x {args.number:,} calls")
    floor = [ns(("f(0.0042)", {"f": noop}), args.number) for _ in range(args.rounds)]
    print(f"{'no-op call (floor)':48} {min(floor):7.0f} / {statistics.median(floor):5.0f}")
    print(f"{'':48} {'ecallgw':>15} {'floor (bare adds)':>20} {'ratio':>7}")
    for name in ours_cases:
        a: list[float] = []
        b: list[float] = []
        for _ in range(args.rounds):
            a.append(ns(ours_cases[name], args.number))
            b.append(ns(ref_cases[name], args.number))
        print(
            f"{name:48} {min(a):7.0f} / {statistics.median(a):5.0f} "
            f"{min(b):10.0f} / {statistics.median(b):7.0f} {min(a) / min(b):6.1f}x"
        )

    return 0


if __name__ == "__main__":
    sys.exit(main())
