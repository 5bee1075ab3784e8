"""``ecallgw loadtest`` from the command line: files written, exit status, step mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecallgw.cli import main


def test_single_run_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["loadtest", "--rate", "20", "--duration", "1", "--drain", "20", "--out", str(out)]
    assert main([*argv, "--workdir", str(tmp_path / "work")]) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["lost"] == 0 and data["duplicates"] == 0 and data["signals_scheduled"] > 0
    assert data["signals_acked"] == data["signals_scheduled"]
    assert (out / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert "lost                         0 of" in (out / "report.txt").read_text()
    assert "latency (send -> receiver)" in capsys.readouterr().out


def test_step_mode_reports_the_highest_sustainable_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = [
        "loadtest",
        "--step",
        "--start-rate",
        "10",
        "--factor",
        "2",
        "--max-rate",
        "20",
        # 2 s steps: a rate judged over one second of 10 signals swung below 95 % on a loaded machine.
        "--duration",
        "2",
    ]
    argv += ["--drain", "20", "--no-plot", "--out", str(out), "--workdir", str(tmp_path / "work")]
    assert main(argv) == 0
    steps = (out / "steps.txt").read_text()
    # Two steps (10/s, 20/s; 40/s is above --max-rate), then a confirming run at half of 20/s.
    assert "highest sustainable rate: 20 signals/s" in steps and "at half (10/s)" in steps
    assert [line.split()[0] for line in steps.splitlines()[1:3]] == ["10", "20"]
    assert not (out / "plot.png").exists()
    assert "highest sustainable rate" in capsys.readouterr().out


def test_bad_options_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "--psap-outage", "3"]) == 2
    assert main(["loadtest", "--gateway", "http://127.0.0.1:9"]) == 2
    assert main(["loadtest", "--mix", "nope=1"]) == 2
    # Bounded in count and time: no division by zero, no endless step search, no packet-id wrap,
    # no schedule too large to pre-encode.
    with pytest.raises(SystemExit) as refused:  # refused by argparse, naming the option
        main(["loadtest", "--rate", "0"])
    assert refused.value.code == 2
    assert main(["loadtest", "--step", "--factor", "1"]) == 2
    assert main(["loadtest", "--max-outstanding", "65536"]) == 2
    assert main(["loadtest", "--rate", "2000", "--duration", "1000"]) == 2
    assert "ecallgw loadtest:" in capsys.readouterr().err


def test_psap_outage_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The outage starts AT seconds after the first scheduled send: signals sent into it wait, none is lost.
    out = tmp_path / "out"
    argv = ["loadtest", "--rate", "10", "--duration", "2", "--psap-outage", "0.5:1", "--drain", "40"]
    status = main([*argv, "--no-plot", "--out", str(out), "--workdir", str(tmp_path / "work")])
    data = json.loads((out / "report.json").read_text())
    assert "PSAP goes down for 1 s" in capsys.readouterr().err
    assert data["lost"] == 0 and data["duplicates"] == 0 and data["undelivered"] == 0
    assert data["latency"]["max"] > 0.4  # the outage shows in the latency
    if data["latency"]["p99"] > 1.0:
        assert status == 1  # not sustainable, and the exit status says so
