"""The operators' event stream: every committed revision, fanned out to Server-Sent-Events clients.

Each event's id is the revision's global sequence number in the store, so a client that reconnects
with ``Last-Event-ID`` is served what it missed from the store, then live events. A client that
falls more than ``buffer`` events behind is disconnected (it resumes from its last id) rather than
slowing the gateway down.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ecallgw.gateway.records import OutboxItem
from ecallgw.model import IncidentSnapshot

__all__ = ["OperatorSink", "OperatorStream", "StreamEvent"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEvent:
    """One revision on the stream."""

    seq: int
    snapshot: IncidentSnapshot


class OperatorStream:
    """Fan-out of committed revisions to subscriber queues."""

    def __init__(self, buffer: int = 1000) -> None:
        self._buffer = buffer
        self._subscribers: set[asyncio.Queue[StreamEvent | None]] = set()
        self.last_seq = 0

    def subscribe(self) -> asyncio.Queue[StreamEvent | None]:
        """A new subscriber queue; ``None`` on it means 'you fell behind, reconnect'."""
        q: asyncio.Queue[StreamEvent | None] = asyncio.Queue(self._buffer + 1)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[StreamEvent | None]) -> None:
        """Forget a subscriber."""
        self._subscribers.discard(q)

    @property
    def subscribers(self) -> int:
        """Connected subscribers."""
        return len(self._subscribers)

    def publish(self, seq: int, snapshot: IncidentSnapshot) -> None:
        """Hand one committed revision to every subscriber (never blocks)."""
        self.last_seq = max(self.last_seq, seq)
        event = StreamEvent(seq=seq, snapshot=snapshot)
        for q in list(self._subscribers):
            if q.qsize() >= self._buffer:
                self._subscribers.discard(q)
                q.put_nowait(None)
            else:
                q.put_nowait(event)

    def close(self) -> None:
        """End every subscription (shutdown)."""
        for q in list(self._subscribers):
            self._subscribers.discard(q)
            if not q.full():
                q.put_nowait(None)


class OperatorSink:
    """The ``operator`` receiver kind: a revision is with the operators once it is committed.

    Committed revisions are on the operator stream and in the incidents API already, so the store
    records the delivery in the same commit (`Sink.confirmed_at_commit`); the outbox still shows
    that the operator desk was routed the revision.
    """

    confirmed_at_commit = True

    async def deliver(self, item: OutboxItem, body: bytes, content_type: str) -> int | None:
        """Never called for a sink confirmed at commit; confirms, should anything call it."""
        return None

    async def aclose(self) -> None:
        """Nothing to release."""
