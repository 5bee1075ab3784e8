"""Shift-and-mask decoders and encoders generated from the schema tree (placeholder)."""

from __future__ import annotations

from ecallgw.model import Msd


def decode(data: bytes) -> Msd | None:
    """Fast decode, or None when the interpreted parse must decide."""
    return None


def encode(msd: Msd) -> bytes | None:
    """Fast encode, or None when the interpreted build must decide."""
    return None
