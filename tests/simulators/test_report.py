"""The report's definitions, on hand-built records where every figure is known in advance."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecallgw.simulators.drivers import SendLog, build_outgoing
from ecallgw.simulators.load import Sustainability, judge
from ecallgw.simulators.psap import Arrival
from ecallgw.simulators.report import Latency, build_report, percentile, write_plot
from ecallgw.simulators.scenarios import Mix, Scenario, generate

_PLAIN = Mix.parse("redial=0,retransmission=0,untrusted_position=0")


def _doc(s: Scenario, incident: str, revision: int, status: str = "open") -> bytes:
    sig = s.signals[0].signal
    return json.dumps(
        {
            "incident_id": incident,
            "revision": revision,
            "status": status,
            "call": {"tps": sig.tps, "vehicle": sig.vehicle, "call_id": sig.call_id, "test": False},
            "severity": {"level": "high", "score": 80, "reasons": []},
        }
    ).encode()


def _arrival(
    receiver: str, at: float, body: bytes, key: str, *, dup: bool = False, status: int = 200
) -> Arrival:
    return Arrival(
        receiver=receiver,
        at=at,
        status=status,
        key=key,
        content_type="application/json",
        body=body,
        duplicate=dup,
    )


def test_percentile_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert (
        percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    )
    assert percentile([3.0], 99.9) == 3.0
    assert math.isnan(percentile([], 50))
    assert Latency.of([0.1, 0.2]).max == 0.2


def test_report_figures_from_known_records(tmp_path: Path) -> None:
    crash, press, medical, stale = generate(
        random.Random(1),
        4,
        _PLAIN,
        start=1_790_000_000.0,
        mean_gap_s=1.0,
        kinds=["crash", "press_no_cancel", "medical", "stale_replay"],
    )
    scenarios = [crash, press, medical, stale]
    outgoing = build_outgoing(scenarios)
    log = SendLog(len(outgoing))
    for i, o in enumerate(outgoing):
        log.started[i] = o.at
        log.acked[i] = o.at + 0.001
    t_crash, t_press = crash.start, press.start
    arrivals = [
        # The crash: desk and PSAP, the PSAP's copy delivered twice (one duplicate).
        _arrival("operator", t_crash + 0.010, _doc(crash, "i1", 1), "i1:1"),
        _arrival("psap-fallback", t_crash + 0.020, _doc(crash, "i1", 1), "i1:1"),
        _arrival("psap-fallback", t_crash + 0.500, _doc(crash, "i1", 1), "i1:1", dup=True),
        # A 503 we answered is not a delivery.
        _arrival("psap-fallback", t_crash + 0.005, _doc(crash, "i1", 1), "i1:1", status=503),
        # The mistaken press: the desk only, then cancelled.
        _arrival("operator", t_press + 0.030, _doc(press, "i2", 1), "i2:1"),
        _arrival("operator", t_press + 20.0, _doc(press, "i2", 2, "cancelled"), "i2:2"),
        # The medical emergency never arrives anywhere: lost, and a real emergency not at a PSAP.
    ]
    report = build_report(
        transport="mqtt",
        scenarios=scenarios,
        outgoing=outgoing,
        log=log,
        arrivals=arrivals,
        psap_receivers={"psap-fallback"},
    )
    assert report.signals_scheduled == len(outgoing) == report.signals_acked
    assert report.documents_accepted == 5 and report.documents_refused == 1 and report.duplicates == 1
    # The refused 503 was accepted on another attempt; keys name their documents; revisions in order.
    assert report.undelivered == 0 and report.key_mismatches == 0 and report.out_of_order == 0
    assert report.unreadable_documents == 0 and report.foreign_documents == 0
    # The hand-built documents carry only what the report reads, not the full incident schema.
    assert report.invalid_documents == 5
    assert report.scenarios_tracked == 3  # the stale replay is not tracked
    assert report.lost == 1 and report.scenarios_reached == 2
    assert report.latency.count == 2
    assert report.latency.max == pytest.approx(0.030) and report.latency.p50 == pytest.approx(0.010)
    assert report.psap_latency.count == 1 and report.psap_latency.max == pytest.approx(0.020)
    assert report.real_emergencies == 2 and report.real_forwarded_to_psap == 1
    assert report.false_calls == 2 and report.false_kept_off_psap == 2
    assert report.real_crashes == 1 and report.incidents_per_real_crash == 1.0
    text = report.to_text()
    assert "lost                         1 of 3" in text
    data = json.loads(report.to_json())
    assert data["duplicates"] == 1 and data["latency"]["count"] == 2
    assert write_plot(report, tmp_path / "plot.png") is None
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_degrades_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The plot is optional (extra `plot`): without matplotlib the report still works and says why.
    (crash,) = generate(random.Random(2), 1, _PLAIN, start=1_790_000_000.0, kinds=["crash"])
    outgoing = build_outgoing([crash])
    report = build_report(
        transport="mqtt",
        scenarios=[crash],
        outgoing=outgoing,
        log=SendLog(len(outgoing)),
        arrivals=[],
        psap_receivers=set(),
    )
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    message = write_plot(report, tmp_path / "plot.png")
    assert message is not None and "ecallgw[plot]" in message
    assert not (tmp_path / "plot.png").exists()
    assert report.lost == 1 and "lost                         1 of 1" in report.to_text()


def test_report_catches_what_a_faulty_gateway_would_hide() -> None:
    # Every scenario reached a receiver ("0 lost"), yet the deliveries are wrong in ways an SRE must
    # see: a retry under a new key, a key-less document, a revision refused and never retried, a
    # revision older than one already delivered, and a document about a vehicle nobody sent.
    crash, press = generate(
        random.Random(3), 2, _PLAIN, start=1_790_000_000.0, mean_gap_s=1.0, kinds=["crash", "press_no_cancel"]
    )
    outgoing = build_outgoing([crash, press])
    log = SendLog(len(outgoing))
    for i, o in enumerate(outgoing):
        log.started[i] = o.at
        log.acked[i] = o.at + 0.001
    t = crash.start
    stranger = _doc(press, "i9", 1).replace(press.signals[0].signal.vehicle.encode(), b"vnobody")
    arrivals = [
        _arrival("operator", t + 0.01, _doc(crash, "i1", 1), "i1:1"),
        _arrival("psap-fallback", t + 0.02, _doc(crash, "i1", 1), "i1:1"),
        # The same revision again under another key: the PSAP's key check misses it, content does not.
        _arrival("psap-fallback", t + 0.03, _doc(crash, "i1", 1), "i1:1-retry"),
        _arrival("operator", t + 1.01, _doc(press, "i2", 1), "i2:1"),
        _arrival("operator", t + 1.02, _doc(press, "i2", 3), "i2:3"),
        _arrival("operator", t + 1.03, _doc(press, "i2", 2), "i2:2"),  # older than revision 3
        _arrival("operator", t + 1.04, _doc(press, "i2", 4, "cancelled"), "i2:4", status=503),
        Arrival(
            receiver="psap-fallback",
            at=t + 0.04,
            status=200,
            key=None,
            content_type="application/json",
            body=_doc(crash, "i1", 2),
            duplicate=False,
        ),
        _arrival("operator", t + 1.05, stranger, "i9:1"),
        _arrival("operator", t + 1.06, b"not a document", "i7:1"),
    ]
    report = build_report(
        transport="mqtt",
        scenarios=[crash, press],
        outgoing=outgoing,
        log=log,
        arrivals=arrivals,
        psap_receivers={"psap-fallback"},
    )
    assert report.lost == 0 and report.scenarios_reached == 2
    assert report.duplicates == 1
    assert report.undelivered == 1  # revision 4 was refused and never accepted
    assert report.key_mismatches == 2  # "i1:1-retry" and the missing key
    assert report.out_of_order == 1
    assert report.foreign_documents == 1 and report.unreadable_documents == 1
    why = " | ".join(judge(report, Sustainability(max_p99_s=10.0, min_achieved_share=0.0)))
    assert "1 duplicates" in why and "1 documents refused and never accepted later" in why
    assert "Idempotency-Key 2" in why and "out of order 1" in why and "unreadable 1" in why
    text = report.to_text()
    assert "never accepted later: 1" in text and "bad Idempotency-Key 2" in text
    assert "revisions out of order 1" in text and "foreign 1" in text
    # The operator bot's record (filled in by the load test): a failing operator API fails the run.
    bot = dataclasses.replace(
        report, operator_actions={"cancel": 1}, operator_failures=1, operator_unfinished=2
    )
    assert "1 operator actions failed" in " | ".join(judge(bot, Sustainability(max_p99_s=10.0)))
    assert "cancel 1; moot (4xx) 0, failed 1, not yet due at the end 2" in bot.to_text()
    assert "operator bot" not in text


def test_judge_refuses_a_run_with_nothing_to_judge() -> None:
    # Only stale replays: nothing is tracked, so "0 lost" would be true of an empty run.
    (stale,) = generate(random.Random(4), 1, _PLAIN, start=1_790_000_000.0, kinds=["stale_replay"])
    outgoing = build_outgoing([stale])
    log = SendLog(len(outgoing))
    report = build_report(
        transport="mqtt", scenarios=[stale], outgoing=outgoing, log=log, arrivals=[], psap_receivers=set()
    )
    assert report.lost == 0 and report.scenarios_tracked == 0
    why = judge(report, Sustainability(max_p99_s=10.0, min_achieved_share=0.0))
    assert any("nothing to judge" in w for w in why)
    assert any(f"{len(outgoing)} signals not acknowledged" in w for w in why)


_SCENARIOS = generate(
    random.Random(8),
    6,
    _PLAIN,
    start=1_790_000_000.0,
    mean_gap_s=1.0,
    kinds=["crash", "medical", "press_no_cancel", "stale_replay", "test_call", "two_devices"],
)
_OUTGOING = build_outgoing(_SCENARIOS)

_delivery = st.tuples(
    st.integers(0, len(_SCENARIOS) - 1),  # whose vehicle the document names
    st.sampled_from(["operator", "psap-fallback", "test"]),
    st.integers(1, 3),  # revision
    st.sampled_from([200, 200, 200, 503, 429]),
    st.floats(0.0, 30.0),  # seconds after the scenario's start
)


@settings(max_examples=60, deadline=None)
@given(deliveries=st.lists(_delivery, max_size=25))
def test_report_agrees_with_a_recount_of_any_records(
    deliveries: list[tuple[int, str, int, int, float]],
) -> None:
    # Whatever the receivers recorded, the report's loss, duplicates, undelivered and latency are
    # what a plain recount of the records gives: nothing is counted only because it arrived.
    arrivals: list[Arrival] = []
    accepted_keys: set[tuple[str, str]] = set()
    for index, receiver, revision, status, after in deliveries:
        s = _SCENARIOS[index]
        key = f"i{index}:{revision}"
        dup = status == 200 and (receiver, key) in accepted_keys
        if status == 200:
            accepted_keys.add((receiver, key))
        body = _doc(s, f"i{index}", revision)
        arrivals.append(_arrival(receiver, s.start + after, body, key, dup=dup, status=status))
    log = SendLog(len(_OUTGOING))
    report = build_report(
        transport="mqtt",
        scenarios=_SCENARIOS,
        outgoing=_OUTGOING,
        log=log,
        arrivals=arrivals,
        psap_receivers={"psap-fallback"},
    )
    ok = [d for d in deliveries if d[3] == 200]
    tracked = {i for i, s in enumerate(_SCENARIOS) if s.label.kind != "stale_replay"}
    reached = {d[0] for d in ok} & tracked
    assert report.scenarios_tracked == len(tracked) and report.lost == len(tracked - reached)
    assert report.documents_accepted == len(ok) and report.documents_refused == len(deliveries) - len(ok)
    assert report.duplicates == len(ok) - len({(d[1], d[0], d[2]) for d in ok})
    refused = {(d[1], d[0], d[2]) for d in deliveries if d[3] != 200}
    assert report.undelivered == len(refused - {(d[1], d[0], d[2]) for d in ok})
    assert report.key_mismatches == 0
    first = {i: min(d[4] for d in ok if d[0] == i) for i in reached}
    assert report.latency.count == len(reached)
    if reached:
        assert report.latency.max == pytest.approx(max(first.values()), abs=1e-6)
    at_psap = {d[0] for d in ok if d[1] == "psap-fallback"}
    real = {i for i, s in enumerate(_SCENARIOS) if s.label.real}
    assert report.real_forwarded_to_psap == len(real & at_psap)
    assert report.false_kept_off_psap == len(set(range(len(_SCENARIOS))) - real - at_psap)
