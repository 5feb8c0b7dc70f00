"""The ledger's optimistic path (gateway/webhooks/ledger.py): most events are written by one statement that is
its own transaction, guarded by the order row's version. When the order moved after it was read, or when the
handler needs statements of its own, that statement writes nothing and the event runs again under lock."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from gateway import stock
from gateway.db.pipeline import Pipeline
from gateway.unit_of_work import FLUSH, UnitOfWork
from gateway.webhooks import ledger
from gateway.webhooks.envelope import StripeEvent
from gateway.webhooks.handlers import HANDLERS
from gateway.webhooks.ledger import IngestResult
from tests.stripe_events import charge, checkout_session, make_event, payment_intent, refund
from tests.support_helpers import deliver, poll
from tests.webhook_support import audit_actions, bridge_types, ledger_row, order_row, seed_order, stock_of

Attempts = list[tuple[str, str]]
MOVE_SOURCES = 45  # FLUSH's $46: given for a move the database decides
DECIDED = ("moved", "already", "missing", "duplicate", "handler", "failed")


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> dict[str, Attempts]:
    """Per event id, each run of the handler: (mode, its result or the exception that ended it)."""
    seen: dict[str, Attempts] = {}
    real = ledger.process

    async def spy(unit: UnitOfWork, event: StripeEvent, **kwargs: Any) -> IngestResult:
        mode = "locked" if unit.snapshot is None else "optimistic"
        runs = seen.setdefault(event.id, [])
        try:
            result = await real(unit, event, **kwargs)
        except Exception as exc:
            runs.append((mode, type(exc).__name__))
            raise
        runs.append((mode, result.status))
        return result

    monkeypatch.setattr(ledger, "process", spy)
    return seen


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each delivery sent through the group-commit pipeline, in order: "move", "read" or "write"."""
    sent: list[str] = []
    real = Pipeline.fetchrow
    names = {ledger.PEEK: "read", FLUSH: "write"}

    async def spy(self: Pipeline, query: str, *args: Any, **kwargs: Any) -> asyncpg.Record:
        sent.append("move" if query == FLUSH and args[MOVE_SOURCES] is not None else names[query])
        return await real(self, query, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "fetchrow", spy)
    return sent


async def test_a_payment_is_decided_and_written_by_one_statement(
    db_pool: asyncpg.Pool, attempts: dict[str, Attempts], statements: list[str]
) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=2)
    event = make_event("payment_intent.succeeded", payment_intent(seeded.order_id))

    result = await deliver(db_pool, event)

    assert (result.status, result.order_id) == ("processed", seeded.order_id)
    assert statements == ["move"] and attempts == {}  # the database decided; the handler did not run
    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert order["status"] == "paid" and order["paid_at"] is not None
        assert await stock_of(con, seeded.product_ids[0]) == (3, 0, 2)
        assert await con.fetchval("SELECT status FROM payments WHERE order_id = $1::uuid", seeded.order_id) == (
            "succeeded"
        )
        assert await audit_actions(con, seeded.order_id) == ["order.paid"]
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAID"]
        row = await ledger_row(con, event["id"])
        assert row is not None and (row["status"], row["attempts"]) == ("processed", 1)
    assert (await deliver(db_pool, event)).status == "duplicate"
    assert statements == ["move", "move"]  # the duplicate is answered by the move, which writes nothing


async def test_what_the_move_decides_and_what_it_leaves_to_the_handler(
    db_pool: asyncpg.Pool, attempts: dict[str, Attempts], statements: list[str]
) -> None:
    """The move also decides a payment for no order of ours (ignored) and the payment of an order its Checkout
    Session already paid (the payment and ids recorded). A late expiry of a paid order it leaves to the handler:
    the move writes nothing, and the event takes the read, then the handler's write (stale)."""
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1)
    unknown = make_event("payment_intent.succeeded", payment_intent(str(uuid.uuid4())))
    paid = make_event("checkout.session.completed", checkout_session(seeded.order_id))
    intent = make_event("payment_intent.succeeded", payment_intent(seeded.order_id))
    late = make_event(
        "checkout.session.expired", checkout_session(seeded.order_id, status="expired", payment_status="unpaid")
    )

    before = {d: REGISTRY.get_sample_value("stripe_webhook_moves_total", {"decided": d}) or 0.0 for d in DECIDED}

    assert (await deliver(db_pool, unknown)) == IngestResult("ignored", "no order matches this payment_intent")
    assert (await deliver(db_pool, paid)).status == "processed"
    assert (await deliver(db_pool, intent)) == IngestResult("processed", "order already paid", seeded.order_id)
    assert (await deliver(db_pool, late)).status == "stale"
    assert (await deliver(db_pool, late)).status == "duplicate"

    assert statements == ["move", "move", "move", "move", "read", "write", "move"]
    assert attempts == {late["id"]: [("optimistic", "stale")]}
    after = {d: REGISTRY.get_sample_value("stripe_webhook_moves_total", {"decided": d}) or 0.0 for d in DECIDED}
    assert {d: after[d] - before[d] for d in DECIDED} == {
        "moved": 1,
        "already": 1,
        "missing": 1,
        "duplicate": 1,
        "handler": 1,
        "failed": 0,
    }
    async with db_pool.acquire() as con:
        assert (await order_row(con, seeded.order_id))["status"] == "paid"
        assert await audit_actions(con, seeded.order_id) == ["order.paid"]
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAID"]
        payment = await con.fetchrow("SELECT order_id::text, status FROM payments")
        assert payment is not None and tuple(payment) == (seeded.order_id, "succeeded")
        assert await stock_of(con, seeded.product_ids[0]) == (4, 0, 1)


