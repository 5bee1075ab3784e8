"""The pure layers do no I/O: codecs and triage (docs/style.md, "Where I/O may live").

Walks each package's imports statically (AST), following ``ecallgw.*`` imports transitively, and
fails on any module that could read a clock, a random source, the environment, a file, a socket or a
logger; then reads the text for calls that would reach outside through a re-export.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
FORBIDDEN = {
    "asyncio", "socket", "sqlite3", "time", "datetime", "random", "secrets", "os", "logging", "io",
    "pathlib", "subprocess", "threading", "multiprocessing", "urllib", "http", "aiohttp", "aiomqtt",
    "paho", "uvloop", "tempfile", "shutil", "glob", "signal", "select", "selectors", "ssl",
    "prometheus_client", "uuid", "importlib", "sys",
}  # fmt: skip
# What a module outside the package under test may import while the walk passes through it:
# io.BytesIO feeds construct in _uper, datetime does calendar arithmetic (no clock) in the codecs.
ALLOWED_OUTSIDE = {"io", "datetime", "sys", "importlib"}
# What a module of the package itself may import, by package and file.
ALLOWED_INSIDE: dict[str, dict[str, set[str]]] = {
    "codecs": {"_uper.py": {"io"}, "*": {"datetime"}},
    "triage": {},
}
NEEDLES = re.compile(r"\bopen\(|\btime\.time\(|\.now\(|\.today\(|\brandom\.|\bos\.environ|\bprint\(")
# Modules a walk must reach, so a broken glob cannot make the test pass on nothing.
EXPECTED = {"codecs": {"msd", "_fastpath", "envelope", "document", "nmea"}, "triage": {"engine", "scoring"}}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
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


def _package_files(package: str) -> list[Path]:
    return sorted((ROOT / "ecallgw" / package).glob("*.py"))


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_pure_package_imports_nothing_that_does_io(package: str) -> None:
    own = _package_files(package)
    assert EXPECTED[package] <= {p.stem for p in own}
    todo, seen, offenders = list(own), set[Path](), list[str]()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        inside = path.parent == ROOT / "ecallgw" / package
        rules = ALLOWED_INSIDE[package]
        allowed = rules.get(path.name, set()) | rules.get("*", set()) if inside else ALLOWED_OUTSIDE
        for name in _imports(path):
            top = name.split(".")[0]
            if top in FORBIDDEN - allowed:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
            if top == "ecallgw" and (f := _module_file(name)) is not None:
                todo.append(f)
    assert len(seen) >= len(own) + 2, "the walk must reach the model and the errors"
    assert not offenders, offenders


PURE_FILES = [p for pkg in sorted(EXPECTED) for p in _package_files(pkg)]


@pytest.mark.parametrize("path", PURE_FILES, ids=[f"{p.parent.name}/{p.name}" for p in PURE_FILES])
def test_pure_module_calls_no_clock_file_or_randomness(path: Path) -> None:
    found = NEEDLES.findall(path.read_text())
    assert not found, f"{path.relative_to(ROOT)} contains {found}"
