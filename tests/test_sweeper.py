"""The reservation sweeper: expired held reservations are released exactly once, even with many sweepers."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from gateway import keys, metrics, stock
from gateway.db.pool import create_pool
from gateway.support.reservations import sweep_expired
from tests.conftest import make_settings
from tests.factories import create_order, create_product
from tests.stripe_events import checkout_session, make_event
from tests.support_helpers import deliver, order_status, stock_of

EXPIRED = timedelta(minutes=-1)


def released_metric() -> float:
    value: float = metrics.RESERVATIONS_RELEASED.labels("reservation_expired")._value.get()
    return value


async def reservation_states(pool: asyncpg.Pool, order_id: str) -> list[tuple[str, str | None]]:
    async with pool.acquire() as con:
        rows = await con.fetch(
            "SELECT state, release_reason FROM stock_reservations WHERE order_id = $1::uuid ORDER BY product_id",
            order_id,
        )
    return [(r["state"], r["release_reason"]) for r in rows]


async def test_sweep_releases_only_expired_held_reservations_once(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        p1 = await create_product(con, "SKU-1", stock=10)
        p2 = await create_product(con, "SKU-2", stock=10)
        expired = await create_order(con, [(p1, 2), (p2, 1)], expires_in=EXPIRED)
        live = await create_order(con, [(p1, 1)])
        paid = await create_order(con, [(p1, 3)], expires_in=EXPIRED)
        await con.execute("UPDATE stock_reservations SET state = 'committed' WHERE order_id = $1::uuid", paid)
    assert (await stock_of(db_pool, p1), await stock_of(db_pool, p2)) == (4, 9)
    before = released_metric()

    released = await sweep_expired(db_pool)

    assert released == 2  # the two reservations (products) of the expired order
    assert released_metric() == before + 2
    assert (await stock_of(db_pool, p1), await stock_of(db_pool, p2)) == (6, 10)
    assert await reservation_states(db_pool, expired) == [("released", "reservation_expired")] * 2
    assert await reservation_states(db_pool, live) == [("held", None)]
    assert await reservation_states(db_pool, paid) == [("committed", None)]
    async with db_pool.acquire() as con:
        audit = await con.fetch("SELECT actor, action, order_id::text, details FROM audit_log")
    assert [(a["actor"], a["action"], a["order_id"]) for a in audit] == [("sweeper", "reservation.released", expired)]
    assert audit[0]["details"] == {"reason": "reservation_expired", "products": 2}

    # Nothing left: a second sweep changes nothing.
    assert await sweep_expired(db_pool) == 0
    assert (await stock_of(db_pool, p1), await stock_of(db_pool, p2)) == (6, 10)
    assert released_metric() == before + 2


async def test_sweep_works_in_batches_until_none_left(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=20)
        for _ in range(7):
            await create_order(con, [(product, 2)], expires_in=EXPIRED)
    assert await stock_of(db_pool, product) == 6
    assert await sweep_expired(db_pool, batch=3) == 7
    assert await stock_of(db_pool, product) == 20


async def test_a_locked_reservation_is_skipped_not_released_twice(db_pool: asyncpg.Pool) -> None:
    """Deterministic proof of SKIP LOCKED: while one sweeper's transaction holds the rows, another releases
    nothing; after the first commits, nothing is left."""
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=10)
        order_id = await create_order(con, [(product, 4)], expires_in=EXPIRED)
    async with db_pool.acquire() as first, db_pool.acquire() as second:
        tx = first.transaction()
        await tx.start()
        try:
            assert await first.fetchval(stock.RELEASE_EXPIRED, 100) == 1
            assert await stock.release_expired(second, 100) == 0  # locked by `first`: skipped, not waited for
        finally:
            await tx.commit()
        assert await stock.release_expired(second, 100) == 0
    assert await stock_of(db_pool, product) == 10
    assert await reservation_states(db_pool, order_id) == [("released", "reservation_expired")]


async def test_concurrent_sweepers_release_each_reservation_exactly_once(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    """Two replicas (two pools) sweeping at the same time, several sweeps each."""
    products: list[int] = []
    async with db_pool.acquire() as con:
        for i in range(4):
            products.append(await create_product(con, f"SKU-{i}", stock=1000))
        orders = []
        for n in range(60):
            items = [(products[n % 4], 1 + n % 3), (products[(n + 1) % 4], 2)]
            orders.append(await create_order(con, items, expires_in=EXPIRED))
        initial = {p: 1000 for p in products}
        taken = await con.fetch("SELECT product_id, sum(quantity) AS q FROM stock_reservations GROUP BY 1")
    assert sum(r["q"] for r in taken) > 0
    before = released_metric()
    settings = make_settings()
    replicas = [await create_pool(settings, database_url, min_size=1, max_size=4) for _ in range(2)]
    try:
        results = await asyncio.gather(*(sweep_expired(pool, batch=7) for pool in replicas for _ in range(3)))
    finally:
        for pool in replicas:
            await pool.close()

    assert sum(results) == 120  # 60 orders x 2 products
    assert released_metric() == before + 120
    for product in products:
        assert await stock_of(db_pool, product) == initial[product]
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM stock_reservations WHERE state <> 'released'") == 0
        # one audit row per order and sweep transaction: every reservation counted once in total
        total = await con.fetchval(
            "SELECT sum((details->>'products')::int) FROM audit_log WHERE action = 'reservation.released'"
        )
        assert total == 120


async def test_payment_after_the_sweep_takes_the_stock_again_once(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=5)
        order_id = await create_order(con, [(product, 2)], expires_in=EXPIRED)
    assert await sweep_expired(db_pool) == 1
    assert await stock_of(db_pool, product) == 5
    event = make_event("checkout.session.completed", checkout_session(order_id))

    assert (await deliver(db_pool, event)).status == "processed"
    assert (await deliver(db_pool, event)).status == "duplicate"

    assert await order_status(db_pool, order_id) == "paid"
    assert await stock_of(db_pool, product) == 3
    assert await reservation_states(db_pool, order_id) == [("committed", None)]
    assert await sweep_expired(db_pool) == 0
    assert await stock_of(db_pool, product) == 3


async def test_the_server_runs_the_sweeper(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.stock")
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=5)
        order_id = await create_order(con, [(product, 2)], expires_in=EXPIRED)
    app = app_factory(RESERVATION_SWEEP_INTERVAL_SECONDS="0.05")
    await aiohttp_client(app)
    assert "reservation_sweeper" in [t.get_name() for t in app[keys.LIFECYCLE].tasks]

    deadline = time.monotonic() + 20  # generous: the assertion is about the result, not the timing
    while await reservation_states(db_pool, order_id) != [("released", "reservation_expired")]:
        assert time.monotonic() < deadline, "the sweeper never released the expired reservation"
        await asyncio.sleep(0.05)

    assert await stock_of(db_pool, product) == 5
    records = [r for r in caplog.records if r.getMessage() == "expired stock reservations released"]
    assert records and records[0].__dict__["released"] == 1


async def test_sweeper_disabled_with_interval_zero(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool
) -> None:
    app = app_factory(RESERVATION_SWEEP_INTERVAL_SECONDS="0")
    await aiohttp_client(app)
    assert "reservation_sweeper" not in [t.get_name() for t in app[keys.LIFECYCLE].tasks]
