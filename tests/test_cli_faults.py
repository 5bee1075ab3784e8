"""The command line under faults (issue 11): a reader that leaves the pipe early, and bad values.

A reader gone (``ecallgw decode … | head -c1``) ends the command quietly: no traceback, exit 141 (or
0 where the command already treats it as done). A bad number is refused by argparse naming the
option, exit 2, before anything runs.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ecallgw.cli import main
from tests.gateway.helpers import make_msd

MSD_HEX = make_msd(vin="WVWZZZ1JZ3W386752", timestamp=1_700_000_000).hex()


def _into_closed_pipe(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``ecallgw`` with stdout a pipe whose reader has already left (as after `head`)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "ecallgw", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "argv",
    [
        ("decode", MSD_HEX),
        ("simulate", "-n", "200"),
        ("simulate", "-n", "200", "--format", "log"),
    ],
    ids=["decode", "simulate", "simulate-log"],
)
def test_reader_gone_exits_quietly(argv: tuple[str, ...]) -> None:
    done = _into_closed_pipe(*argv)
    assert done.returncode in (0, 141), done.stderr
    assert done.stderr == "", done.stderr


def test_decode_into_head_in_a_shell() -> None:
    done = subprocess.run(
        f"{sys.executable} -m ecallgw decode {MSD_HEX} | head -c1",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout == "{" and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("argv", "option", "says"),
    [
        (["loadtest", "--rate", "-1"], "--rate", "must be a positive number, got -1"),
        (["loadtest", "--duration", "0"], "--duration", "must be a positive number, got 0"),
        (["loadtest", "--mix", "storm=-1"], "--mix", "storm: must be a number >= 0, got -1"),
        (["demo", "--rate", "-1"], "--rate", "must be a positive number, got -1"),
        (["demo", "--rate", "nan"], "--rate", "must be a finite number, got nan"),
        (["demo", "--replicas", "0"], "--replicas", "must be a positive whole number, got 0"),
        (["simulate", "-n", "-5"], "-n/--count", "must be a positive whole number, got -5"),
        (["simulate", "--start", "yesterday"], "--start", "must be epoch seconds or 'now', got yesterday"),
        (["simulate", "--mix", "crash=abc"], "--mix", "crash: must be a number, got abc"),
        (["simulate", "--mix", "crash"], "--mix", "needs NAME=NUMBER items"),
    ],
)
def test_bad_values_refused_naming_the_option(
    capsys: pytest.CaptureFixture[str], argv: list[str], option: str, says: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {says}" in err, err
    assert "Traceback" not in err


def test_good_values_still_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "-n", "2", "--start", "1700000000", "--mix", "crash=0.5, storm=0"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["simulate", "-n", "1", "--start", "now"]) == 0
