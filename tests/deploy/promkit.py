"""Helpers of the deploy tests: promtool, the metric names the daemon exports, names in PromQL.

PyYAML is no dependency of ours, so the YAML files under ``deploy/`` are read only as far as these
tests need (alert names, annotations, expressions), by their layout; promtool, which parses them for
real, is what checks them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from ecallgw.gateway.metrics import Metrics

__all__ = [
    "DEPLOY",
    "REPO",
    "exported_metric_names",
    "metric_names",
    "promtool",
    "rules_file",
    "run_promtool",
    "yaml_values",
]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

# What follows "name (" but is no metric: PromQL's functions and aggregations are recognised by
# the parenthesis; these words are the operators and modifiers that can stand without one.
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left", "group_right",
     "offset", "inf", "nan"}
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
# Suffixes a histogram family's samples carry beside its name.
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count", "_created")


def promtool() -> str:
    """The promtool executable: on PATH, else Debian's /usr/bin/promtool.

    Fails (never skips) when it is missing: ``./run test`` installs Debian's ``prometheus``.
    """
    found = shutil.which("promtool")
    if found is None and Path("/usr/bin/promtool").is_file():
        found = "/usr/bin/promtool"
    if found is None:
        raise RuntimeError(
            "promtool is not installed: apt-get install --no-install-recommends prometheus"
            " (./run test does it)"
        )
    return found


def run_promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool with ``args``; its output (stdout and stderr) is in ``.stdout``."""
    return subprocess.run(
        [promtool(), *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )


def rules_file(exprs: Iterable[str], path: Path) -> Path:
    """Write ``exprs`` as recording rules (``check:expr_N``) to ``path``: promtool parses each one."""
    lines = ["groups:", "  - name: parse-check", "    rules:"]
    for i, expr in enumerate(exprs):
        lines.append(f"      - record: check:expr_{i}")
        lines.append("        expr: |")
        lines.extend(f"          {line}" for line in expr.splitlines())
    path.write_text("\n".join(lines) + "\n")
    return path


def exported_metric_names() -> frozenset[str]:
    """Every sample name a fresh gateway's ``/metrics`` can carry.

    Read from a live ``Metrics().render()``: the ``# TYPE`` lines name each family (labelled
    families have no sample before first use), histograms add their suffixes, and the samples
    present add the rest (``_created`` of unlabelled counters, for one).
    """
    names: set[str] = set()
    for line in Metrics().render().decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update(name + suffix for suffix in _HISTOGRAM_SUFFIXES)
            elif kind == "counter" and not name.endswith("_total"):
                names.add(name + "_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return frozenset(names)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels, keywords or durations)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    text = _OFFSET.sub("", text)
    found: set[str] = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        found.add(name)
    return found


def yaml_values(text: str, key: str) -> list[tuple[int, str]]:
    """(line number, value) of every ``key:`` in a YAML document laid out as ours are.

    A value is the rest of the line, unquoted, or for a block scalar (``|``, ``>-`` …) the lines
    indented deeper than the key, joined by newlines.
    """
    lines = text.splitlines()
    out: list[tuple[int, str]] = []
    pattern = re.compile(rf"^(\s*)(?:- )?{re.escape(key)}:\s*(.*)$")
    for i, line in enumerate(lines):
        m = pattern.match(line)
        if m is None:
            continue
        indent, value = len(m.group(1)), m.group(2).strip()
        if value and value[0] in "|>":
            block = []
            for nxt in lines[i + 1 :]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                block.append(nxt.strip())
            value = "\n".join(block).strip()
        elif len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out.append((i + 1, value))
    return out
