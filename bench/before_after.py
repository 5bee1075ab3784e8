"""Issue 15's guard: bench/gateway.py on an older commit and on this tree, in alternating runs.

    .venv/bin/python bench/before_after.py [--ref 939ce74] [--pairs 8] [--n 10000]

The older commit is checked out in a temporary git worktree, removed afterwards. Both runs use this
tree's bench/gateway.py, so the harness is the same and only the gateway differs. Each run starts
in its own tree's root with ``PYTHONPATH`` set to it. bench/gateway.py starts the gateway as
``python -m ecallgw``, which imports from the working directory before ``PYTHONPATH``, so a run
started elsewhere would measure the wrong code.

The runs alternate, so a drift of the machine hits both trees. On the project's 2-core VM a single
run varies by ±15 %, and the runs are bimodal (docs/performance.md, "Issue 15's guard"). Judge the
median of the per-pair ratios, never one pair.

Prints a line per run, then a table: each tree's rates and CPU per signal, and after ÷ before.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_BENCH = ROOT / "bench" / "gateway.py"


def figure(output: str, label: str) -> float:
    """The number in bench/gateway.py's table row that starts with ``label``."""
    match = re.search(rf"^\| {re.escape(label)}[^|]*\| ([\d,.]+) ", output, re.MULTILINE)
    if match is None:
        raise SystemExit(f"bench/gateway.py printed no row {label!r}")
    return float(match.group(1).replace(",", ""))


def run(tree: Path, n: int) -> tuple[float, float]:
    """One bench/gateway.py run of the gateway in ``tree``: (signals/s, µs of CPU per signal)."""
    done = subprocess.run(
        [sys.executable, str(GATEWAY_BENCH), "--n", str(n), "--seconds", "1"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"bench/gateway.py failed for {tree}: {last}")
    return (
        figure(done.stdout, "gateway end-to-end rate"),
        figure(done.stdout, "gateway CPU per message while draining"),
    )


def main(ref: str, pairs: int, n: int) -> None:
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref], capture_output=True, text=True, check=False
    )
    if commit.returncode != 0:
        raise SystemExit(f"--ref {ref!r}: not a commit of this repository")
    with tempfile.TemporaryDirectory(prefix="ecallgw-before-") as tmp:
        before = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(before), ref], check=True
        )
        try:
            runs: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
            for k in range(1, pairs + 1):
                for name, tree in (("before", before), ("after", ROOT)):
                    rate, cpu = run(tree, n)
                    runs[name].append((rate, cpu))
                    print(f"pair {k} {name:6} {rate:7,.0f} signals/s {cpu:5,.0f} µs", flush=True)
        finally:
            remove = ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)]
            subprocess.run(remove, check=False)
    ratios = [a[0] / b[0] for b, a in zip(runs["before"], runs["after"], strict=True)]
    print(f"\n# bench/before_after.py  before={commit.stdout.strip()}  after=this tree  n={n}  pairs={pairs}")
    print("| what | before | after |")
    print("|---|---|---|")
    for what, index, unit in (("signals/s", 0, ""), ("CPU per signal", 1, " µs")):
        cells = []
        for name in ("before", "after"):
            xs = [r[index] for r in runs[name]]
            cells.append(f"{min(xs):,.0f}–{max(xs):,.0f}{unit}, median {statistics.median(xs):,.0f}{unit}")
        print(f"| {what} | {cells[0]} | {cells[1]} |")
    print(f"| after ÷ before, per pair | | {' '.join(f'{r:.2f}' for r in ratios)} |")
    within = sum(r >= 0.9 for r in ratios)
    mean = statistics.fmean(a for a, _ in runs["after"]) / statistics.fmean(b for b, _ in runs["before"])
    print(
        f"| after ÷ before | | median {statistics.median(ratios):.2f}; {within} of {pairs} pairs "
        f"within 10 %; on the mean rate {mean:.2f} |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="939ce74", help="the older commit (default: issue 15's before)")
    parser.add_argument("--pairs", type=int, default=8, help="alternating pairs of runs")
    parser.add_argument("--n", type=int, default=10000, help="signals per drain (bench/gateway.py --n)")
    a = parser.parse_args()
    if a.pairs < 1 or a.n < 100:
        parser.error("--pairs must be at least 1 and --n at least 100")
    main(a.ref, a.pairs, a.n)
