"""SIGHUP reloads the configuration of a running ``ecallgw serve``: tokens at once, the triage policy
(SQLite) between two signals, the rest reported as "restart to apply"; a broken file is logged and
the running configuration kept. Real processes: ``ecallgw serve``, mosquitto, a PSAP webhook."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from ecallgw.triage import TriageEngine, TriagePolicy
from tests.gateway.broker import Mosquitto, free_port
from tests.gateway.faultkit import StoreSpec, serve, tail, write_config
from tests.gateway.harness import PROVIDER_TOKEN, SRE_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import make_msd, msd_envelope, vin_for
from tests.gateway.receiver import Receiver

pytestmark = pytest.mark.slow

NEW_TOKEN = "provider-acme-token-rotated-0009"


def _events(log: Path, name: str) -> list[dict[str, object]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == name:
                out.append(record)
    return out


async def _reload(proc: asyncio.subprocess.Process, log: Path) -> dict[str, object]:
    """SIGHUP, then the reload's one line (applied or refused)."""
    seen = len(_events(log, "config_reloaded")) + len(_events(log, "config_reload_failed"))
    proc.send_signal(signal.SIGHUP)
    async with asyncio.timeout(10):
        while True:
            lines = _events(log, "config_reloaded") + _events(log, "config_reload_failed")
            if len(lines) > seen:
                return max(lines, key=lambda r: str(r["ts"]))
            await asyncio.sleep(0.05)


async def _ingest(http: aiohttp.ClientSession, port: int, token: str, n: int) -> int:
    now = time.time()
    body = msd_envelope(make_msd(vin=vin_for(n), timestamp=int(now)), call_id=f"c{n}", sent_at=now)
    async with http.post(
        f"http://127.0.0.1:{port}/v1/ecall/acme/v{n}/msd",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/msgpack"},
    ) as resp:
        return resp.status


def _tokens(*entries: tuple[str, str]) -> str:
    return "".join(
        f'[[auth.tokens]]\nname = "{name}"\nrole = "provider"\ntps = "acme"\ntoken = "{token}"\n'
        for name, token in entries
    )


async def test_sighup_swaps_tokens_and_policy_and_survives_a_broken_file(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    recv, moved = Receiver(), Receiver()
    await recv.start()
    await moved.start()
    port = free_port()
    log = tmp_path / "serve.log"
    spec = StoreSpec("sqlite", sqlite_path=tmp_path / "store" / "gw.sqlite3")
    base = write_config(
        tmp_path / "base.toml", mosquitto, recv, port, spec, client_id="gw-hup", log_level="info"
    )
    config = tmp_path / "gw.toml"
    config.write_text(base.read_text() + _tokens(("acme", PROVIDER_TOKEN)))
    try:
        async with serve(config, port, log) as proc, aiohttp.ClientSession() as http:
            assert await _ingest(http, port, PROVIDER_TOKEN, 1) == 202
            assert await _ingest(http, port, NEW_TOKEN, 2) == 401

            async with asyncio.timeout(10):
                while len(recv.keys) < 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)

            # Rotate: the old entry out, a new one in; a triage threshold changed; the PSAP moved
            # to another URL (applied: same kind and concurrency); a receiver added (restart).
            config.write_text(
                base.read_text().replace(recv.url, moved.url)
                + _tokens(("acme-2", NEW_TOKEN))
                + "[triage]\nescalation_delay_s = 45.0\n"
                + f'[receivers.psap-extra]\nkind = "http"\nurl = "{moved.url}"\n'
            )
            line = await _reload(proc, log)
            assert line["event"] == "config_reloaded", line
            assert line["applied"] == ["auth", "receivers.psap-fallback", "triage"], line
            assert line["restart_to_apply"] == ["receivers.psap-extra"], line
            assert (line["tokens_added"], line["tokens_removed"]) == (["acme-2"], ["acme"])
            assert NEW_TOKEN not in log.read_text() and PROVIDER_TOKEN not in log.read_text()
            assert await _ingest(http, port, NEW_TOKEN, 3) == 202  # accepted at once
            assert await _ingest(http, port, PROVIDER_TOKEN, 4) == 401  # refused at once
            async with asyncio.timeout(10):  # the new incident goes to the PSAP's new URL
                while len(moved.keys) < 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            assert len(recv.keys) == 1

            # A broken file: one line naming the key, the running configuration kept.
            config.write_text(
                config.read_text().replace("escalation_delay_s = 45.0", 'escalation_delay_s = "soon"')
            )
            line = await _reload(proc, log)
            assert line["event"] == "config_reload_failed", line
            assert "triage.escalation_delay_s" in str(line["error"]), line
            assert await _ingest(http, port, NEW_TOKEN, 5) == 202
            config.write_text("this is [not toml")
            line = await _reload(proc, log)
            assert line["event"] == "config_reload_failed", line
            assert await _ingest(http, port, NEW_TOKEN, 6) == 202
            async with http.get(
                f"http://127.0.0.1:{port}/readyz", headers={"Authorization": f"Bearer {SRE_TOKEN}"}
            ) as resp:
                assert resp.status == 200
            assert proc.returncode is None, tail(log)
        assert "Traceback" not in log.read_text(), tail(log)
    finally:
        await recv.stop()
        await moved.stop()


async def test_policy_swap_between_signals_keeps_state_or_refuses(tmp_path: Path, receiver: Receiver) -> None:
    """`Pipeline.swap_engine` in a running gateway (SQLite) while a provider keeps sending."""
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url)
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
        assert gw.http is not None
        port = gw.http.port
        statuses = [await _ingest(http, port, PROVIDER_TOKEN, n) for n in range(5)]
        sending = asyncio.gather(*(_ingest(http, port, PROVIDER_TOKEN, n) for n in range(5, 60)))
        key = await gw.store.key("pseudonym")
        policy = TriagePolicy.from_mapping({"escalation_delay_s": 45.0})
        old = gw.pipeline.engine
        assert await gw.pipeline.swap_engine(TriageEngine(policy, key)) == []
        statuses += await sending
        assert statuses == [202] * 60  # no signal refused or lost around the swap
        engine = gw.pipeline.engine
        assert engine is not old and engine.policy.escalation_delay_s == 45.0
        # The new engine holds every incident at its stored revision, those triaged while it
        # replayed included: the state the next start rebuilds.
        incidents = await gw.store.list_incidents(limit=1000)
        assert len([i for i in incidents if i.vehicle]) == 60  # (and a storm triage may see in them)
        assert all(
            (s := engine.get(i.incident_id)) is not None and s.revision == i.revision for i in incidents
        )
        # An engine that rebuilds other incidents than the stored ones (here: another key, so other
        # incident ids) is refused, and triage stays with the running one.
        wrong = await gw.pipeline.swap_engine(TriageEngine(policy, b"another-key-0123456789"))
        assert len(wrong) == len(incidents) and gw.pipeline.engine is engine
        assert await _ingest(http, port, PROVIDER_TOKEN, 60) == 202
