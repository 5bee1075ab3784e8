"""The load test report: rates, latency, loss, duplicates and triage quality against ground truth.

Every figure is computed from two records only: what the driver scheduled and sent (``SendLog``)
and what the simulated receivers recorded (``Arrival``), joined to the scenarios' labels by
(tps, vehicle). Vehicle keys are unique per scenario, so a document maps to exactly one scenario.

Definitions:

- offered rate: scheduled signals / scheduled span; achieved rate: signals the broker (MQTT) or
  the gateway (HTTP 202) acknowledged / (last acknowledgement - first scheduled send); scenario
  rate: tracked scenarios / (last scenario's first send - first send); delivered rate: tracked
  scenarios that reached a receiver / (last such first arrival - first send), the end-to-end
  figure. With one signal per scenario (the throughput profile) the three rates compare directly.
- latency: per scenario, first accepted document about any of its vehicles at any receiver, minus
  the *scheduled* send time of its first signal (open loop: a late driver cannot hide delay).
  ``psap_latency`` is the same to a PSAP receiver, for real automatic emergencies (a manual one
  reaches a PSAP when the operator escalates it, which is not latency).
- driver lag: how late the driver handed each signal to the transport; when it is large, the
  simulator (not the gateway) limited the run.
- lost: a tracked scenario (every kind but stale replays, which triage may rightly drop) with no
  accepted document at any receiver by the end of the drain. A scenario's later signals are not
  checked one by one at the receivers (a retransmission or a second cancel rightly produces no
  document); they are accounted for on the send side (scheduled = acknowledged, no send errors).
  The throughput profile, one signal per scenario, makes loss exact per signal.
- invalid documents: accepted documents that fail ``codecs.document.parse_json_document`` (the
  shipped JSON Schema) or ``parse_cap``; unreadable: ones the report cannot even read an incident,
  revision and vehicle from; foreign: readable ones about a vehicle this run did not send (a provider
  storm's aggregate, which names no vehicle, is neither).
- duplicates: accepted deliveries of a document the same receiver had accepted before, by its
  Idempotency-Key *or* by its content (incident id and revision), so a gateway that changes or
  drops the key on a retry cannot hide a duplicate.
- undelivered: documents a receiver refused (5xx, 429) and never accepted on a later attempt
  (dead-lettered, or still being retried when the drain ended). With ``lost`` this accounts for
  every document: one that got through once and then failed is not hidden by the scenario's
  earlier documents.
- key mismatches: accepted documents whose Idempotency-Key is missing or is not
  ``{incident_id}:{revision}`` (docs/interfaces.md), which would defeat the receiver's dedup.
- out of order: accepted revisions lower than one the same receiver already accepted for that
  incident (the forwarder promises each incident's revisions in order per receiver).
- triage quality: real emergencies with a document at a PSAP receiver; false calls without one
  (test calls count as kept off when only the test receiver saw them); distinct incidents per
  real crash divided by the incidents a perfect triage would open.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ecallgw.simulators.drivers import Outgoing, SendLog
from ecallgw.simulators.psap import Arrival, DocumentInfo, parse_document
from ecallgw.simulators.scenarios import Scenario

__all__ = ["Latency", "LoadReport", "build_report", "percentile", "write_plot"]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True, kw_only=True)
class Latency:
    """Latency summary in seconds (NaN when there were no samples)."""

    count: int
    p50: float
    p99: float
    p999: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Latency:
        """Summarise samples."""
        return cls(
            count=len(samples),
            p50=percentile(samples, 50),
            p99=percentile(samples, 99),
            p999=percentile(samples, 99.9),
            max=max(samples) if samples else float("nan"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadReport:
    """The figures of one load test run (see the module docstring for definitions)."""

    transport: str
    duration_s: float
    signals_scheduled: int
    signals_sent: int
    signals_acked: int
    send_errors: int
    offered_rate: float
    achieved_rate: float
    scenario_rate: float
    delivered_rate: float
    documents_accepted: int
    documents_refused: int
    duplicates: int
    undelivered: int
    key_mismatches: int
    out_of_order: int
    unreadable_documents: int
    foreign_documents: int
    invalid_documents: int
    scenarios: int
    scenarios_tracked: int
    scenarios_reached: int
    lost: int
    latency: Latency
    psap_latency: Latency
    send_lag: Latency
    real_emergencies: int
    real_forwarded_to_psap: int
    false_calls: int
    false_kept_off_psap: int
    false_at_psap_later_cancelled: int
    real_crashes: int
    incidents_per_real_crash: float
    incidents_over_expected: float
    by_kind: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    operator_actions: Mapping[str, int] = field(default_factory=dict)
    operator_moot: int = 0
    operator_failures: int = 0
    operator_unfinished: int = 0
    timeline: Sequence[Mapping[str, float]] = ()

    @property
    def real_forwarded_share(self) -> float:
        """Share of real emergencies that reached a PSAP."""
        return self.real_forwarded_to_psap / self.real_emergencies if self.real_emergencies else float("nan")

    @property
    def false_kept_off_share(self) -> float:
        """Share of false calls that no PSAP saw."""
        return self.false_kept_off_psap / self.false_calls if self.false_calls else float("nan")

    def to_json(self) -> str:
        """The report as JSON (NaN written as null)."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [clean(x) for x in v]
            return v

        d = asdict(self)
        d["real_forwarded_share"] = self.real_forwarded_share
        d["false_kept_off_share"] = self.false_kept_off_share
        return json.dumps(clean(d), indent=2, sort_keys=True)

    def to_text(self) -> str:
        """A human-readable summary."""

        def ms(v: float) -> str:
            return "-" if not math.isfinite(v) else f"{v * 1000:.1f} ms"

        def lat(label: str, x: Latency) -> str:
            return (
                f"{label:<28} p50 {ms(x.p50)}  p99 {ms(x.p99)}  p99.9 {ms(x.p999)}  max {ms(x.max)}"
                f"  (n={x.count})"
            )

        span = self.signals_scheduled / self.offered_rate if self.offered_rate > 0 else 0.0

        def share(a: int, b: int) -> str:
            return f"{a}/{b}" + (f" ({100.0 * a / b:.1f} %)" if b else "")

        lines = [
            f"transport                    {self.transport}, "
            f"{self.duration_s:.1f} s from the first send to the last record",
            f"signals                      scheduled {self.signals_scheduled}, sent {self.signals_sent}, "
            f"acknowledged {self.signals_acked}, send errors {self.send_errors}",
            f"rate                         offered {self.offered_rate:.1f}/s, "
            f"acknowledged {self.achieved_rate:.1f}/s ({self.signals_scheduled} signals over "
            f"{span:.1f} s of schedule, follow-ups included)",
            f"scenarios                    offered {self.scenario_rate:.1f}/s, "
            f"delivered end to end {self.delivered_rate:.1f}/s",
            lat("latency (send -> receiver)", self.latency),
            lat("latency (send -> PSAP, auto)", self.psap_latency),
            lat("driver lag (sched. -> send)", self.send_lag),
            f"documents                    accepted {self.documents_accepted}, refused by us "
            f"{self.documents_refused} (never accepted later: {self.undelivered}), "
            f"duplicates {self.duplicates}",
            f"document checks              failing the schema {self.invalid_documents}, "
            f"unreadable {self.unreadable_documents}, foreign {self.foreign_documents}, "
            f"bad Idempotency-Key {self.key_mismatches}, revisions out of order {self.out_of_order}",
            f"lost                         {self.lost} of {self.scenarios_tracked} tracked scenarios",
            f"real emergencies at a PSAP   {share(self.real_forwarded_to_psap, self.real_emergencies)}",
            f"false calls kept off PSAPs   {share(self.false_kept_off_psap, self.false_calls)}"
            f"; at a PSAP and later cancelled: {self.false_at_psap_later_cancelled}",
            f"incidents per real crash     {self.incidents_per_real_crash:.2f} "
            f"({self.incidents_over_expected:.2f}x the ideal, {self.real_crashes} crashes)",
        ]
        if self.operator_actions or self.operator_moot or self.operator_failures or self.operator_unfinished:
            done = ", ".join(f"{k} {v}" for k, v in sorted(self.operator_actions.items())) or "none"
            lines.append(
                f"operator bot                 {done}; moot (4xx) {self.operator_moot}, failed "
                f"{self.operator_failures}, not yet due at the end {self.operator_unfinished}"
            )
        if self.by_kind:
            lines.append("by kind                      n / reached PSAP / incidents")
            for kind, row in sorted(self.by_kind.items()):
                lines.append(
                    f"  {kind:<26} {int(row['n']):>6} / {int(row['at_psap']):>6} / {int(row['incidents']):>6}"
                )
        return "\n".join(lines)


