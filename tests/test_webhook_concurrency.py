"""Concurrent deliveries through the real app: effects apply once, locks never deadlock, stock stays consistent."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.factories import create_order, create_product
from tests.stripe_events import checkout_session, make_event, new_id, payment_intent
from tests.webhook_support import bridge_types, order_row, post_event, seed_order, stock_of

ROUNDS = 20


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool) -> Any:
    # A pool as large as the concurrency, so requests really overlap inside PostgreSQL.
    return await aiohttp_client(app_factory(DB_POOL_MAX="20", RATE_LIMIT_WEBHOOK_MAX="100000"))


async def _all_ok(responses: list[Any]) -> list[str]:
    statuses = []
    for response in responses:
        body = await response.json()
        assert response.status == 200, body  # a deadlock or a lock error would be a 500 here
        statuses.append(body["status"])
    return statuses


async def test_paid_and_expired_for_one_order_race_to_paid(client: Any, db_pool: asyncpg.Pool) -> None:
    for _ in range(ROUNDS):
        async with db_pool.acquire() as con:
            seeded = await seed_order(con, stock=10, quantity=2)
        pi_id, ch_id, cs_id = new_id("pi"), new_id("ch"), new_id("cs_test")
        events = [
            make_event(
                "checkout.session.completed",
                checkout_session(seeded.order_id, session_id=cs_id, payment_intent=pi_id),
            ),
            make_event("payment_intent.succeeded", payment_intent(seeded.order_id, pi_id=pi_id, charge_id=ch_id)),
            make_event(
                "checkout.session.expired",
                checkout_session(seeded.order_id, session_id=cs_id, status="expired", payment_status="unpaid"),
            ),
        ]
        # each event twice, all at once: duplicates of a concurrent delivery must be answered "duplicate"
        responses = await asyncio.gather(*(post_event(client, e) for e in events + events))
        statuses = await _all_ok(list(responses))
        assert sorted(statuses[3:] + statuses[:3]).count("duplicate") == 3, statuses

        async with db_pool.acquire() as con:
            order = await order_row(con, seeded.order_id)
            assert order["status"] == "paid"
            assert order["stripe_payment_intent_id"] == pi_id and order["stripe_charge_id"] == ch_id
            assert await stock_of(con, seeded.product_ids[0]) == (8, 0, 2)
            types = await bridge_types(con, seeded.order_id)
            assert types.count("ORDER_PAID") == 1, types
            assert set(types) <= {"ORDER_PAID", "ORDER_EXPIRED"}
            assert (
                await con.fetchval(
                    "SELECT count(*) FROM webhook_events WHERE order_id = $1::uuid AND status = 'processed'",
                    seeded.order_id,
                )
                >= 2
            )
            assert await con.fetchval("SELECT count(*) FROM payments WHERE order_id = $1::uuid", seeded.order_id) == 1


async def test_orders_sharing_products_never_deadlock(client: Any, db_pool: asyncpg.Pool) -> None:
    initial = 1000
    async with db_pool.acquire() as con:
        products = [await create_product(con, f"SHARED-{i}", stock=initial) for i in range(4)]

    for round_ in range(ROUNDS):
        # Orders over overlapping product sets; half of them already released (a failed first attempt), so that
        # their payment takes the stock again (locks products) while the others release theirs (locks products).
        async with db_pool.acquire() as con:
            orders = []
            for i in range(6):
                items = [(products[(i + k) % 4], 1 + (i + round_) % 3) for k in range(3)]
                orders.append(await create_order(con, items, user_id=f"user-{i}"))
        failed = [
            make_event(
                "payment_intent.payment_failed",
                payment_intent(o, status="requires_payment_method", failure_code="card_declined"),
            )
            for o in orders[::2]
        ]
        await _all_ok(list(await asyncio.gather(*(post_event(client, e) for e in failed))))

        racing = []
        for i, order_id in enumerate(orders):
            if i % 2 == 0:  # released -> committed (retake)
                racing.append(make_event("payment_intent.succeeded", payment_intent(order_id)))
            elif i % 4 == 1:  # held -> released
                racing.append(
                    make_event(
                        "checkout.session.expired",
                        checkout_session(order_id, status="expired", payment_status="unpaid"),
                    )
                )
            else:  # held -> committed
                racing.append(make_event("checkout.session.completed", checkout_session(order_id)))
        statuses = await _all_ok(list(await asyncio.gather(*(post_event(client, e) for e in racing))))
        assert statuses == ["processed"] * len(racing)

        async with db_pool.acquire() as con:
            for i, order_id in enumerate(orders):
                expected = "expired" if i % 4 == 1 else "paid"
                assert (await order_row(con, order_id))["status"] == expected
            for product in products:
                available, held, committed = await stock_of(con, product)
                assert held == 0
                assert available + committed == initial, (product, available, held, committed)
            # every paid order holds its units committed exactly once
            assert (
                await con.fetchval(
                    "SELECT count(*) FROM stock_reservations r JOIN orders o ON o.id = r.order_id "
                    "WHERE (o.status = 'paid') <> (r.state = 'committed')"
                )
                == 0
            )
            deadlocks = await con.fetchval("SELECT count(*) FROM webhook_events WHERE last_error ILIKE '%deadlock%'")
            assert deadlocks == 0


async def test_fifty_concurrent_copies_of_each_event_type(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1)
    event = make_event("payment_intent.succeeded", payment_intent(seeded.order_id))
    statuses = await _all_ok(list(await asyncio.gather(*(post_event(client, event) for _ in range(50)))))
    assert statuses.count("processed") == 1 and statuses.count("duplicate") == 49
    async with db_pool.acquire() as con:
        assert await stock_of(con, seeded.product_ids[0]) == (4, 0, 1)
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAID"]
        ledger = await con.fetchrow(
            "SELECT status, attempts FROM webhook_events WHERE stripe_event_id = $1", event["id"]
        )
        assert ledger is not None and (ledger["status"], ledger["attempts"]) == ("processed", 1)
