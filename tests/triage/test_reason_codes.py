"""One list of reason codes: the engine's source, its decisions, docs/triage.md and ``ReasonCode`` agree."""

from __future__ import annotations

import random
import re
from pathlib import Path

from ecallgw.simulators.scenarios import ALL_KINDS_MIX, DEFAULT_MIX, generate, timeline
from ecallgw.triage import Decision, ReasonCode, TriageEngine
from tests.triage._build import KEY
from tests.triage.test_calls import STORMY
from tests.triage.test_scenarios import POLICY

ROOT = Path(__file__).resolve().parents[2]
CODES = {c.value for c in ReasonCode}


def test_the_docs_list_every_code_and_no_other() -> None:
    text = (ROOT / "docs" / "triage.md").read_text()
    section = text[text.index("Reason codes (stable") : text.index("A snapshot's `reasons`")]
    assert set(re.findall(r"`([a-z0-9_]+)`", section)) == CODES


def test_every_code_in_the_triage_source_is_listed() -> None:
    # Reasons are built by _r(...), make_reason(...) or Reason(code=...), or a code constant.
    pattern = re.compile(
        r'(?:_r|make_reason|Reason)\(\s*(?:code=)?"([a-z0-9_]+)"|^_[A-Z_]+ = "([a-z0-9_]+)"', re.M
    )
    found = set()
    for path in (ROOT / "ecallgw" / "triage").glob("*.py"):
        for m in pattern.finditer(path.read_text()):
            found.add(m.group(1) or m.group(2))
    assert len(found) > 50
    assert found - CODES == set()


def _codes(d: Decision) -> set[str]:
    out = set()
    for x in (d, *d.also):
        out |= {r.code for r in x.reasons}
        if x.incident is not None:
            out |= {r.code for r in x.incident.reasons} | {r.code for r in x.incident.severity.reasons}
    return out


def test_every_code_the_engine_gives_on_the_suites_is_listed() -> None:
    seen: set[str] = set()
    for scenarios, policy in (
        (generate(random.Random(2024), 600, DEFAULT_MIX), POLICY),
        (generate(random.Random(7), 200, ALL_KINDS_MIX, mean_gap_s=30.0), STORMY),
    ):
        engine = TriageEngine(policy, KEY)
        for at, _, timed in timeline(scenarios):
            for d in engine.due(at):
                seen |= _codes(d)
            seen |= _codes(engine.on_signal(timed.signal, now=at))
    assert len(seen) > 25
    assert seen - CODES == set()
    assert {"provider_storm", "provider_joined", "redial_joined", "storm_member_added"} <= seen
