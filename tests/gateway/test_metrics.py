"""Metrics: our single-writer instruments render exactly what the prometheus-client objects rendered.

The oracle is a frozen copy of the prometheus-client definitions the gateway used before (names, HELP
texts, label names, buckets): the same operations applied to both must give the same samples.
"""

from __future__ import annotations

import platform
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import prometheus_client
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

import ecallgw
from ecallgw.gateway.metrics import LATENCY_BUCKETS_S, CounterVec, HistogramVec, Metrics

_COMMIT_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
_COMMIT_UNITS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class _Oracle:
    """The gateway's metrics as prometheus-client objects, as defined before our own instruments."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
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
            "ecallgw_incidents_total", "New incidents by severity level.", ["level"], registry=r
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
            "ecallgw_store_commit_seconds", "Duration of one group commit.", buckets=_COMMIT_S, registry=r
        )
        self.store_commit_units = Histogram(
            "ecallgw_store_commit_units", "Units of work per group commit.", buckets=_COMMIT_UNITS, registry=r
        )
        self.mqtt_connected = Gauge(
            "ecallgw_mqtt_connected", "1 while the MQTT source is connected to the broker.", registry=r
        )
        self.mqtt_inflight = Gauge(
            "ecallgw_mqtt_inflight_messages", "MQTT messages received and not yet acknowledged.", registry=r
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
            "ecallgw_http_rejected_total", "HTTP requests refused, by status.", ["status"], registry=r
        )
        self.retention_deleted = Counter(
            "ecallgw_retention_deleted_total",
            "Rows deleted by the retention job, by table.",
            ["table"],
            registry=r,
        )
        # Replica metrics: plain prometheus-client objects on both sides (added with scale-out).
        Gauge(
            "ecallgw_sequencer_leader",
            "1 while this replica is the sequencer (holds the lock and the lease).",
            registry=r,
        )
        Gauge(
            "ecallgw_sequencer_lag_rows",
            "Journal rows stored by any replica and not yet sequenced.",
            registry=r,
        )
        Gauge(
            "ecallgw_sequencer_lag_seconds",
            "Age of the oldest journal row not yet sequenced.",
            registry=r,
        )
        Counter(
            "ecallgw_sequencer_lease_renewals_total",
            "Sequencer lease renewals by this replica, by result (ok, lost).",
            ["result"],
            registry=r,
        )
        Counter(
            "ecallgw_sequencer_takeovers_total",
            "Times this replica became the sequencer, by how (lock: the old leader's session ended; "
            "lease: its lease ran out and its sessions were terminated).",
            ["how"],
            registry=r,
        )
        Counter(
            "ecallgw_outbox_claimed_total", "Outbox entries this replica claimed for delivery.", registry=r
        )
        Gauge(
            "ecallgw_build_info",
            "Always 1; the labels say which ecallgw release and Python version run.",
            ["version", "python"],
            registry=r,
        ).labels(ecallgw.__version__, platform.python_version()).set(1)
        r.register(_EmptyOutbox())

    def received(self, transport: str, kind: str) -> None:
        self.signals_received.labels(transport, kind).inc()

    def outcome(self, outcome: str, reason: str) -> None:
        self.triage_outcomes.labels(outcome, reason).inc()


class _EmptyOutbox:
    """The outbox gauges as rendered with no forwarder attached (unchanged by this work)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "ecallgw_outbox_depth", "Outbox entries not yet delivered or dead-lettered.", labels=["receiver"]
        )
        yield GaugeMetricFamily(
            "ecallgw_outbox_oldest_pending_age_seconds",
            "Age of the oldest undelivered outbox entry (0 when empty).",
            labels=["receiver"],
        )


