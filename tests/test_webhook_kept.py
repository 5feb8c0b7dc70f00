"""Events that arrive before their order is known are kept, never dropped, and applied once the order learns the
ids they name; a declined attempt never becomes the order's charge; one order's locked row holds up only that
order's deliveries; a deadlock is retried, not answered 500.

Through the real app and HTTP, with the metrics and CLI an operator uses.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from gateway import keys
from gateway.webhooks.handlers import HANDLERS
from tests.conftest import make_settings
from tests.stripe_events import checkout_session, dispute, make_event, new_id, payment_intent, refund
from tests.support_helpers import run_cli
from tests.webhook_support import (
    audit_actions,
    bridge_types,
    deliver,
    ledger_row,
    order_row,
    post_event,
    seed_order,
    stock_of,
)

T0 = 1_760_000_000


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool) -> Any:
    app = app_factory(RATE_LIMIT_WEBHOOK_MAX="100000", DB_LOCK_TIMEOUT="0.5", METRICS_REFRESH_INTERVAL_SECONDS="0.05")
    return await aiohttp_client(app)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_dispute_before_the_payment_is_kept_then_applied(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=2, unit_amount=1000)
    pi, ch = new_id("pi"), new_id("ch")
    disputed = make_event("charge.dispute.created", dispute(2000, charge=ch, payment_intent=pi), created=T0 + 60)
    applied_before = metric("stripe_webhook_kept_applied_total", type="charge.dispute.created")

    await deliver(client, disputed, "waiting")
    await deliver(client, disputed, "waiting")  # a redelivery is looked at again, and still waits
    async with db_pool.acquire() as con:
        waiting = await ledger_row(con, disputed["id"])
        assert waiting is not None and waiting["status"] == "waiting"
        assert (await order_row(con, seeded.order_id))["status"] == "pending"

    paid = make_event("payment_intent.succeeded", payment_intent(seeded.order_id, pi_id=pi, charge_id=ch), created=T0)
    await deliver(client, paid)

    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert order["status"] == "disputed" and order["stripe_charge_id"] == ch
        row = await con.fetchrow(
            "SELECT * FROM disputes WHERE stripe_dispute_id = $1", disputed["data"]["object"]["id"]
        )
        assert row is not None and str(row["order_id"]) == seeded.order_id and row["status"] == "needs_response"
        kept = await ledger_row(con, disputed["id"])
        assert kept is not None and kept["status"] == "processed"
        assert kept["outcome_reason"].startswith(f"kept, then applied with {paid['id']}")
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAID", "ORDER_DISPUTED"]
        assert await stock_of(con, seeded.product_ids[0]) == (3, 0, 2)
        # the dispute's own rows carry its own event id
        assert (
            await con.fetchval("SELECT source_event_id FROM bridge_events WHERE event_type = 'ORDER_DISPUTED'")
            == disputed["id"]
        )
    assert metric("stripe_webhook_kept_applied_total", type="charge.dispute.created") == applied_before + 1
    await deliver(client, disputed, "duplicate")


async def test_a_refund_before_the_payment_is_kept_then_applied(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1, unit_amount=2000)
    cs, pi, ch = new_id("cs_test"), new_id("pi"), new_id("ch")
    refunded = make_event("refund.created", refund(500, charge=ch, payment_intent=pi), created=T0 + 60)
    await deliver(client, refunded, "waiting")

    # The session teaches the order its payment intent: the kept refund names it.
    completed = make_event(
        "checkout.session.completed",
        checkout_session(seeded.order_id, session_id=cs, payment_intent=pi, amount_total=2000),
        created=T0,
    )
    await deliver(client, completed)
    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert (order["status"], order["amount_refunded"]) == ("partially_refunded", 500)
        assert order["stripe_charge_id"] == ch  # the refunded charge is the one that succeeded
        refund_row = await con.fetchrow(
            "SELECT * FROM refunds WHERE stripe_refund_id = $1", refunded["data"]["object"]["id"]
        )
        assert refund_row is not None and (refund_row["status"], refund_row["amount"]) == ("succeeded", 500)
        assert (await ledger_row(con, refunded["id"]))["status"] == "processed"
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAID", "ORDER_REFUNDED"]


async def test_the_order_keeps_the_charge_that_succeeded(client: Any, db_pool: asyncpg.Pool) -> None:
    """First card declined (charge ch_declined), second attempt paid (ch_paid): in either arrival order the order
    and its payment row carry ch_paid."""
    for first_declined in (True, False):
        async with db_pool.acquire() as con:
            seeded = await seed_order(con, stock=5, quantity=1)
        pi, declined, paid = new_id("pi"), new_id("ch"), new_id("ch")
        failed = make_event(
            "payment_intent.payment_failed",
            payment_intent(
                seeded.order_id,
                pi_id=pi,
                status="requires_payment_method",
                charge_id=declined,
                failure_code="card_declined",
            ),
            created=T0,
        )
        succeeded = make_event(
            "payment_intent.succeeded", payment_intent(seeded.order_id, pi_id=pi, charge_id=paid), created=T0 + 30
        )
        if first_declined:
            await deliver(client, failed)
            await deliver(client, succeeded)
        else:
            await deliver(client, succeeded)
            await deliver(client, failed, "stale")
        async with db_pool.acquire() as con:
            order = await order_row(con, seeded.order_id)
            assert (order["status"], order["stripe_charge_id"]) == ("paid", paid), first_declined
            payment = await con.fetchrow("SELECT * FROM payments WHERE stripe_payment_intent_id = $1", pi)
            assert (payment["status"], payment["stripe_charge_id"]) == ("succeeded", paid), first_declined


async def test_an_event_for_no_order_of_ours_is_still_ignored(client: Any, db_pool: asyncpg.Pool) -> None:
    # A payment intent of a subscription invoice names its invoice: no order will ever know it.
    pi = payment_intent(None, pi_id=new_id("pi"), charge_id=new_id("ch"))
    pi["invoice"] = new_id("in")
    await deliver(client, make_event("payment_intent.succeeded", pi), "ignored")
    # A session that is not ours and not paid: nothing to create an order from.
    expired = checkout_session(None, status="expired", payment_status="unpaid")
    await deliver(client, make_event("checkout.session.expired", expired), "ignored")


async def test_waiting_events_are_listed_and_measured(client: Any, db_pool: asyncpg.Pool, database_url: str) -> None:
    kept = make_event("charge.dispute.created", dispute(900, charge=new_id("ch"), payment_intent=new_id("pi")))
    await deliver(client, kept, "waiting")
    result = await run_cli(["events", "find", "--waiting"], make_settings(DATABASE_URL=database_url))
    assert result.code == 0, result.err
    listed = result.json["waiting"]
    assert [row["stripe_event_id"] for row in listed] == [kept["id"]]
    assert listed[0]["payment_intent_id"] == kept["data"]["object"]["payment_intent"]

    await client.server.app[keys.GAUGE_REFRESHER].wait_rounds(2)  # the background refresh, one whole round after
    assert metric("stripe_webhook_ledger_rows", status="waiting") == 1
    assert metric("stripe_webhook_waiting_oldest_seconds") >= 0
    assert metric("stripe_disputes_open", status="needs_response") == 0  # kept, not applied: no dispute row yet


async def test_a_locked_order_holds_up_only_its_own_deliveries(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        locked = await seed_order(con, stock=50, quantity=1)
        others = [await seed_order(con, stock=50, quantity=1) for _ in range(6)]
    async with db_pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM orders WHERE id = $1::uuid FOR UPDATE", locked.order_id)
        stuck = asyncio.create_task(
            post_event(client, make_event("payment_intent.succeeded", payment_intent(locked.order_id)))
        )
        responses = await asyncio.wait_for(
            asyncio.gather(
                *(
                    post_event(client, make_event("payment_intent.succeeded", payment_intent(o.order_id)))
                    for o in others
                )
            ),
            timeout=30,
        )
        assert [r.status for r in responses] == [200] * len(others)
        busy = await asyncio.wait_for(stuck, timeout=30)  # DB_LOCK_TIMEOUT=0.5: refused, Stripe retries
        assert busy.status == 503
        body = await busy.json()
        assert body["error"]["code"] == "rows_busy" and busy.headers["Retry-After"]
        await tx.rollback()
    async with db_pool.acquire() as con:
        assert {(await order_row(con, o.order_id))["status"] for o in others} == {"paid"}
        assert (await order_row(con, locked.order_id))["status"] == "pending"


async def test_a_deadlock_is_retried_in_a_new_transaction(
    client: Any, db_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1)
    real = HANDLERS["payment_intent.succeeded"]
    calls: list[str] = []

    async def deadlocks_once(unit: Any, event: Any) -> Any:
        outcome = await real(unit, event)  # the first attempt's writes are rolled back with it
        calls.append(event.id)
        if len(calls) == 1:
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        return outcome

    monkeypatch.setitem(HANDLERS, "payment_intent.succeeded", deadlocks_once)
    before = metric("stripe_webhook_retries_total", error="DeadlockDetectedError")
    event = make_event("payment_intent.succeeded", payment_intent(seeded.order_id))
    await deliver(client, event)
    assert metric("stripe_webhook_retries_total", error="DeadlockDetectedError") == before + 1
    async with db_pool.acquire() as con:
        assert (await order_row(con, seeded.order_id))["status"] == "paid"
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAID"]
        assert await audit_actions(con, seeded.order_id) == ["order.paid"]
        row = await ledger_row(con, event["id"])
        assert row is not None and (row["status"], row["attempts"]) == ("processed", 1)
