"""Prometheus metrics of the gateway, on a registry of its own (one per daemon, one per test).

Labels come from small fixed sets only (transport, kind, codec, reason codes, receiver names from the
configuration, outcome): never a VIN, vehicle key, incident id or position. Labelled children are
created once and kept: on our instruments ``.labels()`` is then a dict lookup (~0.1 µs), on a
prometheus-client object about a microsecond, so hot call sites hold their child.

The instruments touched for every message (signals, decode errors, triage outcomes, incidents,
deliveries and attempts, end-to-end latency, group commits, breaker state, MQTT in-flight count) are
our own small classes rather than prometheus-client objects: an update is one attribute add (a
histogram: a ``bisect`` into its bounds, one list-slot add and a sum add), with no lock and no
"is this observable" check. That is safe under one rule, stated in ``Metrics``: **a single thread
writes each instrument** (the event loop; the store's writer thread for the two commit
histograms). A scrape only reads, and builds the cumulative buckets then. ``_Collector`` renders
them as prometheus-client metric families, so ``/metrics`` keeps the names, HELP texts, label
names, types and ``_created`` series that the prometheus-client objects had. Rare instruments (MQTT
connected, operator actions, HTTP rejections, retention) stay prometheus-client objects.
"""

from __future__ import annotations

import abc
import platform
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

import prometheus_client.metrics
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from ecallgw import __version__

__all__ = [
    "LATENCY_BUCKETS_S",
    "CounterChild",
    "CounterVec",
    "GaugeChild",
    "GaugeVec",
    "HistogramChild",
    "HistogramVec",
    "Metrics",
    "OutboxGauges",
]

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


# --- single-writer instruments ------------------------------------------------------------------
#
# No lock anywhere below: each series has exactly one writer thread, and CPython runs an attribute or
# list-slot add of one thread without interleaving another writer's. A scrape on another thread may
# see a histogram's bucket a moment before its sum; prometheus-client, with one lock per value, gives
# no more than that either.


class CounterChild:
    """One counter series.

    Attributes:
        value: the count so far.
        created: when the series was created (Unix seconds), for the ``_created`` sample.
    """

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        """Add ``amount``.

        Callers count events, so ``amount`` is never negative; unlike prometheus-client this is not
        checked, to keep the update a single add.
        """
        self.value += amount


class GaugeChild:
    """One gauge series.

    Attributes:
        value: the last value set.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0.0

    def set(self, value: float) -> None:
        """Set the gauge to ``value``."""
        self.value = value


class HistogramChild:
    """One histogram series: per-bucket (not cumulative) counts and a sum.

    Attributes:
        counts: observations per bucket; the last slot is ``+Inf`` (above every bound).
        sum: the sum of the observations.
        created: when the series was created (Unix seconds), for the ``_created`` sample.
    """

    __slots__ = ("_bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose upper bound is >= it (``le``), and add it to the sum.

        A NaN lands in the first bucket here, where prometheus-client counts it in none; durations and
        sizes are never NaN.
        """
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value


_Child = TypeVar("_Child", CounterChild, GaugeChild, HistogramChild)


class _Vec(abc.ABC, Generic[_Child]):
    """A named instrument and its children, one per label set, created on first use and kept."""

    __slots__ = ("_by_key", "_children", "documentation", "labelnames", "name")

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        # Label values as the caller passed them -> child (the hot lookup) ...
        self._by_key: dict[tuple[Any, ...], _Child] = {}
        # ... and label values as rendered (str) -> child: what a scrape iterates, in creation order.
        self._children: dict[tuple[str, ...], _Child] = {}

    def labels(self, *values: Any) -> _Child:
        """The child for these label values (in ``labelnames`` order), created on first use.

        Raises:
            ValueError: the number of values differs from the number of label names.
        """
        child = self._by_key.get(values)
        if child is None:
            child = self._by_key[values] = self._add(values)
        return child

    def _add(self, values: tuple[Any, ...]) -> _Child:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: {len(values)} label values for {self.labelnames}")
        key = tuple(str(v) for v in values)  # as prometheus-client: 1 and "1" are one series
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new()
        return child

    @abc.abstractmethod
    def _new(self) -> _Child:
        """A fresh child (the subclass's kind)."""

    def _series(self) -> list[tuple[tuple[str, ...], _Child]]:
        # A snapshot (atomic under the GIL), in case a child is added while a scrape runs.
        return list(self._children.items())

    @abc.abstractmethod
    def family(self, with_created: bool) -> Metric:
        """The metric family a scrape yields: every child's samples.

        Args:
            with_created: also yield ``_created`` samples (prometheus-client's own setting).
        """


class CounterVec(_Vec[CounterChild]):
    """A counter and its children; ``name`` ends in ``_total``, as prometheus-client's ``Counter``."""

    __slots__ = ()

    def _new(self) -> CounterChild:
        return CounterChild()

    def family(self, with_created: bool) -> Metric:
        fam = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._series():
            fam.add_metric(values, child.value, created=child.created if with_created else None)
        return fam


class GaugeVec(_Vec[GaugeChild]):
    """A gauge and its children."""

    __slots__ = ()

    def _new(self) -> GaugeChild:
        return GaugeChild()

    def family(self, with_created: bool) -> Metric:
        fam = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._series():
            fam.add_metric(values, child.value)
        return fam


