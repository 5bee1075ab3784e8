"""Pure triage: dedup, false triggers, severity with reasons, routing (no I/O, no clock, no randomness).

The public surface::

    from ecallgw.triage import TriageEngine, TriagePolicy, Decision, Outcome, Route

See ``docs/triage.md`` for every rule and threshold, and ``docs/architecture.md`` for the contract.
"""

from ecallgw.triage.engine import ACTIONS, Decision, Outcome, Route, TriageEngine
from ecallgw.triage.keys import incident_id, vehicle_key
from ecallgw.triage.policy import Polygon, PsapArea, TriagePolicy, parse_geometry
from ecallgw.triage.reasons import ReasonCode
from ecallgw.triage.scoring import Evidence, evidence_from_msd, score

__all__ = [
    "ACTIONS",
    "Decision",
    "Evidence",
    "Outcome",
    "Polygon",
    "PsapArea",
    "ReasonCode",
    "Route",
    "TriageEngine",
    "TriagePolicy",
    "evidence_from_msd",
    "incident_id",
    "parse_geometry",
    "score",
    "vehicle_key",
]
