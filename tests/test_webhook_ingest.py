"""The webhook end to end through the real app: signature, envelope, one transaction per delivery."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import pytest

from gateway import metrics
from tests.conftest import TEST_WEBHOOK_SECRET
from tests.factories import create_order, create_product
from tests.stripe_events import checkout_session, make_event, signed_event

WEBHOOK = "/stripe/webhook"


def sample(metric: Any, **labels: str) -> float:
    return metric.labels(**labels)._value.get() if labels else metric._value.get()


async def post_event(client: Any, event: dict[str, Any], secret: str = TEST_WEBHOOK_SECRET) -> Any:
    body, headers = signed_event(event, secret)
    return await client.post(WEBHOOK, data=body, headers=headers)


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool) -> Any:
    return await aiohttp_client(app_factory())


async def test_completed_checkout_pays_the_order_and_commits_stock(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=5)
        order_id = await create_order(con, [(product, 2)])
    session = checkout_session(order_id, amount_total=2000, user_id="user-1")
    event = make_event("checkout.session.completed", session)

    response = await post_event(client, event)

    assert response.status == 200, await response.text()
    assert (await response.json())["status"] == "processed"
    async with db_pool.acquire() as con:
        order = await con.fetchrow("SELECT * FROM orders WHERE id = $1::uuid", order_id)
        assert order["status"] == "paid"
        assert order["paid_at"] is not None
        assert order["stripe_checkout_session_id"] == session["id"]
        assert order["stripe_payment_intent_id"] == session["payment_intent"]
        assert (
            await con.fetchval("SELECT state FROM stock_reservations WHERE order_id = $1::uuid", order_id)
            == "committed"
        )
        assert await con.fetchval("SELECT stock_available FROM products WHERE id = $1", product) == 3
        ledger = await con.fetchrow("SELECT * FROM webhook_events WHERE stripe_event_id = $1", event["id"])
        assert ledger["status"] == "processed"
        assert str(ledger["order_id"]) == order_id
        assert ledger["attempts"] == 1
        bridge = await con.fetch("SELECT event_type, user_id, payload FROM bridge_events")
        assert [(b["event_type"], b["user_id"]) for b in bridge] == [("ORDER_PAID", "user-1")]
        audit = await con.fetch("SELECT action, actor, stripe_event_id, request_id FROM audit_log")
        assert [a["action"] for a in audit] == ["order.paid"]
        assert audit[0]["actor"] == "stripe" and audit[0]["stripe_event_id"] == event["id"]
        assert audit[0]["request_id"] == response.headers["X-Request-ID"]


async def test_duplicate_delivery_answers_duplicate_and_changes_nothing(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=5)
        order_id = await create_order(con, [(product, 1)])
    event = make_event("checkout.session.completed", checkout_session(order_id))
    before = sample(metrics.WEBHOOK_EVENTS, type="checkout.session.completed", outcome="duplicate")

    first = await post_event(client, event)
    second = await post_event(client, event)

    assert first.status == 200 and second.status == 200
    assert (await second.json())["status"] == "duplicate"
    assert sample(metrics.WEBHOOK_EVENTS, type="checkout.session.completed", outcome="duplicate") == before + 1
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM bridge_events") == 1
        assert await con.fetchval("SELECT count(*) FROM audit_log") == 1
        assert await con.fetchval("SELECT stock_available FROM products WHERE id = $1", product) == 4


async def test_fifty_concurrent_deliveries_apply_once(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=5)
        order_id = await create_order(con, [(product, 1)])
    event = make_event("checkout.session.completed", checkout_session(order_id))

    responses = await asyncio.gather(*(post_event(client, event) for _ in range(50)))

    statuses = sorted([(r.status, (await r.json())["status"]) for r in responses])
    assert statuses.count((200, "processed")) == 1
    assert statuses.count((200, "duplicate")) == 49
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM bridge_events") == 1
        assert await con.fetchval("SELECT stock_available FROM products WHERE id = $1", product) == 4
        assert await con.fetchval("SELECT count(*) FROM webhook_events") == 1


async def test_bad_signature_is_400_with_the_runbook_log_line(
    client: Any, db_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    event = make_event("checkout.session.completed", checkout_session(None))
    before = sample(metrics.WEBHOOK_SIGNATURE_FAILURES, reason="no_matching_signature")
    caplog.set_level(logging.WARNING, logger="gateway.webhooks")

    response = await post_event(client, event, secret="whsec_wrong_secret_000000")

    assert response.status == 400
    body = await response.json()
    assert body["error"]["code"] == "invalid_signature"
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    assert sample(metrics.WEBHOOK_SIGNATURE_FAILURES, reason="no_matching_signature") == before + 1
    records = [r for r in caplog.records if r.getMessage() == "Stripe webhook signature verification failed"]
    assert records and records[0].__dict__["reason"] == "no_matching_signature"
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_unknown_event_type_is_recorded_ignored(client: Any, db_pool: asyncpg.Pool) -> None:
    event = make_event("customer.created", {"id": "cus_123", "object": "customer"})
    response = await post_event(client, event)
    assert response.status == 200
    assert (await response.json())["status"] == "ignored"
    async with db_pool.acquire() as con:
        assert (
            await con.fetchval("SELECT status FROM webhook_events WHERE stripe_event_id = $1", event["id"]) == "ignored"
        )


async def test_late_expired_after_paid_is_stale(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=5)
        order_id = await create_order(con, [(product, 2)])
    session = checkout_session(order_id)
    await post_event(client, make_event("checkout.session.completed", session))
    expired = make_event("checkout.session.expired", {**session, "status": "expired", "payment_status": "unpaid"})

    response = await post_event(client, expired)

    assert (await response.json())["status"] == "stale"
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT status FROM orders WHERE id = $1::uuid", order_id) == "paid"
        assert await con.fetchval("SELECT stock_available FROM products WHERE id = $1", product) == 3
        reason = await con.fetchval(
            "SELECT outcome_reason FROM webhook_events WHERE stripe_event_id = $1", expired["id"]
        )
        assert "cannot move it to expired" in reason


@pytest.mark.parametrize("taken_meanwhile", [False, True])
async def test_a_late_payment_retakes_released_stock_or_records_the_oversell(
    client: Any, db_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture, taken_meanwhile: bool
) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=1)
        order_id = await create_order(con, [(product, 1)])
    session = checkout_session(order_id)
    expired = await post_event(client, make_event("checkout.session.expired", session))
    assert (await expired.json())["status"] == "processed"
    if taken_meanwhile:  # another order holds the released unit
        async with db_pool.acquire() as con:
            await create_order(con, [(product, 1)])
    caplog.set_level(logging.WARNING, logger="gateway.stock")

    paid = await post_event(client, make_event("checkout.session.completed", session))

    assert (await paid.json())["status"] == "processed"
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT status FROM orders WHERE id = $1::uuid", order_id) == "paid"
        assert await con.fetchval("SELECT stock_available FROM products WHERE id = $1", product) == 0
        state = await con.fetchval("SELECT state FROM stock_reservations WHERE order_id = $1::uuid", order_id)
        oversold = await con.fetch(
            "SELECT subject_id, order_id::text, details FROM audit_log WHERE action = 'stock.oversold'"
        )
    oversold_logged = [r for r in caplog.records if r.getMessage() == "stock oversold on a late payment"]
    if taken_meanwhile:
        assert state == "released"  # the unit belongs to the other order; this one is paid and oversold
        assert [(r["subject_id"], r["order_id"]) for r in oversold] == [(order_id, order_id)]
        assert oversold[0]["details"] == {"products": [product]}
        assert len(oversold_logged) == 1
    else:
        assert state == "committed"
        assert oversold == [] and oversold_logged == []
