"""The load test end to end: real mosquitto, real ``ecallgw serve``, real simulated PSAP on 127.0.0.1.

The report's figures are recomputed here from what the simulated PSAP recorded, parsed with the
receivers' own document parsers (not the report's), so the report cannot lie.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from pathlib import Path

from ecallgw.codecs.document import parse_cap, parse_json_document
from ecallgw.simulators.drivers import Outgoing
from ecallgw.simulators.load import THROUGHPUT_MIX, LoadSpec, Sustainability, environment, judge, run_load
from ecallgw.simulators.psap import Arrival, Behaviour
from ecallgw.simulators.report import LoadReport
from ecallgw.simulators.scenarios import Mix, Scenario


def _identity_of(a: Arrival) -> tuple[str, str, str, int]:
    """(tps, vehicle, incident id, revision) read with the receivers' own parsers."""
    if "xml" in a.content_type:
        alert = parse_cap(a.body)
        return (
            alert.parameter("tps") or "",
            alert.parameter("vehicle") or "",
            alert.parameter("incident_id") or "",
            int(alert.parameter("revision") or 0),
        )
    doc = parse_json_document(a.body)
    call = doc["call"] or {}  # null: a provider storm's aggregate for the desk (issue 12), no vehicle
    return call.get("tps", ""), call.get("vehicle", ""), doc["incident_id"], doc["revision"]


def _vehicle_of(a: Arrival) -> tuple[str, str]:
    tps, vehicle, _, _ = _identity_of(a)
    return tps, vehicle


def _check_against_records(
    report: LoadReport, scenarios: list[Scenario], outgoing: list[Outgoing], arrivals: list[Arrival]
) -> None:
    accepted = [a for a in arrivals if 200 <= a.status < 300]
    assert report.documents_accepted == len(accepted)
    assert report.documents_refused == len(arrivals) - len(accepted)
    seen_keys: dict[str, set[str]] = defaultdict(set)
    seen_docs: dict[str, set[tuple[str, int]]] = defaultdict(set)
    duplicates = 0
    for a in accepted:
        _, _, incident, revision = _identity_of(a)
        # The key names the document (docs/interfaces.md), so the two ways of counting agree.
        assert a.key == f"{incident}:{revision}"
        is_dup = a.key in seen_keys[a.receiver]
        assert is_dup == ((incident, revision) in seen_docs[a.receiver])
        duplicates += is_dup
        seen_keys[a.receiver].add(a.key)
        seen_docs[a.receiver].add((incident, revision))
    assert report.duplicates == duplicates
    assert report.key_mismatches == 0 and report.unreadable_documents == 0
    refused = {(a.receiver, a.key) for a in arrivals if not 200 <= a.status < 300}
    assert report.undelivered == len({(r, k) for r, k in refused if k not in seen_keys[r]})
    owner = {(t.signal.tps, t.signal.vehicle): s.id for s in scenarios for t in s.signals}
    first_doc: dict[str, float] = {}
    for a in accepted:
        if (a.key or "").startswith("storm-"):
            continue  # a storm's aggregate stands for incidents, not for one vehicle
        sid = owner[_vehicle_of(a)]  # every document names a vehicle we sent
        first_doc[sid] = min(first_doc.get(sid, math.inf), a.at)
    first_send: dict[str, float] = {}
    for o in outgoing:
        first_send[o.scenario] = min(first_send.get(o.scenario, math.inf), o.at)
    tracked = {s.id for s in scenarios if s.label.kind != "stale_replay"}
    assert report.scenarios_tracked == len(tracked)
    assert report.lost == len(tracked - set(first_doc))
    latencies = sorted(first_doc[sid] - first_send[sid] for sid in tracked & set(first_doc))
    assert report.latency.count == len(latencies)
    assert math.isclose(report.latency.max, latencies[-1])
    assert math.isclose(report.latency.p50, latencies[math.ceil(0.5 * len(latencies)) - 1])
    assert min(latencies) > 0  # measured from the schedule, and nothing arrives before it was sent
    assert report.signals_scheduled == len(outgoing)
    assert report.undelivered == 0 and report.out_of_order == 0 and report.foreign_documents == 0


async def test_report_matches_what_the_psap_recorded(tmp_path: Path) -> None:
    async with asyncio.timeout(120), environment(tmp_path / "env", seed=3) as env:
        spec = LoadSpec(rate=40.0, duration_s=2.0, seed=3, drain_s=30.0)
        report, scenarios, outgoing, log, arrivals = await run_load(spec, env)
    _check_against_records(report, scenarios, outgoing, arrivals)
    assert report.signals_acked == len(outgoing) == log.acknowledged
    assert report.lost == 0 and report.duplicates == 0 and report.invalid_documents == 0
    # Automatic crashes go to a PSAP at once (and to the operator desk): two documents each at least.
    assert report.real_forwarded_to_psap == report.real_emergencies == len(scenarios)
    assert report.documents_accepted >= 2 * len(scenarios)
    assert judge(report, Sustainability(max_p99_s=5.0)) == []