def _conforms(a: Arrival) -> bool:
    """Whether a document passes the receivers' parsers (JSON Schema, or the CAP checks)."""
    from ecallgw.codecs.document import parse_cap, parse_json_document
    from ecallgw.errors import DecodeError

    try:
        if "xml" in a.content_type:
            parse_cap(a.body)
        else:
            parse_json_document(a.body)
    except DecodeError:
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class _DeliveryChecks:
    duplicates: int
    undelivered: int
    key_mismatches: int
    out_of_order: int


def _delivery_checks(arrivals: Sequence[Arrival], infos: Sequence[DocumentInfo | None]) -> _DeliveryChecks:
    """Duplicates, undelivered documents, bad keys and revision order, in the order the PSAP answered."""
    accepted: set[tuple[str, str, int]] = set()
    refused: set[tuple[str, str, int]] = set()
    last_revision: dict[tuple[str, str], int] = {}
    duplicates = key_mismatches = out_of_order = 0
    for a, info in zip(arrivals, infos, strict=True):
        # A document is what it says it is; an unreadable one can only be known by its key.
        ident = (a.receiver, info.incident_id, info.revision) if info else (a.receiver, a.key or "", -1)
        if not a.accepted:
            refused.add(ident)
            continue
        duplicates += a.duplicate or ident in accepted
        accepted.add(ident)
        if info is None:
            key_mismatches += a.key is None
            continue
        key_mismatches += a.key != f"{info.incident_id}:{info.revision}"
        lane = (a.receiver, info.incident_id)
        out_of_order += info.revision < last_revision.get(lane, 0)
        last_revision[lane] = max(info.revision, last_revision.get(lane, 0))
    return _DeliveryChecks(
        duplicates=duplicates,
        undelivered=len(refused - accepted),
        key_mismatches=key_mismatches,
        out_of_order=out_of_order,
    )


