"""The forwarder: deliver outbox entries per receiver, each incident's revisions in order, with retries.

Per receiver (a *lane*): up to ``concurrency`` deliveries in flight, but never two of one incident,
so revision 2 is only sent once revision 1 was confirmed or dead-lettered. Each delivery is retried
with capped, jittered exponential backoff (`retry.backoff_s`); a receiver's Retry-After is honoured as
the least delay and holds the whole lane (through its breaker), since it speaks for the receiver.
A circuit breaker per receiver stops attempts after ``breaker_threshold`` consecutive failures, lets
one probe through after ``breaker_probe_initial_s`` and doubles that wait after each failed probe up
to ``breaker_cooldown_s`` (`probe_delay_s`), so a short outage costs about its own length, not a whole
cooldown; deliveries waiting on an open breaker spend no attempts, so an outage delays them without
dead-lettering them. After ``max_attempts`` (or at once on
a permanent error) the entry is dead-lettered with its reason, a metric and an ERROR log line.

A delivery is recorded in the store only after the receiver confirmed it (Alertmanager's order): a
crash between the two means one more delivery with the same ``Idempotency-Key``, never a lost one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

from ecallgw.codecs.renderers import Renderer, renderer
from ecallgw.config import ReceiverConfig
from ecallgw.errors import (
    DeliveryError,
    EncodeError,
    PermanentDeliveryError,
    StoreError,
    TransientDeliveryError,
)
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.records import OutboxItem
from ecallgw.gateway.retry import backoff_s
from ecallgw.gateway.sinks import Sink
from ecallgw.gateway.store import Store
from ecallgw.model import IncidentSnapshot

__all__ = ["CircuitBreaker", "Forwarder", "probe_delay_s"]

log = logging.getLogger("ecallgw.forwarder")

T = TypeVar("T")


def probe_delay_s(failed_probes: int, *, initial_s: float, cap_s: float) -> float:
    """How long an open breaker waits before its next probe.

    ``initial_s`` after the breaker opened, doubling with each failed probe since, never above
    ``cap_s``: a receiver back after a short outage is found within about ``initial_s``, while one
    that stays down is asked only once per ``cap_s``.

    Args:
        failed_probes: probes that failed since the breaker last closed (0 when it just opened).
        initial_s: the first wait.
        cap_s: the longest wait.

    Returns:
        The wait in seconds.
    """
    # Exponent bounded: past ~64 doublings any positive initial is far beyond every sane cap,
    # and 2.0 ** n for large n would overflow.
    return min(cap_s, initial_s * 2.0 ** min(max(0, failed_probes), 64))


class CircuitBreaker:
    """closed → (threshold consecutive failures) → open → (wait) → half-open: one probe.

    The wait is `probe_delay_s`: ``probe_initial_s`` after opening, doubled after each failed
    probe up to ``cooldown_s``, back to ``probe_initial_s`` once an attempt succeeds.

    Args:
        threshold: consecutive failures that open it.
        cooldown_s: the longest wait before a probe (the cap of the doubling).
        clock: monotonic time source.
        probe_initial_s: the first wait after opening; None means ``cooldown_s`` (a fixed wait).
    """

    def __init__(
        self,
        threshold: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        probe_initial_s: float | None = None,
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.probe_initial_s = cooldown_s if probe_initial_s is None else min(probe_initial_s, cooldown_s)
        self._clock = clock
        self.failures = 0
        self.failed_probes = 0
        self.open_until: float | None = None
        self._probing = False
        self._changed = asyncio.Event()

    @property
    def wait_s(self) -> float:
        """The wait before the next probe, given the probes failed so far."""
        return probe_delay_s(self.failed_probes, initial_s=self.probe_initial_s, cap_s=self.cooldown_s)

    @property
    def state(self) -> str:
        """closed, open or half-open."""
        if self.open_until is None:
            return "closed"
        return "half-open" if self._clock() >= self.open_until else "open"

    async def admit(self) -> bool:
        """Wait until an attempt is allowed; True when this caller is the half-open probe."""
        while True:
            if self.open_until is None:
                return False
            wait = self.open_until - self._clock()
            if wait <= 0 and not self._probing:
                self._probing = True
                return True
            self._changed.clear()
            try:
                async with asyncio.timeout(wait if wait > 0 else None):
                    await self._changed.wait()
            except TimeoutError:
                pass

    def success(self) -> None:
        """An attempt succeeded: close, and start the next outage's waits from the initial one."""
        self.failures = 0
        self.failed_probes = 0
        if self.open_until is not None:
            self.open_until = None
            self._probing = False
            self._changed.set()

    def hold(self, until: float) -> None:
        """The receiver asked us to wait (Retry-After): no attempt before ``until``, then one probe."""
        self.open_until = max(self.open_until or 0.0, until)
        self._probing = False
        self._changed.set()

    def release(self) -> None:
        """The probe ended without a verdict on the receiver (e.g. the document failed to render).

        Without this, a probe that neither succeeded nor failed would keep the breaker half-open with
        ``_probing`` set, and every later `admit` would wait forever.
        """
        if self._probing:
            self._probing = False
            self._changed.set()

    def failure(self) -> None:
        """An attempt failed: count it; open (again) at the threshold or when the probe failed."""
        self.failures += 1
        if self._probing:
            # Only a failed probe lengthens the wait: the failures of requests already in flight
            # when the breaker opened say nothing new about how long the receiver stays down.
            self.failed_probes += 1
        if self._probing or self.failures >= self.threshold:
            self.open_until = self._clock() + self.wait_s
            self._probing = False
            self._changed.set()


