"""Kubernetes probes: /health never needs the database; /ready is 503 with reasons when draining, when the
database is unreachable or when migrations are pending, 200 otherwise; the gateway_ready gauge follows it."""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from prometheus_client import REGISTRY

from gateway import keys
from gateway.app import create_app
from gateway.db import migrate as migrations
from gateway.db.migrate import CREATE_MIGRATIONS_TABLE, INSERT_APPLIED, latest_version
from tests.conftest import make_settings


def gauge() -> float | None:
    return REGISTRY.get_sample_value("gateway_ready")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends: nothing listens there


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@pytest.fixture
async def scratch_database(database_url: str) -> AsyncIterator[str]:
    """An empty database beside the session one (no migrations), dropped afterwards."""
    name = f"gw_probe_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield with_database(database_url, name)
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def assert_not_ready(client: Any, *reasons: str) -> None:
    response = await client.get("/ready")
    assert response.status == 503
    body = await response.json()
    assert body["error"]["code"] == "not_ready"
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    got = body["error"]["details"]["reasons"]
    assert len(got) == len(reasons), got
    for reason, expected in zip(got, reasons, strict=True):
        assert reason.startswith(expected), got
    assert gauge() == 0


async def test_ready_when_everything_is_fine(aiohttp_client: Any, app_factory: Any) -> None:
    client = await aiohttp_client(app_factory())
    response = await client.get("/ready")
    assert response.status == 200
    assert await response.json() == {"status": "ready"}
    assert gauge() == 1


async def test_health_answers_ok(aiohttp_client: Any, app_factory: Any) -> None:
    client = await aiohttp_client(app_factory())
    response = await client.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_draining_turns_ready_off_but_not_health(aiohttp_client: Any, app_factory: Any) -> None:
    app = app_factory()
    client = await aiohttp_client(app)
    assert (await client.get("/ready")).status == 200
    app[keys.LIFECYCLE].start_draining()
    await assert_not_ready(client, "draining")
    assert (await client.get("/health")).status == 200


async def test_unreachable_database_at_startup(aiohttp_client: Any) -> None:
    """The process starts although the database is down: /health 200, /ready 503 "database unreachable"."""
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/nowhere"
    app = create_app(make_settings(READY_DB_TIMEOUT="2"), database_url=url)
    client = await aiohttp_client(app)
    for _ in range(3):
        response = await client.get("/health")
        assert response.status == 200
        assert await response.json() == {"status": "ok"}
    await assert_not_ready(client, "database unreachable")


class SwitchablePool:
    """Stands in for the app's pool (installed at startup): calls go to `target`, which a test swaps."""

    def __init__(self) -> None:
        self.target: Any = None
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self.target, name)


def install_switchable_pool(app: Any) -> SwitchablePool:
    proxy = SwitchablePool()

    async def ctx(app: Any) -> AsyncIterator[None]:
        proxy.target = app[keys.DB_POOL]
        app[keys.DB_POOL] = proxy
        yield

    app.cleanup_ctx.insert(1, ctx)  # right after database_ctx, before anything else takes the pool
    return proxy


async def test_database_going_away_and_coming_back(aiohttp_client: Any, app_factory: Any) -> None:
    app = app_factory()
    pool = install_switchable_pool(app)
    client = await aiohttp_client(app)
    assert (await client.get("/ready")).status == 200
    healthy_pool = pool.target
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/nowhere"
    down_pool = await asyncpg.create_pool(url, min_size=0, max_size=1, timeout=1)
    pool.target = down_pool
    try:
        await assert_not_ready(client, "database unreachable")
        assert (await client.get("/health")).status == 200
    finally:
        pool.target = healthy_pool
        await down_pool.close()
    assert (await client.get("/ready")).status == 200
    assert gauge() == 1


async def test_no_migrations_table(aiohttp_client: Any, scratch_database: str) -> None:
    client = await aiohttp_client(create_app(make_settings(), database_url=scratch_database))
    await assert_not_ready(client, "migrations pending")
    assert (await client.get("/health")).status == 200


async def test_migrations_behind_the_code(aiohttp_client: Any, scratch_database: str) -> None:
    expected = latest_version()
    con = await asyncpg.connect(scratch_database)
    try:
        await con.execute(CREATE_MIGRATIONS_TABLE)
        if expected > 1:
            await con.execute(INSERT_APPLIED, 1, "first", "checksum")
    finally:
        await con.close()
    client = await aiohttp_client(create_app(make_settings(), database_url=scratch_database))
    response = await client.get("/ready")
    assert response.status == 503
    (reason,) = (await response.json())["error"]["details"]["reasons"]
    assert reason.startswith("migrations pending")
    assert f"code needs {expected}" in reason

    con = await asyncpg.connect(scratch_database)
    try:
        await con.execute("DROP TABLE schema_migrations")
        await migrations.migrate(con)
    finally:
        await con.close()
    assert (await client.get("/ready")).status == 200


async def test_health_never_touches_the_database(aiohttp_client: Any, app_factory: Any) -> None:
    app = app_factory()
    pool = install_switchable_pool(app)
    client = await aiohttp_client(app)
    pool.calls.clear()
    for _ in range(5):
        assert (await client.get("/health")).status == 200
    assert pool.calls == []
    assert (await client.get("/ready")).status == 200
    assert "acquire" in pool.calls  # the spy does see the pool being used


async def test_probes_are_not_rate_limited(aiohttp_client: Any, app_factory: Any) -> None:
    client = await aiohttp_client(app_factory(RATE_LIMIT_PUBLIC_MAX="2"))
    for _ in range(10):
        assert (await client.get("/health")).status == 200
        assert (await client.get("/ready")).status == 200
