"""Headless Chromium for page tests: Debian's ``chromium`` driven by Playwright's Python package.

``./run test`` installs both (apt-get ``chromium``; ``playwright`` is in the dev extra). Playwright's
own browser download is never used: `launch` passes Debian's binary as ``executable_path``.
Every context records the requests its pages make and refuses any that leaves 127.0.0.1, so a test
can assert that no asset is fetched from outside the daemon (`Browser.foreign_requests`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, Route, async_playwright, expect
from playwright.async_api import Request as PwRequest

__all__ = ["Browser", "chromium_path", "launch"]

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})

# Assertions wait up to this long for the page to get there (Playwright's default is 5 s): a
# two-core CI machine running the gateway, a broker and a browser at once can take longer; a test
# that passes is not slowed by it.
expect.set_options(timeout=15_000)


def chromium_path() -> str:
    """Debian's Chromium (``ECALLGW_CHROMIUM`` overrides); raises when it is missing."""
    path = os.environ.get("ECALLGW_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        raise RuntimeError(f"chromium not found at {path}: `./run test` installs it with apt-get")
    return path


@dataclass
class Browser:
    """One launched Chromium; `context` opens an isolated browser profile (cookies, locale, place)."""

    _browser: Any
    requests: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)

    async def context(
        self,
        *,
        locale: str = "en-GB",
        timezone_id: str = "Europe/Brussels",
        geolocation: tuple[float, float] | None = None,
        accuracy_m: float = 10.0,
    ) -> BrowserContext:
        options: dict[str, Any] = {"locale": locale, "timezone_id": timezone_id}
        if geolocation is not None:
            options["geolocation"] = {
                "latitude": geolocation[0],
                "longitude": geolocation[1],
                "accuracy": accuracy_m,
            }
            options["permissions"] = ["geolocation"]
        ctx: BrowserContext = await self._browser.new_context(**options)
        await ctx.route("**/*", self._guard)
        return ctx

    async def _guard(self, route: Route, request: PwRequest) -> None:
        url = request.url
        self.requests.append(url)
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about") or (parts.hostname or "") in _LOCAL_HOSTS:
            await route.continue_()
            return
        self.foreign_requests.append(url)  # loopback only: a page must not reach the outside
        await route.abort()


@asynccontextmanager
async def launch() -> AsyncIterator[Browser]:
    """A headless Chromium for one test (closed after it)."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            # Root in a container has no user namespace for Chromium's sandbox.
            args=["--no-sandbox"] if os.geteuid() == 0 else [],
        )
        try:
            yield Browser(browser)
        finally:
            await browser.close()
