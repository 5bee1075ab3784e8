"""The composition root: build every component from the configuration and run them under one TaskGroup.

Start-up order: store → triage state replayed from the journal → forwarder loaded with every
undelivered outbox entry → sources (MQTT, HTTP). Shutdown (SIGTERM, Ctrl-C) drains in the reverse
direction: stop intake (MQTT stops reading; what is in flight is stored and acknowledged, the rest
stays with the broker; HTTP ingest answers 503), let the pipeline finish, give the forwarder up to
``drain_deadline_s`` to deliver what is pending (whatever is left stays in the outbox for the next
start), then close everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
import socket
import time
from collections.abc import Callable

from ecallgw.config import Config
from ecallgw.errors import ConfigError, StoreError
from ecallgw.gateway import heap
from ecallgw.gateway.forwarder import Forwarder
from ecallgw.gateway.health import Health
from ecallgw.gateway.http_source import HttpServer
from ecallgw.gateway.intake import Decisions, Intake
from ecallgw.gateway.keyfile import load_key_file
from ecallgw.gateway.leadership import Leadership
from ecallgw.gateway.logging import configure_logging
from ecallgw.gateway.metrics import Metrics
from ecallgw.gateway.mqtt_source import MqttSource, derive_client_id
from ecallgw.gateway.pipeline import Pipeline
from ecallgw.gateway.records import CommitResult
from ecallgw.gateway.reload import Reloader
from ecallgw.gateway.replica import Replica
from ecallgw.gateway.sequencer import Sequencer
from ecallgw.gateway.sinks.kinds import SinkContext, build_sink
from ecallgw.gateway.sinks.operator_stream import OperatorStream
from ecallgw.gateway.store import SqliteStore, Store
from ecallgw.gateway.store.postgres import PostgresStore
from ecallgw.triage import TriageEngine, TriagePolicy

__all__ = ["Gateway", "run_gateway"]

log = logging.getLogger("ecallgw.app")


class Gateway:
    """The daemon: use as ``async with Gateway(config) as gw: await gw.run()``; `stop` drains it.

    Args:
        config: the validated configuration.
        configure_log: install the JSON-lines log handler on stderr (the ``serve`` command does).
    """

    def __init__(self, config: Config, *, configure_log: bool = False, tune_gc: bool = False) -> None:
        self.config = config
        self._configure_log = configure_log
        # Process-wide collector settings (heap.py): only a daemon that owns its process turns
        # them on (`serve`), never a test or a library user by inheritance.
        self._tune_gc = tune_gc
        self.metrics = Metrics()
        self.stream = OperatorStream()
        self._stack = contextlib.AsyncExitStack()
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.store: Store
        self.pipeline: Pipeline  # SQLite: the one pipeline; PostgreSQL: intake's (see self.intake)
        self.intake: Pipeline | Intake  # what sources and the operator API call
        self.replica_id = ""
        self.mqtt_client_id = ""
        self.leadership: Leadership | None = None  # PostgreSQL only
        self.sequencer: Sequencer | None = None
        self.replica: Replica | None = None
        self.forwarder: Forwarder
        self.mqtt: MqttSource | None = None
        self.http: HttpServer | None = None
        self.health: Health
        self.log_key = b""  # the key of the VIN pseudonyms in logs (set at open)

    async def __aenter__(self) -> Gateway:
        try:
            await self._open()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _open(self) -> None:
        cfg = self.config
        policy = TriagePolicy.from_mapping(cfg.triage)
        for name in policy.receivers():
            if name not in cfg.receivers:
                raise ConfigError(f"receivers.{name}", None, "triage routes to this receiver: configure it")
        # Two keys: triage's derives incident ids and must never change for a store (a replay under
        # another key gives other ids); the key file's only pseudonymises VINs in logs, kept out of
        # the store file and its backups, and can be rotated (docs/operations.md, Security).
        key_file = cfg.pipeline.pseudonym_key_file
        log_key = load_key_file(key_file) if key_file else None
        if cfg.store.backend == "postgresql":
            pg = await self._stack.enter_async_context(PostgresStore(cfg.store, self.metrics))
            self.replica_id = pg.replica_id  # configured, or claimed in the store
            self.store = pg
        else:
            self.store = await self._stack.enter_async_context(SqliteStore(cfg.store, self.metrics))
            self.replica_id = cfg.store.replica_id or _host_name()
        # SQLite: one gateway keeps the historical id "ecallgw" (its broker session) unless a
        # replica id is configured; replicas each derive their own.
        self.mqtt_client_id = derive_client_id(
            cfg.mqtt.client_id, self.replica_id if cfg.store.backend == "postgresql" else cfg.store.replica_id
        )
        secret = cfg.pipeline.pseudonym_key.reveal()
        key = hashlib.sha256(secret.encode()).digest() if secret else await self.store.key("pseudonym")
        self.log_key = log_key or key  # without a key file, logs use the triage key (as before)
        if self._configure_log:
            handler = configure_logging(cfg.log.level, self.log_key)
            self._stack.callback(logging.getLogger().removeHandler, handler)
        context = SinkContext(mqtt=cfg.mqtt, mqtt_client_id=self.mqtt_client_id)
        sinks = {name: build_sink(r, context) for name, r in cfg.receivers.items()}
        self.forwarder = await self._stack.enter_async_context(
            Forwarder(
                cfg.receivers,
                sinks,
                self.store,
                self.metrics,
                sender=cfg.pipeline.sender,
                rng=random.Random(),
            )
        )
        at_commit = self.forwarder.confirmed_at_commit  # the store writes these delivered
        self.pipeline = Pipeline(
            cfg.pipeline,
            self.store,
            TriageEngine(policy, key),
            self.metrics,
            self._committed,
            confirm_on_commit=at_commit,
        )
        self.intake = self.pipeline
        fingerprint = policy_fingerprint(cfg)
        previous = await self.store.swap_meta("policy_fingerprint", fingerprint.encode())
        if previous is not None and previous.decode() != fingerprint:
            # Replay rebuilds state under the new policy and sends nothing; incidents still open
            # may be routed differently from their next signal on.
            log.warning(
                "triage policy changed since the last start",
                extra={
                    "event": "policy_changed",
                    "previous_fingerprint": previous.decode(),
                    "fingerprint": fingerprint,
                },
            )
        if isinstance(self.store, PostgresStore):
            self._replicate(self.store, policy, key, at_commit)
        else:
            await self._load()
        if cfg.mqtt.enabled:
            self.mqtt = await self._stack.enter_async_context(
                MqttSource(
                    cfg.mqtt,
                    self.intake.submit,
                    self.metrics,
                    client_id=self.mqtt_client_id,
                )
            )
        self.health = Health(
            store=self.store,
            forwarder=self.forwarder,
            mqtt=self.mqtt,
            max_outbox_age_s=cfg.http.ready_max_outbox_age_s,
            sequencer_lag_s=_lag_of(self.replica) if self.replica is not None else None,
        )
        if cfg.http.enabled:
            self.http = await self._stack.enter_async_context(
                HttpServer(
                    cfg.http,
                    cfg.auth,
                    self.intake,
                    self.store,
                    self.stream,
                    self.metrics,
                    self.health,
                    access_log=cfg.log.access,
                    console=cfg.console,
                    psap_areas=policy.psap_areas,  # the console's area filter
                    caller=cfg,  # issue 14
                )
            )

    def _replicate(
        self, store: PostgresStore, policy: TriagePolicy, key: bytes, at_commit: frozenset[str]
    ) -> None:
        """PostgreSQL: intake here, sequencing wherever the leader is, delivery by claims."""
        cfg = self.config
        decisions = Decisions(store)
        self.intake = Intake(
            cfg.pipeline, store, self.metrics, decisions, decision_wait_s=cfg.store.decision_wait_s
        )
        self.intake.non_psap = (policy.operator_receiver, policy.test_receiver)
        self.leadership = Leadership(store, self.replica_id, cfg.store.lease_s, self.metrics)

        def make_pipeline() -> Pipeline:
            return Pipeline(
                cfg.pipeline,
                store,
                TriageEngine(policy, key),
                self.metrics,
                self._sequenced,
                confirm_on_commit=at_commit,
            )

        self.sequencer = Sequencer(cfg.pipeline, store, self.leadership, make_pipeline)
        self.sequencer.deliver = self.forwarder.add
        self.replica = Replica(
            store,
            self.forwarder,
            self.stream,
            self.sequencer,
            decisions,
            self.metrics,
            receivers=sorted(cfg.receivers),
            lease_s=cfg.store.lease_s,
            outbox_lease_s=cfg.store.outbox_lease_s,
        )
        log.info("replica of a PostgreSQL store", extra={"replica": self.replica_id})

    def _sequenced(self, result: CommitResult) -> None:
        # Outbox entries reach forwarders by claims and revisions reach SSE by NOTIFY, on every
        # replica alike; here only the confirmations at commit (the operator desk) are counted.
        if result.confirmed:
            self.forwarder.confirmed_on_commit(result.confirmed)

    async def _load(self) -> None:
        """SQLite: rebuild triage state from the journal and load every undelivered entry."""
        cfg = self.config
        t0 = time.monotonic()
        replayed = await self.pipeline.replay()
        pending = await self.store.pending_outbox()
        orphaned = [item for item in pending if item.receiver not in cfg.receivers]
        for item in orphaned:
            # A receiver removed from the configuration: its entries would stay pending forever
            # and, with them, their incidents would escape retention. Dead-letter them, loudly.
            log.error(
                "outbox entry for a receiver no longer configured: dead-lettered",
                extra={"event": "dead_letter", "receiver": item.receiver, "reason": "unknown_receiver"},
            )
            self.metrics.deliveries.labels(item.receiver, "dead_lettered").inc()
            await self.store.record_dead_letter(
                item,
                at=time.time(),
                attempts=0,
                reason="unknown_receiver",
                detail=f"receiver {item.receiver!r} is not configured",
            )
        pending = [item for item in pending if item.receiver in cfg.receivers]
        self.forwarder.add(pending)
        # The replayed triage state and the imports live as long as the process: out of the
        # cyclic collector's view (heap.py says why and how the rest is kept out of it).
        if self._tune_gc:
            heap.settle()
        log.info(
            "state rebuilt from the journal",
            extra={
                "journal_entries": replayed,
                "pending_deliveries": len(pending),
                "seconds": round(time.monotonic() - t0, 3),
            },
        )

    def _committed(self, result: CommitResult) -> None:
        if result.outbox:
            self.forwarder.add(result.outbox)
        if result.confirmed:
            self.forwarder.confirmed_on_commit(result.confirmed)
        for seq, snapshot in result.revision_seqs:
            self.stream.publish(seq, snapshot)
        for seq, desk in result.desk_seqs:  # claims, acks, notes (issue 13)
            self.stream.publish_desk(seq, desk)

    @property
    def processed(self) -> int:
        """Signals this gateway took in and stored (or quarantined) since it started."""
        return self.intake.processed

    @property
    def replayed(self) -> int:
        """Journal entries replayed to rebuild triage state (PostgreSQL: by this sequencer's term)."""
        if self.sequencer is not None:
            return self.sequencer.pipeline.replayed if self.sequencer.pipeline is not None else 0
        return self.pipeline.replayed

    async def settled(self, timeout_s: float = 10.0) -> None:
        """Wait until everything stored is triaged (PostgreSQL: sequenced, by whichever replica)."""
        if not isinstance(self.store, PostgresStore):
            return
        async with asyncio.timeout(timeout_s):
            while (await self.store.sequencer_lag())[0]:  # noqa: ASYNC110 (the store has no event)
                await asyncio.sleep(0.01)

    def stop(self) -> None:
        """Begin a graceful drain (safe to call from a signal handler)."""
        self._stopping.set()

    async def run(self) -> None:
        """Run until `stop`, then drain."""
        cfg = self.config
        async with asyncio.TaskGroup() as tg:
            if self.replica is not None and self.leadership is not None and self.sequencer is not None:
                core = [
                    tg.create_task(self.leadership.run(), name="leadership"),
                    tg.create_task(self.sequencer.run(), name="sequencer"),
                    tg.create_task(self.replica.run(), name="replica"),
                ]
            else:
                core = [
                    tg.create_task(self.pipeline.run(), name="pipeline"),
                    tg.create_task(self.pipeline.run_timers(), name="timers"),
                ]
            core += [
                tg.create_task(self.forwarder.run(), name="forwarder"),
                tg.create_task(self._retention(), name="retention"),
            ]
            if self._tune_gc:
                core.append(tg.create_task(heap.keep_frozen(), name="heap"))
            source = tg.create_task(self.mqtt.run(), name="mqtt") if self.mqtt is not None else None
            self.health.started = True
            self.ready.set()
            await self._stopping.wait()
            self.health.draining = True
            # A store that cannot write will not drain: what it holds stays unacknowledged (the
            # broker keeps it), so waiting the whole deadline for it would only delay the stop.
            deadline_s = cfg.drain_deadline_s if self.store.writable else min(cfg.drain_deadline_s, 1.0)
            log.info("draining", extra={"deadline_s": deadline_s})
            if not self.store.writable:
                log.warning(
                    "stopping while the store is not writable: what it holds is not stored and not "
                    "acknowledged; the broker redelivers it to the next start",
                    extra={"event": "store_unwritable_stop", "reason": self.store.unwritable_reason},
                )
            if self.http is not None:
                self.http.stop_intake()
            if self.mqtt is not None and source is not None:
                self.mqtt.stop()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(deadline_s):
                        await asyncio.shield(source)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline_s):
                    await self.intake.drained()
                    await self.forwarder.wait_idle()
            left = self.forwarder.pending
            log.info("stopped", extra={"undelivered_kept_in_outbox": left})
            for task in [*core, *([source] if source is not None else [])]:
                task.cancel()

    async def _retention(self) -> None:
        cfg = self.config.store
        while True:
            if self.leadership is not None and not self.leadership.leading:
                await asyncio.sleep(min(60.0, cfg.retention_interval_s))  # the leader's job
                continue
            cutoff = time.time() - cfg.retention_days * 86400.0
            try:
                margin = self.pipeline.state_window_s
                deleted = await self.store.delete_before(cutoff, journal_margin_s=margin)
            except StoreError as exc:  # full or read-only: the next round deletes it
                log.warning("retention skipped: store not writable", extra={"error": str(exc)})
                await asyncio.sleep(min(60.0, cfg.retention_interval_s))
                continue
            for table, n in deleted.items():
                if n:
                    self.metrics.retention_deleted.labels(table).inc(n)
            if any(deleted.values()):
                log.info("retention deleted old data", extra={"rows": deleted})
            await asyncio.sleep(cfg.retention_interval_s)


