"""Prometheus metrics of the gateway, on a registry of its own (one per daemon, one per test).

Labels come from small fixed sets only (transport, kind, codec, reason codes, receiver names from the
configuration, outcome): never a VIN, vehicle key, incident id or position. Every instrument is a
prometheus-client object; hot call sites (the forwarder's per-receiver series) hold their labelled
child. Lock-free instruments of our own were measured against these (bench/metrics.py): a
message costs about 4 µs more with prometheus-client, 1.2-1.5 % of the gateway's CPU per signal
(docs/performance.md), under the 2 % that would justify a second implementation of the library.

``_created`` series are prometheus-client's default; ``serve`` turns them off for the process
(`prometheus_client.disable_created_metrics`), as a scrape-side timestamp makes them redundant.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ecallgw import __version__

__all__ = ["LATENCY_BUCKETS_S", "Metrics", "OutboxGauges"]

LATENCY_BUCKETS_S = (
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
"""End-to-end buckets in milliseconds steps: our own delay must stay in milliseconds (domain.md)."""

OutboxGauges = Callable[[float], Iterable[tuple[str, int, float]]]
"""Returns (receiver, depth, oldest pending age in seconds) per receiver at scrape time."""


class _OutboxCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Any]:
        depth = GaugeMetricFamily(
            "ecallgw_outbox_depth", "Outbox entries not yet delivered or dead-lettered.", labels=["receiver"]
        )
        age = GaugeMetricFamily(
            "ecallgw_outbox_oldest_pending_age_seconds",
            "Age of the oldest undelivered outbox entry (0 when empty).",
            labels=["receiver"],
        )
        source = self._metrics.outbox_source
        if source is not None:
            for receiver, n, oldest in source(time.time()):
                depth.add_metric([receiver], n)
                age.add_metric([receiver], oldest)
        yield depth
        yield age


class Metrics:
    """Every metric the gateway exports.

    prometheus-client instruments are thread-safe: the store's writer thread observes the two commit
    histograms while the event loop writes the rest.

    Attributes:
        registry: the registry ``/metrics`` renders.
        outbox_source: set by the forwarder; read at scrape time for the outbox gauges.
    """

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.outbox_source: OutboxGauges | None = None
        self.signals_received = Counter(
            "ecallgw_signals_received_total",
            "Signals received, by transport and kind.",
            ["transport", "kind"],
            registry=r,
        )
        self.signals_duplicate = Counter(
            "ecallgw_signals_redelivered_total",
            "Byte-identical signals received again (MQTT redelivery, HTTP retry): acked, not re-triaged.",
            ["transport"],
            registry=r,
        )
        self.decode_errors = Counter(
            "ecallgw_decode_errors_total",
            "Signals that could not be decoded (kept in quarantine), by codec and reason.",
            ["codec", "reason"],
            registry=r,
        )
        self.triage_outcomes = Counter(
            "ecallgw_triage_outcomes_total",
            "Triage decisions by outcome and reason code.",
            ["outcome", "reason"],
            registry=r,
        )
        self.incidents = Counter(
            "ecallgw_incidents_total",
            "New incidents by severity level.",
            ["level"],
            registry=r,
        )
        self.deliveries = Counter(
            "ecallgw_deliveries_total",
            "Revisions delivered or dead-lettered (failed counts once, after the retries), by receiver.",
            ["receiver", "outcome"],
            registry=r,
        )
        self.delivery_attempts = Counter(
            "ecallgw_delivery_attempts_total",
            "Delivery attempts by receiver and result.",
            ["receiver", "result"],
            registry=r,
        )
        self.end_to_end = Histogram(
            "ecallgw_end_to_end_latency_seconds",
            "From receipt of the signal to the receiver's confirmation of the revision it caused.",
            ["receiver"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.store_commit = Histogram(
            "ecallgw_store_commit_seconds",
            "Duration of one group commit.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.store_commit_units = Histogram(
            "ecallgw_store_commit_units",
            "Units of work per group commit.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=r,
        )
        self.mqtt_inflight = Gauge(
            "ecallgw_mqtt_inflight_messages",
            "MQTT messages received and not yet acknowledged.",
            registry=r,
        )
        self.breaker_open = Gauge(
            "ecallgw_receiver_breaker_open",
            "1 while the receiver's circuit breaker is open.",
            ["receiver"],
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "ecallgw_mqtt_connected",
            "1 while the MQTT source is connected to the broker.",
            registry=r,
        )
        self.store_writable = Gauge(
            "ecallgw_store_writable",
            "1 while the store accepts writes; 0 while it is full or read-only (commits held, ingest 503).",
            registry=r,
        )
        self.store_writable.set(1)
        self.operator_actions = Counter(
            "ecallgw_operator_actions_total",
            "Operator actions by action and outcome.",
            ["action", "outcome"],
            registry=r,
        )
        self.http_rejected = Counter(
            "ecallgw_http_rejected_total",
            "HTTP requests refused, by status.",
            ["status"],
            registry=r,
        )
        self.retention_deleted = Counter(
            "ecallgw_retention_deleted_total",
            "Rows deleted by the retention job, by table.",
            ["table"],
            registry=r,
        )
        # Replicas on PostgreSQL (docs/scaling.md); all 0 on SQLite, where the one process sequences.
        self.sequencer_leader = Gauge(
            "ecallgw_sequencer_leader",
            "1 while this replica is the sequencer (holds the lock and the lease).",
            registry=r,
        )
        self.sequencer_lag_rows = Gauge(
            "ecallgw_sequencer_lag_rows",
            "Journal rows stored by any replica and not yet sequenced.",
            registry=r,
        )
        self.sequencer_lag_seconds = Gauge(
            "ecallgw_sequencer_lag_seconds",
            "Age of the oldest journal row not yet sequenced.",
            registry=r,
        )
        self.lease_renewals = Counter(
            "ecallgw_sequencer_lease_renewals_total",
            "Sequencer lease renewals by this replica, by result (ok, lost).",
            ["result"],
            registry=r,
        )
        self.takeovers = Counter(
            "ecallgw_sequencer_takeovers_total",
            "Times this replica became the sequencer, by how (lock: the old leader's session ended; "
            "lease: its lease ran out and its sessions were terminated).",
            ["how"],
            registry=r,
        )
        self.outbox_claimed = Counter(
            "ecallgw_outbox_claimed_total",
            "Outbox entries this replica claimed for delivery.",
            registry=r,
        )
        # Which release and interpreter answer (a constant 1): join on it in queries, spot a mixed
        # fleet during a rolling upgrade. Nothing about the host or its data.
        self.build_info = Gauge(
            "ecallgw_build_info",
            "Always 1; the labels say which ecallgw release and Python version run.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        r.register(_OutboxCollector(self))
        self._children: dict[tuple[Any, ...], Counter] = {}

    def _held(self, family: Counter, *labels: str) -> Counter:
        """``family.labels(*labels)``, made once and held: ``labels()`` takes a lock on every call."""
        key = (family, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def received(self, transport: str, kind: str) -> None:
        """Count one received signal."""
        self._held(self.signals_received, transport, kind).inc()

    def outcome(self, outcome: str, reason: str) -> None:
        """Count one triage decision under its first reason code."""
        self._held(self.triage_outcomes, outcome, reason).inc()

    def new_incident(self, level: str) -> None:
        """Count one new incident by its severity level."""
        self._held(self.incidents, level).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
