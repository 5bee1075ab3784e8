"""``ecallgw demo`` shows the caller's side: breakdowns dispatched to simulated providers, a
tracking link printed, location links sent by SMS (issue 14)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_dispatches_breakdowns_and_prints_a_tracking_link() -> None:
    argv = [sys.executable, "-m", "ecallgw", "demo", "--duration", "16", "--http", "--seed", "7"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(
        r"demo: breakdown case-\w+ taken by \S+ \(ETA \d+ min\); follow it in a browser: http://127\.0\.0\.1:\d+/t/\S{40,}",
        done.stdout,
    ), done.stdout[-3000:]
    last = [line for line in done.stdout.splitlines() if "callers:" in line][-1]
    offers = int(re.search(r"offers (\d+)", last).group(1))  # type: ignore[union-attr]
    sms = int(re.search(r"SMS (\d+)", last).group(1))  # type: ignore[union-attr]
    assert offers >= 1 and sms >= 1, last
