"""Sinks: one protocol each, delivering one rendered incident revision to one receiver.

A sink's `deliver` returns once the receiver confirmed, and raises `TransientDeliveryError` (retry
later, possibly with the receiver's Retry-After) or `PermanentDeliveryError` (dead-letter now). The
forwarder owns rendering, retries, ordering, the circuit breaker and the bookkeeping.
"""

from __future__ import annotations

from typing import Literal, Protocol

from ecallgw.codecs import document
from ecallgw.gateway.records import OutboxItem
from ecallgw.model import IncidentSnapshot

__all__ = ["Documents", "Sink"]


class Sink(Protocol):
    """One receiver's protocol.

    Attributes:
        needs_body: False when the sink needs no rendered document (the operator stream).
    """

    needs_body: bool

    async def deliver(self, item: OutboxItem, body: bytes, content_type: str) -> int | None:
        """Deliver one rendered revision; return the receiver's status code when it has one."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class Documents:
    """Render revisions in one receiver's format (``codecs.document``).

    Args:
        format: "json" or "cap".
        sender: CAP ``sender``.
    """

    def __init__(self, format: Literal["json", "cap"], sender: str) -> None:
        self.format = format
        self.sender = sender

    def render(
        self, snapshot: IncidentSnapshot, *, forwarded_at: float, first: tuple[int, float] | None
    ) -> tuple[bytes, str]:
        """Render one revision sent at ``forwarded_at``.

        Args:
            snapshot: the revision.
            forwarded_at: the send time written into the document.
            first: (revision, sent time) of the first revision this receiver confirmed for the
                incident, or None; CAP Updates and Cancels reference that Alert.

        Returns:
            (document bytes, content type).

        Raises:
            EncodeError: the revision cannot be rendered in this format.
        """
        if self.format == "cap":
            body = document.render_cap(
                snapshot,
                sender=self.sender,
                forwarded_at=forwarded_at,
                first_sent_at=first[1] if first else None,
                first_revision=first[0] if first else snapshot.revision,
            )
            return body, document.CAP_MEDIA_TYPE
        return document.render_json(snapshot, forwarded_at=forwarded_at), document.JSON_MEDIA_TYPE
