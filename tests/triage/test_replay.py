"""``ecallgw triage replay``: the JSON-lines signal log, run through the real CLI on real files."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from ecallgw.cli import main
from ecallgw.codecs import msd as msd_codec
from ecallgw.codecs.envelope import encode_envelope
from ecallgw.model import CancelSignal
from ecallgw.triage.replay import LogError, SignalRecord, TickRecord, parse_record
from tests.triage._build import T0, make_msd, msd_signal

VIENNA_AREA = """
[triage]
escalation_delay_s = 30
[[triage.psap_areas]]
receiver = "psap-vienna"
geometry = { type = "Polygon", coordinates = [[[16.18, 48.12], [16.58, 48.12], [16.58, 48.33],
                                               [16.18, 48.33], [16.18, 48.12]]] }
"""


# 48°12' N 16°22' E, ~1 km from the MSD's position.
RMC = "$GPRMC,094005.00,A,4812.0000,N,01622.0000,E,0.0,0.0,261125,,,A*5D"


def _journal_lines() -> list[dict[str, Any]]:
    auto = msd_signal(vehicle="car1", call_id="c1")
    manual = msd_signal(vehicle="car2", call_id="m1", vin="WVWZZZ1JZXW000002", automatic=False)
    return [
        # The journal's form: the envelope exactly as received, base64.
        {"type": "signal", "at": T0 + 1, "kind": "msd", "tps": "acme", "vehicle": "car1",
         "payload_b64": base64.b64encode(encode_envelope(auto)).decode()},
        # A broker redelivery of it.
        {"type": "signal", "at": T0 + 2, "kind": "msd", "tps": "acme", "vehicle": "car1",
         "payload_b64": base64.b64encode(encode_envelope(auto)).decode()},
        # The readable form: fields spelled out, the MSD as hex.
        {"type": "signal", "at": T0 + 3, "kind": "msd", "tps": "acme", "vehicle": "car2", "call_id": "m1",
         "sent_at": T0 + 3, "msd_hex": msd_codec.encode(manual.msd).hex()},
        {"type": "signal", "at": T0 + 4, "kind": "cancel", "tps": "acme", "vehicle": "car1", "call_id": "c1"},
        {"type": "signal", "at": T0 + 5, "kind": "position", "tps": "acme", "vehicle": "car1",
         "call_id": "c1", "sent_at": T0 + 5, "nmea": RMC},
        {"type": "tick", "at": T0 + 40},
        {"type": "action", "at": T0 + 50, "incident_id": "inc-000000000000000000000000", "action": "ack",
         "actor": "alice"},
    ]  # fmt: skip


def _write(tmp_path: Path, lines: list[Any], name: str = "log.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    status = main(["triage", "replay", *args])
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines()], err


def test_replay_prints_one_decision_per_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "ecallgw.toml"
    cfg.write_text(VIENNA_AREA)
    status, out, err = _replay(capsys, str(_write(tmp_path, _journal_lines())), "--config", str(cfg))
    assert status == 0, err
    outcomes = [(d["cause"], d["outcome"]) for d in out]
    assert outcomes == [
        ("signal", "new_incident"),
        ("signal", "duplicate"),
        ("signal", "new_incident"),
        ("signal", "cancel_requested"),
        ("signal", "new_revision"),  # the NMEA fix moved the incident ~1 km
        ("tick", "escalated"),  # the manual call, 37 s without an operator (delay 30 s in the config)
        ("action", "unknown_incident"),
    ]
    assert {r["receiver"] for r in out[0]["routes"]} == {"operator", "psap-vienna"}
    assert out[0]["incident"]["severity"]["level"] == "high"
    assert "msd" not in out[0]["incident"], "the replay output carries no VIN"


def test_replay_is_deterministic_and_keyed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = str(_write(tmp_path, _journal_lines()))
    _, first, _ = _replay(capsys, log)
    _, second, _ = _replay(capsys, log)
    _, keyed, _ = _replay(capsys, log, "--key-hex", "00" * 32)
    assert first == second
    assert first[0]["incident"]["incident_id"] != keyed[0]["incident"]["incident_id"]
    # Without the config the fallback PSAP gets the automatic call.
    assert {r["receiver"] for r in first[0]["routes"]} == {"operator", "psap-fallback"}


def test_bad_records_are_reported_and_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines: list[Any] = [
        "not json",
        {"type": "signal", "at": T0, "kind": "msd", "tps": "acme", "vehicle": "v", "msd_hex": "zz"},
        {
            "type": "signal",
            "at": T0,
            "kind": "msd",
            "tps": "acme",
            "vehicle": "v",
            "call_id": "c",
            "msd_hex": "00",
        },
        {"type": "bogus", "at": T0},
        {"type": "tick"},
        *_journal_lines()[:1],
    ]
    status, out, err = _replay(capsys, str(_write(tmp_path, lines)))
    assert status == 1
    assert [json.loads(e)["line"] for e in err.splitlines()] == [1, 2, 3, 4, 5]
    assert [d["outcome"] for d in out] == ["new_incident"]  # the good line still ran


def test_tick_each_and_until_fire_timers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manual = {"type": "signal", "at": T0, "kind": "msd", "tps": "acme", "vehicle": "v", "call_id": "m",
              "msd": msd_codec.to_json_dict(make_msd(automatic=False))}  # fmt: skip
    later = {"type": "signal", "at": T0 + 100, "kind": "cancel", "tps": "x", "vehicle": "y", "call_id": "z"}
    log = str(_write(tmp_path, [manual, later]))
    _, plain, _ = _replay(capsys, log)
    _, ticked, _ = _replay(capsys, log, "--tick-each")
    _, until, _ = _replay(capsys, str(_write(tmp_path, [manual], "one.jsonl")), "--until", str(T0 + 3600))
    assert [d["outcome"] for d in plain] == ["new_incident", "orphan_signal"]
    assert [d["outcome"] for d in ticked] == ["new_incident", "escalated", "orphan_signal"]
    assert [d["outcome"] for d in until] == ["new_incident", "escalated"]


def test_missing_file_and_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["triage", "replay", str(tmp_path / "nope.jsonl")]) == 2
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[triage]\nredial_window_s = -1\n")
    assert main(["triage", "replay", str(_write(tmp_path, [])), "--config", str(cfg)]) == 2
    assert "triage.redial_window_s" in capsys.readouterr().err


PARSE_ERRORS = [
    # Receipt time is what the engine runs on: without it nothing can be replayed.
    ({"type": "tick"}, "at"),
    ({"type": "action", "at": 1.0, "action": "ack"}, "incident_id"),
    ({"type": "signal", "at": 1.0, "kind": "cancel", "vehicle": "v", "call_id": "c"}, "tps"),
    ({"type": "signal", "at": 1.0, "kind": "launch", "tps": "t", "vehicle": "v", "call_id": "c"}, "kind"),
    ({"type": "signal", "at": 1.0, "kind": "position", "tps": "t", "vehicle": "v", "call_id": "c"}, "nmea"),
    ({"type": "signal", "at": True, "kind": "cancel"}, "at"),
]


@pytest.mark.parametrize(("obj", "field"), PARSE_ERRORS, ids=[str(i) for i in range(len(PARSE_ERRORS))])
def test_parse_errors_name_the_field(obj: dict[str, Any], field: str) -> None:
    with pytest.raises(LogError) as info:
        parse_record(obj)
    assert info.value.field == field


def test_parse_forms() -> None:
    assert parse_record({"type": "tick", "at": 5}) == TickRecord(at=5.0)
    rec = parse_record({"at": 7, "kind": "position", "tps": "t", "vehicle": "v", "call_id": "c",
                        "position": {"lat": 48.2, "lon": 16.4, "trusted": False}})  # fmt: skip
    assert isinstance(rec, SignalRecord) and rec.signal.sent_at == 7.0  # type "signal" is the default
    cancel = parse_record(
        {"at": 7, "kind": "cancel", "tps": "t", "vehicle": "v", "call_id": "c", "sent_at": 6}
    )
    assert cancel == SignalRecord(
        at=7.0, signal=CancelSignal(tps="t", vehicle="v", call_id="c", sent_at=6.0, reason=None)
    )


def test_replay_uses_the_gateways_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The replay after a restart must reproduce the gateway's incident ids: the same key as
    # `ecallgw serve` derives it, from the configured pseudonym_key or the store's generated one.
    import hashlib
    import sqlite3

    from ecallgw.triage import TriageEngine, TriagePolicy

    log = str(_write(tmp_path, _journal_lines()[:1]))
    first = msd_signal(vehicle="car1", call_id="c1")

    def expected(key: bytes) -> str:
        d = TriageEngine(TriagePolicy(), key).on_signal(first, now=T0 + 1)
        assert d.incident is not None
        return d.incident.incident_id

    cfg = tmp_path / "key.toml"
    cfg.write_text('[pipeline]\npseudonym_key = "correct horse battery staple"\n')
    _, out, _ = _replay(capsys, log, "--config", str(cfg))
    assert out[0]["incident"]["incident_id"] == expected(
        hashlib.sha256(b"correct horse battery staple").digest()
    )

    store = tmp_path / "ecallgw.sqlite"
    conn = sqlite3.connect(store)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('pseudonym', ?)", (bytes(range(32)),))
    conn.commit()
    conn.close()
    _, out, _ = _replay(capsys, log, "--store", str(store))
    assert out[0]["incident"]["incident_id"] == expected(bytes(range(32)))
    assert main(["triage", "replay", log, "--store", str(tmp_path / "missing.sqlite")]) == 2


def test_export_from_a_real_store_then_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The gateway's journal, written through its own store, exported as the signal log and replayed
    # with the store's key: the replay gives the gateway's incident id (same key, same receipt time).
    import asyncio

    from ecallgw.config import StoreConfig
    from ecallgw.gateway.records import ActionRecord, RawSignal, Unit
    from ecallgw.gateway.store import SqliteStore
    from ecallgw.triage import TriageEngine, TriagePolicy

    path = tmp_path / "store.sqlite3"
    auto = msd_signal(vehicle="car1", call_id="c1")

    async def write() -> bytes:
        async with SqliteStore(StoreConfig(path=str(path))) as store:
            key = await store.key("pseudonym")
            raw = RawSignal(
                transport="mqtt", kind="msd", tps="acme", vehicle="car1",
                payload=encode_envelope(auto), received_at=T0 + 1, source="ecall/v1/acme/car1/msd",
            )  # fmt: skip
            await store.commit(Unit(journal_type="signal", at=T0 + 1, signal=raw))
            await store.commit(Unit(journal_type="tick", at=T0 + 2))
            action = ActionRecord(
                incident_id="inc-x", action="ack", actor="alice", role="operator", note="", at=T0 + 3
            )
            await store.commit(Unit(journal_type="action", at=T0 + 3, action=action))
            await store.commit(Unit(journal_type="prune", at=T0 + 4))
            return key

    key = asyncio.run(write())
    assert main(["triage", "export", "--store", str(path)]) == 0
    exported = capsys.readouterr().out
    records = [json.loads(line) for line in exported.splitlines()]
    assert [r["type"] for r in records] == ["signal", "tick", "action", "prune"]
    assert records[2]["actor"] == "alice" and records[0]["tps"] == "acme"
    log = tmp_path / "journal.jsonl"
    log.write_text(exported)
    status, out, err = _replay(capsys, str(log), "--store", str(path))
    assert status == 0, err
    expected = TriageEngine(TriagePolicy(), key).on_signal(auto, now=T0 + 1).incident
    assert expected is not None
    assert out[0]["incident"]["incident_id"] == expected.incident_id
    assert [d["outcome"] for d in out] == ["new_incident", "unknown_incident"]
    # A store that does not exist is refused, not created.
    assert main(["triage", "export", "--store", str(tmp_path / "nope.sqlite3")]) == 2
    assert not (tmp_path / "nope.sqlite3").exists()
