"""Subscription handlers through the ledger: seed 001's acceptance, cancellation, past_due, out-of-order
events, same-second ties, who the user is, plans, real fixtures (both payload generations)."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import asyncpg
import pytest

from gateway import metrics
from gateway.subscriptions import plans
from tests.stripe_events import (
    LEGACY_API_VERSION,
    checkout_session,
    invoice,
    load_fixture,
    new_id,
    subscription,
)
from tests.subscription_helpers import (
    PRICE_PREMIUM,
    PRICE_PRO,
    bridge_rows,
    deliver,
    event,
    subscription_row,
)
from tests.subscription_helpers import test_plans as test_plans  # fixture

pytestmark = pytest.mark.usefixtures("test_plans")

T0 = 1_750_000_000


def sample(metric: Any, **labels: str) -> float:
    value: float = (metric.labels(**labels) if labels else metric)._value.get()
    return value


def sub_checkout(sub_id: str, customer: str, user_id: str | None = "user-1", amount: int = 999) -> dict[str, Any]:
    return checkout_session(
        None,
        mode="subscription",
        subscription=sub_id,
        customer=customer,
        user_id=user_id,
        amount_total=amount,
        payment_intent=None,
    )


async def test_checkout_publishes_pending_then_active_after_subscription_events(
    db_pool: asyncpg.Pool,
) -> None:
    sub_id, customer = new_id("sub", 14), new_id("cus", 14)
    session = sub_checkout(sub_id, customer)
    results = [
        await deliver(db_pool, event("checkout.session.completed", session, T0)),
        await deliver(
            db_pool,
            event(
                "customer.subscription.created",
                subscription(price_id=PRICE_PREMIUM, sub_id=sub_id, customer=customer, status="incomplete", created=T0),
                T0 + 1,
            ),
        ),
        await deliver(
            db_pool,
            event(
                "customer.subscription.updated",
                subscription(price_id=PRICE_PREMIUM, sub_id=sub_id, customer=customer, status="active", created=T0),
                T0 + 2,
            ),
        ),
    ]
    assert [r.status for r in results] == ["processed"] * 3
    async with db_pool.acquire() as con:
        bridge = await bridge_rows(con)
        row = await subscription_row(con, sub_id)
        assert await con.fetchval("SELECT user_id FROM customers WHERE stripe_customer_id = $1", customer) == "user-1"
    assert [(b["event_type"], b["payload"]["status"]) for b in bridge] == [
        ("SUBSCRIPTION_UPDATED", "pending"),
        ("SUBSCRIPTION_UPDATED", "incomplete"),
        ("SUBSCRIPTION_ACTIVATED", "active"),
    ]
    activated = bridge[-1]
    assert activated["user_id"] == "user-1"  # learned from the checkout (subscription metadata is empty)
    assert activated["app_source"] == "website"
    assert activated["metadata"] == {"version": "v1", "origin": "webhook"}
    assert activated["payload"] == {
        "session_id": session["id"],
        "subscription_id": sub_id,
        "plan_id": "premium",
        "status": "active",
        "customer_id": customer,
        "currency": "eur",
        "amount": 999,
        "source": "stripe",
        "current_period_end": T0 + 30 * 86400,
        "cancel_at_period_end": False,
    }
    assert bridge[0]["payload"]["session_id"] == session["id"] and bridge[0]["payload"]["plan_id"] == "unknown"
    assert row is not None
    assert (row["status"], row["plan_id"], row["user_id"], row["price_id"]) == (
        "active",
        "premium",
        "user-1",
        PRICE_PREMIUM,
    )
    assert row["last_event_id"] == bridge[-1]["source_event_id"]


async def test_cancel_at_period_end_then_deleted(db_pool: asyncpg.Pool) -> None:
    sub_id = new_id("sub", 14)
    base: dict[str, Any] = {"price_id": PRICE_PREMIUM, "sub_id": sub_id, "user_id": "user-9", "created": T0}
    await deliver(db_pool, event("customer.subscription.created", subscription(**base), T0))
    await deliver(
        db_pool,
        event("customer.subscription.updated", subscription(**base, cancel_at_period_end=True), T0 + 10),
    )
    await deliver(db_pool, event("customer.subscription.deleted", subscription(**base, status="canceled"), T0 + 20))
    late = await deliver(db_pool, event("customer.subscription.updated", subscription(**base), T0 + 15))
    assert late.status == "stale"
    async with db_pool.acquire() as con:
        bridge = await bridge_rows(con)
        row = await subscription_row(con, sub_id)
    assert [(b["event_type"], b["payload"]["status"], b["payload"]["cancel_at_period_end"]) for b in bridge] == [
        ("SUBSCRIPTION_ACTIVATED", "active", False),
        ("SUBSCRIPTION_UPDATED", "active", True),
        ("SUBSCRIPTION_CANCELLED", "canceled", False),
    ]
    assert row is not None and row["status"] == "canceled" and row["canceled_at"] is not None


async def test_invoice_payment_failed_publishes_past_due_and_paid_recovers(db_pool: asyncpg.Pool) -> None:
    sub_id, customer = new_id("sub", 14), new_id("cus", 14)
    await deliver(
        db_pool,
        event(
            "customer.subscription.created",
            subscription(price_id=PRICE_PREMIUM, sub_id=sub_id, customer=customer, user_id="user-2", created=T0),
            T0,
        ),
    )
    failed = invoice(
        subscription_id=sub_id,
        price_id=PRICE_PREMIUM,
        customer=customer,
        status="open",
        user_id="user-2",
        created=T0 + 100,
    )
    await deliver(db_pool, event("invoice.payment_failed", failed, T0 + 100))
    paid = invoice(
        subscription_id=sub_id, price_id=PRICE_PREMIUM, customer=customer, user_id="user-2", created=T0 + 200
    )
    assert (await deliver(db_pool, event("invoice.paid", paid, T0 + 200))).status == "processed"
    # invoice.payment_succeeded for the same invoice, same second: the event id breaks the tie (processed or
    # stale), and nothing new is published either way
    same = await deliver(db_pool, event("invoice.payment_succeeded", paid, T0 + 200))
    async with db_pool.acquire() as con:
        bridge = await bridge_rows(con)
    assert same.status in ("processed", "stale")
    assert [(b["event_type"], b["payload"]["status"]) for b in bridge] == [
        ("SUBSCRIPTION_ACTIVATED", "active"),
        ("SUBSCRIPTION_UPDATED", "past_due"),
        ("SUBSCRIPTION_UPDATED", "active"),
    ]
    assert all(b["user_id"] == "user-2" for b in bridge)


async def test_older_event_never_overwrites_a_newer_one(db_pool: asyncpg.Pool) -> None:
    sub_id = new_id("sub", 14)
    new = subscription(price_id=PRICE_PRO, sub_id=sub_id, user_id="u", created=T0)
    old = subscription(price_id=PRICE_PREMIUM, sub_id=sub_id, user_id="u", created=T0, status="past_due")
    await deliver(db_pool, event("customer.subscription.updated", new, T0 + 50))
    result = await deliver(db_pool, event("customer.subscription.updated", old, T0 + 40))
    assert result.status == "stale"
    async with db_pool.acquire() as con:
        row = await subscription_row(con, sub_id)
        ledger = await con.fetchval(
            "SELECT status FROM webhook_events WHERE stripe_event_id = $1",
            row["last_event_id"] if row else None,
        )
        assert await con.fetchval("SELECT count(*) FROM webhook_events WHERE status = 'stale'") == 1
    assert row is not None and (row["status"], row["plan_id"]) == ("active", "pro")
    assert ledger == "processed"


SAME_SECOND = [
    ("customer.subscription.created", {"status": "incomplete"}),
    ("customer.subscription.updated", {"status": "active"}),
    ("customer.subscription.updated", {"status": "active", "cancel_at_period_end": True}),
    ("customer.subscription.updated", {"status": "past_due"}),
]


async def test_same_second_ties_give_the_same_row_in_every_order(db_pool: asyncpg.Pool) -> None:
    """Four updates in one second: whatever the order, the row ends past_due (status precedence), and with
    equal statuses cancel_at_period_end=true wins (the object's own fields)."""
    finals = set()
    for order_index, permutation in enumerate(itertools.permutations(range(len(SAME_SECOND)))):
        sub_id = f"sub_tie{order_index:04d}"
        events = [
            event(
                kind,
                subscription(price_id=PRICE_PREMIUM, sub_id=sub_id, user_id="u", created=T0, **fields),
                T0,
                event_id=f"evt_tie{order_index:04d}_{i}",
            )
            for i, (kind, fields) in enumerate(SAME_SECOND)
        ]
        for i in permutation:
            await deliver(db_pool, events[i])
        async with db_pool.acquire() as con:
            row = await subscription_row(con, sub_id)
        assert row is not None
        finals.add((row["status"], row["cancel_at_period_end"], row["last_event_id"].split("_")[-1]))
    assert finals == {("past_due", False, "3")}

    # Equal status in the same second: the object's fields decide (cancel_at_period_end true wins).
    for order in ((0, 1), (1, 0)):
        sub_id = new_id("sub", 14)
        pair = [
            event(
                "customer.subscription.updated",
                subscription(price_id=PRICE_PREMIUM, sub_id=sub_id, created=T0, cancel_at_period_end=flag),
                T0,
            )
            for flag in (False, True)
        ]
        for i in order:
            await deliver(db_pool, pair[i])
        async with db_pool.acquire() as con:
            row = await subscription_row(con, sub_id)
        assert row is not None and row["cancel_at_period_end"] is True


async def test_checkout_after_subscription_events_never_hides_the_status(db_pool: asyncpg.Pool) -> None:
    """Stripe often sends checkout.session.completed after the subscription events, even a second later."""
    sub_id, customer = new_id("sub", 14), new_id("cus", 14)
    await deliver(
        db_pool,
        event(
            "customer.subscription.created",
            subscription(price_id=PRICE_PREMIUM, sub_id=sub_id, customer=customer, created=T0),
            T0,
        ),
    )
    result = await deliver(db_pool, event("checkout.session.completed", sub_checkout(sub_id, customer), T0 + 1))
    assert result.status == "processed"
    async with db_pool.acquire() as con:
        bridge = await bridge_rows(con)
        row = await subscription_row(con, sub_id)
    assert row is not None and row["status"] == "active" and row["user_id"] == "user-1"
    # ACTIVATED went out without a user; the checkout then told us who it is: UPDATED with the user.
    assert [(b["event_type"], b["user_id"], b["payload"]["status"]) for b in bridge] == [
        ("SUBSCRIPTION_ACTIVATED", None, "active"),
        ("SUBSCRIPTION_UPDATED", "user-1", "active"),
    ]


async def test_unresolved_user_is_published_null_counted_and_logged(
    db_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    sub_id = new_id("sub", 14)
    before = sample(metrics.SUBSCRIPTION_UNRESOLVED_USERS, type="customer.subscription.created")
    with caplog.at_level(logging.WARNING, "gateway.webhooks.subscriptions"):
        result = await deliver(
            db_pool,
            event(
                "customer.subscription.created",
                subscription(price_id=PRICE_PREMIUM, sub_id=sub_id, created=T0),
                T0,
            ),
        )
    assert result.status == "processed"
    assert sample(metrics.SUBSCRIPTION_UNRESOLVED_USERS, type="customer.subscription.created") == before + 1
    record = next(r for r in caplog.records if "without a known user" in r.getMessage())
    assert sub_id in record.__dict__["reason"] and record.__dict__["stripeEventId"].startswith("evt_")
    async with db_pool.acquire() as con:
        assert [b["user_id"] for b in await bridge_rows(con)] == [None]


async def test_unknown_price_gives_plan_unknown_a_warning_and_a_metric(
    db_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    sub_id = new_id("sub", 14)
    before = sample(metrics.SUBSCRIPTION_UNKNOWN_PRICES)
    with caplog.at_level(logging.WARNING, "gateway.subscriptions"):
        await deliver(
            db_pool,
            event(
                "customer.subscription.created",
                subscription(price_id="price_not_mapped", sub_id=sub_id, user_id="u", created=T0),
                T0,
            ),
        )
    assert sample(metrics.SUBSCRIPTION_UNKNOWN_PRICES) == before + 1
    assert any("missing from the plans file" in r.getMessage() for r in caplog.records)
    async with db_pool.acquire() as con:
        row = await subscription_row(con, sub_id)
        bridge = await bridge_rows(con)
    assert row is not None and row["plan_id"] == plans.UNKNOWN_PLAN
    assert bridge[0]["payload"]["plan_id"] == "unknown"


async def test_legacy_payloads_read_period_and_subscription_through_the_adapter(
    db_pool: asyncpg.Pool,
) -> None:
    """2020-08-27 shapes: period at the top level of the subscription, `invoice.subscription` at the top."""
    sub_id, customer = new_id("sub", 14), new_id("cus", 14)
    legacy = subscription(
        price_id=PRICE_PREMIUM,
        sub_id=sub_id,
        customer=customer,
        user_id="u-legacy",
        created=T0,
        api_version=LEGACY_API_VERSION,
        current_period_end=T0 + 1000,
    )
    await deliver(db_pool, event("customer.subscription.created", legacy, T0))
    failed = invoice(
        subscription_id=sub_id,
        price_id=PRICE_PREMIUM,
        customer=customer,
        status="open",
        api_version=LEGACY_API_VERSION,
        created=T0 + 5,
    )
    await deliver(db_pool, event("invoice.payment_failed", failed, T0 + 5))
    async with db_pool.acquire() as con:
        row = await subscription_row(con, sub_id)
    assert row is not None and row["status"] == "past_due" and int(row["current_period_end"].timestamp()) == T0 + 1000


async def test_duplicate_delivery_publishes_once(db_pool: asyncpg.Pool) -> None:
    e = event(
        "customer.subscription.created",
        subscription(price_id=PRICE_PREMIUM, sub_id=new_id("sub", 14), user_id="u", created=T0),
        T0,
    )
    assert (await deliver(db_pool, e)).status == "processed"
    assert (await deliver(db_pool, e)).status == "duplicate"
    async with db_pool.acquire() as con:
        assert len(await bridge_rows(con)) == 1


# ------------------------------------------------------------------ real fixtures


async def test_real_sync_engine_subscription_lifecycle(db_pool: asyncpg.Pool) -> None:
    """supabase/stripe-sync-engine events (api 2020-03-02): created, then deleted of sub_JdIzvfy6o5GZRd."""
    created = load_fixture("customer.subscription.created__2020-03-02_1J02NfJDPo.json")
    deleted = load_fixture("customer.subscription.deleted__2020-03-02_1J02QdJDPo.json")
    assert (await deliver(db_pool, deleted)).status == "processed"  # out of order: the deletion first
    late = await deliver(db_pool, created)  # older than the deletion: only when it was first active is kept
    assert (late.status, late.reason) == ("processed", "recorded (activation); nothing to publish")
    async with db_pool.acquire() as con:
        row = await subscription_row(con, "sub_JdIzvfy6o5GZRd")
        bridge = await bridge_rows(con)
    assert row is not None and row["status"] == "canceled" and row["plan_id"] == "premium"
    assert row["stripe_customer_id"] == "cus_IhGfebO16cMIGN" and row["currency"] == "usd"
    assert [b["event_type"] for b in bridge] == ["SUBSCRIPTION_CANCELLED"]


@pytest.mark.parametrize(
    "name, sub_id, status",
    [
        ("customer.subscription.updated__2019-12-03_0000000000.json", "sub_00000000000000", "active"),
        ("customer.subscription.updated__2020-03-02_1IlavxJDPo.json", "sub_JLEPMp81LApOJl", "active"),
        (
            "constructed/stripe-mock/constructed__customer.subscription.updated__2025-03-31.basil__"
            "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw.json",
            "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",
            "active",
        ),
        (
            "constructed/pay/constructed__customer.subscription.updated__2025-03-31.basil__sub_00000000000000.json",
            "sub_00000000000000",
            "canceled",
        ),
        ("invoice.payment_succeeded__2019-12-03_1GQf15BVqm.json", "sub_GyHjvuW3xOeaZS", "active"),
        (
            "constructed/pay/constructed__invoice.payment_failed__2025-03-31.basil__in_1234.json",
            "sub_1234",
            "past_due",
        ),
    ],
)
async def test_real_fixtures_apply(db_pool: asyncpg.Pool, name: str, sub_id: str, status: str) -> None:
    result = await deliver(db_pool, load_fixture(name))
    assert result.status == "processed", result
    async with db_pool.acquire() as con:
        row = await subscription_row(con, sub_id)
    assert row is not None and row["status"] == status


async def test_basil_fixture_period_end_comes_from_the_items(db_pool: asyncpg.Pool) -> None:
    fixture = load_fixture(
        "constructed/stripe-mock/constructed__customer.subscription.updated__2025-03-31.basil__"
        "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw.json"
    )
    item_end = fixture["data"]["object"]["items"]["data"][0]["current_period_end"]
    assert "current_period_end" not in fixture["data"]["object"]
    await deliver(db_pool, fixture)
    async with db_pool.acquire() as con:
        row = await subscription_row(con, "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw")
    assert row is not None and int(row["current_period_end"].timestamp()) == item_end
    assert row["cancel_at_period_end"] is True


async def test_invoice_without_subscription_is_ignored(db_pool: asyncpg.Pool) -> None:
    result = await deliver(db_pool, load_fixture("invoice.paid__2020-08-27_0000000000.json"))
    assert result.status == "ignored"