async def test_an_event_no_handler_reads_is_recorded_by_the_write_alone(
    db_pool: asyncpg.Pool, statements: list[str]
) -> None:
    """A type the gateway does not handle: nothing to read. Its second delivery finds the settled ledger row
    in the write, which then writes nothing."""
    event = make_event("customer.created", {"id": "cus_123", "object": "customer"})

    assert (await deliver(db_pool, event)).status == "ignored"
    assert (await deliver(db_pool, event)).status == "duplicate"

    assert statements == ["write", "write"]
    async with db_pool.acquire() as con:
        row = await ledger_row(con, event["id"])
        assert row is not None and (row["status"], row["attempts"]) == ("ignored", 1)


@pytest.mark.parametrize("shared", [False, True], ids=["separate-transactions", "one-batch"])
async def test_concurrent_deliveries_of_an_event_no_handler_reads_record_it_once(
    db_pool: asyncpg.Pool, shared: bool
) -> None:
    """Racing in separate transactions, or sent in one batch by one pipeline: one write records the event."""
    event = make_event("charge.updated", {"id": "ch_123", "object": "charge"})
    pipeline = Pipeline(db_pool) if shared else None

    results = await asyncio.gather(*(deliver(db_pool, event, pipeline=pipeline) for _ in range(20)))

    assert sorted(r.status for r in results) == ["duplicate"] * 19 + ["ignored"]
    async with db_pool.acquire() as con:
        row = await ledger_row(con, event["id"])
        assert row is not None and (row["status"], row["attempts"]) == ("ignored", 1)


async def test_the_kill_switch_records_a_payment_without_reading_its_order(
    db_pool: asyncpg.Pool, statements: list[str]
) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1)
    event = make_event("payment_intent.succeeded", payment_intent(seeded.order_id))

    assert (await deliver(db_pool, event, handlers_enabled=False)).status == "received"
    assert (await deliver(db_pool, event, handlers_enabled=False)).status == "received"

    assert statements == ["write", "write"]
    async with db_pool.acquire() as con:
        row = await ledger_row(con, event["id"])
        assert row is not None and (row["status"], row["attempts"]) == ("received", 2)
        assert (await order_row(con, seeded.order_id))["status"] == "pending"
    assert (await deliver(db_pool, event)).status == "processed"  # switched on again: applied by the move
    assert statements[2:] == ["move"]


