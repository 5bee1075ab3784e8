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


def _pg_binaries() -> bool:
    from ecallgw.simulators.pgserver import find_bindir

    try:
        find_bindir()
    except RuntimeError:
        return False
    return True


def test_demo_replicas_leader_killed_another_takes_over() -> None:
    """``--replicas 2``: two gateways on one private PostgreSQL, one shared subscription; the leader
    is killed 8 s in (a crash simulated in the demo's process), the other takes over within 10 s,
    the killed one comes back 10 s later, and at the end everything the broker took is stored,
    sequenced and delivered, with no dead letter and no PSAP duplicate beyond the deliveries the
    killed replica had claimed (one the PSAP accepted in the instant before the crash, not yet
    recorded, is sent again with the same Idempotency-Key: at least once, by design)."""
    # ./run installs PostgreSQL, as it does mosquitto: a missing server is a failed set-up, not a skip.
    assert _pg_binaries(), "PostgreSQL server binaries not installed (./run test installs them)"
    argv = [sys.executable, "-m", "ecallgw", "demo", "--replicas", "2", "--duration", "25"]
    argv += ["--kill-leader-after", "8", "--rate", "5"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=150, check=False)
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, err[-3000:]
    summaries = [line for line in out.splitlines() if line.startswith("[")]
    assert len(summaries) >= 10, out
    # Two replicas ran, both took signals in.
    first = summaries[0]
    assert re.search(r"r1 \S.* in \d+ out \d+ \| r2 ", first), first
    ins = re.findall(r"(r[12]) [^|]*? in (\d+) out", summaries[-1])
    assert len(ins) == 2 and all(int(n) > 0 for _, n in ins), summaries[-1]
    # One led, and it was the one killed.
    kill = re.search(r"demo: leader (r[12]) killed at ([\d.]+) s \(epoch (\d+)\)", out)
    assert kill is not None, out
    killed, at, epoch = kill.group(1), float(kill.group(2)), int(kill.group(3))
    assert 7.5 <= at <= 10.0, kill.group(0)
    assert any(f"{killed} leader (epoch {epoch})" in line for line in summaries), out
    # Another took over within 10 s, under a higher epoch, and the summary says so.
    took = re.search(r"demo: (r[12]) took over after ([\d.]+) s \(epoch (\d+)\)", out)
    assert took is not None, out
    assert took.group(1) != killed and float(took.group(2)) <= 10.0 and int(took.group(3)) > epoch, (
        took.group(0)
    )
    assert any(
        f"{killed} KILLED" in line and f"{took.group(1)} leader (epoch {took.group(3)})" in line
        for line in summaries
    ), out
    assert f"demo: {killed} restarted at" in out, out
    # The final summary: nothing lost, nothing dead-lettered, no duplicate but the crash's re-sends.
    last = summaries[-1]
    assert "dead letters 0" in last and "pending 0" in last and "unsequenced 0" in last, last
    sent = re.search(r"fleet sent (\d+) stored (\d+)", last)
    assert sent is not None and int(sent.group(1)) > 0 and sent.group(1) == sent.group(2), last
    duplicates = int(re.search(r"PSAP duplicates (\d+)", last).group(1))  # type: ignore[union-attr]
    resent = re.search(r"PSAP duplicates \d+ \((\d+) re-sent after the crash", last)
    assert duplicates == (int(resent.group(1)) if resent else 0), last
    assert "Traceback" not in err and "never retrieved" not in err, err[-3000:]


def test_demo_replicas_refused_in_one_line_without_postgresql(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without PostgreSQL server binaries ``--replicas 2`` says so in one line and exits 2; a kill
    of the leader without replicas is refused the same way."""
    import argparse

    from ecallgw.commands import demo
    from ecallgw.simulators import pgserver

    def missing() -> None:
        raise RuntimeError("PostgreSQL server binaries not found: install the postgresql package")

    monkeypatch.setattr(pgserver, "find_bindir", missing)
    parser = argparse.ArgumentParser()
    demo.configure(parser)
    assert demo.run(parser.parse_args(["--replicas", "2"])) == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "PostgreSQL" in lines[0] and "install the postgresql package" in lines[0], (
        lines
    )
    assert demo.run(parser.parse_args(["--kill-leader-after", "5"])) == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "--replicas 2" in lines[0], lines
