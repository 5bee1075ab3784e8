"""Keyed hashes for triage state: the VIN never becomes a key, a pseudonym of it does.

Regulation (EU) 2015/758 art. 6 and the GDPR ask for pseudonymised identifiers wherever the VIN is
not needed; dedup only needs equality, so the state keys on HMAC-SHA256(key, VIN). Incident ids are
derived from the same key, the vehicle pseudonym, the call and the first receipt time, so replaying
the journal after a restart gives the same ids.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["MIN_KEY_BYTES", "VehicleKeys", "check_key", "incident_id", "incident_key", "vehicle_key"]

MIN_KEY_BYTES = 16
"""Shortest accepted key: 128 bits, so pseudonyms cannot be reversed by trying all VINs' keys."""

# Domain separation: the same key hashes VINs and incident ids; distinct prefixes keep one output
# from ever being mistaken for the other.
_VIN = b"ecallgw/vin\x00"
_INCIDENT = b"ecallgw/incident\x00"


def check_key(key: bytes) -> bytes:
    """Return ``key`` when it is long enough to key the pseudonyms.

    Raises:
        ValueError: when the key is shorter than ``MIN_KEY_BYTES``.
    """
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        raise ValueError(f"triage key must be at least {MIN_KEY_BYTES} bytes")
    return key


def vehicle_key(key: bytes, vin: str) -> bytes:
    """The pseudonym of a VIN: the first 16 bytes of HMAC-SHA256(key, VIN).

    128 bits keep collisions out of reach for any fleet while halving the memory of a full digest.

    >>> vehicle_key(b"k" * 16, "WVWZZZ1JZXW000001").hex()[:8]
    'fa667408'
    """
    return hmac.digest(key, _VIN + vin.encode("ascii", "replace"), "sha256")[:16]


class VehicleKeys:
    """``vehicle_key(key, vin)`` for one fixed key, a third cheaper per VIN.

    HMAC hashes the padded key before the message on every call; here that state (and the domain
    prefix) is hashed once and copied per VIN. The output is the same bytes as ``vehicle_key``.

    Args:
        key: the triage key (checked as by ``check_key``).
    """

    __slots__ = ("_mac",)

    def __init__(self, key: bytes) -> None:
        self._mac = hmac.new(check_key(key), _VIN, "sha256")

    def __call__(self, vin: str) -> bytes:
        """The pseudonym of ``vin``, equal to ``vehicle_key(key, vin)``."""
        h = self._mac.copy()
        h.update(vin.encode("ascii", "replace"))
        return h.digest()[:16]


def incident_key(key: bytes) -> bytes:
    """The sub-key of incident ids, derived from the triage key (32 bytes, for keyed BLAKE2b)."""
    return hmac.digest(key, _INCIDENT, "sha256")


def incident_id(
    id_key: bytes, vkey: bytes, tps: str, call_id: str, received_at: float, generation: int = 0
) -> str:
    """A deterministic incident id from the vehicle pseudonym, the call and its first receipt time.

    Args:
        id_key: ``incident_key(key)``; keyed BLAKE2b is a MAC as HMAC is, at a third of the cost.
        vkey: the vehicle pseudonym.
        tps: the provider.
        call_id: the call that opened the incident.
        received_at: its receipt time; ``repr`` of the float is exact, so the same stored time
            always gives the same id.
        generation: counts incidents opened by one call (a new activation after a cancel).

    Returns:
        ``inc-`` and 24 hex digits (96 bits); nothing about the VIN can be read from it.
    """
    msg = f"{tps}\x00{call_id}\x00{received_at!r}\x00{generation}".encode()
    return "inc-" + hashlib.blake2b(vkey + msg, key=id_key, digest_size=12).hexdigest()
