"""Console sessions on both stores: shared by replicas, ended by sign-out, expiry or a removed token;
the ``[console]`` configuration's checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from ecallgw.config import AuthConfig, Secret, StoreConfig, TokenConfig, load_config
from ecallgw.console.session import CSRF_HEADER, Sessions, cookie_name
from ecallgw.errors import ConfigError
from ecallgw.gateway.http_auth import Authenticator
from ecallgw.gateway.store import SqliteStore, Store
from ecallgw.gateway.store.postgres import PostgresStore

ALICE = "operator-alice-token-0003"
BOB_SRE = "sre-bob-token-000000004"


def auth(*tokens: tuple[str, str, str]) -> Authenticator:
    return Authenticator(
        AuthConfig(tokens=tuple(TokenConfig(name=n, role=r, token=Secret(t)) for n, r, t in tokens))  # type: ignore[arg-type]
    )


def request_with(
    cookie: str | None, method: str = "GET", headers: dict[str, str] | None = None
) -> web.Request:
    h = dict(headers or {})
    if cookie is not None:
        h["Cookie"] = f"{cookie_name(False)}={cookie}"
    h.setdefault("Host", "127.0.0.1:8080")
    return make_mocked_request(method, "/v1/incidents", headers=h)


@asynccontextmanager
async def two_replicas(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[list[Store]]:
    """Two stores on one database (PostgreSQL replicas), or one SQLite file opened once."""
    async with AsyncExitStack() as stack:
        if backend == "sqlite":
            s = await stack.enter_async_context(SqliteStore(StoreConfig(path=str(tmp_path / "gw.sqlite3"))))
            yield [s, s]
            return
        dsn: str = request.getfixturevalue("pg_dsn")
        cfg = StoreConfig(backend="postgresql", dsn=Secret(dsn))
        a = await stack.enter_async_context(PostgresStore(cfg, None, replica_id="r1"))
        b = await stack.enter_async_context(PostgresStore(cfg, None, replica_id="r2"))
        yield [a, b]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_session_is_shared_by_replicas_and_ended_by_sign_out(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    authn = auth(("alice", "operator", ALICE), ("bob", "sre", BOB_SRE))
    async with two_replicas(backend, tmp_path, request) as (one, two):
        here, there = Sessions(authn, one, hours=1), Sessions(authn, two, hours=1)
        assert await here.sign_in(BOB_SRE) is None  # not an operator
        assert await here.sign_in("no-such-token-at-all") is None
        opened = await here.sign_in(ALICE)
        assert opened is not None
        cookie, who, expires = opened
        assert who.name == "alice" and expires > time.time() + 3500
        found = await there.principal(request_with(cookie))  # the other replica knows it
        assert found is not None and found[0].name == "alice"
        assert await there.principal(request_with(cookie + "x")) is None
        assert await there.principal(request_with(None)) is None
        await there.sign_out(request_with(cookie, "DELETE"))
        assert await here.principal(request_with(cookie)) is None  # gone for every replica


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_session_ends_when_it_expires_or_its_token_is_removed(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with two_replicas(backend, tmp_path, request) as (store, _):
        opened = await Sessions(auth(("alice", "operator", ALICE)), store, hours=1).sign_in(ALICE)
        assert opened is not None
        cookie = opened[0]
        # The token left auth.tokens (a restart with the new configuration): the session is void.
        rotated = Sessions(auth(("alice", "operator", "operator-alice-token-NEW1")), store, hours=1)
        assert await rotated.principal(request_with(cookie)) is None
        # A session past its time is refused (and dropped at the next sign-in).
        short = Sessions(auth(("alice", "operator", ALICE)), store, hours=1e-9)
        brief = await short.sign_in(ALICE)
        assert brief is not None
        await asyncio.sleep(0.01)
        assert await short.principal(request_with(brief[0])) is None


async def test_csrf_token_and_origin_are_checked(tmp_path: Path) -> None:
    sessions = Sessions(auth(("alice", "operator", ALICE)), _NoStore(), hours=1)
    token = Sessions.csrf_token("abc")
    ok = {CSRF_HEADER: token}
    assert sessions.csrf_refusal(request_with("abc", "GET")) is None  # reads need none
    assert sessions.csrf_refusal(request_with("abc", "POST", ok)) is None
    assert sessions.csrf_refusal(request_with("abc", "POST", {**ok, "Origin": "null"})) is None
    assert sessions.csrf_refusal(request_with("abc", "POST")) == f"missing or wrong {CSRF_HEADER}"
    assert sessions.csrf_refusal(request_with("abd", "POST", ok)) is not None  # another session's
    cross = {**ok, "Origin": "https://evil.example"}
    assert sessions.csrf_refusal(request_with("abc", "POST", cross)) == "cross-origin request refused"
    site = {**ok, "Sec-Fetch-Site": "cross-site"}
    assert sessions.csrf_refusal(request_with("abc", "POST", site)) == "cross-origin request refused"


class _NoStore:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the CSRF check must not touch the store ({name})")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("session_hours", 0),
        ("tile_url", "http://tiles.example.org/{z}/{x}/{y}.png"),  # plaintext beyond loopback
        ("tile_url", "https://tiles.example.org/tile.png"),  # no {z}/{x}/{y}
        ("tile_attribution", "x" * 201),
        ("cookie_secure", "yes"),
        ("colour", "blue"),
    ],
)
def test_console_configuration_names_the_bad_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(base={"console": {key: value}})
    assert f"'console.{key}'" in str(err.value)


def test_console_configuration_defaults_and_a_tile_url() -> None:
    c = load_config(base={"console": {"tile_url": "https://{s}.tile.example.org/{z}/{x}/{y}.png"}}).console
    assert c.enabled and c.session_hours == 12.0 and c.tile_url.startswith("https://")
