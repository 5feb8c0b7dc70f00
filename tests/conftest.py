"""Shared fixtures: a real PostgreSQL database per test session, a real Redis, settings and the app factory."""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from gateway.db import migrate as migrations
from gateway.db.pool import create_pool
from gateway.settings import Settings, load_settings

# `fake_stripe` fixture: a local fake of Stripe's API (tests never call the real one).
pytest_plugins = ["tests.fakes.stripe_api"]

TEST_WEBHOOK_SECRET = "whsec_test_" + "a" * 24
TEST_JWT_SECRET = "test-jwt-secret-" + "x" * 32
TEST_ISSUER = "https://issuer.test"
TEST_AUDIENCE = "gateway-test"

BASE_ENV: dict[str, str] = {
    "APP_ENV": "test",
    "METRICS_PORT": "0",
    "TRUSTED_HOSTS": "localhost,127.0.0.1,::1",
    "STRIPE_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
    "STRIPE_SECRET_KEY": "sk_test_gatewaytests",
    "JWT_SECRET": TEST_JWT_SECRET,
    "JWT_ISSUER": TEST_ISSUER,
    "JWT_AUDIENCE": TEST_AUDIENCE,
    "RESERVATION_SWEEP_INTERVAL_SECONDS": "0",
    "STRIPE_WATCHDOG_INTERVAL_SECONDS": "0",  # never calls Stripe unless a test points it at the fake
    "DB_POOL_MIN": "1",
    "DB_POOL_MAX": "10",
}


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: BASE_ENV plus overrides given by env name (`TRUSTED_HOSTS="x"`)."""
    env = dict(BASE_ENV)
    env.update({k: str(v) for k, v in overrides.items()})
    return load_settings(env)


@pytest.fixture
def settings_factory() -> Callable[..., Settings]:
    return make_settings


# ---------------------------------------------------------------- PostgreSQL


def _server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    from gateway.db.embedded import start_embedded

    folder = Path(os.environ.get("TEST_EMBEDDED_DIR", Path(tempfile.gettempdir()) / "gateway-test-pg"))
    return start_embedded(folder)


def _with_database(url: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def url_with(url: str, *, database: str | None = None, user: str | None = None, port: int | None = None) -> str:
    """`url` with another database name, user (`name` or `name:password`) or port of 127.0.0.1."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    credentials, _, address = parts.netloc.rpartition("@")
    if user is not None:
        credentials = user
    if port is not None:
        address = f"127.0.0.1:{port}"
    netloc = f"{credentials}@{address}" if credentials else address
    return urlunsplit(parts._replace(netloc=netloc, path=parts.path if database is None else "/" + database))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this test session, migrated; dropped at the end."""
    server = _server_url()
    name = f"gw_test_{os.getpid()}_{secrets.token_hex(3)}"

    async def create() -> None:
        con = await asyncpg.connect(server)
        try:
            await con.execute(f'CREATE DATABASE "{name}"')
        finally:
            await con.close()
        con = await asyncpg.connect(_with_database(server, name))
        try:
            await migrations.migrate(con)
        finally:
            await con.close()

    async def drop() -> None:
        con = await asyncpg.connect(server)
        try:
            await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await con.close()

    asyncio.run(create())
    yield _with_database(server, name)
    asyncio.run(drop())


async def create_scratch_database(prefix: str) -> str:
    """A new, empty database on the test server (a test's own: the relay's target, one to take away...); its URL.
    Drop it with `drop_scratch_database`."""
    server = _server_url()
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    con = await asyncpg.connect(server)
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    return _with_database(server, name)


async def drop_scratch_database(url: str, *names: str) -> None:
    """Drop the database of `url` (and `names`, other names it may have taken meanwhile)."""
    from urllib.parse import urlsplit

    server = _server_url()
    con = await asyncpg.connect(server)
    try:
        for name in (urlsplit(url).path.lstrip("/"), *names):
            await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await con.close()


TRUNCATE_ALL = """
DO $$
DECLARE tables text;
BEGIN
  SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') INTO tables
  FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations';
  IF tables IS NOT NULL THEN
    EXECUTE 'TRUNCATE ' || tables || ' RESTART IDENTITY CASCADE';
  END IF;
END $$;
"""


@pytest.fixture
async def db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the session database with every table emptied first."""
    pool = await create_pool(make_settings(), database_url, min_size=1, max_size=10)
    async with pool.acquire() as con:
        await con.execute(TRUNCATE_ALL)
    yield pool
    await pool.close()


# ---------------------------------------------------------------- Redis


DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/15"


def redis_test_url() -> str:
    """The Redis database the tests use and FLUSH: TEST_REDIS_URL (point it at a database nothing else uses)."""
    return os.environ.get("TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)


def pytest_report_header() -> list[str]:
    return [
        f"PostgreSQL: {'TEST_DATABASE_URL' if os.environ.get('TEST_DATABASE_URL') else 'embedded'} (a database "
        "of its own per session, dropped at the end)",
        f"Redis: {redis_test_url()} (TEST_REDIS_URL; the Redis tests FLUSH this database)",
    ]


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    url = redis_test_url()
    client = aioredis.from_url(url)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"SKIPPED: no Redis reachable at {url} ({type(exc).__name__})")
    await client.flushdb()
    await client.aclose()
    yield url


# ---------------------------------------------------------------- the real app


@pytest.fixture
def app_factory(database_url: str) -> Callable[..., web.Application]:
    """Build the real application on the test database: `app_factory(SETTING=value, ...)`."""
    from gateway.app import create_app

    def factory(**overrides: Any) -> web.Application:
        return create_app(make_settings(**overrides), database_url=database_url)

    return factory
