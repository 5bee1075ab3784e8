"""The caller side's configuration (bad values name their key, exit 2), rate limits, retention."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ecallgw.config import load_config
from ecallgw.errors import ConfigError
from ecallgw.gateway.store.caller import CallerStore, CaseRow, LinkRow
from ecallgw.simulators.sms import SimulatedSmsGateway
from tests.caller.kit import base_url, call, caller_config, ingest_call
from tests.gateway.harness import running_gateway
from tests.gateway.receiver import Receiver

PROVIDER = {"name": "p1", "lat": 50.0, "lon": 4.0, "webhook_url": "https://tow.example/cases"}


@pytest.mark.parametrize(
    ("tree", "key"),
    [
        ({"sms": {"url": "ftp://x"}}, "sms.url"),
        ({"sms": {"url": "http://sms.example.net/x"}}, "sms.url"),  # plaintext beyond loopback
        ({"sms": {"max_attempts": 0}}, "sms.max_attempts"),
        ({"caller": {"location_ttl_s": 0}}, "caller.location_ttl_s"),
        ({"caller": {"public_url": "ecall.example.org"}}, "caller.public_url"),
        ({"caller": {"nope": 1}}, "caller.nope"),
        (
            {"assistance": {"providers": [{**PROVIDER, "capabilities": ["fly"]}]}},
            "assistance.providers[0].capabilities",
        ),
        ({"assistance": {"providers": [{**PROVIDER, "lat": 91}]}}, "assistance.providers[0].lat"),
        (
            {"assistance": {"providers": [{**PROVIDER, "webhook_url": "http://tow.example/x"}]}},
            "assistance.providers[0].webhook_url",
        ),
        ({"assistance": {"providers": [PROVIDER, PROVIDER]}}, "assistance.providers[1].name"),
        ({"assistance": {"providers": [{**PROVIDER, "token": "short"}]}}, "assistance.providers[0].token"),
        (
            {"assistance": {"providers": [{k: v for k, v in PROVIDER.items() if k != "lat"}]}},
            "assistance.providers[0].lat",
        ),
        ({"assistance": {"answer_timeout_s": 0}}, "assistance.answer_timeout_s"),
    ],
)
def test_bad_values_name_their_key(tree: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(base=tree)
    assert err.value.key == key, str(err.value)


def test_provider_token_is_an_assistance_token_and_config_check_exits_2(tmp_path: Path) -> None:
    cfg = load_config(base={"assistance": {"providers": [{**PROVIDER, "token": "p1-token-0123456789"}]}})
    [tok] = [t for t in cfg.auth.tokens if t.role == "assistance"]
    assert tok.name == "p1" and tok.token.reveal() == "p1-token-0123456789"
    bad = tmp_path / "bad.toml"
    bad.write_text('[sms]\nurl = "ftp://nowhere"\n')
    done = subprocess.run(
        [sys.executable, "-m", "ecallgw", "config", "check", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "sms.url" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.usefixtures("store_backend")
async def test_rate_limits_per_token_and_address(
    tmp_path: Path, receiver: Receiver, sms: SimulatedSmsGateway
) -> None:
    cfg = caller_config(
        tmp_path, psap_url=receiver.url, sms=sms, caller={"token_rate_per_min": 5, "address_rate_per_min": 8}
    )
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as s:
        incident_id = await ingest_call(s, gw)
        _, link = await call(
            s, "POST", f"{base_url(gw)}/v1/incidents/{incident_id}/links", json={"purpose": "location"}
        )
        statuses = []
        for _ in range(6):
            async with s.get(link["url"]) as resp:
                statuses.append(resp.status)
        assert statuses == [200] * 5 + [429]  # the token's five a minute
        statuses = []
        for i in range(4):  # other (unknown) tokens from the same address: the address's bound
            async with s.get(f"{base_url(gw)}/l/guess-{i}") as resp:
                statuses.append(resp.status)
        assert statuses == [404, 404, 429, 429]  # 6 + 2 = the address's eight


@pytest.mark.usefixtures("store_backend")
async def test_retention_deletes_old_links_and_closed_cases(
    tmp_path: Path, receiver: Receiver, sms: SimulatedSmsGateway
) -> None:
    async with (
        running_gateway(caller_config(tmp_path, psap_url=receiver.url, sms=sms)) as gw,
        aiohttp.ClientSession() as s,
    ):
        incident_id = await ingest_call(s, gw)
        _, link = await call(
            s, "POST", f"{base_url(gw)}/v1/incidents/{incident_id}/links", json={"purpose": "location"}
        )
        cs = CallerStore(gw.store)
        old = time.time() - 100 * 86400
        base: dict[str, Any] = dict(
            origin="form",
            capability="tow",
            what="engine",
            lat=1.0,
            lon=1.0,
            address="",
            vehicle_desc="",
            phone="+3247",
            tps=None,
            vehicle=None,
            provider=None,
            deadline=None,
            tried="",
            reason="",
            eta_min=None,
            note="",
            shared="{}",
            accepted_at=None,
            version=0,
        )
        await cs.insert_case(
            CaseRow(case_id="case-old", created_at=old, updated_at=old, status="closed", **base)
        )
        await cs.insert_case(
            CaseRow(
                case_id="case-new", created_at=time.time(), updated_at=time.time(), status="closed", **base
            )
        )
        assert await cs.delete_before(time.time() - 30 * 86400) == {"caller_links": 0, "assistance_cases": 1}
        assert await cs.case("case-old") is None and await cs.case("case-new") is not None
        assert await cs.link(link["link_id"]) is not None
        assert (await cs.delete_before(time.time() + 10 * 86400))["caller_links"] == 1  # once expired and old


def test_provider_area_from_geojson() -> None:
    ring = [[4.2, 50.7], [4.5, 50.7], [4.5, 50.95], [4.2, 50.95], [4.2, 50.7]]
    cfg = load_config(
        base={"assistance": {"providers": [{**PROVIDER, "area": {"type": "Polygon", "coordinates": [ring]}}]}}
    )
    assert cfg.assistance.providers[0].area[0] == (4.2, 50.7)
    text = '{"type": "Polygon", "coordinates": [[[4.2, 50.7], [4.5, 50.7], [4.5, 50.95], [4.2, 50.7]]]}'
    assert (
        len(
            load_config(base={"assistance": {"providers": [{**PROVIDER, "area": text}]}})
            .assistance.providers[0]
            .area
        )
        == 4
    )
    for bad in (
        {"type": "Point", "coordinates": [4, 50]},
        "{",
        {"type": "Polygon", "coordinates": [[[400, 1], [1, 1], [1, 2], [400, 1]]]},
    ):
        with pytest.raises(ConfigError) as err:
            load_config(base={"assistance": {"providers": [{**PROVIDER, "area": bad}]}})
        assert err.value.key == "assistance.providers[0].area"


@pytest.mark.usefixtures("store_backend")
async def test_an_sms_pending_past_every_retry_is_marked_lost(tmp_path: Path, receiver: Receiver) -> None:
    async with running_gateway(caller_config(tmp_path, psap_url=receiver.url, sms=None)) as gw:
        cs = CallerStore(gw.store)
        now = time.time()
        for link_id, made in (("lnk-old", now - 7200), ("lnk-new", now)):
            await cs.insert_link(
                LinkRow(
                    link_id=link_id,
                    token_hash=link_id.encode(),
                    purpose="location",
                    incident_id="i",
                    case_id=None,
                    phone="+3247",
                    lang="en",
                    created_at=made,
                    expires_at=made + 1800,
                    max_uses=3,
                    uses=0,
                    revoked_at=None,
                    created_by="alice",
                    auto_key=None,
                    sms_state="pending",
                )
            )
        assert await cs.mark_sms_lost(now - 3600) == 1
        old, new = await cs.link("lnk-old"), await cs.link("lnk-new")
        assert old is not None and old.sms_state == "lost" and new is not None and new.sms_state == "pending"
