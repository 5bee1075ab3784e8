"""Pure codecs: bytes and JSON to and from the shared model, with no I/O.

The MSD codec is re-exported here; envelope, NMEA and document codecs live in their own modules.
"""

from __future__ import annotations

from ecallgw.codecs.msd import decode_msd, encode_msd

__all__ = ["decode_msd", "encode_msd"]
