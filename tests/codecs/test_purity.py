"""The codecs do no I/O: no clock, randomness, environment, files, logging (docs/style.md).

Every module of ``ecallgw/codecs/`` (new ones included). Reads the modules' imports statically (AST),
direct and through ``ecallgw.*`` modules they import, and their text for calls that would reach
outside (``open(``, ``time.time(``, ``datetime.now(``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
MODULES = sorted(p.stem for p in (ROOT / "ecallgw" / "codecs").glob("*.py"))
# In-memory bit streams (io.BytesIO) are how the UPER building blocks feed construct: not I/O.
ALLOWED = {"_uper.py": {"io"}}
FORBIDDEN = {
    "asyncio", "socket", "sqlite3", "time", "random", "secrets", "os", "logging", "io", "pathlib",
    "subprocess", "threading", "multiprocessing", "urllib", "http", "aiohttp", "aiomqtt", "paho",
    "uvloop", "tempfile", "shutil", "glob", "signal", "select", "selectors", "ssl", "prometheus_client",
    "uuid", "importlib", "sys",
}  # fmt: skip


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_codecs_import_nothing_that_does_io() -> None:
    todo = [ROOT / "ecallgw" / "codecs" / f"{m}.py" for m in MODULES]
    seen: set[Path] = set()
    offenders: list[str] = []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            codec = path.parent.name == "codecs"
            allowed = ALLOWED.get(path.name, set()) if codec else {"io", "sys", "importlib"}
            if top in FORBIDDEN - allowed:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
            if top == "ecallgw" and (f := _module_file(name)) is not None:
                todo.append(f)
    assert {"msd", "_fastpath", "envelope", "document"} <= set(MODULES)
    assert len(seen) >= len(MODULES) + 2, "the walk must reach the model and the errors"
    assert not offenders, offenders


@pytest.mark.parametrize("module", MODULES)
def test_codecs_call_no_clock_or_file(module: str) -> None:
    text = (ROOT / "ecallgw" / "codecs" / f"{module}.py").read_text()
    for needle in ("open(", "time.time(", ".now(", ".today(", "random.", "os.environ", "print("):
        assert needle not in text, f"{module}.py contains {needle}"
