"""The exception tree of ecallgw.

::

    EcallgwError
    ├── DecodeError (.codec, .reason, .path, .bit_offset)  the sender's fault: counted, logged, kept
    ├── EncodeError                            our fault (or the caller's value): fails loudly
    ├── ConfigError (.key, .value)             refuse to start; names the key and the value
    ├── StoreError
    │   └── StorePathError (also a ConfigError)  store.path cannot be opened: refuse to start
    └── DeliveryError (.receiver, .reason)
        ├── TransientDeliveryError             retry with backoff
        └── PermanentDeliveryError             dead-letter now

Foreign exceptions (construct, msgpack, pynmea2, sqlite3, aiohttp) are translated once, at the
boundary that calls the foreign code, and chained with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "DeliveryError",
    "EcallgwError",
    "EncodeError",
    "PermanentDeliveryError",
    "StoreError",
    "StorePathError",
    "TransientDeliveryError",
]


class EcallgwError(Exception):
    """Base of every error ecallgw raises on purpose."""


class DecodeError(EcallgwError):
    """Input that cannot be decoded: the sender's fault.

    Attributes:
        codec: which codec refused the input ("msd", "envelope", "nmea", ...); a small fixed set,
            safe as a metric label.
        reason: what went wrong, for people.
        path: the field path where it went wrong ("msdStructure.vehicleLocation.positionLongitude"),
            or "" when the problem is the input as a whole.
        bit_offset: the bit offset into the input where the failing field starts, when known.
    """

    def __init__(self, codec: str, reason: str, *, path: str = "", bit_offset: int | None = None) -> None:
        self.codec = codec
        self.reason = reason
        self.path = path
        self.bit_offset = bit_offset
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" in {self.path}" if self.path else ""
        at = f" at bit {self.bit_offset}" if self.bit_offset is not None else ""
        return f"{self.codec}: {self.reason}{where}{at}"

    def __repr__(self) -> str:
        return (
            f"DecodeError(codec={self.codec!r}, reason={self.reason!r}, path={self.path!r}, "
            f"bit_offset={self.bit_offset!r})"
        )


class EncodeError(EcallgwError):
    """A value that cannot be encoded (out of range, wrong alphabet): the caller's fault."""


class ConfigError(EcallgwError):
    """Invalid configuration; the daemon refuses to start.

    Attributes:
        key: the dotted configuration key ("mqtt.port").
        value: the offending value as given.
    """

    def __init__(self, key: str, value: object, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"config {self.key!r} has value {self.value!r}: {self.reason}"


class StoreError(EcallgwError):
    """The store could not complete an operation."""


class StorePathError(ConfigError, StoreError):
    """The store cannot be opened where ``store.path`` says: a configuration error (exit 2) that is
    also a `StoreError` for code that only asks whether the store failed."""


class DeliveryError(EcallgwError):
    """A delivery to a receiver failed.

    Attributes:
        receiver: the configured receiver name.
        reason: a short code from a fixed set, safe as a metric label ("http_5xx", "timeout", ...).
    """

    def __init__(self, receiver: str, reason: str, detail: str = "") -> None:
        self.receiver = receiver
        self.reason = reason
        self.detail = detail
        super().__init__(str(self))

    def __str__(self) -> str:
        extra = f": {self.detail}" if self.detail else ""
        return f"delivery to {self.receiver} failed ({self.reason}){extra}"


class TransientDeliveryError(DeliveryError):
    """Worth retrying later (5xx, 429, timeout, connection refused).

    Attributes:
        retry_after_s: the receiver's Retry-After, in seconds, when it gave one.
    """

    def __init__(self, receiver: str, reason: str, detail: str = "", *, retry_after_s: float | None = None):
        self.retry_after_s = retry_after_s
        super().__init__(receiver, reason, detail)


class PermanentDeliveryError(DeliveryError):
    """Not worth retrying (4xx other than 408/429): dead-letter now."""
