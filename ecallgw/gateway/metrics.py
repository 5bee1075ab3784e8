"""Prometheus metrics of the gateway, on a registry of its own (one per daemon, one per test).

Labels come from small fixed sets only (transport, kind, codec, reason codes, receiver names from the
configuration, outcome): never a VIN, vehicle key, incident id or position. Labelled children are
created once and kept, because ``.labels()`` on every call costs about a microsecond.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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
        import time

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
        self.mqtt_connected = Gauge(
            "ecallgw_mqtt_connected",
            "1 while the MQTT source is connected to the broker.",
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
        r.register(_OutboxCollector(self))
        # Children created once (transport.md: .labels() per call costs ~1 µs).
        self._received: dict[tuple[str, str], Any] = {}
        self._outcomes: dict[tuple[str, str], Any] = {}

    def received(self, transport: str, kind: str) -> None:
        """Count one received signal."""
        child = self._received.get((transport, kind))
        if child is None:
            child = self._received[(transport, kind)] = self.signals_received.labels(transport, kind)
        child.inc()

    def outcome(self, outcome: str, reason: str) -> None:
        """Count one triage decision under its first reason code."""
        child = self._outcomes.get((outcome, reason))
        if child is None:
            child = self._outcomes[(outcome, reason)] = self.triage_outcomes.labels(outcome, reason)
        child.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