class HistogramVec(_Vec[HistogramChild]):
    """A histogram and its children, with prometheus-client's bucket rules (``+Inf`` added last).

    Raises:
        ValueError: the bounds are not sorted, or ``le`` is a label name.
    """

    __slots__ = ("_bounds", "_le")

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), *, buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        if "le" in self.labelnames:
            raise ValueError(f"{name}: 'le' is reserved for buckets")
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds):
            raise ValueError(f"{name}: buckets not in sorted order")
        if bounds and bounds[-1] == float("inf"):
            bounds.pop()
        self._bounds = tuple(bounds)
        # The le values prometheus-client renders ("0.005", "1.0", "+Inf").
        self._le = [floatToGoString(b) for b in bounds] + ["+Inf"]  # type: ignore[no-untyped-call]

    def _new(self) -> HistogramChild:
        return HistogramChild(self._bounds)

    def family(self, with_created: bool) -> Metric:
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        le = self._le
        for values, child in self._series():
            counts = list(child.counts)
            acc = 0.0
            buckets = []
            for bound, n in zip(le, counts, strict=True):
                acc += n
                buckets.append((bound, acc))
            fam.add_metric(values, buckets, child.sum)
            if with_created:
                labels = dict(zip(self.labelnames, values, strict=True))
                fam.samples.append(Sample(self.name + "_created", labels, child.created))
        return fam


class _Collector(Collector):
    """Yields our instruments at scrape time, in the order given."""

    def __init__(self, vecs: Sequence[CounterVec | GaugeVec | HistogramVec]) -> None:
        self._vecs = tuple(vecs)

    def collect(self) -> Iterable[Metric]:
        # prometheus-client's switch (PROMETHEUS_DISABLE_CREATED_SERIES / disable_created_metrics()).
        with_created = bool(getattr(prometheus_client.metrics, "_use_created", True))
        for vec in self._vecs:
            yield vec.family(with_created)


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

    Single writer per instrument (see the module docstring): the event-loop thread writes every
    instrument below except ``store_commit`` and ``store_commit_units``, which only the store's writer
    thread writes.

    Attributes:
        registry: the registry ``/metrics`` renders.
        outbox_source: set by the forwarder; read at scrape time for the outbox gauges.
    """

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.outbox_source: OutboxGauges | None = None
        # Per-message instruments: our single-writer classes (writer: the event loop unless noted).
        self.signals_received = CounterVec(
            "ecallgw_signals_received_total",
            "Signals received, by transport and kind.",
            ["transport", "kind"],
        )
        self.signals_duplicate = CounterVec(
            "ecallgw_signals_redelivered_total",
            "Byte-identical signals received again (MQTT redelivery, HTTP retry): acked, not re-triaged.",
            ["transport"],
        )
        self.decode_errors = CounterVec(
            "ecallgw_decode_errors_total",
            "Signals that could not be decoded (kept in quarantine), by codec and reason.",
            ["codec", "reason"],
        )
        self.triage_outcomes = CounterVec(
            "ecallgw_triage_outcomes_total",
            "Triage decisions by outcome and reason code.",
            ["outcome", "reason"],
        )
        self.incidents = CounterVec(
            "ecallgw_incidents_total",
            "New incidents by severity level.",
            ["level"],
        )
        self.deliveries = CounterVec(
            "ecallgw_deliveries_total",
            "Revisions delivered or dead-lettered (failed counts once, after the retries), by receiver.",
            ["receiver", "outcome"],
        )
        self.delivery_attempts = CounterVec(
            "ecallgw_delivery_attempts_total",
            "Delivery attempts by receiver and result.",
            ["receiver", "result"],
        )
        self.end_to_end = HistogramVec(
            "ecallgw_end_to_end_latency_seconds",
            "From receipt of the signal to the receiver's confirmation of the revision it caused.",
            ["receiver"],
            buckets=LATENCY_BUCKETS_S,
        )
        store_commit = HistogramVec(
            "ecallgw_store_commit_seconds",
            "Duration of one group commit.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
        )
        store_commit_units = HistogramVec(
            "ecallgw_store_commit_units",
            "Units of work per group commit.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
        )
        # Writer: the store's writer thread (and nothing else).
        self.store_commit = store_commit.labels()
        self.store_commit_units = store_commit_units.labels()
        mqtt_inflight = GaugeVec(
            "ecallgw_mqtt_inflight_messages",
            "MQTT messages received and not yet acknowledged.",
        )
        self.mqtt_inflight = mqtt_inflight.labels()
        self.breaker_open = GaugeVec(
            "ecallgw_receiver_breaker_open",
            "1 while the receiver's circuit breaker is open.",
            ["receiver"],
        )
        r.register(
            _Collector(
                [
                    self.signals_received,
                    self.signals_duplicate,
                    self.decode_errors,
                    self.triage_outcomes,
                    self.incidents,
                    self.deliveries,
                    self.delivery_attempts,
                    self.end_to_end,
                    store_commit,
                    store_commit_units,
                    mqtt_inflight,
                    self.breaker_open,
                ]
            )
        )
        # Rare events: prometheus-client objects (thread-safe, a lock per update).
        self.mqtt_connected = Gauge(
            "ecallgw_mqtt_connected",
            "1 while the MQTT source is connected to the broker.",
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

    def received(self, transport: str, kind: str) -> None:
        """Count one received signal."""
        self.signals_received.labels(transport, kind).inc()

    def outcome(self, outcome: str, reason: str) -> None:
        """Count one triage decision under its first reason code."""
        self.triage_outcomes.labels(outcome, reason).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
