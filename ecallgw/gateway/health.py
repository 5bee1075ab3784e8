"""Readiness: broker connected, store writable, outbox not stuck (``/readyz``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ecallgw.gateway.forwarder import Forwarder
from ecallgw.gateway.mqtt_source import MqttSource
from ecallgw.gateway.store import Store

__all__ = ["Health"]


class Health:
    """The checks behind ``/readyz``.

    Args:
        store: must be writable.
        forwarder: its oldest pending entry must be younger than ``max_outbox_age_s``.
        mqtt: when the MQTT source is enabled, it must be connected.
        max_outbox_age_s: outbox age (and, for replicas, age of the oldest unsequenced signal)
            beyond which the gateway reports itself stuck.
        clock: wall clock.
        sequencer_lag_s: replicas: the age of the oldest signal no sequencer has taken yet.
    """

    def __init__(
        self,
        *,
        store: Store,
        forwarder: Forwarder,
        mqtt: MqttSource | None,
        max_outbox_age_s: float,
        clock: Callable[[], float] = time.time,
        sequencer_lag_s: Callable[[], float] | None = None,
    ) -> None:
        self._store = store
        self._forwarder = forwarder
        self._mqtt = mqtt
        self._max_age = max_outbox_age_s
        self._clock = clock
        self._lag = sequencer_lag_s
        self.started = False
        self.draining = False  # set on SIGTERM: a load balancer must stop sending us traffic

    def checks(self) -> dict[str, bool]:
        """Each check by name; ready when all are true."""
        gauges = self._forwarder.outbox_gauges(self._clock())
        out = {
            "started": self.started,
            "not_draining": not self.draining,
            "store_writable": self._store.writable,
            "outbox_flowing": all(age <= self._max_age for _, _, age in gauges),
        }
        if self._mqtt is not None:
            out["mqtt_connected"] = self._mqtt.connected.is_set()
        if self._lag is not None:
            # Replicas: what this one stores must reach a sequencer (any replica's) in time.
            out["sequencer_keeping_up"] = self._lag() <= self._max_age
        return out

    def reasons(self, checks: dict[str, bool]) -> dict[str, str]:
        """Why the failing checks fail, where more can be said than the check's name."""
        out: dict[str, str] = {}
        if not checks.get("store_writable", True):
            out["store_writable"] = self._store.unwritable_reason or "the store is not running"
        return out