_CRASH_KINDS = frozenset({"crash", "multi_vehicle_crash", "two_devices"})


def build_report(
    *,
    transport: str,
    scenarios: Sequence[Scenario],
    outgoing: Sequence[Outgoing],
    log: SendLog,
    arrivals: Sequence[Arrival],
    psap_receivers: Collection[str],
) -> LoadReport:
    """Join the schedule, the send log and the receivers' records into the report.

    Args:
        transport: "mqtt" or "http", for the report's header.
        scenarios: the scenarios that were sent (labels are the ground truth).
        outgoing: the schedule, as built by ``drivers.build_outgoing``.
        log: what the driver recorded.
        arrivals: everything the simulated receivers recorded.
        psap_receivers: which receiver names are PSAPs (the rest are desks and test sinks).
    """
    owner: dict[tuple[str, str], Scenario] = {}
    for s in scenarios:
        for t in s.signals:
            owner[(t.signal.tps, t.signal.vehicle)] = s
    first_send: dict[str, float] = {}
    for o in outgoing:
        first_send.setdefault(o.scenario, o.at)

    accepted = [a for a in arrivals if a.accepted]
    infos = [parse_document(a.content_type, a.body) for a in arrivals]
    checks = _delivery_checks(arrivals, infos)
    first_any: dict[str, float] = {}
    first_psap: dict[str, float] = {}
    incidents: dict[str, set[str]] = defaultdict(set)
    psap_docs: dict[str, list[tuple[float, DocumentInfo]]] = defaultdict(list)
    unreadable = 0
    foreign = 0
    invalid = 0
    for a, info in zip(arrivals, infos, strict=True):
        if not a.accepted:
            continue
        if not _conforms(a):
            invalid += 1
        if info is None:
            unreadable += 1
            continue
        if info.incident_id.startswith("storm-") and not info.vehicle:
            continue  # a provider storm's aggregate for the desk (issue 12): about incidents, no vehicle
        owned = owner.get((info.tps, info.vehicle))
        if owned is None:
            foreign += 1
            continue
        sid = owned.id
        first_any[sid] = min(first_any.get(sid, a.at), a.at)
        incidents[sid].add(info.incident_id)
        if a.receiver in psap_receivers:
            first_psap[sid] = min(first_psap.get(sid, a.at), a.at)
            psap_docs[sid].append((a.at, info))

    sent_ids = {o.scenario for o in outgoing}
    sent = [s for s in scenarios if s.id in sent_ids]
    tracked = [s for s in sent if s.label.kind != "stale_replay"]
    reached = [s for s in tracked if s.id in first_any]
    latency = [first_any[s.id] - first_send[s.id] for s in reached]
    real = [s for s in sent if s.label.real]
    # Automatic real emergencies only: a manual one reaches the PSAP when the operator escalates it.
    psap_latency = [
        first_psap[s.id] - first_send[s.id] for s in real if s.label.automatic and s.id in first_psap
    ]
    false = [s for s in sent if not s.label.real]
    false_at_psap = [s for s in false if s.id in first_psap]
    later_cancelled = 0
    for s in false_at_psap:
        docs = psap_docs[s.id]
        last = max(docs, key=lambda d: (d[1].revision, d[0]))[1]
        later_cancelled += last.status == "cancelled"
    crashes = [s for s in real if s.label.kind in _CRASH_KINDS]
    per_crash = [len(incidents[s.id]) for s in crashes]
    over_expected = [len(incidents[s.id]) / max(1, s.label.expected_incidents) for s in crashes]

    by_kind: dict[str, dict[str, float]] = {}
    for s in sent:
        row = by_kind.setdefault(s.label.kind, {"n": 0, "at_psap": 0, "incidents": 0})
        row["n"] += 1
        row["at_psap"] += s.id in first_psap
        row["incidents"] += len(incidents[s.id])

    acked_times = [t for t in log.acked if not math.isnan(t)]
    scheduled = [o.at for o in outgoing]
    t0 = min(scheduled) if scheduled else 0.0
    span = (max(scheduled) - t0) if len(scheduled) > 1 else 0.0
    offered = len(scheduled) / span if span > 0 else float(len(scheduled))
    ack_span = (max(acked_times) - t0) if acked_times else 0.0
    achieved = len(acked_times) / ack_span if ack_span > 0 else float(len(acked_times))
    end = max([*acked_times, *(a.at for a in accepted), t0])
    last_first = max((first_any[s.id] for s in reached), default=t0)
    last_start = max((first_send[s.id] for s in tracked), default=t0)
    scenario_rate = len(tracked) / (last_start - t0) if last_start > t0 else float(len(tracked))
    delivered = len(reached) / (last_first - t0) if last_first > t0 else float(len(reached))

    return LoadReport(
        transport=transport,
        duration_s=end - t0,
        signals_scheduled=len(outgoing),
        signals_sent=log.sent,
        signals_acked=len(acked_times),
        send_errors=sum(1 for e in log.errors if e is not None),
        offered_rate=offered,
        achieved_rate=achieved,
        scenario_rate=scenario_rate,
        delivered_rate=delivered,
        documents_accepted=len(accepted),
        documents_refused=len(arrivals) - len(accepted),
        duplicates=checks.duplicates,
        undelivered=checks.undelivered,
        key_mismatches=checks.key_mismatches,
        out_of_order=checks.out_of_order,
        unreadable_documents=unreadable,
        foreign_documents=foreign,
        invalid_documents=invalid,
        scenarios=len(sent),
        scenarios_tracked=len(tracked),
        scenarios_reached=len(reached),
        lost=len(tracked) - len(reached),
        latency=Latency.of(latency),
        psap_latency=Latency.of(psap_latency),
        send_lag=Latency.of(
            [st - o.at for o, st in zip(outgoing, log.started, strict=True) if not math.isnan(st)]
        ),
        real_emergencies=len(real),
        real_forwarded_to_psap=sum(1 for s in real if s.id in first_psap),
        false_calls=len(false),
        false_kept_off_psap=len(false) - len(false_at_psap),
        false_at_psap_later_cancelled=later_cancelled,
        real_crashes=len(crashes),
        incidents_per_real_crash=sum(per_crash) / len(per_crash) if per_crash else float("nan"),
        incidents_over_expected=sum(over_expected) / len(over_expected) if over_expected else float("nan"),
        by_kind=by_kind,
        timeline=_timeline(t0, outgoing, log, accepted, first_send, first_any, reached),
    )


