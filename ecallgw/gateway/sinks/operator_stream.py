"""The operators' event stream: every committed revision, fanned out to Server-Sent-Events clients.

Each event's id is the revision's global sequence number in the store, so a client that reconnects
with ``Last-Event-ID`` is served what it missed from the store, then live events. A client that
falls more than ``buffer`` events behind is disconnected (it resumes from its last id) rather than
slowing the gateway down.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ecallgw.gateway.records import DeskRecord, OutboxItem
from ecallgw.model import IncidentSnapshot

__all__ = ["DeskEvent", "OperatorSink", "OperatorStream", "StreamEvent"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEvent:
    """One revision on the stream."""

    seq: int
    snapshot: IncidentSnapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class DeskEvent:
    """One change at the operator desk (claim, release, ack, note; issue 13), numbered in the
    revisions' sequence; only subscribers that asked for them (`subscribe_desk`) get them."""

    seq: int
    record: DeskRecord


Event = StreamEvent | DeskEvent


class OperatorStream:
    """Fan-out of committed revisions (and desk changes) to subscriber queues."""

    def __init__(self, buffer: int = 1000) -> None:
        self._buffer = buffer
        self._subscribers: set[asyncio.Queue[StreamEvent | None]] = set()
        self._desk: set[asyncio.Queue[Event | None]] = set()
        self.last_seq = 0

    def subscribe(self) -> asyncio.Queue[StreamEvent | None]:
        """A new subscriber queue; ``None`` on it means 'you fell behind, reconnect'."""
        q: asyncio.Queue[StreamEvent | None] = asyncio.Queue(self._buffer + 1)
        self._subscribers.add(q)
        return q

    def subscribe_desk(self) -> asyncio.Queue[Event | None]:
        """A subscriber queue of revisions and desk changes (the operators' SSE stream)."""
        q: asyncio.Queue[Event | None] = asyncio.Queue(self._buffer + 1)
        self._desk.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Any]) -> None:
        """Forget a subscriber."""
        self._subscribers.discard(q)
        self._desk.discard(q)

    @property
    def subscribers(self) -> int:
        """Connected subscribers."""
        return len(self._subscribers) + len(self._desk)

    def publish(self, seq: int, snapshot: IncidentSnapshot) -> None:
        """Hand one committed revision to every subscriber (never blocks)."""
        self.last_seq = max(self.last_seq, seq)
        if not self._subscribers and not self._desk:
            return  # nobody listening (a resume reads the store): no event per revision
        event = StreamEvent(seq=seq, snapshot=snapshot)
        _fan(self._subscribers, event, self._buffer)
        if self._desk:
            _fan(self._desk, event, self._buffer)

    def publish_desk(self, seq: int, record: DeskRecord) -> None:
        """Hand one committed desk change to every desk subscriber (never blocks)."""
        self.last_seq = max(self.last_seq, seq)
        _fan(self._desk, DeskEvent(seq=seq, record=record), self._buffer)

    def close(self) -> None:
        """End every subscription (shutdown)."""
        queues: list[asyncio.Queue[Any]] = [*self._subscribers, *self._desk]
        for q in queues:
            self.unsubscribe(q)
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


def _fan(subscribers: set[Any], event: Event, buffer: int) -> None:
    # A subscriber that fell ``buffer`` events behind is dropped (it resumes by its last id).
    for q in list(subscribers):
        if q.qsize() >= buffer:
            subscribers.discard(q)
            q.put_nowait(None)
        else:
            q.put_nowait(event)
