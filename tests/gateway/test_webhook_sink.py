"""The HTTP webhook sink against real aiohttp servers on 127.0.0.1: how it classifies answers."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from ecallgw.config import ReceiverConfig
from ecallgw.errors import PermanentDeliveryError
from ecallgw.gateway.records import OutboxItem
from ecallgw.gateway.sinks.http_webhook import HttpWebhookSink
from tests.gateway.broker import free_port


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_is_a_permanent_error_not_followed(status: int) -> None:
    # aiohttp would follow a 301/302/303 with a body-less GET; a 200 on that is no delivery.
    seen: list[tuple[str, int]] = []

    async def old(request: web.Request) -> web.Response:
        seen.append((request.method, len(await request.read())))
        return web.Response(status=status, headers={"Location": "/moved-here"})

    async def moved(request: web.Request) -> web.Response:
        seen.append((request.method, len(await request.read())))
        return web.Response(status=200, text="landing page")

    app = web.Application()
    app.router.add_post("/old", old)
    app.router.add_route("*", "/moved-here", moved)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    sink = HttpWebhookSink(ReceiverConfig(name="psap", url=f"http://127.0.0.1:{port}/old", timeout_s=2.0))
    item = OutboxItem(id=1, incident_id="inc-x", revision=1, receiver="psap", signal_at=0.0)
    try:
        async with asyncio.timeout(5):
            with pytest.raises(PermanentDeliveryError) as info:
                await sink.deliver(item, b'{"incident_id":"inc-x"}', "application/json")
    finally:
        await sink.aclose()
        await runner.cleanup()
    assert info.value.reason == "http_3xx"
    assert "/moved-here" in info.value.detail
    assert seen == [("POST", len(b'{"incident_id":"inc-x"}'))]  # the redirect target never asked
