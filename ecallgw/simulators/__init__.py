"""Simulated fleet, scenarios with ground truth, load drivers, simulated PSAP and the load test.

Everything random takes a seeded ``random.Random``; the same seed gives the same traffic.
"""

from __future__ import annotations

from ecallgw.simulators.fleet import Vehicle, random_vehicle
from ecallgw.simulators.scenarios import (
    ALL_KINDS_MIX,
    DEFAULT_MIX,
    KINDS,
    Kind,
    Label,
    Mix,
    Scenario,
    TimedSignal,
    generate,
    timeline,
)

__all__ = [
    "ALL_KINDS_MIX",
    "DEFAULT_MIX",
    "KINDS",
    "Kind",
    "Label",
    "Mix",
    "Scenario",
    "TimedSignal",
    "Vehicle",
    "generate",
    "random_vehicle",
    "timeline",
]
