"""The relay to the external event bridge, against a second real PostgreSQL database: at least once, no
duplicates, cursor kept across gateway restarts, survives a restart of the target database, lag exported."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from gateway import metrics
from gateway.bridge.relay import Relay, RelayTargetError
from gateway.db.pool import connect
from tests.conftest import _server_url, create_scratch_database, drop_scratch_database
from tests.stripe_events import make_event, subscription
from tests.subscription_helpers import PRICE_PREMIUM, deliver
from tests.subscription_helpers import test_plans as test_plans  # fixture

pytestmark = pytest.mark.usefixtures("test_plans")


@pytest.fixture
async def bridge_url() -> AsyncIterator[str]:
    """A second database standing for the external bridge (Supabase in the seeds)."""
    url = await create_scratch_database("gw_bridge")
    yield url
    await drop_scratch_database(url)


async def publish(pool: asyncpg.Pool, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        await deliver(
            pool,
            make_event(
                "customer.subscription.created",
                subscription(price_id=PRICE_PREMIUM, sub_id=f"sub_relay{i:04d}", user_id=f"u{i}"),
            ),
        )


async def target_rows(url: str) -> list[asyncpg.Record]:
    con = await connect(url)
    try:
        return await con.fetch(
            "SELECT gateway_event_id, event_type, user_id, payload, source_event_id "
            "FROM bridge_events ORDER BY gateway_event_id"
        )
    finally:
        await con.close()


async def test_relay_copies_in_order_and_exports_its_lag(db_pool: asyncpg.Pool, bridge_url: str) -> None:
    await publish(db_pool, 7)
    relay = Relay(db_pool, bridge_url, batch_size=3)
    async with db_pool.acquire() as con:
        await con.execute("INSERT INTO bridge_relay_state (target) VALUES ('event_bridge')")
        await relay.refresh_lag(con)
    assert metrics.OUTBOX_BACKLOG._value.get() == 7
    assert metrics.BRIDGE_RELAY_LAG_SECONDS._value.get() >= 0
    try:
        assert (await relay.run_once()).copied == 3
        assert metrics.OUTBOX_BACKLOG._value.get() == 4
        assert await relay.drain() == 4
    finally:
        await relay.close()
    rows = await target_rows(bridge_url)
    async with db_pool.acquire() as con:
        source = await con.fetch(
            "SELECT id, event_type, user_id, payload, source_event_id FROM bridge_events ORDER BY id"
        )
        assert await con.fetchval("SELECT last_id FROM bridge_relay_state") == source[-1]["id"]
    assert [tuple(r) for r in rows] == [tuple(s) for s in source]
    assert metrics.OUTBOX_BACKLOG._value.get() == 0 and metrics.BRIDGE_RELAY_LAG_SECONDS._value.get() == 0


async def test_relay_after_a_gateway_restart_sends_each_event_once(db_pool: asyncpg.Pool, bridge_url: str) -> None:
    await publish(db_pool, 4)
    first = Relay(db_pool, bridge_url)
    await first.drain()
    await first.close()  # the gateway stops
    await publish(db_pool, 3, start=4)
    second = Relay(db_pool, bridge_url)  # a new process: the cursor is in the database
    try:
        assert await second.drain() == 3
        # a crash after the target commit but before the cursor commit: the rows are sent again, skipped there
        async with db_pool.acquire() as con:
            await con.execute("UPDATE bridge_relay_state SET last_id = 0")
        assert await second.drain() == 7
    finally:
        await second.close()
    rows = await target_rows(bridge_url)
    assert len(rows) == 7 and len({r["source_event_id"] for r in rows}) == 7


async def _target_down(url: str, down: bool) -> int:
    """Stop (or restart) the target: refuse new connections and terminate every backend of its database."""
    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(_server_url())
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if down else "true"}')
        terminated: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1", name
        )
    finally:
        await admin.close()
    return terminated


async def test_relay_survives_a_restart_of_the_target_database(db_pool: asyncpg.Pool, bridge_url: str) -> None:
    relay = Relay(db_pool, bridge_url)
    try:
        await publish(db_pool, 2)
        await relay.drain()
        # a quick restart: its connections are killed, it is back at once -> the relay reconnects
        assert await _target_down(bridge_url, down=False) >= 1
        await publish(db_pool, 1, start=2)
        assert await relay.drain() == 1
        # a longer outage: connections killed and refused until it is back
        await _target_down(bridge_url, down=True)
        await publish(db_pool, 2, start=3)
        errors = metrics.BRIDGE_RELAY_ERRORS.labels("target")._value.get()
        with pytest.raises(RelayTargetError):
            await relay.run_once()
        assert metrics.BRIDGE_RELAY_ERRORS.labels("target")._value.get() == errors + 1
        async with db_pool.acquire() as con:
            assert (
                await con.fetchval(
                    "SELECT count(*) FROM bridge_events WHERE id > (SELECT last_id FROM bridge_relay_state)"
                )
                == 2
            )  # cursor did not move
            await relay.refresh_lag(con)
        assert metrics.OUTBOX_BACKLOG._value.get() == 2
        await _target_down(bridge_url, down=False)
        assert await relay.drain() == 2  # reconnected, nothing lost
    finally:
        await relay.close()
    rows = await target_rows(bridge_url)
    assert len(rows) == 5 and len({r["source_event_id"] for r in rows}) == 5


async def test_the_app_runs_the_relay_in_the_background(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, bridge_url: str
) -> None:
    await aiohttp_client(
        app_factory(
            PLANS_FILE="tests/fixtures/plans-test.yaml",
            EVENT_BRIDGE_DATABASE_URL=bridge_url,
            BRIDGE_RELAY_INTERVAL_SECONDS="0.2",
        )
    )
    await publish(db_pool, 3)
    for _ in range(100):  # NOTIFY wakes it at once; the deadline only bounds a failure
        rows = await _maybe_rows(bridge_url)
        if len(rows) == 3:
            break
        await asyncio.sleep(0.1)
    assert len(rows) == 3


async def _maybe_rows(url: str) -> list[asyncpg.Record]:
    try:
        return await target_rows(url)
    except asyncpg.UndefinedTableError:
        return []
