"""Metrics: the gateway's instruments (prometheus-client objects) and what a scrape sees."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import ecallgw
from ecallgw.gateway.metrics import Metrics


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


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ((), "Incorrect label count"),  # a labelled instrument has no unlabelled series
        (("psap", "delivered", "extra"), "Incorrect label count"),
    ],
    ids=["too-few", "too-many"],
)
def test_a_wrong_number_of_label_values_is_refused(labels: tuple[str, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Metrics().deliveries.labels(*labels)


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


def test_serve_exports_no_created_series(tmp_path: Path) -> None:
    """``ecallgw serve`` (a real process) turns prometheus-client's ``_created`` series off."""
    token = "s" * 32
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = (tmp_path / "serve.err").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "ecallgw", "serve",
            "--set", f"store.path={tmp_path / 'gw.sqlite3'}",
            "--set", "mqtt.enabled=false",
            "--set", f"http.port={port}",
            "--set", "auth.tokens.sre.role=sre",
            "--set", f"auth.tokens.sre.token={token}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=err,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}
                )
                with urllib.request.urlopen(request, timeout=5) as resp:
                    text = resp.read().decode()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "serve.err").read_text()
                assert time.monotonic() < deadline, "serve did not answer /metrics within 30 s"
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        err.close()
    assert "# TYPE ecallgw_signals_received_total counter" in text
    assert "# TYPE ecallgw_end_to_end_latency_seconds histogram" in text
    assert "_created" not in text