def _lag_of(replica: Replica) -> Callable[[], float]:
    return lambda: replica.lag_s


def _host_name() -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname()).strip("-")[:64] or "replica"


def policy_fingerprint(config: Config) -> str:
    """A short digest of what decides routing: the ``[triage]`` table and the receivers' names."""
    text = json.dumps(
        {"triage": dict(config.triage), "receivers": sorted(config.receivers)}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


async def run_gateway(
    config: Config,
    *,
    on_ready: Callable[[Gateway], None] | None = None,
    reload: Callable[[], Config] | None = None,
) -> None:
    """Run a gateway until SIGTERM or SIGINT, then drain (the ``serve`` command's body).

    With ``reload`` (loads the configuration again), SIGHUP applies what can change while running
    (`gateway.reload`).
    """
    import signal

    import prometheus_client

    # Process-wide, so the daemon's body sets it: a *_created series per counter and histogram
    # doubles the series count for a timestamp that Prometheus itself records.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    loop = asyncio.get_running_loop()
    async with Gateway(config, configure_log=True, tune_gc=config.pipeline.gc_tuning) as gw:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gw.stop)
        reloader = Reloader(gw, reload) if reload is not None else None
        if reloader is not None:
            loop.add_signal_handler(signal.SIGHUP, reloader.request)
        if on_ready is not None:
            loop.call_soon(on_ready, gw)
        try:
            await gw.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if reloader is not None:
                await reloader.aclose()
