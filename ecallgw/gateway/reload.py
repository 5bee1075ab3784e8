"""SIGHUP: read the configuration file again and apply what can change while the gateway runs.

Applied at once: ``[auth]`` (new tokens accepted, removed ones refused from the next request on,
console sessions opened with them end); a receiver's settings (URL, token, TLS files, format,
timeouts, retries, breaker) when its kind and concurrency stay: its lane gets a new sink and keeps
its queue, ordering and pending entries, the old sink closes once its requests are over; and, on
SQLite, the ``[triage]`` policy (`Pipeline.swap_engine`: the new engine rebuilds its state from
the journal as a start would, then takes over between two signals), unless it routes to a receiver
the running forwarder has no lane for. Everything else is reported as "restart to apply": a receiver
added, removed, or changed in kind or concurrency (lanes and their workers are made at start), the
policy on PostgreSQL (every replica's sequencer must change it at one journal position: a rolling
restart), and the other tables.
The outcome is one log line: what changed, or the file's error and "kept the running
configuration". A bad file never stops the daemon.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import types
from collections.abc import Callable
from typing import TYPE_CHECKING

from ecallgw.codecs.renderers import Renderer, renderer
from ecallgw.config import Config, ReceiverConfig
from ecallgw.errors import ConfigError, StoreError
from ecallgw.gateway.forwarder import CircuitBreaker
from ecallgw.gateway.sinks import Sink
from ecallgw.gateway.sinks.kinds import SinkContext, build_sink
from ecallgw.triage import TriageEngine, TriagePolicy

if TYPE_CHECKING:
    from ecallgw.app import Gateway

__all__ = ["Reloader"]

log = logging.getLogger("ecallgw.reload")

_APPLIED = frozenset({"auth", "triage", "receivers"})


class Reloader:
    """Re-reads the configuration on `request` (the SIGHUP handler) and applies it to ``gateway``.

    Args:
        gateway: the running gateway.
        load: loads and validates the configuration as ``serve`` did (file, environment, --set).
    """

    def __init__(self, gateway: Gateway, load: Callable[[], Config]) -> None:
        self._gw = gateway
        self._load = load
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._closing: set[asyncio.Task[None]] = set()  # replaced sinks waiting to close
        self.reloads = 0  # completed, applied or refused (tests wait on it)

    async def aclose(self) -> None:
        """At the stop: end a reload under way and close replaced sinks now, not after their delay."""
        tasks = [*self._closing, *([self._task] if self._task is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def request(self) -> None:
        """Schedule a reload (safe from a signal handler); one at a time, a second one after it."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="config-reload")

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await self.reload()
            except Exception:  # never the daemon's end
                log.exception("configuration reload failed: kept the running configuration")
            self.reloads += 1
            if not self._again:
                return

    async def reload(self) -> None:
        """Load, check and apply; log the outcome in one line."""
        gw = self._gw
        old = gw.config
        try:
            new = self._load()
            policy = TriagePolicy.from_mapping(new.triage)
            for name in policy.receivers():  # as at start (Gateway._open)
                if name not in new.receivers:
                    raise ConfigError(
                        f"receivers.{name}", None, "triage routes to this receiver: configure it"
                    )
            swaps, restart_receivers = self._receivers(old, new)  # sinks built: a TLS file may be bad
        except ConfigError as exc:
            log.error(
                "configuration reload refused: kept the running configuration",
                extra={"event": "config_reload_failed", "error": str(exc)},
            )
            return
        applied: list[str] = []
        kept: list[str] = []  # changed, not applied now
        restart = sorted(
            f.name
            for f in dataclasses.fields(Config)
            if f.name not in _APPLIED and getattr(new, f.name) != getattr(old, f.name)
        )
        extra: dict[str, object] = {}
        if new.auth != old.auth:
            if gw.http is not None:
                gw.http.reload_auth(new.auth)
            before = {t.name for t in old.auth.tokens}
            after = {t.name for t in new.auth.tokens}
            # Holders' names, never tokens; a changed token or role under the same name counts as changed.
            extra["tokens_added"] = sorted(after - before)
            extra["tokens_removed"] = sorted(before - after)
            extra["tokens_changed"] = sorted(n for n in before & after if _entry(old, n) != _entry(new, n))
            applied.append("auth")
        receivers_now = dict(old.receivers)
        for name, (cfg, sink, rendering) in swaps.items():
            self._swap_receiver(cfg, sink, rendering)
            receivers_now[name] = cfg
            applied.append(f"receivers.{name}")
        restart += restart_receivers
        triage_now = old.triage
        if dict(new.triage) != dict(old.triage):
            outcome = await self._policy(new, policy)
            if outcome is None:
                applied.append("triage")
                triage_now = new.triage
            else:
                kept.append(f"triage ({outcome})")
        gw.config = dataclasses.replace(
            old, auth=new.auth, triage=triage_now, receivers=types.MappingProxyType(receivers_now)
        )
        log.info(
            "configuration reloaded"
            if applied or not (restart or kept)
            else "configuration reloaded: nothing applied",
            extra={
                "event": "config_reloaded",
                "applied": applied,
                "not_applied": kept,
                "restart_to_apply": restart,
                **extra,
            },
        )

    async def _policy(self, new: Config, policy: TriagePolicy) -> str | None:
        """Swap the triage policy; None when done, else why not."""
        gw = self._gw
        running = gw.config
        secret = running.pipeline.pseudonym_key.reveal()
        if gw.sequencer is not None:
            return "replicas on PostgreSQL: restart to apply"
        missing = sorted(set(policy.receivers()) - set(gw.forwarder.lanes))
        if missing:
            return f"routes to receivers.{missing[0]}, which runs only after a restart; restart to apply"
        try:
            key = hashlib.sha256(secret.encode()).digest() if secret else await gw.store.key("pseudonym")
            wrong = await gw.pipeline.swap_engine(TriageEngine(policy, key))
            if wrong:
                return (
                    f"it would rebuild {len(wrong)} open incident(s) differently from the store, "
                    f"e.g. {wrong[0]}; restart to apply"
                )
            from ecallgw.app import policy_fingerprint  # the start's check: no second warning then

            await gw.store.swap_meta("policy_fingerprint", policy_fingerprint(new).encode())
        except StoreError as exc:
            return f"store: {exc}; send SIGHUP again later"
        return None

    def _receivers(
        self, old: Config, new: Config
    ) -> tuple[dict[str, tuple[ReceiverConfig, Sink, Renderer]], list[str]]:
        """Receivers whose settings can be swapped (with their new sink and renderer), and the
        changes that need a restart.

        Raises:
            ConfigError: a new sink cannot be built (a TLS file, say): nothing is applied.
        """
        gw = self._gw
        context = SinkContext(mqtt=old.mqtt, mqtt_client_id=gw.mqtt_client_id)
        swaps: dict[str, tuple[ReceiverConfig, Sink, Renderer]] = {}
        restart: list[str] = []
        for name in sorted(set(old.receivers) | set(new.receivers)):
            before, after = old.receivers.get(name), new.receivers.get(name)
            if before == after:
                continue
            if (
                before is None
                or after is None
                or name not in gw.forwarder.lanes
                or (before.kind, before.concurrency) != (after.kind, after.concurrency)
            ):
                restart.append(f"receivers.{name}")
                continue
            swaps[name] = (
                after,
                build_sink(after, context),
                renderer(after.format, sender=old.pipeline.sender),
            )
        return swaps, restart

    def _swap_receiver(self, cfg: ReceiverConfig, sink: Sink, rendering: Renderer) -> None:
        """Give a receiver's lane its new settings and sink; the old sink closes once idle."""
        lane = self._gw.forwarder.lanes[cfg.name]
        old_cfg, old_sink = lane.config, lane.sink
        lane.config, lane.sink, lane.renderer = cfg, sink, rendering
        breaker = (cfg.breaker_threshold, cfg.breaker_cooldown_s, cfg.breaker_probe_initial_s)
        if breaker != (
            old_cfg.breaker_threshold,
            old_cfg.breaker_cooldown_s,
            old_cfg.breaker_probe_initial_s,
        ):
            lane.breaker = CircuitBreaker(
                cfg.breaker_threshold, cfg.breaker_cooldown_s, probe_initial_s=cfg.breaker_probe_initial_s
            )
        task = asyncio.get_running_loop().create_task(_close_later(old_sink, old_cfg.timeout_s + 1.0))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


async def _close_later(sink: Sink, delay_s: float) -> None:
    """Close a replaced sink once the requests it had in flight are over (they time out by then)."""
    try:
        await asyncio.sleep(delay_s)
    finally:  # also when the gateway stops first (`Reloader.aclose`)
        await _close(sink)


async def _close(sink: Sink) -> None:
    try:
        await sink.aclose()
    except Exception as exc:  # a connection that fails to close is no reason to log a traceback
        log.warning("closing a replaced receiver's connections failed", extra={"error": str(exc)})


def _entry(config: Config, name: str) -> object:
    return [t for t in config.auth.tokens if t.name == name]
