"""The missed-webhook watchdog against the local fake of Stripe's API: events of handled types that the ledger
lacks are fed through the normal path exactly once, even with two gateways running it at the same time; one
replica at a time holds the lock; Stripe's 429 waits as Retry-After says; the metrics say what it found."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from gateway import keys
from gateway.stripe_account import watchdog
from gateway.stripe_client import Backoff
from gateway.webhooks.handlers import HANDLERS
from tests.factories import create_order, create_product
from tests.fakes.stripe_api import FakeStripe
from tests.stripe_events import checkout_session, make_event, new_id
from tests.support_helpers import deliver, ledger_row, order_status, poll, stock_of

MINUTE = 60


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def missed_payments(
    pool: asyncpg.Pool, fake: FakeStripe
) -> tuple[int, list[str], list[dict[str, Any]], dict[str, Any]]:
    """Three paid orders: the first delivered, the other two missed; plus noise the watchdog must leave alone."""
    async with pool.acquire() as con:
        product = await create_product(con, new_id("SKU", 8), stock=10)
        orders = [await create_order(con, [(product, 1)]) for _ in range(3)]
    now = int(time.time())
    events = [
        make_event("checkout.session.completed", checkout_session(o, user_id="user-1"), created=now - 20 * MINUTE + i)
        for i, o in enumerate(orders)
    ]
    assert (await deliver(pool, events[0])).status == "processed"
    fake.add_events(events)
    fake.add_event(make_event("customer.created", {"id": "cus_1", "object": "customer"}, created=now - 10 * MINUTE))
    recent = make_event("checkout.session.expired", checkout_session(None, status="expired"), created=now - 5)
    fake.add_event(recent)  # Stripe may still be delivering it: not missed yet
    return product, orders, events, recent


async def test_two_gateways_apply_two_missed_events_exactly_once(
    aiohttp_client: Any, app_factory: Any, fake_stripe: FakeStripe, db_pool: asyncpg.Pool
) -> None:
    product, orders, events, recent = await missed_payments(db_pool, fake_stripe)
    gateways = [(await aiohttp_client(app_factory(STRIPE_API_BASE=fake_stripe.base_url))).app for _ in range(2)]
    missed_before = sample("stripe_watchdog_missed_events_total")
    ok_before = sample("stripe_watchdog_runs_total", {"outcome": "ok"})
    locked_before = sample("stripe_watchdog_runs_total", {"outcome": "locked"})

    reports = await asyncio.gather(
        *(watchdog.watchdog_round(app[keys.DB_POOL], app[keys.STRIPE_CLIENT], app[keys.SETTINGS]) for app in gateways)
    )

    found = [r for r in reports if r is not None and r.missing]
    assert len(found) == 1  # one gateway fed both; the other was locked out or found nothing left
    (report,) = found
    assert (report.missing, report.ingested, report.already_known, report.failed) == (2, 2, 1, 0)
    assert report.oldest_missing_created == events[1]["created"]
    assert sample("stripe_watchdog_missed_events_total") == missed_before + 2
    runs = sample("stripe_watchdog_runs_total", {"outcome": "ok"}) - ok_before
    locked = sample("stripe_watchdog_runs_total", {"outcome": "locked"}) - locked_before
    assert (runs, locked) in ((1, 1), (2, 0))
    # Applied once each: orders paid, stock committed once, one bridge event per order.
    assert [await order_status(db_pool, o) for o in orders] == ["paid"] * 3
    assert await stock_of(db_pool, product) == 7
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM bridge_events WHERE event_type = 'ORDER_PAID'") == 3
        assert await con.fetchval("SELECT count(*) FROM webhook_events") == 3
    for event in events[1:]:
        row = await ledger_row(db_pool, event["id"])
        assert row["status"] == "processed" and row["request_id"].startswith("watchdog-")
        assert row["attempts"] == 1 and row["origin"] == "reconcile"
    assert await ledger_row(db_pool, recent["id"]) is None
    # The query: handled types only (at most 20 per listing, Stripe's limit), up to SETTLE_SECONDS ago.
    requests = fake_stripe.requests_to("GET", "/v1/events")
    listings = [r for r in requests if r.query.get("starting_after") is None]
    assert all(len(r.query["types"]) <= 20 for r in listings)
    assert sorted(t for r in listings[: len(listings) // len(found)] for t in r.query["types"]) == sorted(HANDLERS)
    for request in requests:
        assert int(request.query["created"]["lte"]) <= int(time.time()) - watchdog.SETTLE_SECONDS
        assert int(request.query["created"]["gte"]) <= int(time.time()) - 3600 + 60

    # The next rounds find nothing: nothing is fed twice.
    for app in gateways:
        again = await watchdog.watchdog_round(app[keys.DB_POOL], app[keys.STRIPE_CLIENT], app[keys.SETTINGS])
        assert again is not None and again.missing == 0
    assert sample("stripe_watchdog_missed_events_total") == missed_before + 2
    assert sample("stripe_watchdog_last_missed_events") == 0


async def test_a_replica_holding_the_lock_keeps_the_others_out(
    aiohttp_client: Any, app_factory: Any, fake_stripe: FakeStripe, db_pool: asyncpg.Pool
) -> None:
    _, orders, _, _ = await missed_payments(db_pool, fake_stripe)
    app = (await aiohttp_client(app_factory(STRIPE_API_BASE=fake_stripe.base_url))).app
    locked_before = sample("stripe_watchdog_runs_total", {"outcome": "locked"})
    async with db_pool.acquire() as other_replica:
        assert await other_replica.fetchval(watchdog.TRY_LOCK, watchdog.WATCHDOG_LOCK_KEY)
        try:
            report = await watchdog.watchdog_round(app[keys.DB_POOL], app[keys.STRIPE_CLIENT], app[keys.SETTINGS])
        finally:
            await other_replica.execute(watchdog.UNLOCK, watchdog.WATCHDOG_LOCK_KEY)
    assert report is None
    assert sample("stripe_watchdog_runs_total", {"outcome": "locked"}) == locked_before + 1
    assert fake_stripe.requests_to("GET", "/v1/events") == []
    assert await order_status(db_pool, orders[1]) == "pending"


async def test_watchdog_backs_off_on_429_and_exports_the_oldest_age(
    aiohttp_client: Any, app_factory: Any, fake_stripe: FakeStripe, db_pool: asyncpg.Pool
) -> None:
    _, orders, events, _ = await missed_payments(db_pool, fake_stripe)
    app = (await aiohttp_client(app_factory(STRIPE_API_BASE=fake_stripe.base_url))).app
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    fake_stripe.fail_next(2, status=429, method="GET", path="/v1/events", retry_after=3)
    now = time.time()
    report = await watchdog.watchdog_round(
        app[keys.DB_POOL], app[keys.STRIPE_CLIENT], app[keys.SETTINGS], now=now, backoff=Backoff(sleep=record)
    )

    assert waits == [3.0, 3.0]
    assert report is not None and (report.missing, report.ingested, report.error) == (2, 2, None)
    assert [await order_status(db_pool, o) for o in orders] == ["paid"] * 3
    assert sample("stripe_watchdog_last_missed_events") == 2
    assert sample("stripe_watchdog_oldest_missed_age_seconds") == int(now) - events[1]["created"]
    assert sample("stripe_watchdog_last_success_timestamp_seconds") == now
    listings = -(-len(HANDLERS) // 20)  # one per group of 20 types
    assert len(fake_stripe.requests_to("GET", "/v1/events")) == 2 + listings


async def test_watchdog_gives_up_a_round_stripe_keeps_refusing(
    aiohttp_client: Any, app_factory: Any, fake_stripe: FakeStripe, db_pool: asyncpg.Pool, caplog: Any
) -> None:
    _, orders, _, _ = await missed_payments(db_pool, fake_stripe)
    app = (await aiohttp_client(app_factory(STRIPE_API_BASE=fake_stripe.base_url))).app
    errors_before = sample("stripe_watchdog_runs_total", {"outcome": "error"})

    async def no_wait(seconds: float) -> None:
        return None

    fake_stripe.fail_next(5, status=429, method="GET", path="/v1/events", retry_after=30)
    report = await watchdog.watchdog_round(
        app[keys.DB_POOL], app[keys.STRIPE_CLIENT], app[keys.SETTINGS], backoff=Backoff(attempts=2, sleep=no_wait)
    )
    assert report is not None and report.error is not None and "RateLimitError" in report.error
    assert sample("stripe_watchdog_runs_total", {"outcome": "error"}) == errors_before + 1
    assert await order_status(db_pool, orders[1]) == "pending"
    # The lock was released: the next round (Stripe answering again) feeds them.
    fake_stripe.clear_faults()
    again = await watchdog.watchdog_round(app[keys.DB_POOL], app[keys.STRIPE_CLIENT], app[keys.SETTINGS])
    assert again is not None and again.ingested == 2


async def test_watchdog_runs_in_the_background(
    aiohttp_client: Any,
    app_factory: Any,
    fake_stripe: FakeStripe,
    db_pool: asyncpg.Pool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, orders, _, _ = await missed_payments(db_pool, fake_stripe)
    await aiohttp_client(app_factory(STRIPE_API_BASE=fake_stripe.base_url, STRIPE_WATCHDOG_INTERVAL_SECONDS="0.05"))

    async def paid() -> bool:
        return await order_status(db_pool, orders[2]) == "paid"

    await poll(paid, within=30)
    assert await order_status(db_pool, orders[1]) == "paid"
    assert any(r.getMessage() == "missed webhook events found by the watchdog" for r in caplog.records)
