"""Logs: one JSON object per line on stderr, with VINs pseudonymised by a keyed hash.

Fields passed through ``extra=`` become top-level keys. Any 17-character VIN that slips into a
message, a field (at any depth of a dict, list or tuple, keys included, or in whatever ``str`` of an
object gives) or a traceback is replaced by ``vin:`` and the first 16 hex digits of its HMAC-SHA256
under the gateway's log pseudonym key, so the same vehicle can be followed across lines without being
named. Case does not matter (a provider's vehicle key may be a lower-case VIN; the pseudonym is of
the upper-case form, so both spellings give the same one), nor does what surrounds it: only letters
and digits on either side make a longer token that is left alone.
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

# Secrets a line can carry when a library logs a request it could not parse (aiohttp logs the bad
# request line): a caller link's token in its path, a bearer token, a console session cookie.
_SECRET = re.compile(
    r"(/(?:l|t|assist)/)[A-Za-z0-9_-]{16,}|(?i:(bearer\s+))[A-Za-z0-9._~+/=-]{8,}|(ecallgw_session=)[^;\s]+"
)
# ISO 3779 VIN alphabet (no I, O, Q), either case; a letter or digit on either side means a longer
# token (a 24-hex incident id), which is left intact. "_" and "-" do not: "car_<VIN>" is a VIN.
_VIN = re.compile(r"(?<![A-Za-z0-9])[A-HJ-NPR-Z0-9]{17}(?![A-Za-z0-9])", re.IGNORECASE)


def _redact(m: re.Match[str]) -> str:
    return (m.group(1) or m.group(2) or m.group(3)) + "[secret]"


_OWN_KEYS = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def pseudonymise_vin(key: bytes, vin: str) -> str:
    """A stable pseudonym for a VIN: ``vin:`` + 16 hex digits of HMAC-SHA256(key, VIN upper-cased)."""
    return "vin:" + hmac.new(key, vin.upper().encode(), hashlib.sha256).hexdigest()[:16]


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
        if "/" in text or "earer" in text or "session" in text:
            text = _SECRET.sub(_redact, text)
        return _VIN.sub(
            lambda m: pseudonymise_vin(self._key, m.group(0)) if _looks_like_vin(m.group(0)) else m.group(0),
            text,
        )

    def _scrub_value(self, value: Any, depth: int = 0) -> Any:
        # Every field a VIN can reach: strings, containers at any depth (their keys too), and the
        # text of anything else (bytes, exceptions, paths), which json.dumps would print by str.
        if isinstance(value, str):
            return self._scrub(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth < 8:
            if isinstance(value, dict):
                return {self._scrub(str(k)): self._scrub_value(v, depth + 1) for k, v in value.items()}
            if isinstance(value, list | tuple | set | frozenset):
                return [self._scrub_value(v, depth + 1) for v in value]
        if isinstance(value, bytes | bytearray | memoryview):
            return self._scrub(bytes(value).decode("utf-8", "replace"))
        return self._scrub(str(value))

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
            name = self._scrub(key)
            # A field named like the line's own keys ("level": an incident's severity) must not
            # overwrite them: a log filter on level would miss the line.
            out[f"field_{name}" if name in _OWN_KEYS else name] = self._scrub_value(value)
        if record.exc_info:
            out["exc"] = self._scrub(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = self._scrub(self.formatStack(record.stack_info))
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
