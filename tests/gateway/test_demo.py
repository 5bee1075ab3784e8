"""``ecallgw demo`` (README's main command) runs the whole product and stops cleanly."""

from __future__ import annotations

import os
import re
import signal
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


def test_demo_ctrl_c_stops_without_errors() -> None:
    """Ctrl-C reaches the whole foreground process group, broker included; shutdown stays clean.

    The broker must outlive the clients: a broker that dies with the Ctrl-C drops the gateway's and
    the fleet's connections under them mid-write (aiomqtt then registers a writer on a closed
    socket, logged by asyncio at level error).
    """
    argv = [sys.executable, "-m", "ecallgw", "demo", "--rate", "8"]
    # Its own process group, so that signalling the group is what a terminal's Ctrl-C does.
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        head = ""
        for line in proc.stdout:  # up to the first summary: fleet, gateway and broker all busy
            head += line
            if line.startswith("["):
                break
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    assert "MQTT 127.0.0.1:" in head, head
    # The closing summary comes after the gateway stopped: nothing dead-lettered on the way down.
    assert out.splitlines()[-1].startswith("[") and "dead letters 0" in out.splitlines()[-1], out
    assert '"level": "error"' not in err, err[-3000:]
    assert "Traceback" not in err and "never retrieved" not in err, err[-3000:]
    # The broker stayed up until the gateway had disconnected from it.
    assert "connection lost" not in err, err[-3000:]
