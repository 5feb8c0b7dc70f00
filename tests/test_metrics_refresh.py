"""Issue 20, item 5: /metrics never goes blind. The database-backed gauges are refreshed by the app's background
task (driven here through its real loop), keep their last values while the database is gone, expose refresh
errors and the age of the last refresh; the relay's backlog and lag grow while its target is down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway import keys
from gateway.app import create_app
from gateway.db import migrate as migrations
from gateway.db.pool import create_pool
from gateway.metrics_listener import metrics_app
from tests.cli_process import closed_port
from tests.conftest import _server_url, create_scratch_database, drop_scratch_database, make_settings
from tests.stripe_events import make_event, subscription
from tests.subscription_helpers import PRICE_PREMIUM, deliver
from tests.subscription_helpers import test_plans as test_plans  # fixture
from tests.support_helpers import deliver as deliver_to_ledger

FAST_REFRESH = "0.01"  # the loop's period; the tests wait for its rounds, never for time


async def scrape(aiohttp_client: Any, app: web.Application) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    client = await aiohttp_client(metrics_app(app))
    response = await client.get("/metrics")
    assert response.status == 200
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def next_rounds(app: web.Application, count: int = 2) -> None:
    """Two rounds: the second began after anything done before this call."""
    await app[keys.GAUGE_REFRESHER].wait_rounds(count)


@pytest.mark.usefixtures("test_plans")
async def test_the_relay_backlog_and_lag_grow_while_its_target_is_down(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool
) -> None:
    app = app_factory(
        EVENT_BRIDGE_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{closed_port()}/bridge",
        BRIDGE_RELAY_INTERVAL_SECONDS="0.05",
        METRICS_REFRESH_INTERVAL_SECONDS=FAST_REFRESH,
    )
    await aiohttp_client(app)

    async def publish(start: int, count: int) -> None:
        for i in range(start, start + count):
            sub = subscription(price_id=PRICE_PREMIUM, sub_id=f"sub_outage{i:04d}", user_id=f"u{i}")
            await deliver(db_pool, make_event("customer.subscription.created", sub))

    await publish(0, 2)
    await next_rounds(app)
    first = await scrape(aiohttp_client, app)
    await publish(2, 3)
    await next_rounds(app)
    second = await scrape(aiohttp_client, app)

    assert first[("bridge_outbox_backlog", ())] == 2
    assert second[("bridge_outbox_backlog", ())] == 5
    assert 0 < first[("bridge_relay_lag_seconds", ())] <= second[("bridge_relay_lag_seconds", ())]
    assert second[("bridge_relay_errors_total", (("side", "target"),))] >= 1


@pytest.fixture
async def own_database() -> AsyncIterator[str]:
    """A migrated database of its own, which the test may take away (renamed) and give back."""
    url = await create_scratch_database("gw_metrics")
    con = await asyncpg.connect(url)
    try:
        await migrations.migrate(con)
    finally:
        await con.close()
    yield url
    await drop_scratch_database(url, urlsplit(url).path.lstrip("/") + "_gone")


async def take_away(url: str) -> None:
    """The database stops answering for the app: its sessions end and its name no longer exists."""
    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(_server_url())
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        await admin.execute(f'ALTER DATABASE "{name}" RENAME TO "{name}_gone"')
    finally:
        await admin.close()


async def test_metrics_answer_with_the_last_values_while_the_database_is_gone(
    aiohttp_client: Any, own_database: str
) -> None:
    pool = await create_pool(make_settings(), own_database, min_size=1, max_size=2)
    try:
        event = make_event("customer.subscription.created", subscription(price_id=PRICE_PREMIUM))
        await deliver_to_ledger(pool, event, handlers_enabled=False)  # kill switch: a `received` row
    finally:
        await pool.close()
    settings = make_settings(METRICS_REFRESH_INTERVAL_SECONDS=FAST_REFRESH, DB_ACQUIRE_TIMEOUT="1")
    app = create_app(settings, database_url=own_database)
    await aiohttp_client(app)
    await next_rounds(app)
    before = await scrape(aiohttp_client, app)
    errors_key = ("gateway_metrics_refresh_errors_total", (("reason", "database_unavailable"),))

    await take_away(own_database)
    await next_rounds(app, 3)
    during = await scrape(aiohttp_client, app)
    await next_rounds(app)
    later = await scrape(aiohttp_client, app)

    received = ("stripe_webhook_ledger_rows", (("status", "received"),))
    assert before[received] == during[received] == 1  # the last value is kept
    assert during.get(errors_key, 0) >= before.get(errors_key, 0) + 2
    age = ("gateway_metrics_refresh_age_seconds", ())
    assert 0 <= before[age] < during[age] <= later[age]
