"""`gateway stripe resync` against the local fake of Stripe's API: the current objects are applied through the
same path and state machine as webhooks, as synthetic events with deterministic ids (a rerun is a duplicate),
for objects whose events are older than the Events API's 30 days; state never moves backwards."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from gateway.settings import Settings
from tests.conftest import make_settings
from tests.factories import create_order, create_product
from tests.fakes.stripe_api import FakeStripe
from tests.stripe_events import charge, checkout_session, make_event, new_id, payment_intent, subscription
from tests.subscription_helpers import PRICE_PREMIUM, bridge_rows, deliver, subscription_row
from tests.subscription_helpers import test_plans as test_plans  # fixture
from tests.support_helpers import order_status, run_cli, stock_of

pytestmark = pytest.mark.usefixtures("test_plans")
DAY = 86400


@pytest.fixture
def settings(database_url: str, fake_stripe: FakeStripe) -> Settings:
    return make_settings(DATABASE_URL=database_url, STRIPE_API_BASE=fake_stripe.base_url)


async def ledger_ids(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as con:
        return [r[0] for r in await con.fetch("SELECT stripe_event_id FROM webhook_events ORDER BY id")]


async def test_resync_of_a_subscription_whose_events_are_older_than_30_days(
    db_pool: asyncpg.Pool, settings: Settings, fake_stripe: FakeStripe
) -> None:
    now = int(time.time())
    sub_id, customer = new_id("sub"), new_id("cus")
    active = subscription(
        price_id=PRICE_PREMIUM, sub_id=sub_id, customer=customer, user_id="user-7", created=now - 60 * DAY
    )
    assert (
        await deliver(db_pool, make_event("customer.subscription.created", active, created=now - 60 * DAY))
    ).status == ("processed")
    # Canceled 40 days ago; that webhook never arrived and the Events API no longer returns it.
    canceled = {**active, "status": "canceled", "canceled_at": now - 40 * DAY, "ended_at": now - 40 * DAY}
    fake_stripe.add_event(make_event("customer.subscription.deleted", canceled, created=now - 40 * DAY))
    fake_stripe.store_subscription(canceled)

    reconciled = await run_cli(["events", "reconcile", "--since", "30d"], settings)
    assert reconciled.code == 0 and reconciled.json["seen"] == 0
    async with db_pool.acquire() as con:
        assert (await subscription_row(con, sub_id) or {})["status"] == "active"

    result = await run_cli(["stripe", "resync", "subscription", sub_id], settings)

    assert result.code == 0, result.stderr
    (event,) = result.json["events"]
    assert event["type"] == "customer.subscription.deleted" and event["status"] == "processed"
    assert event["event_id"].startswith("evt_resync_")
    async with db_pool.acquire() as con:
        row = await subscription_row(con, sub_id)
        assert row is not None and row["status"] == "canceled" and row["last_event_id"] == event["event_id"]
        cancelled = [b for b in await bridge_rows(con) if b["event_type"] == "SUBSCRIPTION_CANCELLED"]
        assert [(b["user_id"], b["payload"]["status"], b["source_event_id"]) for b in cancelled] == [
            ("user-7", "canceled", event["event_id"])
        ]
        ledger = await con.fetchrow("SELECT * FROM webhook_events WHERE stripe_event_id = $1", event["event_id"])
        assert ledger["type"] == "customer.subscription.deleted" and ledger["request_id"] == result.json["request_id"]
        assert ledger["origin"] == "resync"
        assert ledger["payload"]["data"]["object"] == canceled
    (fetch,) = fake_stripe.requests_to("GET", f"/v1/subscriptions/{sub_id}")
    assert fetch.stripe_version == settings.stripe_api_version

    # A rerun is a duplicate: same id, nothing written.
    again = await run_cli(["stripe", "resync", "subscription", sub_id], settings)
    assert again.code == 0
    assert again.json["events"] == [{**event, "status": "duplicate", "reason": None}]
    async with db_pool.acquire() as con:
        assert len([b for b in await bridge_rows(con) if b["event_type"] == "SUBSCRIPTION_CANCELLED"]) == 1


async def test_resync_never_moves_a_subscription_backwards(
    db_pool: asyncpg.Pool, settings: Settings, fake_stripe: FakeStripe
) -> None:
    now = int(time.time())
    sub_id = new_id("sub")
    live = subscription(price_id=PRICE_PREMIUM, sub_id=sub_id, customer=new_id("cus"), user_id="user-8")
    ended = {**live, "status": "canceled", "canceled_at": now - DAY}
    await deliver(db_pool, make_event("customer.subscription.deleted", ended, created=now - DAY))
    fake_stripe.store_subscription(live)  # an object claiming it is active again: an ended subscription stays ended

    result = await run_cli(["stripe", "resync", "subscription", sub_id], settings)

    assert result.code == 0, result.stderr
    # Recorded (when it was first active is kept), never applied as a status: the subscription stays ended.
    assert [e["status"] for e in result.json["events"]] == ["processed"]
    async with db_pool.acquire() as con:
        assert (await subscription_row(con, sub_id) or {})["status"] == "canceled"


async def paid_order_in_stripe(pool: asyncpg.Pool, fake: FakeStripe) -> tuple[int, str, dict[str, Any]]:
    """A pending order whose session was paid 45 days ago and half refunded since; no webhook ever came."""
    paid = int(time.time()) - 45 * DAY
    async with pool.acquire() as con:
        product = await create_product(con, new_id("SKU", 8), stock=5, unit_amount=1000)
        session_id = "cs_test_a1" + new_id("x", 56)[2:]
        order = await create_order(con, [(product, 1)], session_id=session_id)
    pi_id, charge_id = new_id("pi"), new_id("ch")
    fake.sessions[session_id] = checkout_session(
        order, session_id=session_id, amount_total=1000, payment_intent=pi_id, user_id="user-1", created=paid - 60
    )
    fake.store_payment_intent(payment_intent(order, 1000, pi_id=pi_id, charge_id=charge_id, created=paid - 30))
    refunded = charge(order, 1000, charge_id=charge_id, payment_intent=pi_id, amount_refunded=400, created=paid)
    fake.store_charge(refunded)
    return product, order, refunded


async def test_resync_of_an_order_applies_payment_and_refund_once(
    db_pool: asyncpg.Pool, settings: Settings, fake_stripe: FakeStripe
) -> None:
    product, order, refunded = await paid_order_in_stripe(db_pool, fake_stripe)

    result = await run_cli(["stripe", "resync", "order", order], settings)

    assert result.code == 0, result.stderr
    assert [(e["type"], e["status"]) for e in result.json["events"]] == [
        ("checkout.session.completed", "processed"),
        ("payment_intent.succeeded", "processed"),
        ("charge.refunded", "processed"),
    ]
    assert await order_status(db_pool, order) == "partially_refunded"
    assert await stock_of(db_pool, product) == 4
    async with db_pool.acquire() as con:
        row = await con.fetchrow("SELECT * FROM orders WHERE id = $1::uuid", order)
    assert row["amount_refunded"] == 400 and row["stripe_charge_id"] == refunded["id"]
    assert row["paid_at"] == datetime.fromtimestamp(refunded["created"], UTC)  # when the money moved
    # The payment intent was fetched with its charge; the event carries the charge id, as Stripe's events do.
    (fetch,) = fake_stripe.requests_to("GET", "/v1/payment_intents/*")
    assert fetch.query["expand"] == ["latest_charge"]

    before = await ledger_ids(db_pool)
    again = await run_cli(["stripe", "resync", "order", order], settings)
    assert again.code == 0
    assert [e["status"] for e in again.json["events"]] == ["duplicate"] * 3
    assert await ledger_ids(db_pool) == before
    assert await stock_of(db_pool, product) == 4

    # Refunded in full since: a new state, a new event; the order moves forward only.
    fake_stripe.charges[refunded["id"]].update(amount_refunded=1000, refunded=True)
    later = await run_cli(["stripe", "resync", "order", order], settings)
    assert [e["status"] for e in later.json["events"]] == ["duplicate", "duplicate", "processed"]
    assert await order_status(db_pool, order) == "refunded"


async def test_resync_of_a_customer_covers_its_subscriptions_and_orders(
    db_pool: asyncpg.Pool, settings: Settings, fake_stripe: FakeStripe
) -> None:
    _, order, _ = await paid_order_in_stripe(db_pool, fake_stripe)
    customer = new_id("cus")
    async with db_pool.acquire() as con:
        await con.execute("UPDATE orders SET stripe_customer_id = $2 WHERE id = $1::uuid", order, customer)
    subs = [
        subscription(price_id=PRICE_PREMIUM, customer=customer, user_id="user-1", status=status)
        for status in ("active", "canceled")
    ]
    for sub in subs:
        fake_stripe.store_subscription(sub)
    fake_stripe.store_subscription(subscription(price_id=PRICE_PREMIUM, customer=new_id("cus")))  # someone else's

    result = await run_cli(["stripe", "resync", "customer", customer], settings)

    assert result.code == 0, result.stderr
    assert sorted(e["object"] for e in result.json["events"][:2]) == sorted(s["id"] for s in subs)
    assert len(result.json["events"]) == 5
    async with db_pool.acquire() as con:
        statuses = {s["id"]: (await subscription_row(con, s["id"]) or {}).get("status") for s in subs}
    assert statuses == {subs[0]["id"]: "active", subs[1]["id"]: "canceled"}
    assert await order_status(db_pool, order) == "partially_refunded"
    (listing,) = fake_stripe.requests_to("GET", "/v1/subscriptions")
    assert listing.query["status"] == "all" and listing.query["customer"] == customer


async def test_resync_of_unknown_objects(db_pool: asyncpg.Pool, settings: Settings, fake_stripe: FakeStripe) -> None:
    missing_sub = await run_cli(["stripe", "resync", "subscription", "sub_nope"], settings)
    assert missing_sub.code == 2 and "No such subscription" in missing_sub.stderr
    missing_order = await run_cli(["stripe", "resync", "order", "00000000-0000-0000-0000-000000000000"], settings)
    assert missing_order.code == 2 and "no order" in missing_order.stderr
    wrong = await run_cli(["stripe", "resync", "customer", "sub_123"], settings)
    assert wrong.code == 2
    assert await ledger_ids(db_pool) == []
