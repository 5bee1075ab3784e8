"""Views of breakdown cases are audited, but a console polling the same list does not bury the log."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.caller.kit import OPERATOR, base_url, call, caller_config
from tests.gateway.harness import running_gateway
from tests.gateway.receiver import Receiver


async def test_a_repeated_identical_case_list_is_audited_once_and_a_change_again(
    tmp_path: Path, receiver: Receiver
) -> None:
    cfg = caller_config(tmp_path, psap_url=receiver.url, sms=None)
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as s:
        base = base_url(gw)

        async def listed() -> list[dict[str, str]]:
            return [a for a in await gw.store.audit_log() if a["action"] == "assistance_list"]

        for _ in range(5):  # the console's poll
            code, _ = await call(s, "GET", f"{base}/v1/assistance/cases?status=unassigned", headers=OPERATOR)
            assert code == 200
        assert len(await listed()) == 1
        # Another view (another status) is another row, and so is the first list again once it changed.
        code, _ = await call(s, "GET", f"{base}/v1/assistance/cases", headers=OPERATOR)
        assert code == 200
        code, form = await call(
            s, "POST", f"{base}/v1/assistance/links", json={"phone": "+3247"}, headers=OPERATOR
        )
        assert code == 201, form
        async with s.post(
            f"{form['url']}/request", json={"what": "engine", "address": "Rue de la Loi 16"}
        ) as r:
            assert r.status == 201, await r.text()
        code, _ = await call(s, "GET", f"{base}/v1/assistance/cases", headers=OPERATOR)
        assert code == 200
        rows = await listed()
        assert len(rows) == 3, rows
        assert rows[-1]["actor"] and "cases=" in rows[-1]["note"]
