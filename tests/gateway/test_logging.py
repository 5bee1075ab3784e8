"""JSON log lines with pseudonymised VINs."""

from __future__ import annotations

import io
import json
import logging

from ecallgw.gateway.logging import configure_logging, pseudonymise_vin

KEY = b"k" * 32
VIN = "WVWZZZ1KZAW000123"


def test_json_lines_with_fields_and_vins_pseudonymised() -> None:
    stream = io.StringIO()
    handler = configure_logging("info", KEY, stream)
    try:
        log = logging.getLogger("ecallgw.test")
        log.info("vehicle %s called", VIN, extra={"receiver": "psap", "note": f"vin={VIN}", "attempt": 2})
        log.debug("not at info level")
        try:
            raise ValueError(VIN)
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert VIN not in stream.getvalue()
    pseudonym = pseudonymise_vin(KEY, VIN)
    assert first["msg"] == f"vehicle {pseudonym} called"
    assert first["note"] == f"vin={pseudonym}"
    assert (first["level"], first["logger"], first["receiver"], first["attempt"]) == (
        "info",
        "ecallgw.test",
        "psap",
        2,
    )
    assert pseudonym in second["exc"]


def test_pseudonyms_are_keyed_and_stable() -> None:
    assert pseudonymise_vin(KEY, VIN) == pseudonymise_vin(KEY, VIN)
    assert pseudonymise_vin(KEY, VIN) != pseudonymise_vin(b"x" * 32, VIN)
    assert pseudonymise_vin(KEY, VIN).startswith("vin:") and len(pseudonymise_vin(KEY, VIN)) == 20


def test_other_17_character_tokens_are_left_alone() -> None:
    stream = io.StringIO()
    handler = configure_logging("info", KEY, stream)
    try:
        # All digits (a timestamp-like id) and a 24-hex incident id are not VINs.
        logging.getLogger("ecallgw.test").info("ids 12345678901234567 inc-0123456789abcdef01234567")
    finally:
        logging.getLogger().removeHandler(handler)
    assert json.loads(stream.getvalue())["msg"] == "ids 12345678901234567 inc-0123456789abcdef01234567"