@pytest.mark.usefixtures("handler_path")
async def test_an_order_that_moved_after_it_was_read_is_decided_again_under_lock(
    db_pool: asyncpg.Pool, attempts: dict[str, Attempts], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The payment was decided on a pending order; its session expires (stock released) before the write. The
    guarded statement writes nothing; under lock the payment retakes the released stock."""
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=2)
    paid = make_event("payment_intent.succeeded", payment_intent(seeded.order_id))
    expired = make_event(
        "checkout.session.expired",
        checkout_session(seeded.order_id, status="expired", payment_status="unpaid"),
    )
    real = HANDLERS["payment_intent.succeeded"]

    async def expires_meanwhile(unit: UnitOfWork, event: StripeEvent) -> Any:
        outcome = await real(unit, event)
        if unit.snapshot is not None:
            assert (await deliver(db_pool, expired)).status == "processed"
        return outcome

    monkeypatch.setitem(HANDLERS, "payment_intent.succeeded", expires_meanwhile)

    assert (await deliver(db_pool, paid)).status == "processed"

    assert attempts[paid["id"]] == [("optimistic", "NeedsTransaction"), ("locked", "processed")]
    async with db_pool.acquire() as con:
        assert (await order_row(con, seeded.order_id))["status"] == "paid"
        assert await stock_of(con, seeded.product_ids[0]) == (3, 0, 2)  # released, then taken again, once
        assert await audit_actions(con, seeded.order_id) == ["order.expired", "order.paid"]
        assert await bridge_types(con, seeded.order_id) == ["ORDER_EXPIRED", "ORDER_PAID"]
        row = await ledger_row(con, paid["id"])
        assert row is not None and (row["status"], row["attempts"]) == ("processed", 1)


async def test_a_stale_event_is_decided_on_the_optimistic_path(
    db_pool: asyncpg.Pool, attempts: dict[str, Attempts]
) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1)
    await deliver(db_pool, make_event("checkout.session.completed", checkout_session(seeded.order_id)))
    late = make_event(
        "checkout.session.expired", checkout_session(seeded.order_id, status="expired", payment_status="unpaid")
    )

    result = await deliver(db_pool, late)

    assert result.status == "stale" and result.reason is not None and "paid" in result.reason
    assert attempts[late["id"]] == [("optimistic", "stale")]
    async with db_pool.acquire() as con:
        assert (await order_row(con, seeded.order_id))["status"] == "paid"
        assert await stock_of(con, seeded.product_ids[0]) == (4, 0, 1)


async def test_a_refund_before_its_payment_changes_the_order_twice_in_one_optimistic_statement(
    db_pool: asyncpg.Pool, attempts: dict[str, Attempts]
) -> None:
    # The refund implies the payment: the order is paid (stock committed), then refunded, by one write.
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=2, unit_amount=500)
    event = make_event("charge.refunded", charge(seeded.order_id, 1000, amount_refunded=400))

    assert (await deliver(db_pool, event)).status == "processed"

    assert attempts[event["id"]] == [("optimistic", "processed")]
    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert (order["status"], order["amount_refunded"]) == ("partially_refunded", 400)
        assert order["paid_at"] is not None and order["stripe_charge_id"] == event["data"]["object"]["id"]
        assert order["status_reason"] is None
        assert await stock_of(con, seeded.product_ids[0]) == (3, 0, 2)
        assert await audit_actions(con, seeded.order_id) == ["order.paid", "order.refund_applied"]
        assert await bridge_types(con, seeded.order_id) == ["ORDER_PAID", "ORDER_REFUNDED"]


async def test_a_payment_waits_for_a_reservation_being_released_and_takes_its_unit_again(
    db_pool: asyncpg.Pool, attempts: dict[str, Attempts]
) -> None:
    # The sweeper releases the order's expired reservation while the payment is being written: the write waits for
    # the sweeper's row lock, then sees the reservation released and takes the unit from stock again.
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1)
    event = make_event("payment_intent.succeeded", payment_intent(seeded.order_id))
    async with db_pool.acquire() as sweeper:
        release = sweeper.transaction()
        await release.start()
        assert await stock.release_for_order(sweeper, seeded.order_id, "reservation_expired") == 1
        delivery = asyncio.create_task(deliver(db_pool, event))

        async def write_waits_on_the_release() -> bool:
            async with db_pool.acquire() as con:  # outside the transaction, which keeps its first view of the stats
                waiting = await con.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%unit_of_work_flush%' AND datname = current_database()"
                )
            return bool(waiting)

        await poll(write_waits_on_the_release, within=15)
        await release.commit()

    assert (await delivery).status == "processed"
    assert attempts == {}  # decided by the move
    async with db_pool.acquire() as con:
        assert (await order_row(con, seeded.order_id))["status"] == "paid"
        assert await stock_of(con, seeded.product_ids[0]) == (4, 0, 1)
        assert await audit_actions(con, seeded.order_id) == ["order.paid"]  # not oversold


async def test_a_handler_sending_its_own_statements_runs_under_lock(
    db_pool: asyncpg.Pool, attempts: dict[str, Attempts]
) -> None:
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1, unit_amount=2000)
    pi = payment_intent(seeded.order_id, amount=2000)
    await deliver(db_pool, make_event("payment_intent.succeeded", pi))
    refunded = make_event("refund.created", refund(500, charge=pi["latest_charge"], payment_intent=pi["id"]))

    assert (await deliver(db_pool, refunded)).status == "processed"

    assert attempts[refunded["id"]] == [("optimistic", "NeedsTransaction"), ("locked", "processed")]
    async with db_pool.acquire() as con:
        order = await order_row(con, seeded.order_id)
        assert (order["status"], order["amount_refunded"]) == ("partially_refunded", 500)
        assert await con.fetchval("SELECT count(*) FROM refunds WHERE order_id = $1::uuid", seeded.order_id) == 1


@pytest.mark.usefixtures("handler_path")
async def test_an_event_settled_by_another_delivery_meanwhile_writes_nothing(
    db_pool: asyncpg.Pool, attempts: dict[str, Attempts], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No order to guard (the event names none of ours): the ledger row alone decides. The other delivery
    settles it between this one's read and its write: duplicate, nothing written twice."""
    event = make_event("payment_intent.succeeded", payment_intent(None))
    real = HANDLERS["payment_intent.succeeded"]
    raced: list[bool] = []

    async def delivered_twice(unit: UnitOfWork, ev: StripeEvent) -> Any:
        outcome = await real(unit, ev)
        if not raced:
            raced.append(True)
            assert (await deliver(db_pool, event)).status == "ignored"
        return outcome

    monkeypatch.setitem(HANDLERS, "payment_intent.succeeded", delivered_twice)

    assert (await deliver(db_pool, event)).status == "duplicate"

    assert attempts[event["id"]] == [("optimistic", "ignored"), ("optimistic", "SettledMeanwhile")]
    async with db_pool.acquire() as con:
        row = await ledger_row(con, event["id"])
        assert row is not None and (row["status"], row["attempts"]) == ("ignored", 1)
