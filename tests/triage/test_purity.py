"""Triage does no I/O: no module of ecallgw.triage (or what it imports from ecallgw) reaches for it.

Walks the imports statically (AST), following ``ecallgw.*`` imports transitively, and fails on any
module that could read a clock, a random source, the environment, a file, a socket or a logger.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
FORBIDDEN = {
    "asyncio", "socket", "sqlite3", "time", "datetime", "random", "secrets", "os", "logging", "io",
    "pathlib", "subprocess", "threading", "multiprocessing", "urllib", "http", "aiohttp", "aiomqtt",
    "paho", "uvloop", "tempfile", "shutil", "glob", "signal", "select", "selectors", "ssl",
    "prometheus_client", "uuid",
}  # fmt: skip


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from ecallgw.codecs import msd` imports the submodule ecallgw.codecs.msd.
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_triage_imports_no_io() -> None:
    todo = [p for p in (ROOT / "ecallgw" / "triage").glob("*.py")]
    seen: set[Path] = set()
    offenders: list[str] = []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            # The pure codecs (their owners police them) may use io.BytesIO and datetime arithmetic.
            allowed = {"io", "datetime"} if "triage" not in path.parts else set()
            if top in FORBIDDEN - allowed:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
            if top == "ecallgw":
                f = _module_file(name)
                if f is not None:
                    todo.append(f)
    assert len(seen) > 8, "the walk must have found the triage modules"
    assert not offenders, offenders


def test_triage_reads_no_clock_or_randomness_by_name() -> None:
    # Belt and braces: no attribute access such as time.time or random.random sneaks in via a re-export.
    for path in (ROOT / "ecallgw" / "triage").glob("*.py"):
        text = path.read_text()
        for needle in ("time.time(", "datetime.now(", "random.", "os.environ", "open("):
            assert needle not in text, f"{path.name} contains {needle}"


def test_fast_builders_equal_the_constructors() -> None:
    # The twin-class construction must give the very objects the dataclass constructors give:
    # equal, hashable alike, of the right class and still frozen.
    import dataclasses

    import pytest

    from ecallgw.model import IncidentSnapshot, Position, Reason, Severity
    from ecallgw.triage import Decision, Outcome, Route, _fast

    sev = Severity(level="high", score=50)
    reasons = (Reason(code="new_call", text="first MSD of a new call"),)
    pos = _fast.make_position(48.2, 16.4, True, 1.0, 90.0)
    assert pos == Position(lat=48.2, lon=16.4, trusted=True, source="msd", at=1.0, heading_deg=90.0)
    snap = _fast.make_snapshot(
        "inc-1",
        1,
        "open",
        sev,
        "acme",
        "v",
        "c",
        True,
        False,
        1.0,
        2.0,
        None,
        pos,
        None,
        None,
        "inc-1",
        reasons,
    )
    ref = IncidentSnapshot(
        incident_id="inc-1", revision=1, status="open", severity=sev, tps="acme", vehicle="v", call_id="c",
        automatic=True, test=False, received_at=1.0, updated_at=2.0, position=pos, scene_id="inc-1",
        reasons=reasons,
    )  # fmt: skip
    assert snap == ref and hash(snap) == hash(ref) and type(snap) is IncidentSnapshot
    route = _fast.make_route("operator", "inc-1", 1)
    assert route == Route(receiver="operator", incident_id="inc-1", revision=1) and type(route) is Route
    d = _fast.make_decision(Outcome.new_incident, reasons, snap, (route,))
    assert d == Decision(outcome=Outcome.new_incident, reasons=reasons, incident=snap, routes=(route,))
    for obj in (pos, snap, route, d):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, dataclasses.fields(obj)[0].name, None)
    assert _fast.twin(type("NoSlots", (), {})) is None
