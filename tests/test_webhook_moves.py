"""Moves the database decides (UnitOfWork.apply_move; sql/migrations/0006_order_moves.sql): a payment event whose
only question is whether its order may move is decided and written by one statement, without the handler. That
statement builds the audit row, the bridge event and the payment's currency itself, so it must write exactly what
the handler writes: for every event it may decide (the real fixtures and the builders' shapes), from every status
the move applies to, both paths are run on the same order and every row they leave is compared."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any, cast

import asyncpg
import pytest
from prometheus_client import REGISTRY

from gateway import stock
from gateway.bridge.registry import validate_event
from gateway.db.pipeline import Pipeline
from gateway.orders import transitions as t
from gateway.unit_of_work import BRIDGE_METADATA, FLUSH, OrderMove, UnitOfWork
from gateway.webhooks import ledger
from gateway.webhooks.envelope import StripeEvent
from gateway.webhooks.handlers.orders import plain_move
from tests.conftest import TRUNCATE_ALL
from tests.stripe_events import all_fixture_names, checkout_session, load_fixture, make_event, payment_intent
from tests.support_helpers import deliver
from tests.webhook_support import fixture_event, retarget, seed_order, to_event

MOVE_SOURCES = 45  # FLUSH's $46: given for a move the database decides


def _real_fixtures() -> list[str]:
    names = []
    for name in all_fixture_names():
        data = load_fixture(name)
        if data.get("object") == "event" and plain_move(to_event(data)) is not None:
            names.append(name)
    return names


# Shapes no real capture has (expiry, asynchronous payments, cancellation, the pre-2022-11-15 `charges` list).
BUILT = {
    "session-completed": lambda: make_event("checkout.session.completed", checkout_session(None)),
    "session-expired": lambda: make_event(
        "checkout.session.expired", checkout_session(None, status="expired", payment_status="unpaid")
    ),
    "session-async-succeeded": lambda: make_event(
        "checkout.session.async_payment_succeeded", checkout_session(None, currency="usd")
    ),
    "session-async-failed": lambda: make_event(
        "checkout.session.async_payment_failed", checkout_session(None, payment_status="unpaid")
    ),
    "intent-succeeded-legacy-charges": lambda: make_event(
        "payment_intent.succeeded", payment_intent(None, legacy_charges=True), api_version="2020-08-27"
    ),
    "intent-failed": lambda: make_event(
        "payment_intent.payment_failed",
        payment_intent(None, status="requires_payment_method", failure_code="card_declined"),
    ),
    "intent-canceled": lambda: make_event(
        "payment_intent.canceled", payment_intent(None, status="canceled", cancellation_reason="abandoned")
    ),
    "intent-succeeded-no-currency": lambda: make_event(
        "payment_intent.succeeded", {**payment_intent(None), "currency": None}
    ),
}
EVENTS: dict[str, Any] = {**{name: lambda name=name: fixture_event(name) for name in _real_fixtures()}, **BUILT}


MISSING = "missing"  # no order of ours
NO_SUCH_ORDER = "00000000-0000-4000-8000-000000000001"


def _cases() -> list[Any]:
    """Every event from every status its move applies to, and from its own status; from pending, an order that
    knows no amount, currency or user (one made from a session without them), where the fallbacks to the event's
    values apply; and no order at all, where the move decides that too."""
    cases = []
    for name, build in EVENTS.items():
        move = plain_move(to_event(build()))
        assert move is not None, name
        for source in [*sorted(move.sources), move.change.status]:
            cases.append(pytest.param(name, source, False, id=f"{name}-from-{source}"))
        cases.append(pytest.param(name, t.PENDING, True, id=f"{name}-from-pending-bare-order"))
        if move.missing_reason is not None:
            cases.append(pytest.param(name, MISSING, False, id=f"{name}-no-order"))
    return cases


def test_every_move_type_is_covered() -> None:
    covered = {build()["type"] for build in EVENTS.values()}
    assert covered == {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
    }


async def _rows_after(
    pool: asyncpg.Pool,
    event: dict[str, Any],
    source: str,
    bare: bool,
    *,
    by_move: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, str]:
    """Deliver `event` to a fresh order in status `source` (its stock released unless pending; `bare`: without
    amount, currency or user); the result and every row left, with the order's id replaced by ORDER."""
    async with pool.acquire() as con:
        await con.execute(TRUNCATE_ALL)
        seeded = await seed_order(con, stock=5, quantity=2, unit_amount=1000)
        if source == t.PAID:
            await con.execute(
                "UPDATE stock_reservations SET state = 'committed' WHERE order_id = $1::uuid", seeded.order_id
            )
        if bare:
            await con.execute(
                "UPDATE orders SET amount_total = 0, currency = NULL, user_id = NULL WHERE id = $1::uuid",
                seeded.order_id,
            )
        if source in t.RELEASING:
            await stock.release_for_order(con, seeded.order_id, f"order_{source}")
        if source != MISSING:
            await con.execute("UPDATE orders SET status = $2 WHERE id = $1::uuid", seeded.order_id, source)
    event = retarget(event, metadata={"order_id": NO_SUCH_ORDER if source == MISSING else seeded.order_id})
    sent: list[str] = []
    real = Pipeline.fetchrow

    async def spy(self: Pipeline, query: str, *args: Any, **kwargs: Any) -> asyncpg.Record:
        sent.append("move" if query == FLUSH and args[MOVE_SOURCES] is not None else "other")
        return await real(self, query, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Pipeline, "fetchrow", spy)
        if not by_move:
            patch.setattr(ledger, "plain_move", lambda event: None)
        result = await deliver(pool, event)
    assert (sent == ["move"]) == by_move, "the move decided, alone" if by_move else "the handler decided"
    async with pool.acquire() as con:
        rows = {
            table: [dict(row) for row in await con.fetch(query)]
            for table, query in {
                "orders": "SELECT * FROM orders",
                "reservations": "SELECT order_id, quantity, state, release_reason FROM stock_reservations",
                "products": "SELECT stock_available FROM products",
                "payments": "SELECT order_id, stripe_payment_intent_id, stripe_charge_id, amount, currency, status "
                "FROM payments",
                "audit": "SELECT actor, action, subject_type, subject_id, order_id, stripe_event_id, request_id, "
                "details FROM audit_log ORDER BY id",
                "bridge": "SELECT event_type, user_id, app_source, payload, metadata, source_event_id "
                "FROM bridge_events ORDER BY id",
                "ledger": "SELECT * FROM webhook_events",
            }.items()
        }
    for row in rows["orders"]:
        del row["created_at"], row["updated_at"]
    for row in rows["ledger"]:
        del row["id"], row["received_at"], row["processed_at"]
    for row in rows["bridge"]:
        validate_event(row["event_type"], row["user_id"], row["payload"], BRIDGE_METADATA)
    result_and_rows = json.dumps({"result": result, "rows": rows}, default=str, sort_keys=True)
    return result.status, result_and_rows.replace(seeded.order_id, "ORDER")


