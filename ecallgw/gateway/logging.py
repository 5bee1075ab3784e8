"""Logs: one JSON object per line on stderr, with VINs pseudonymised by a keyed hash.

Fields passed through ``extra=`` become top-level keys. Any 17-character VIN that slips into a
message or a field is replaced by ``vin:`` and the first 16 hex digits of its HMAC-SHA256 under the
gateway's pseudonym key, so the same vehicle can be followed across lines without being named.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import sys
from typing import Any, TextIO

__all__ = ["JsonFormatter", "configure_logging", "pseudonymise_vin"]

# ISO 3779 VIN alphabet (no I, O, Q); word boundaries keep longer tokens (hex ids) intact.
_VIN = re.compile(r"\b[A-HJ-NPR-Z0-9]{17}\b")
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def pseudonymise_vin(key: bytes, vin: str) -> str:
    """A stable pseudonym for a VIN: ``vin:`` + 16 hex digits of HMAC-SHA256(key, vin)."""
    return "vin:" + hmac.new(key, vin.encode(), hashlib.sha256).hexdigest()[:16]


class JsonFormatter(logging.Formatter):
    """Format records as JSON lines with pseudonymised VINs.

    Args:
        key: the pseudonym key.
    """

    def __init__(self, key: bytes) -> None:
        super().__init__()
        self._key = key

    def _scrub(self, text: str) -> str:
        if len(text) < 17:
            return text
        return _VIN.sub(
            lambda m: pseudonymise_vin(self._key, m.group(0)) if _looks_like_vin(m.group(0)) else m.group(0),
            text,
        )

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line."""
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self._scrub(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            out[key] = self._scrub(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = self._scrub(self.formatException(record.exc_info))
        return json.dumps(out, default=str, ensure_ascii=False)


def _looks_like_vin(token: str) -> bool:
    # A VIN mixes letters and digits; an all-digit or all-letter run is something else.
    return any(c.isdigit() for c in token) and any(c.isalpha() for c in token)


def configure_logging(level: str, key: bytes, stream: TextIO | None = None) -> logging.Handler:
    """Send ``ecallgw`` logs (and aiohttp's and aiomqtt's) to ``stream`` as JSON lines.

    Returns:
        The installed handler (to remove it again in tests).
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(key))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old.formatter, JsonFormatter):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("ecallgw").setLevel(level.upper())
    return handler