class _Lane:
    """One receiver: ordering per incident, bounded concurrency, retries, breaker."""

    def __init__(self, fwd: Forwarder, config: ReceiverConfig, sink: Sink, renderer: Renderer) -> None:
        self.fwd = fwd
        self.config = config
        self.sink = sink
        self.renderer = renderer  # looked up once here: the format costs nothing per message
        # The store confirms this receiver's entries in their commit: no worker, no rendering.
        self.at_commit = sink.confirmed_at_commit
        # incident -> (revision, sent time) of the first revision this receiver confirmed (CAP refs)
        self.first: dict[str, tuple[int, float]] = {}
        self.breaker = CircuitBreaker(
            config.breaker_threshold,
            config.breaker_cooldown_s,
            probe_initial_s=config.breaker_probe_initial_s,
        )
        self.ready: asyncio.Queue[OutboxItem] = asyncio.Queue()
        self.waiting: dict[str, collections.deque[OutboxItem]] = {}  # incident -> revisions queued behind
        self.pending: dict[int, float] = {}  # outbox id -> signal_at, insertion ordered (oldest first)
        self.idle = asyncio.Event()
        self.idle.set()
        m = fwd.metrics
        name = config.name
        self.m_delivered = m.deliveries.labels(name, "delivered")
        self.m_dead = m.deliveries.labels(name, "dead_lettered")
        self.m_ok = m.delivery_attempts.labels(name, "ok")
        self.m_transient = m.delivery_attempts.labels(name, "transient")
        self.m_permanent = m.delivery_attempts.labels(name, "permanent")
        self.m_latency = m.end_to_end.labels(name)
        self.m_breaker = m.breaker_open.labels(name)

    def add(self, item: OutboxItem) -> None:
        if item.id in self.pending:
            return
        if self.at_commit:
            # Only an entry written before this receiver was confirmed at commit gets here (the
            # store writes the others delivered): the revision is committed, so it is delivered.
            self._confirmed(item, tries=1, status=None, sent_at=None)
            return
        self.pending[item.id] = item.signal_at
        self.idle.clear()
        queued = self.waiting.get(item.incident_id)
        if queued is None:
            self.waiting[item.incident_id] = collections.deque()
            self.ready.put_nowait(item)
        else:
            queued.append(item)

    def _done(self, item: OutboxItem) -> None:
        self.pending.pop(item.id, None)
        queued = self.waiting.get(item.incident_id)
        if queued:
            self.ready.put_nowait(queued.popleft())
        else:
            self.waiting.pop(item.incident_id, None)
            self.first.pop(item.incident_id, None)  # reloaded from the store if the incident returns
        if not self.pending:
            self.idle.set()

    async def worker(self) -> None:
        while True:
            item = await self.ready.get()
            try:
                await self._deliver(item)
            finally:
                self._done(item)

    async def _deliver(self, item: OutboxItem) -> None:
        cfg = self.config
        snapshot = item.snapshot
        if snapshot is None:
            key = (item.incident_id, item.revision)
            loaded = await self._read(lambda: self.fwd.store.load_revisions([key]))
            snapshot = loaded.get((item.incident_id, item.revision))
            if snapshot is None:
                await self._dead(
                    item, 0, PermanentDeliveryError(cfg.name, "missing_revision", "not in store")
                )
                return
        attempt = 0  # attempts that count towards max_attempts
        tries = 0  # every request sent, for the record
        while True:
            probe = await self.breaker.admit()
            tries += 1
            try:
                verdict = await self._attempt(item, snapshot, probe=probe, tries=tries, attempt=attempt)
            finally:
                # Every exit releases the probe (a no-op once success/failure decided it), so a
                # probe ending in a permanent error or an exception cannot wedge the lane.
                if probe:
                    self.breaker.release()
                self.m_breaker.set(0 if self.breaker.open_until is None else 1)
            if verdict is None:
                return
            attempt = verdict

    async def _attempt(
        self, item: OutboxItem, snapshot: IncidentSnapshot, *, probe: bool, tries: int, attempt: int
    ) -> int | None:
        """One request: None when the entry is settled (confirmed or dead), else the attempts so far."""
        cfg = self.config
        renderer = self.renderer
        sent_at = time.time()
        first = self.first.get(item.incident_id)
        if first is None and item.revision > 1 and renderer.needs_first:
            first = await self._read(lambda: self.fwd.store.first_delivery(item.incident_id, cfg.name))
        try:
            body = renderer.render(snapshot, forwarded_at=sent_at, first=first)
        except EncodeError as exc:
            await self._dead(item, tries, PermanentDeliveryError(cfg.name, "render", str(exc)))
            return None
        except Exception as exc:
            # A renderer bug must cost this document, not the worker and with it the daemon
            # (which would die again on the same entry after every restart).
            log.exception("rendering a document failed", extra={"receiver": cfg.name})
            detail = f"{type(exc).__name__}: {exc}"
            await self._dead(item, tries, PermanentDeliveryError(cfg.name, "render", detail))
            return None
        # A failed probe says the receiver is still down, not that this document fails: it does
        # not count, so an outage delays deliveries without dead-lettering them.
        attempt += 0 if probe else 1
        try:
            try:
                status = await self.sink.deliver(item, body, renderer.media_type)
            except DeliveryError:
                raise
            except Exception as exc:
                # A sink broke its contract (only DeliveryError): retry it like a transient
                # failure rather than let the exception kill the worker and the daemon.
                log.exception("sink raised an unexpected error", extra={"receiver": cfg.name})
                raise TransientDeliveryError(
                    cfg.name, "internal", f"{type(exc).__name__}: {exc}"[:500]
                ) from exc
        except PermanentDeliveryError as exc:
            self.m_permanent.inc()
            # The receiver answered and refused this document: it is up, so a breaker probe
            # ending here closes the breaker (the other deliveries may go), then dead-letter.
            self.breaker.success()
            await self._dead(item, tries, exc)
            return None
        except TransientDeliveryError as exc:
            self.m_transient.inc()
            self.breaker.failure()
            if attempt >= cfg.max_attempts:
                await self._dead(item, tries, exc)
                return None
            delay = backoff_s(
                max(1, attempt), base_s=cfg.backoff_base_s, cap_s=cfg.backoff_cap_s, rng=self.fwd.rng
            )
            if exc.retry_after_s is not None:
                # Retry-After speaks for the receiver, not for this request: hold the whole lane.
                # Capped at the backoff cap: a receiver must not park an emergency lane for an hour.
                retry_after = min(exc.retry_after_s, cfg.backoff_cap_s)
                delay = max(delay, retry_after)
                self.breaker.hold(time.monotonic() + retry_after)
            log.warning(
                "delivery failed, will retry",
                extra={
                    "receiver": cfg.name,
                    "reason": exc.reason,
                    "attempt": tries,
                    "retry_in_s": round(delay, 3),
                    "incident": item.incident_id,
                    "revision": item.revision,
                },
            )
            await asyncio.sleep(delay)
            return attempt
        self._confirmed(item, tries=tries, status=status, sent_at=sent_at)
        return None

    async def _read(self, read: Callable[[], Awaitable[T]]) -> T:
        """A store read a delivery needs, retried while the store cannot answer.

        A replica's PostgreSQL may restart under it: the entry stays claimed (and its lease runs
        out if this takes long, so another replica may deliver it under the same key) rather than
        the worker, and with it the daemon, ending on the error.
        """
        delay = 0.1
        while True:
            try:
                return await read()
            except StoreError as exc:
                log.warning(
                    "store read failed; retrying", extra={"receiver": self.config.name, "error": str(exc)}
                )
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    def count_confirmed(self, item: OutboxItem, confirmed_at: float) -> None:
        """Metrics of one confirmed delivery."""
        self.m_ok.inc()
        self.m_latency.observe(max(0.0, confirmed_at - item.signal_at))
        self.m_delivered.inc()
        self.fwd.delivered += 1

    def _confirmed(self, item: OutboxItem, *, tries: int, status: int | None, sent_at: float | None) -> None:
        confirmed_at = time.time()
        self.breaker.success()
        self.count_confirmed(item, confirmed_at)
        if sent_at is not None and item.incident_id not in self.first:
            self.first[item.incident_id] = (item.revision, sent_at)
        # Not awaited: the receiver has it, and the next revision need not wait for our
        # bookkeeping. Store jobs run in order, so later reads and the shutdown see it.
        try:
            recorded = self.fwd.store.record_delivered_nowait(
                item, at=confirmed_at, attempts=tries, status=status, sent_at=sent_at
            )
        except StoreError as exc:
            # Sent again after a restart, with the same Idempotency-Key: nothing is lost.
            log.error("could not record a delivery", extra={"error": str(exc)})
            return
        recorded.add_done_callback(_log_record_failure)

    async def _dead(self, item: OutboxItem, attempts: int, exc: DeliveryError) -> None:
        self.m_dead.inc()
        self.fwd.dead_lettered += 1
        log.error(
            "delivery dead-lettered",
            extra={
                "event": "dead_letter",
                "receiver": self.config.name,
                "reason": exc.reason,
                "attempts": attempts,
                "incident": item.incident_id,
                "revision": item.revision,
                "detail": exc.detail[:200],
            },
        )
        await self._record(
            self.fwd.store.record_dead_letter(
                item, at=time.time(), attempts=attempts, reason=exc.reason, detail=exc.detail[:500]
            )
        )

    async def _record(self, write: object) -> None:
        try:
            await write  # type: ignore[misc]
        except StoreError:
            # The delivery happened; failing to note it means it is sent again after a restart
            # (same Idempotency-Key). Nothing is lost, so log and go on.
            log.exception("could not record a delivery outcome")


