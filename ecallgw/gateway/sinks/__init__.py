"""Sinks: one protocol each, delivering one rendered incident revision to one receiver.

A sink's `deliver` returns once the receiver confirmed, and raises `TransientDeliveryError` (retry
later, possibly with the receiver's Retry-After) or `PermanentDeliveryError` (dead-letter now). The
forwarder owns rendering (``codecs.renderers``, by the receiver's format), retries, ordering, the
circuit breaker and the bookkeeping. Which sink a receiver gets is its ``kind``
(`ecallgw.gateway.sinks.kinds.SINK_KINDS`).
"""

from __future__ import annotations

from typing import Protocol

from ecallgw.gateway.records import OutboxItem

__all__ = ["Sink"]


class Sink(Protocol):
    """One receiver's protocol.

    Attributes:
        confirmed_at_commit: True when the receiver has a revision as soon as it is committed (the
            operator desk: its stream and API read the store). Then the store writes the receiver's
            outbox entries delivered in the commit that creates them (``Unit.confirm_on_commit``),
            nothing is rendered, and `deliver` is never called; an entry still pending from before
            (the receiver had another kind) is confirmed by the forwarder when it is loaded.
    """

    confirmed_at_commit: bool

    async def deliver(self, item: OutboxItem, body: bytes, content_type: str) -> int | None:
        """Deliver one rendered revision; return the receiver's status code when it has one."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