def _timeline(
    t0: float,
    outgoing: Sequence[Outgoing],
    log: SendLog,
    accepted: Sequence[Arrival],
    first_send: Mapping[str, float],
    first_any: Mapping[str, float],
    reached: Sequence[Scenario],
) -> list[dict[str, float]]:
    """Per second since the first scheduled send: scheduled, acknowledged, documents, latency."""
    buckets: dict[int, dict[str, float]] = defaultdict(lambda: {"scheduled": 0, "acked": 0, "documents": 0})
    for o in outgoing:
        buckets[int(o.at - t0)]["scheduled"] += 1
    for t in log.acked:
        if not math.isnan(t):
            buckets[int(t - t0)]["acked"] += 1
    for a in accepted:
        buckets[int(a.at - t0)]["documents"] += 1
    lat: dict[int, list[float]] = defaultdict(list)
    for s in reached:
        lat[int(first_send[s.id] - t0)].append(first_any[s.id] - first_send[s.id])
    out: list[dict[str, float]] = []
    for second in range(max(buckets) + 1 if buckets else 0):
        row = {"t": float(second), **buckets.get(second, {"scheduled": 0, "acked": 0, "documents": 0})}
        samples = lat.get(second, [])
        row["latency_p50"] = percentile(samples, 50)
        row["latency_p99"] = percentile(samples, 99)
        row["latency_max"] = max(samples) if samples else float("nan")
        out.append(row)
    return out


def write_plot(report: LoadReport, path: Path) -> str | None:
    """Write a PNG of throughput and latency over time.

    Returns:
        None on success, or a message saying why no plot was written (matplotlib missing: install
        the ``plot`` extra, ``pip install 'ecallgw[plot]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install 'ecallgw[plot]')"
    rows = report.timeline
    t = [r["t"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    top.plot(t, [r["scheduled"] for r in rows], label="offered (scheduled)/s")
    top.plot(t, [r["acked"] for r in rows], label="acknowledged/s")
    top.plot(t, [r["documents"] for r in rows], label="documents at receivers/s")
    top.set_ylabel("per second")
    top.legend(loc="upper right")
    top.set_title(f"ecallgw load test ({report.transport}): {report.offered_rate:.0f}/s offered")
    for key, label in (("latency_p50", "p50"), ("latency_p99", "p99"), ("latency_max", "max")):
        bottom.plot(t, [r[key] * 1000 for r in rows], label=label)
    bottom.set_ylabel("latency, ms (by scheduled second)")
    bottom.set_xlabel("seconds since the first scheduled send")
    bottom.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
