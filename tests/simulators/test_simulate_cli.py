"""``ecallgw simulate``: seeded JSON lines with labels, and publishing to a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from ecallgw.cli import main
from ecallgw.codecs import msd as msd_codec
from ecallgw.codecs.envelope import decode_envelope
from tests.gateway.broker import Mosquitto


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    assert main(["simulate", *argv]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_same_seed_same_lines(capsys: pytest.CaptureFixture[str]) -> None:
    a = _run(capsys, "--seed", "9", "-n", "40", "--all-kinds")
    b = _run(capsys, "--seed", "9", "-n", "40", "--all-kinds")
    c = _run(capsys, "--seed", "10", "-n", "40", "--all-kinds")
    assert a == b and a != c
    assert len(a) == 40 and all("label" in s and s["signals"] for s in a)
    # The printed hex is the MSD the JSON describes (the codec agrees both ways).
    first = a[0]["signals"][0]  # type: ignore[index]
    if first["kind"] == "msd":
        assert msd_codec.to_json_dict(msd_codec.decode(bytes.fromhex(first["msd_hex"]))) == first["msd"]


def test_bad_mix_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--mix", "nonsense=1"]) == 2
    assert "unknown mix entry" in capsys.readouterr().err


async def test_publish_over_mqtt(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    try:
        received: list[aiomqtt.Message] = []
        async with aiomqtt.Client(broker.host, broker.port, identifier="sim-test-sub") as sub:
            await sub.subscribe("ecall/v1/+/+/+", qos=1)
            argv = [
                "simulate",
                "--seed",
                "3",
                "-n",
                "5",
                "--kinds",
                "crash,test_call",
                "--gap",
                "0.01",
                "--mix",
                "redial=0,retransmission=0,untrusted_position=0",
                "--publish",
                f"mqtt://{broker.host}:{broker.port}",
            ]
            status = await asyncio.to_thread(main, argv)
            assert status == 0
            async with asyncio.timeout(10):
                async for message in sub.messages:
                    received.append(message)
                    if len(received) == 5:  # one MSD each (a cancel would come 2-20 s later)
                        break
        kinds = sorted(str(m.topic).rsplit("/", 1)[1] for m in received)
        assert kinds == ["msd"] * 5
        for m in received:
            _, _, tps, vehicle, kind = str(m.topic).split("/")
            assert isinstance(m.payload, bytes)
            decode_envelope(kind, tps, vehicle, m.payload)  # a valid envelope, or DecodeError
    finally:
        broker.stop()


def test_signal_log_replays_through_triage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `ecallgw simulate --format log` is the signal log `ecallgw triage replay` reads: every line
    # decodes, and every signal gets a decision.
    assert main(["simulate", "--seed", "12", "-n", "30", "--all-kinds", "--format", "log"]) == 0
    log = capsys.readouterr().out
    records = [json.loads(line) for line in log.splitlines()]
    assert records and all(r["type"] == "signal" for r in records)
    assert [r["at"] for r in records] == sorted(r["at"] for r in records)
    path = tmp_path / "log.jsonl"
    path.write_text(log)
    assert main(["triage", "replay", str(path)]) == 0
    decisions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sum(1 for d in decisions if d["cause"] == "signal") == len(records)


def test_same_seed_same_output_across_processes_and_hash_seeds() -> None:
    # Set and dict iteration must not leak into the sequence: two processes with different string
    # hash seeds print the same scenarios, labels and MSD bytes.
    argv = [sys.executable, "-m", "ecallgw", "simulate", "--seed", "21", "-n", "60", "--all-kinds"]
    outs = [
        subprocess.run(
            argv, capture_output=True, check=True, timeout=60, env={**os.environ, "PYTHONHASHSEED": h}
        ).stdout
        for h in ("1", "2")
    ]
    assert outs[0] == outs[1] and outs[0].count(b"\n") == 60