@pytest.mark.parametrize(("name", "source", "bare"), _cases())
async def test_a_move_writes_what_the_handler_writes(
    db_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, name: str, source: str, bare: bool
) -> None:
    event = EVENTS[name]()

    status, by_move = await _rows_after(db_pool, event, source, bare, by_move=True, monkeypatch=monkeypatch)
    _, by_handler = await _rows_after(db_pool, event, source, bare, by_move=False, monkeypatch=monkeypatch)

    assert status == ("ignored" if source == MISSING else "processed")
    assert by_move == by_handler


async def test_a_move_that_fails_in_the_database_loses_nothing(
    db_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The move's statement fails at its last write (here: a bridge event without a type), after the ledger row,
    the order, the payment, the stock and the audit row: the statement is rolled back whole, and the event takes
    the handler's path, which applies it once."""
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1)
    event = make_event("payment_intent.succeeded", payment_intent(seeded.order_id))
    moves: list[OrderMove] = []

    def broken(parsed: StripeEvent) -> OrderMove | None:
        move = plain_move(parsed)
        assert move is not None
        moves.append(move)
        return replace(move, bridge_type=cast(str, None))

    monkeypatch.setattr(ledger, "plain_move", broken)
    failed = REGISTRY.get_sample_value("stripe_webhook_moves_total", {"decided": "failed"}) or 0.0

    with caplog.at_level(logging.WARNING, logger="gateway.webhooks"):
        assert (await deliver(db_pool, event)).status == "processed"

    assert REGISTRY.get_sample_value("stripe_webhook_moves_total", {"decided": "failed"}) == failed + 1
    # The line the runbook's StripeWebhookMovesFailing names, with the database's error and the event.
    [warning] = [r for r in caplog.records if r.message == "move failed; the handler's path runs the event"]
    assert warning.levelno == logging.WARNING
    assert warning.stripeEventId == event["id"]
    assert warning.exc_info is not None and isinstance(warning.exc_info[1], asyncpg.NotNullViolationError)

    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT status FROM orders WHERE id = $1::uuid", seeded.order_id) == "paid"
        assert await con.fetchval("SELECT count(*) FROM audit_log") == 1
        assert await con.fetchval("SELECT count(*) FROM bridge_events") == 1
        assert await con.fetchval("SELECT count(*) FROM payments") == 1
        row = await con.fetchrow("SELECT status, attempts FROM webhook_events WHERE stripe_event_id = $1", event["id"])
        assert (row["status"], row["attempts"]) == ("processed", 1)
    assert len(moves) == 1  # the move was tried, and failed


# The write of the previous release (migration 0005's 45 parameters): it must keep working while a rollout
# replaces that release's pods after the migrations ran.
PREVIOUS_RELEASE_FLUSH = """
SELECT gated, settled, oversold, types FROM unit_of_work_flush(
    $1, $2, $3, $4, $5, $6, $7,
    $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
    $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34,
    $35, $36, $37, $38, $39, $40,
    $41, $42, $43,
    $44, $45)
"""


async def test_the_previous_release_still_writes_during_a_rollout(db_pool: asyncpg.Pool) -> None:
    """Its 45 parameters are the first 45 of today's write: a payment, written through the previous function."""
    async with db_pool.acquire() as con:
        seeded = await seed_order(con, stock=5, quantity=1)
    event = to_event(make_event("payment_intent.succeeded", payment_intent(seeded.order_id)))

    async with db_pool.acquire() as con, con.transaction():

        class PreviousRelease:
            def __getattr__(self, name: str) -> Any:
                return getattr(con, name)

            async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record:
                if query == FLUSH:
                    return await con.fetchrow(PREVIOUS_RELEASE_FLUSH, *args[:45])
                return await con.fetchrow(query, *args)

        unit = UnitOfWork(
            cast(asyncpg.Connection, PreviousRelease()),
            actor="stripe",
            source_event_id=event.id,
            request_id="req-previous",
        )
        result = await ledger.process(unit, event, handlers_enabled=True)

    assert result.status == "processed"
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT status FROM orders WHERE id = $1::uuid", seeded.order_id) == "paid"
        assert await con.fetchval("SELECT status FROM webhook_events WHERE stripe_event_id = $1", event.id) == (
            "processed"
        )
        assert await con.fetchval("SELECT count(*) FROM bridge_events") == 1
