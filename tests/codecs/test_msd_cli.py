"""``ecallgw decode`` and ``ecallgw encode`` through the real command-line entry point."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from ecallgw.cli import main
from ecallgw.codecs import msd as codec
from tests.codecs.test_msd_vectors import PUBLIC, PUBLIC_BYTES, _v2_json, legato_copy, patch


def test_decode_hex(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", PUBLIC["hex"]]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == PUBLIC["json"]
    assert out.err == ""


def test_decode_hex_with_spaces_and_upper_case(capsys: pytest.CaptureFixture[str]) -> None:
    spaced = " ".join(PUBLIC["hex"][i : i + 8].upper() for i in range(0, len(PUBLIC["hex"]), 8))
    assert main(["decode", spaced]) == 0
    assert json.loads(capsys.readouterr().out) == PUBLIC["json"]


def test_decode_stdin_raw_bytes(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(PUBLIC_BYTES)))
    assert main(["decode", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == PUBLIC["json"]


def test_decode_known_oad_is_decoded(capsys: pytest.CaptureFixture[str]) -> None:
    # ERA-GLONASS format 2, severity 1024, every flag, pz90: Legato's encoder gives these octets.
    value = _v2_json(optionalAdditionalData={"oid": "1.4.2", "data": "7c00ffffffffffffffe0"})
    data = codec.encode(codec.from_json_dict(value))
    assert main(["decode", data.hex()]) == 0
    decoded = json.loads(capsys.readouterr().out)["msd"]["optionalAdditionalData"]["decoded"]
    assert decoded["crashSeverity"] == 1024
    assert decoded["coordinateSystemType"] == "pz90"
    assert all(decoded["diagnosticResult"].values()) and len(decoded["diagnosticResult"]) == 21
    assert all(decoded["crashInfo"].values()) and len(decoded["crashInfo"]) == 8


def test_decode_malformed_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # Index 35 in the first VIN character (bit 30): not in the 33-character alphabet.
    bad = patch(PUBLIC_BYTES, 30, "100011")
    assert main(["decode", bad.hex()]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1
    assert "msd.msdStructure.vehicleIdentificationNumber.isowmi" in lines[0]
    assert "bit 30" in lines[0]


def test_decode_truncated_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", PUBLIC["hex"][:40]]) == 2
    err = capsys.readouterr().err
    assert "msd.msdStructure.timestamp" in err and "bit 141" in err and len(err.splitlines()) == 1


def test_decode_not_hex_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "01zz"]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_encode_file_and_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "msd.json"
    path.write_text(json.dumps(PUBLIC["json"]))
    assert main(["encode", str(path)]) == 0
    assert capsys.readouterr().out.strip() == PUBLIC["hex"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(PUBLIC["json"]).encode())))
    assert main(["encode", "-"]) == 0
    assert capsys.readouterr().out.strip() == PUBLIC["hex"]


def test_decode_then_encode_is_canonical(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Decode a non-canonical MSD (all DEFAULT presence bits set), then encode the printed JSON.
    legato = legato_copy()
    assert main(["decode", legato.hex()]) == 0
    path = tmp_path / "msd.json"
    path.write_text(capsys.readouterr().out)
    assert main(["encode", str(path)]) == 0
    assert capsys.readouterr().out.strip() == PUBLIC["hex"]


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("{", "not JSON"),
        (json.dumps({"id": 1}), "not an MSD"),
        (
            json.dumps(
                {
                    **PUBLIC["json"],
                    "msd": {
                        **PUBLIC["json"]["msd"],
                        "msdStructure": {**PUBLIC["json"]["msd"]["msdStructure"], "vehicleDirection": 300},
                    },
                }
            ),
            "cannot encode",
        ),
        # An arc far above 2^64: int() of it would raise ValueError (4300-digit limit) if unchecked.
        (
            json.dumps(
                {
                    **PUBLIC["json"],
                    "msd": {
                        **PUBLIC["json"]["msd"],
                        "optionalAdditionalData": {"oid": "9" * 5000, "data": ""},
                    },
                }
            ),
            "not a dotted relative OID",
        ),
        ("[" * 100_000, "not JSON"),
    ],
    ids=["broken JSON", "missing msd", "direction out of range", "5000-digit OID arc", "deep nesting"],
)
def test_encode_bad_input_exits_2(
    text: str, word: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "msd.json"
    path.write_text(text)
    assert main(["encode", str(path)]) == 2
    err = capsys.readouterr().err
    assert word in err and len(err.splitlines()) == 1


def test_encode_input_not_utf8_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "msd.json"
    path.write_bytes(b"\xff\xfe{")
    assert main(["encode", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not JSON" in err and len(err.splitlines()) == 1


def test_decode_truncated_in_a_boolean_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    # Three octets end inside ControlType: positionCanBeTrusted is bit 24 (docs/msd.md §4).
    assert main(["decode", PUBLIC["hex"][:6]]) == 2
    err = capsys.readouterr().err
    assert err == (
        "ecallgw decode: malformed MSD in field msd.msdStructure.control.positionCanBeTrusted "
        "at bit 24: truncated: needed 1 bit, had 0\n"
    )


def test_decode_stdin_hex_text_gets_a_hint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # '-' reads raw bytes; hex digits piped in fail on byte 0 ('0' = 48), and the line says why.
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(PUBLIC["hex"].encode() + b"\n")))
    assert main(["decode", "-"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "unknown MSD version 48" in err and "pass hex as the argument" in err
