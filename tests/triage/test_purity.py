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