# Label values: the real fixed sets plus a few that exercise the exposition's escaping.
_VALUES = st.sampled_from(
    ["mqtt", "http", "psap", "operator", "msd", "ok", 'q"uote', "back\\slash", "l\nf", "ü"]
)
# attribute -> (method, number of label values); unlabelled ones are called directly.
_INSTRUMENTS: dict[str, tuple[str, int]] = {
    "signals_received": ("inc", 2),
    "signals_duplicate": ("inc", 1),
    "decode_errors": ("inc", 2),
    "triage_outcomes": ("inc", 2),
    "incidents": ("inc", 1),
    "deliveries": ("inc", 2),
    "delivery_attempts": ("inc", 2),
    "end_to_end": ("observe", 1),
    "store_commit": ("observe", 0),
    "store_commit_units": ("observe", 0),
    "mqtt_inflight": ("set", 0),
    "breaker_open": ("set", 1),
    # The rare ones stay prometheus-client objects; they are in the sequence so the whole
    # exposition is compared.
    "mqtt_connected": ("set", 0),
    "operator_actions": ("inc", 2),
    "http_rejected": ("inc", 1),
    "retention_deleted": ("inc", 1),
}
_BOUNDS = sorted({*LATENCY_BUCKETS_S, *_COMMIT_S, *map(float, _COMMIT_UNITS)})


@dataclass(frozen=True, slots=True, kw_only=True)
class _Op:
    attr: str
    labels: tuple[str, ...]
    value: float | None  # None: inc() with its default amount


def _amount(method: str) -> st.SearchStrategy[float | None]:
    if method == "inc":
        return st.one_of(st.none(), st.integers(0, 10**6), st.floats(0, 1e9, allow_nan=False))
    if method == "observe":
        # Bounds themselves (le is inclusive), anything between, negatives and far above +Inf's neighbour.
        return st.one_of(
            st.sampled_from(_BOUNDS),
            st.floats(-1.0, 5000.0, allow_nan=False),
            st.integers(0, 2000),
        )
    return st.one_of(st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False))


@st.composite
def _ops(draw: st.DrawFn) -> _Op:
    attr = draw(st.sampled_from(sorted(_INSTRUMENTS)))
    method, n = _INSTRUMENTS[attr]
    labels = tuple(draw(_VALUES) for _ in range(n))
    return _Op(attr=attr, labels=labels, value=draw(_amount(method)))


def _apply(target: Any, op: _Op) -> None:
    method, n = _INSTRUMENTS[op.attr]
    instrument = getattr(target, op.attr)
    if n:
        instrument = instrument.labels(*op.labels)
    if op.value is None:
        getattr(instrument, method)()
    else:
        getattr(instrument, method)(op.value)


