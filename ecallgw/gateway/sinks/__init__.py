"""Sinks: one protocol each, delivering one incident revision to one receiver.

A sink's `deliver` returns once the receiver confirmed, and raises `TransientDeliveryError` (retry
later, possibly with the receiver's Retry-After) or `PermanentDeliveryError` (dead-letter now). The
forwarder owns retries, ordering, the circuit breaker and the bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ecallgw.gateway.records import OutboxItem
from ecallgw.model import IncidentSnapshot

__all__ = ["Renderer", "Sink"]

Renderer = Callable[[IncidentSnapshot, float], tuple[bytes, str]]
"""Renders a revision at a forwarding time into (document bytes, content type)."""


class Sink(Protocol):
    """One receiver's protocol."""

    async def deliver(self, item: OutboxItem, snapshot: IncidentSnapshot) -> int | None:
        """Deliver one revision; return the receiver's status code when it has one."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
