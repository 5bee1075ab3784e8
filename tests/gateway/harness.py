"""Run a whole gateway in the test process: its configuration for tests, and a running context."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from ecallgw.app import Gateway
from ecallgw.config import Config, load_config
from tests.gateway.broker import Mosquitto, free_port

PROVIDER_TOKEN = "provider-acme-token-0001"
OTHER_PROVIDER_TOKEN = "provider-other-token-0002"
OPERATOR_TOKEN = "operator-alice-token-0003"
SRE_TOKEN = "sre-bob-token-000000004"


STORE_OVERRIDE: dict[str, object] | None = None
"""The ``[store]`` table of every gateway_config while a test runs on PostgreSQL (conftest's
``store_backend`` fixture sets it); None: SQLite in the test's tmp dir."""


def gateway_config(
    tmp_path: Path,
    *,
    broker: Mosquitto | None,
    psap_url: str,
    psap_format: str = "json",
    http_port: int | None = None,
    client_id: str = "gw-test",
    **sections: dict[str, object],
) -> Config:
    """A gateway configuration for tests: tmp store, the test broker, a PSAP webhook, all four roles."""
    tree: dict[str, object] = {
        "store": dict(STORE_OVERRIDE)
        if STORE_OVERRIDE is not None
        else {"path": str(tmp_path / "store" / "gw.sqlite3"), "synchronous": "normal"},
        "mqtt": (
            {
                "host": broker.host,
                "port": broker.port,
                "client_id": client_id,
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.5,
            }
            if broker is not None
            else {"enabled": False}
        ),
        "http": {
            "port": http_port or free_port(),
            "provider_rate_per_s": 100000.0,
            "provider_burst": 100000.0,
        },
        "auth": {
            "tokens": [
                {"name": "acme", "role": "provider", "tps": "acme", "token": PROVIDER_TOKEN},
                {"name": "other", "role": "provider", "tps": "other", "token": OTHER_PROVIDER_TOKEN},
                {"name": "alice", "role": "operator", "token": OPERATOR_TOKEN},
                {"name": "bob", "role": "sre", "token": SRE_TOKEN},
            ]
        },
        "receivers": {
            "psap-fallback": {
                "kind": "http",
                "url": psap_url,
                "format": psap_format,
                "backoff_base_s": 0.02,
                "backoff_cap_s": 0.2,
                "breaker_cooldown_s": 0.2,
                "breaker_probe_initial_s": 0.1,
            },
        },
        "pipeline": {"tick_interval_s": 0.05},
        "drain_deadline_s": 5.0,
    }
    for name, table in sections.items():
        base = tree.setdefault(name, {})
        assert isinstance(base, dict)
        base.update(table)
    return load_config(base=tree)


@asynccontextmanager
async def running_gateway(config: Config, *, lead: bool = True) -> AsyncIterator[Gateway]:
    """A gateway in this process, running until the block ends (then drained).

    On PostgreSQL a lone replica leads: with ``lead`` the block starts once it has replayed.
    """
    async with Gateway(config) as gw:
        task = asyncio.create_task(gw.run())
        try:
            async with asyncio.timeout(10):
                await gw.ready.wait()
                if gw.mqtt is not None:
                    await gw.mqtt.connected.wait()
                if lead and gw.sequencer is not None:
                    while gw.sequencer.pipeline is None:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
            yield gw
        finally:
            gw.stop()
            async with asyncio.timeout(20):
                await task