def _samples(text: str) -> tuple[dict[str, tuple[str, str]], set[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(name -> (type, HELP), samples without _created, _created samples) of an exposition."""
    families: dict[str, tuple[str, str]] = {}
    samples: set[tuple[Any, ...]] = set()
    created: list[tuple[Any, ...]] = []
    for fam in text_string_to_metric_families(text):
        families[fam.name] = (fam.type, fam.documentation)
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            if s.name.endswith("_created"):
                created.append((*key, s.value))
            else:
                assert (*key, s.value) not in samples, f"duplicate series {key}"
                samples.add((*key, s.value))
    return families, samples, created


def _lines_without_created_values(text: str) -> list[str]:
    return sorted(re.sub(r"^(\S+_created(\{.*\})?) \S+$", r"\1 T", line) for line in text.splitlines())


@given(st.lists(_ops(), max_size=60))
def test_exposition_matches_prometheus_client_objects(ops: list[_Op]) -> None:
    t0 = time.time()
    ours, oracle = Metrics(), _Oracle()
    for op in ops:
        _apply(ours, op)
        _apply(oracle, op)
    ours.received("http", "msd_raw")
    oracle.received("http", "msd_raw")
    ours.outcome("false_trigger", "test_call")
    oracle.outcome("false_trigger", "test_call")
    t1 = time.time()
    text, expected = ours.render().decode(), generate_latest(oracle.registry).decode()

    families, samples, created = _samples(text)
    want_families, want_samples, want_created = _samples(expected)
    assert families == want_families
    assert samples == want_samples
    assert sorted(c[:2] for c in created) == sorted(c[:2] for c in want_created)
    assert all(t0 <= c[2] <= t1 for c in created)
    # Line by line too (float formatting, escaping, HELP/TYPE lines), family order aside.
    assert _lines_without_created_values(text) == _lines_without_created_values(expected)


def test_without_created_series_as_prometheus_client_is_told() -> None:
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        ours, oracle = Metrics(), _Oracle()
        for m in (ours, oracle):
            m.deliveries.labels("psap", "delivered").inc()
            m.end_to_end.labels("psap").observe(0.004)
        text, expected = ours.render().decode(), generate_latest(oracle.registry).decode()
    finally:
        prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]
    assert "_created" not in text
    assert sorted(text.splitlines()) == sorted(expected.splitlines())


def test_an_observation_on_a_bound_counts_in_that_bucket() -> None:
    m = Metrics()
    m.end_to_end.labels("psap").observe(0.005)
    m.end_to_end.labels("psap").observe(0.0050001)
    value = m.registry.get_sample_value
    labels = {"receiver": "psap"}
    assert value("ecallgw_end_to_end_latency_seconds_bucket", {**labels, "le": "0.002"}) == 0
    assert value("ecallgw_end_to_end_latency_seconds_bucket", {**labels, "le": "0.005"}) == 1
    assert value("ecallgw_end_to_end_latency_seconds_bucket", {**labels, "le": "0.01"}) == 2
    assert value("ecallgw_end_to_end_latency_seconds_bucket", {**labels, "le": "+Inf"}) == 2
    assert value("ecallgw_end_to_end_latency_seconds_count", labels) == 2


def test_children_are_created_once_and_kept() -> None:
    m = Metrics()
    assert m.deliveries.labels("psap", "delivered") is m.deliveries.labels("psap", "delivered")
    assert m.deliveries.labels("psap", "delivered") is not m.deliveries.labels("psap", "dead_lettered")
    assert m.end_to_end.labels("psap") is m.end_to_end.labels("psap")


def test_label_values_render_as_strings_into_one_series() -> None:
    c = CounterVec("x_total", "x", ["status"])
    c.labels(429).inc()
    c.labels("429").inc()
    fam = c.family(with_created=False)
    assert [(s.name, s.labels, s.value) for s in fam.samples] == [("x_total", {"status": "429"}, 2.0)]


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ((), "0 label values"),  # a labelled instrument has no unlabelled series
        (("psap", "delivered", "extra"), "3 label values"),
    ],
    ids=["too-few", "too-many"],
)
def test_a_wrong_number_of_label_values_is_refused(labels: tuple[str, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Metrics().deliveries.labels(*labels)


def test_histogram_definitions_are_checked() -> None:
    with pytest.raises(ValueError, match="sorted"):
        HistogramVec("h", "h", buckets=(1.0, 0.5))
    with pytest.raises(ValueError, match="reserved"):
        HistogramVec("h", "h", ["le"], buckets=(1.0,))
    # A trailing +Inf is accepted and not doubled.
    h = HistogramVec("h", "h", buckets=(1.0, float("inf")))
    h.labels().observe(2.0)
    les = [s.labels["le"] for s in h.family(with_created=False).samples if s.name == "h_bucket"]
    assert les == ["1.0", "+Inf"]


def test_a_scrape_during_writes_on_another_thread_sees_consistent_histograms() -> None:
    # The store's writer thread observes commit durations while the event loop scrapes.
    m = Metrics()
    n = 20_000
    done = threading.Event()

    def writer() -> None:
        for i in range(n):
            m.store_commit.observe((i % 1200) / 1000)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    last = 0.0
    scrapes = 0
    while not done.is_set() or scrapes == 0:
        [fam] = [f for f in m.registry.collect() if f.name == "ecallgw_store_commit_seconds"]
        buckets = [s.value for s in fam.samples if s.name.endswith("_bucket")]
        assert buckets == sorted(buckets)  # cumulative
        assert buckets[-1] >= last  # never goes back
        last = buckets[-1]
        scrapes += 1
    thread.join()
    assert m.registry.get_sample_value("ecallgw_store_commit_seconds_count") == n
    at_most_1s = sum(1 for i in range(n) if (i % 1200) / 1000 <= 1.0)
    assert m.registry.get_sample_value("ecallgw_store_commit_seconds_bucket", {"le": "1.0"}) == at_most_1s


def test_build_info_names_the_release_and_python_only() -> None:
    m = Metrics()
    labels = {"version": ecallgw.__version__, "python": platform.python_version()}
    assert m.registry.get_sample_value("ecallgw_build_info", labels) == 1.0
    lines = [line for line in m.render().decode().splitlines() if line.startswith("ecallgw_build_info")]
    assert lines == [f'ecallgw_build_info{{python="{labels["python"]}",version="{labels["version"]}"}} 1.0']