def _log_record_failure(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        # Sent again after a restart, with the same Idempotency-Key: nothing is lost.
        log.error("could not record a delivery", extra={"error": str(fut.exception())})


class Forwarder:
    """Deliver outbox entries to every configured receiver.

    Use as an async context manager (closes the sinks), `add` entries as they are committed, and run
    `run` in the application's TaskGroup.

    Args:
        receivers: receiver configurations by name.
        sinks: one sink per receiver name.
        store: where outcomes are recorded and unloaded revisions read.
        metrics: the gateway's metrics.
        sender: the gateway's identity in documents (CAP ``sender``, EIDO issuing element).
        rng: jitter source.
    """

    def __init__(
        self,
        receivers: Mapping[str, ReceiverConfig],
        sinks: Mapping[str, Sink],
        store: Store,
        metrics: Metrics,
        *,
        sender: str = "ecallgw@localhost",
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.lanes = {
            name: _Lane(self, cfg, sinks[name], renderer(cfg.format, sender=sender))
            for name, cfg in receivers.items()
        }
        self.delivered = 0
        self.dead_lettered = 0
        metrics.outbox_source = self.outbox_gauges

    async def __aenter__(self) -> Forwarder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for lane in self.lanes.values():
            await lane.sink.aclose()

    def add(self, items: Iterable[OutboxItem]) -> None:
        """Schedule committed outbox entries (already durable; a duplicate id is ignored)."""
        for item in items:
            lane = self.lanes.get(item.receiver)
            if lane is None:
                # Start-up checks that triage routes only to configured receivers; a stored entry
                # for a receiver removed from the configuration since stays pending and visible.
                log.error("outbox entry for an unconfigured receiver", extra={"receiver": item.receiver})
                continue
            lane.add(item)

    @property
    def confirmed_at_commit(self) -> frozenset[str]:
        """Receivers whose sink is confirmed at commit (`Sink.confirmed_at_commit`): the pipeline
        passes them to the store as ``Unit.confirm_on_commit``."""
        return frozenset(name for name, lane in self.lanes.items() if lane.at_commit)

    def confirmed_on_commit(self, items: Iterable[OutboxItem]) -> None:
        """Count entries the store wrote delivered with their commit (`Unit.confirm_on_commit`)."""
        for item in items:
            lane = self.lanes.get(item.receiver)
            if lane is not None:
                lane.count_confirmed(item, time.time())

    def outbox_gauges(self, now: float) -> list[tuple[str, int, float]]:
        """(receiver, depth, oldest pending age) for the metrics."""
        out = []
        for name, lane in self.lanes.items():
            oldest = next(iter(lane.pending.values()), None)
            out.append((name, len(lane.pending), max(0.0, now - oldest) if oldest is not None else 0.0))
        return out

    def pending_ids(self) -> list[int]:
        """Outbox ids this forwarder holds and has not finished (their claims are renewed)."""
        return [i for lane in self.lanes.values() for i in lane.pending]

    @property
    def pending(self) -> int:
        """Entries not yet delivered or dead-lettered, over all receivers."""
        return sum(len(lane.pending) for lane in self.lanes.values())

    async def run(self) -> None:
        """Run every lane's workers until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for lane in self.lanes.values():
                for _ in range(0 if lane.at_commit else lane.config.concurrency):
                    tg.create_task(lane.worker())

    async def wait_idle(self) -> None:
        """Wait until nothing is pending (for drains and tests)."""
        while not all(lane.idle.is_set() for lane in self.lanes.values()):
            for lane in self.lanes.values():
                await lane.idle.wait()
