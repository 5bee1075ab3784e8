"""``ecallgw demo`` (README's main command) runs the whole product and stops cleanly."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("transport", ["mqtt", "http"])
def test_demo_runs_fleet_through_gateway_to_psap_and_stops(transport: str) -> None:
    argv = [sys.executable, "-m", "ecallgw", "demo", "--duration", "4", "--rate", "4"]
    if transport == "http":
        argv.append("--http")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert lines, done.stdout
    last = lines[-1]
    signals = int(re.search(r"signals (\d+)", last).group(1))  # type: ignore[union-attr]
    to_desk = int(re.search(r"operator (\d+)", last).group(1))  # type: ignore[union-attr]
    assert signals > 0 and to_desk > 0, last
    assert "dead letters 0" in last and "PSAP duplicates 0" in last
    assert ("MQTT 127.0.0.1:" in done.stdout) == (transport == "mqtt")
