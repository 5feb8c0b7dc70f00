"""Every order event type through the real app, fed with the real Stripe fixtures of tests/fixtures/stripe.

Fixtures are pointed at an order of ours by setting `metadata.order_id` (as the checkout route does) or by the
Stripe ids the order already knows (refunds and disputes carry no order metadata in reality). Where no real
capture exists (checkout.session.expired / async_payment_*, the pre-2022-11-15 `payment_intent.charges` list; see
SOURCES.md) the object comes from the builders of tests/stripe_events.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from tests.stripe_events import checkout_session, make_event, new_id, payment_intent
from tests.webhook_support import (
    audit_actions,
    bridge_types,
    deliver,
    fixture_event,
    ledger_row,
    order_row,
    post_event,
    reservation_states,
    retarget,
    seed_order,
    stock_of,
)

SYNC = "stripe-events/sync-engine/"
COMPLETED_2020 = SYNC + "checkout.session.completed__2020-03-02_T8nSaZqtPu.json"
PI_SUCCEEDED_2020 = SYNC + "payment_intent.succeeded__2020-03-02_1IlYUUJDPo.json"
PI_FAILED_2020 = SYNC + "payment_intent.payment_failed__2020-03-02_1IlYUUJDPo.json"
PI_CANCELED_2020 = SYNC + "payment_intent.canceled__2020-03-02_1IlYUUJDPo.json"
REFUND_CREATED_2020 = SYNC + "refund.created__2020-03-02_1KJrGtJDPo.json"
REFUND_UPDATED_2020 = SYNC + "refund.updated__2020-03-02_1KJrGtJDPo.json"
DISPUTE_2020 = SYNC + "charge.dispute.created__2020-03-02_3KtQThJDPo.json"
CHARGE_REFUNDED_2020 = "stripe-events/stripe-ruby-mock/charge.refunded__2020-08-27_0000000000.json"
CHARGE_REFUNDED_2022 = "constructed/pay/constructed__charge.refunded__2022-08-01__ch_chargeid.json"
SUB_CHECKOUT_2022 = (
    "constructed/pay/constructed__checkout.session.completed__2022-08-01__"
    "cs_test_a1UejXx8ebIdTzFolicVypUAZpOBVkoQKDbaarXoPlPVtj8p0zujPEEhjT.json"
)
MOCK = "constructed/stripe-mock/"
PI_FAILED_BASIL = (
    MOCK + "constructed__payment_intent.payment_failed__2025-03-31.basil__pi_1PgafyB7WZ01zgkWSjxsAJo3.json"
)
REFUND_BASIL = MOCK + "constructed__refund.created__2025-03-31.basil__re_1Pgc72B7WZ01zgkWqPvrRrPE.json"
DISPUTE_BASIL = MOCK + "constructed__charge.dispute.created__2025-03-31.basil__dp_1Pgc71B7WZ01zgkWMevJiAUx.json"


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool) -> Any:
    return await aiohttp_client(app_factory())


def ts(event: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(event["created"], UTC)


async def paid_bridge_payloads(con: asyncpg.Connection, order_id: str, event_type: str) -> list[dict[str, Any]]:
    rows = await con.fetch(
        "SELECT payload, metadata, user_id, app_source FROM bridge_events "
        "WHERE payload->>'order_id' = $1 AND event_type = $2 ORDER BY id",
        order_id,
        event_type,
    )
    return [{**r["payload"], "_metadata": r["metadata"], "_user": r["user_id"], "_app": r["app_source"]} for r in rows]


# ------------------------------------------------------------------ checkout sessions


async def test_checkout_completed_2020_fixture_pays_the_order(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=2, unit_amount=1000)
    event = retarget(fixture_event(COMPLETED_2020), metadata={"order_id": seeded.order_id})
    session = event["data"]["object"]

    await deliver(client, event)

    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert order["status"] == "paid"
        assert order["paid_at"] == ts(event)
        assert order["amount_total"] == 2000  # ours, from the database: never taken from the payload
        assert order["amount_refunded"] == 0
        assert order["stripe_checkout_session_id"] == session["id"]
        assert order["stripe_payment_intent_id"] == session["payment_intent"]
        assert order["stripe_customer_id"] == session["customer"]
        assert await reservation_states(con, seeded.order_id) == ["committed"]
        assert await stock_of(con, seeded.product_ids[0]) == (3, 0, 2)
        assert await audit_actions(con, seeded.order_id) == ["order.paid"]
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAID"]
        (payload,) = await paid_bridge_payloads(con, seeded.order_id, "ORDER_PAID")
        assert payload["status"] == "paid" and payload["amount"] == 2000 and payload["source"] == "stripe"
        assert payload["session_id"] == session["id"] and payload["_user"] == "user-1"
        assert payload["_metadata"] == {"version": "v1", "origin": "webhook"}
        ledger = await ledger_row(con, event["id"])
        assert ledger is not None and ledger["status"] == "processed" and str(ledger["order_id"]) == seeded.order_id
        assert ledger["api_version"] == "2020-03-02" and ledger["livemode"] is True


async def test_subscription_mode_checkout_makes_no_order(client: Any, db_pool: asyncpg.Pool) -> None:
    # subscription checkouts belong to the subscription handlers: no order, no ORDER_* bridge event
    event = fixture_event(SUB_CHECKOUT_2022)
    response = await post_event(client, event)
    assert response.status == 200
    assert (await response.json())["status"] in ("processed", "ignored")
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM orders") == 0
        assert await con.fetchval("SELECT count(*) FROM bridge_events WHERE event_type LIKE 'ORDER_%'") == 0


async def test_payment_link_checkout_creates_the_order(client: Any, db_pool: asyncpg.Pool) -> None:
    event = fixture_event(COMPLETED_2020)  # no metadata.order_id: a Payment Link / dashboard checkout
    session = event["data"]["object"]

    body = await deliver(client, event)
    await deliver(client, event, "duplicate")

    async with db_pool.acquire() as con:
        orders = await con.fetch("SELECT * FROM orders")
        assert len(orders) == 1
        order = orders[0]
        assert str(order["id"]) == body.get("order_id", str(order["id"]))
        assert order["status"] == "paid" and order["paid_at"] == ts(event)
        assert (order["amount_total"], order["currency"]) == (999, "eur")
        assert order["stripe_checkout_session_id"] == session["id"]
        assert order["stripe_payment_intent_id"] == session["payment_intent"]
        assert order["stripe_customer_id"] == session["customer"]
        order_id = str(order["id"])
        assert await audit_actions(con, order_id) == ["order.created", "order.paid"]
        assert await bridge_types(con, order_id) == ["ORDER_PAID"]
        assert await con.fetchval("SELECT count(*) FROM stock_reservations") == 0


async def test_async_payment_succeeded_after_unpaid_completion(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=4, quantity=1)
    pi_id = new_id("pi")
    unpaid = checkout_session(seeded.order_id, amount_total=1000, payment_status="unpaid", payment_intent=pi_id)
    completed = make_event("checkout.session.completed", unpaid)

    body = await deliver(client, completed)
    assert body["status"] == "processed"
    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert order["status"] == "pending" and order["paid_at"] is None
        assert order["stripe_payment_intent_id"] == pi_id
        assert await reservation_states(con, seeded.order_id) == ["held"]
        assert await bridge_types(con, seeded.order_id) == []

    succeeded = make_event("checkout.session.async_payment_succeeded", {**unpaid, "payment_status": "paid"})
    await deliver(client, succeeded)
    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert order["status"] == "paid" and order["paid_at"] == ts(succeeded)
        assert await stock_of(con, seeded.product_ids[0]) == (3, 0, 1)
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAID"]


async def test_async_payment_failed_fails_the_order_and_releases_stock(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=4, quantity=3)
    session = checkout_session(seeded.order_id, payment_status="unpaid", payment_intent=new_id("pi"))
    await deliver(client, make_event("checkout.session.async_payment_failed", session))
    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert order["status"] == "failed" and order["status_reason"] == "async_payment_failed"
        assert order["paid_at"] is None
        assert await stock_of(con, seeded.product_ids[0]) == (4, 0, 0)
        assert await reservation_states(con, seeded.order_id) == ["released"]
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAYMENT_FAILED"]
        assert await audit_actions(con, seeded.order_id) == ["order.failed"]


async def test_checkout_expired_releases_stock_once(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=6, quantity=2)
    session = checkout_session(seeded.order_id, status="expired", payment_status="unpaid")
    expired = make_event("checkout.session.expired", session)
    await deliver(client, expired)
    # the same session expiring again under another event id (Stripe re-sends with a new id on replays)
    await deliver(client, make_event("checkout.session.expired", session))
    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert order["status"] == "expired" and order["status_reason"] == "checkout_session_expired"
        assert await stock_of(con, seeded.product_ids[0]) == (6, 0, 0)
        assert await bridge_types(con, seeded.order_id) == ["ORDER_EXPIRED"]
        assert await audit_actions(con, seeded.order_id) == ["order.expired"]


# ------------------------------------------------------------------ payment intents


@pytest.mark.parametrize("shape", ["fixture_2020", "legacy_charges_2020_08", "latest_charge_current"])
async def test_payment_intent_succeeded_in_every_shape(client: Any, db_pool: asyncpg.Pool, shape: str) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1, unit_amount=1000)
    charge_id = new_id("ch")
    if shape == "fixture_2020":
        event = fixture_event(PI_SUCCEEDED_2020)
        event = retarget(event, metadata={"order_id": seeded.order_id}, status="succeeded", latest_charge=charge_id)
    else:
        pi = payment_intent(
            seeded.order_id, 1000, charge_id=charge_id, legacy_charges=shape == "legacy_charges_2020_08"
        )
        event = make_event(
            "payment_intent.succeeded",
            pi,
            api_version="2020-08-27" if shape.startswith("legacy") else "2025-03-31.basil",
        )
    pi_id = event["data"]["object"]["id"]

    await deliver(client, event)

    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert order["status"] == "paid" and order["paid_at"] == ts(event)
        assert order["stripe_payment_intent_id"] == pi_id
        assert order["stripe_charge_id"] == charge_id
        payment = await con.fetchrow("SELECT * FROM payments WHERE order_id = $1::uuid", seeded.order_id)
        assert payment is not None
        assert (payment["stripe_payment_intent_id"], payment["stripe_charge_id"], payment["status"]) == (
            pi_id,
            charge_id,
            "succeeded",
        )
        assert payment["amount"] == 1000
        assert await stock_of(con, seeded.product_ids[0]) == (4, 0, 1)
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAID"]


@pytest.mark.parametrize("fixture", [PI_FAILED_2020, PI_FAILED_BASIL])
async def test_payment_intent_failed_fails_and_releases(client: Any, db_pool: asyncpg.Pool, fixture: str) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=2)
    event = retarget(
        fixture_event(fixture),
        metadata={"order_id": seeded.order_id},
        last_payment_error={
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
            "type": "card_error",
        },
    )
    await deliver(client, event)
    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert order["status"] == "failed" and order["status_reason"] == "card_declined"
        assert order["stripe_payment_intent_id"] == event["data"]["object"]["id"]
        assert await stock_of(con, seeded.product_ids[0]) == (5, 0, 0)
        assert await con.fetchval("SELECT status FROM payments WHERE order_id = $1::uuid", seeded.order_id) == "failed"
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAYMENT_FAILED"]

    # a later success (another card) pays the order and takes the stock again, once
    ok = payment_intent(seeded.order_id, 2000, pi_id=event["data"]["object"]["id"])
    await deliver(client, make_event("payment_intent.succeeded", ok))
    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert order["status"] == "paid"
        assert await stock_of(con, seeded.product_ids[0]) == (3, 0, 2)
        assert (
            await con.fetchval("SELECT status FROM payments WHERE order_id = $1::uuid", seeded.order_id) == "succeeded"
        )
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAYMENT_FAILED", "ORDER_PAID"]


async def test_payment_intent_canceled_cancels_and_releases(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=2)
    event = retarget(
        fixture_event(PI_CANCELED_2020),
        metadata={"order_id": seeded.order_id},
        status="canceled",
        cancellation_reason="abandoned",
    )
    await deliver(client, event)
    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert order["status"] == "canceled" and order["status_reason"] == "abandoned"
        assert await stock_of(con, seeded.product_ids[0]) == (5, 0, 0)
        assert await bridge_types(con, seeded.order_id) == ["ORDER_CANCELED"]
        assert await audit_actions(con, seeded.order_id) == ["order.canceled"]
    # a payment failure after the cancellation does not move it
    failed = retarget(fixture_event(PI_FAILED_2020), metadata={"order_id": seeded.order_id})
    await deliver(client, failed, "stale")


# ------------------------------------------------------------------ refunds and disputes


async def _paid_order(
    client: Any,
    db_pool: asyncpg.Pool,
    *,
    unit_amount: int,
    quantity: int = 1,
    pi_id: str | None = None,
    charge_id: str | None = None,
) -> tuple[str, int]:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=quantity, unit_amount=unit_amount, currency="usd")
    pi = payment_intent(seeded.order_id, unit_amount * quantity, currency="usd", pi_id=pi_id, charge_id=charge_id)
    await deliver(client, make_event("payment_intent.succeeded", pi))
    return seeded.order_id, seeded.product_ids[0]


async def test_charge_refunded_partial_then_full(client: Any, db_pool: asyncpg.Pool) -> None:
    partial = fixture_event(CHARGE_REFUNDED_2022)  # 2022-08-01, no `object` key, 500 of 1500 refunded
    charge_id = partial["data"]["object"]["id"]
    order_id, product = await _paid_order(client, db_pool, unit_amount=1500, charge_id=charge_id)

    await deliver(client, partial)
    async with db_pool.acquire() as con:
        order = await order_row(con, order_id)
        assert (order["status"], order["amount_refunded"]) == ("partially_refunded", 500)

    full = retarget(fixture_event(CHARGE_REFUNDED_2022), amount_refunded=1500, refunded=True)
    await deliver(client, full)
    await deliver(client, partial, "duplicate")
    late_partial = fixture_event(CHARGE_REFUNDED_2022)  # same content, new event id, after the full refund
    body = await deliver(client, late_partial)
    assert body["status"] == "processed"

    async with db_pool.acquire() as con:
        order = await order_row(con, order_id)
        assert (order["status"], order["amount_refunded"], order["amount_total"]) == ("refunded", 1500, 1500)
        assert order["paid_at"] is not None
        assert await stock_of(con, product) == (4, 0, 1)  # a refund does not restock
        assert await bridge_types(con, order_id) == ["ORDER_PAID", "ORDER_REFUNDED", "ORDER_REFUNDED"]
        refunds = await paid_bridge_payloads(con, order_id, "ORDER_REFUNDED")
        assert [(p["status"], p["amount_refunded"]) for p in refunds] == [
            ("partially_refunded", 500),
            ("refunded", 1500),
        ]
        assert await audit_actions(con, order_id) == [
            "order.paid",
            "order.refund_applied",
            "order.refund_applied",
        ]


async def test_charge_refunded_2020_fixture_implies_the_payment(client: Any, db_pool: asyncpg.Pool) -> None:
    # The refund arrives before any payment event: the order is paid (implied) then refunded, in one transaction.
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1, unit_amount=100, currency="usd")
    event = retarget(fixture_event(CHARGE_REFUNDED_2020), metadata={"order_id": seeded.order_id})
    await deliver(client, event)
    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert (order["status"], order["amount_refunded"]) == ("refunded", 100)
        assert order["stripe_charge_id"] == event["data"]["object"]["id"]
        assert order["paid_at"] == ts(event)
        assert await stock_of(con, seeded.product_ids[0]) == (4, 0, 1)
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAID", "ORDER_REFUNDED"]


@pytest.mark.parametrize("fixtures", [(REFUND_CREATED_2020, REFUND_UPDATED_2020), (REFUND_BASIL, None)])
async def test_refund_events_record_the_refund(
    client: Any, db_pool: asyncpg.Pool, fixtures: tuple[str, str | None]
) -> None:
    created_name, updated_name = fixtures
    created = fixture_event(created_name)
    refund = created["data"]["object"]
    amount = refund["amount"]
    # the order is 3x the refund; it knows the refund's charge (set by the payment event)
    order_id, _ = await _paid_order(client, db_pool, unit_amount=amount, quantity=3, charge_id=refund["charge"])

    pending = retarget(created, status="pending")
    await deliver(client, pending)
    async with db_pool.acquire() as con:
        row = await con.fetchrow("SELECT * FROM refunds WHERE stripe_refund_id = $1", refund["id"])
        assert row is not None and row["status"] == "pending" and str(row["order_id"]) == order_id
        assert (await order_row(con, order_id))["amount_refunded"] == 0

    updated = fixture_event(updated_name) if updated_name else retarget(fixture_event(created_name), status="succeeded")
    updated["type"] = "refund.updated"
    await deliver(client, updated)
    # a stale "pending" re-send never moves a succeeded refund back
    await deliver(client, retarget(fixture_event(created_name), status="pending"))
    async with db_pool.acquire() as con:
        row = await con.fetchrow("SELECT * FROM refunds WHERE stripe_refund_id = $1", refund["id"])
        assert row is not None and row["status"] == "succeeded" and row["amount"] == amount
        order = await order_row(con, order_id)
        assert (order["status"], order["amount_refunded"]) == ("partially_refunded", amount)
        assert await bridge_types(con, order_id) == ["ORDER_PAID", "ORDER_REFUNDED"]


@pytest.mark.parametrize("fixture", [DISPUTE_2020, DISPUTE_BASIL])
async def test_dispute_created_disputes_the_order(client: Any, db_pool: asyncpg.Pool, fixture: str) -> None:
    event = fixture_event(fixture)
    dispute = event["data"]["object"]
    order_id, product = await _paid_order(client, db_pool, unit_amount=dispute["amount"], charge_id=dispute["charge"])
    await deliver(client, event)
    await deliver(client, event, "duplicate")
    async with db_pool.acquire() as con:
        order = await order_row(con, order_id)
        assert order["status"] == "disputed" and order["status_reason"] == dispute["reason"]
        row = await con.fetchrow("SELECT * FROM disputes WHERE stripe_dispute_id = $1", dispute["id"])
        assert row is not None and str(row["order_id"]) == order_id and row["amount"] == dispute["amount"]
        assert row["status"] == dispute["status"]
        assert await bridge_types(con, order_id) == ["ORDER_PAID", "ORDER_DISPUTED"]
        assert await audit_actions(con, order_id) == ["order.paid", "dispute.opened"]
        assert await stock_of(con, product) == (4, 0, 1)

    # a full refund of a disputed order ends it refunded
    from tests.stripe_events import charge

    refunded = charge(
        order_id,
        dispute["amount"],
        currency="usd",
        charge_id=dispute["charge"],
        amount_refunded=dispute["amount"],
    )
    await deliver(client, make_event("charge.refunded", refunded))
    async with db_pool.acquire() as con:
        order = await order_row(con, order_id)
        assert (order["status"], order["amount_refunded"]) == ("refunded", dispute["amount"])


# ------------------------------------------------------------------ envelope and live mode


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b"[1, 2, 3]",
        b'{"object": "event", "type": "payment_intent.succeeded", "created": 1700000000, "data": {"object": {}}}',
        b'{"id": "ch_123", "type": "payment_intent.succeeded", "created": 1700000000, "data": {"object": {}}}',
        b'{"id": "evt_123", "type": "payment_intent.succeeded", "created": 1700000000, "data": {}}',
        b'{"id": "evt_123", "type": "payment_intent.succeeded", "created": 1700000000}',
        b'{"id": "evt_123", "type": "payment_intent.succeeded", "data": {"object": {}}}',
        b'{"id": "evt_123", "type": "payment_intent.succeeded", "created": "yesterday", "data": {"object": {}}}',
    ],
    ids=[
        "not-json",
        "array",
        "no-id",
        "id-not-evt",
        "no-data-object",
        "no-data",
        "no-created",
        "created-text",
    ],
)
async def test_envelope_errors_are_400_and_record_nothing(client: Any, db_pool: asyncpg.Pool, body: bytes) -> None:
    from tests.conftest import TEST_WEBHOOK_SECRET
    from tests.stripe_events import signed_headers

    response = await client.post("/stripe/webhook", data=body, headers=signed_headers(body, TEST_WEBHOOK_SECRET))
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_event"
    assert error["request_id"] == response.headers["X-Request-ID"]
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_livemode_deployment_refuses_test_events(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool
) -> None:
    live = await aiohttp_client(app_factory(STRIPE_LIVEMODE="true"))
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1)
    event = retarget(fixture_event(PI_SUCCEEDED_2020), metadata={"order_id": seeded.order_id}, status="succeeded")
    assert event["livemode"] is False

    response = await post_event(live, event)

    assert response.status == 400
    assert (await response.json())["error"]["code"] == "livemode_mismatch"
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM webhook_events") == 0
        assert (await order_row(con, seeded.order_id))["status"] == "pending"
        assert await con.fetchval("SELECT count(*) FROM bridge_events") == 0
        assert await con.fetchval("SELECT count(*) FROM audit_log") == 0
        assert await stock_of(con, seeded.product_ids[0]) == (4, 1, 0)

    # the live-mode fixture is accepted by the same deployment
    live_event = retarget(fixture_event(COMPLETED_2020), metadata={"order_id": seeded.order_id})
    assert live_event["livemode"] is True
    response = await post_event(live, live_event)
    assert response.status == 200 and (await response.json())["status"] == "processed"
