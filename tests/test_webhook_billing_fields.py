"""What billing reads from webhooks (no Stripe call on read): the session's discount, tax and the customer's tax
ids on the order and its bridge event, the succeeded charge's receipt, a subscription's latest invoice links."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.stripe_events import charge, invoice, make_event, new_id, payment_intent
from tests.subscription_helpers import PRICE_PREMIUM
from tests.subscription_helpers import test_plans as test_plans  # fixture
from tests.webhook_support import deliver, fixture_event, order_row, retarget, seed_order

COMPLETED_2020 = "stripe-events/sync-engine/checkout.session.completed__2020-03-02_T8nSaZqtPu.json"
T0 = 1_760_000_000


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool) -> Any:
    return await aiohttp_client(app_factory())


async def test_the_sessions_tax_and_tax_ids_reach_the_order_and_its_bridge_event(
    client: Any, db_pool: asyncpg.Pool
) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1, unit_amount=999)
    event = retarget(fixture_event(COMPLETED_2020), metadata={"order_id": seeded.order_id})  # amount_tax 65
    event["data"]["object"]["customer_details"]["tax_ids"] = [{"type": "eu_vat", "value": "DE123456789"}]
    await deliver(client, event)
    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        paid = await con.fetchval("SELECT payload FROM bridge_events WHERE event_type = 'ORDER_PAID'")
    assert (order["amount_subtotal"], order["amount_discount"], order["amount_tax"]) == (999, 0, 65)
    assert order["customer_tax_ids"] == [{"type": "eu_vat", "value": "DE123456789"}]
    assert (paid["amount_tax"], paid["customer_tax_ids"]) == (65, [{"type": "eu_vat", "value": "DE123456789"}])


async def test_the_succeeded_charge_gives_the_order_its_receipt(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1)
    pi, ch = new_id("pi"), new_id("ch")
    succeeded = {**charge(seeded.order_id, 2000, charge_id=ch, payment_intent=pi), "receipt_url": "https://r.test/1"}
    await deliver(client, make_event("charge.succeeded", succeeded, created=T0 + 5))  # before the payment intent
    await deliver(
        client, make_event("payment_intent.succeeded", payment_intent(seeded.order_id, pi_id=pi, charge_id=ch))
    )
    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
    assert (order["status"], order["stripe_charge_id"], order["receipt_url"]) == ("paid", ch, "https://r.test/1")


@pytest.mark.usefixtures("test_plans")
async def test_a_subscriptions_latest_invoice_links_the_newest_invoice(client: Any, db_pool: asyncpg.Pool) -> None:
    sub_id, customer = new_id("sub", 14), new_id("cus", 14)

    def paid_invoice(created: int) -> dict[str, Any]:
        obj = invoice(subscription_id=sub_id, price_id=PRICE_PREMIUM, customer=customer, created=created)
        obj["hosted_invoice_url"] = f"https://invoice.stripe.com/i/{obj['id']}"
        obj["invoice_pdf"] = f"https://pay.stripe.com/invoice/{obj['id']}/pdf"
        return obj

    newer, older = paid_invoice(T0 + 2_592_000), paid_invoice(T0)
    await deliver(client, make_event("invoice.paid", newer, created=T0 + 2_592_000))
    await deliver(client, make_event("invoice.paid", older, created=T0))  # late: the newer invoice stays
    async with db_pool.acquire() as con:
        row = await con.fetchrow("SELECT * FROM subscriptions WHERE stripe_subscription_id = $1", sub_id)
    assert row["latest_invoice_id"] == newer["id"]
    assert (row["latest_invoice_hosted_url"], row["latest_invoice_pdf"]) == (
        newer["hosted_invoice_url"],
        newer["invoice_pdf"],
    )