async def test_failing_psap_over_http_loses_nothing(tmp_path: Path) -> None:
    # A PSAP that answers 503 or 429 (Retry-After 1 s) to 30 % of requests: the gateway retries
    # until each document is accepted; the accepted ones are never duplicated.
    behaviour = Behaviour(error_rate=0.2, throttle_rate=0.1, retry_after_s=1)
    mix = Mix.parse("redial=0,retransmission=0,untrusted_position=0", THROUGHPUT_MIX)
    async with asyncio.timeout(150), environment(tmp_path / "env", seed=4, behaviour=behaviour) as env:
        spec = LoadSpec(rate=10.0, duration_s=1.5, seed=4, transport="http", mix=mix, drain_s=90.0)
        report, scenarios, outgoing, _log, arrivals = await run_load(spec, env)
    _check_against_records(report, scenarios, outgoing, arrivals)
    assert report.documents_refused > 0  # the failures really happened
    assert report.lost == 0 and report.duplicates == 0
    assert report.signals_acked == len(outgoing)


async def test_operator_bot_escalates_real_and_cancels_false_calls(tmp_path: Path) -> None:
    # Manual calls reach a PSAP only when the operator escalates them (or a 60 s timer fires): the
    # bot escalates the medical emergencies and cancels the mistaken presses, 20x faster than labelled.
    mix = Mix(
        shares={"medical": 1.0, "press_no_cancel": 1.0},
        redial=0.0,
        retransmission=0.0,
        untrusted_position=0.0,
    )
    async with asyncio.timeout(120), environment(tmp_path / "env", seed=5) as env:
        spec = LoadSpec(
            rate=5.0,
            duration_s=2.0,
            seed=5,
            mix=mix,
            operator_bot=True,
            operator_delay_scale=0.05,
            drain_s=30.0,
        )
        report, scenarios, outgoing, _log, arrivals = await run_load(spec, env)
    _check_against_records(report, scenarios, outgoing, arrivals)
    kinds = {s.label.kind for s in scenarios}
    assert kinds == {"medical", "press_no_cancel"}
    # The bot's record is in the report: one action per incident, none failed or left pending.
    n_medical = sum(s.label.kind == "medical" for s in scenarios)
    assert report.operator_actions.get("escalate", 0) == n_medical
    assert report.operator_actions.get("cancel", 0) + report.operator_moot == len(scenarios) - n_medical
    assert report.operator_failures == 0 and report.operator_unfinished == 0
    assert "operator bot" in report.to_text()
    assert report.real_forwarded_to_psap == report.real_emergencies > 0
    assert report.false_kept_off_psap == report.false_calls > 0
    first_send = {o.scenario: o.at for o in reversed(outgoing)}
    owner = {(t.signal.tps, t.signal.vehicle): s for s in scenarios for t in s.signals}
    last_desk_status: dict[str, tuple[int, str]] = {}
    for a in arrivals:
        if not 200 <= a.status < 300:
            continue
        s = owner[_vehicle_of(a)]
        if a.receiver.startswith("psap"):
            # Escalated by the bot within seconds, long before the 60 s escalation timer.
            assert s.label.kind == "medical" and a.at - first_send[s.id] < 30.0
        elif a.receiver == "operator":
            doc = parse_json_document(a.body)
            last_desk_status[s.id] = max(
                last_desk_status.get(s.id, (0, "")), (doc["revision"], doc["status"])
            )
    for s in scenarios:
        if s.label.kind == "press_no_cancel":
            assert last_desk_status[s.id][1] == "cancelled"


async def test_psap_outage_delays_but_loses_nothing(tmp_path: Path) -> None:
    # The receivers stop listening (and drop their connections) for 1.5 s in the middle of the run:
    # everything is delivered afterwards, with the delay showing in the latency, and nothing twice.
    async with asyncio.timeout(150), environment(tmp_path / "env", seed=6) as env:

        async def outage() -> None:
            await asyncio.sleep(1.5)
            await env.psap.go_down(1.5)

        spec = LoadSpec(rate=15.0, duration_s=2.0, seed=6, drain_s=60.0)
        task = asyncio.create_task(outage())
        report, scenarios, outgoing, _log, arrivals = await run_load(spec, env)
        await task
    _check_against_records(report, scenarios, outgoing, arrivals)
    assert report.lost == 0 and report.duplicates == 0
    assert report.latency.max > 1.0  # the outage is visible, not hidden


async def test_rfc_8147_raw_msd_over_http(tmp_path: Path) -> None:
    # MSDs as bare RFC 8147 bodies with the call id in a header: same delivery, same call ids.
    async with asyncio.timeout(120), environment(tmp_path / "env", seed=7) as env:
        spec = LoadSpec(rate=20.0, duration_s=1.5, seed=7, transport="http-raw", drain_s=30.0)
        report, scenarios, outgoing, _log, arrivals = await run_load(spec, env)
    _check_against_records(report, scenarios, outgoing, arrivals)
    assert report.lost == 0 and report.send_errors == 0 and report.signals_acked == len(outgoing)
    sent_calls = {(o.tps, o.vehicle, o.call_id) for o in outgoing}
    for a in arrivals:
        if a.receiver == "operator":
            call = parse_json_document(a.body)["call"]
            assert (call["tps"], call["vehicle"], call["call_id"]) in sent_calls
