"""`gateway events show|find|replay` and `gateway reservations sweep` against the real database."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from gateway.settings import Settings
from gateway.unit_of_work import UnitOfWork
from gateway.webhooks import handlers
from gateway.webhooks.envelope import StripeEvent
from gateway.webhooks.handlers.base import Outcome
from gateway.webhooks.ledger import HandlerFailed
from tests.conftest import make_settings
from tests.factories import create_order, create_product
from tests.stripe_events import checkout_session, make_event, new_id, payment_intent
from tests.support_helpers import counts, deliver, ledger_row, order_status, run_cli, stock_of


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(DATABASE_URL=database_url)


async def paid_order(pool: asyncpg.Pool) -> tuple[str, int, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """An order paid by checkout.session.completed, then confirmed by payment_intent.succeeded (1 s later)."""
    async with pool.acquire() as con:
        product = await create_product(con, new_id("SKU", 8), stock=5)
        order_id = await create_order(con, [(product, 2)])
    now = int(time.time())
    session = checkout_session(order_id, amount_total=2000, user_id="user-1", created=now - 60)
    completed = make_event("checkout.session.completed", session, created=now - 10)
    succeeded = make_event(
        "payment_intent.succeeded",
        payment_intent(order_id, 2000, pi_id=session["payment_intent"]),
        created=now - 9,
    )
    assert (await deliver(pool, completed)).status == "processed"
    assert (await deliver(pool, succeeded)).status == "processed"
    return order_id, product, session, completed, succeeded


# ------------------------------------------------------------------ show


async def test_show_prints_the_ledger_row_with_payload_order_audit_and_bridge(
    db_pool: asyncpg.Pool, settings: Settings
) -> None:
    order_id, _, session, completed, _ = await paid_order(db_pool)

    result = await run_cli(["events", "show", completed["id"]], settings)

    assert result.code == 0, result.stderr
    shown = result.json
    event = shown["event"]
    assert event["stripe_event_id"] == completed["id"]
    assert event["status"] == "processed" and event["attempts"] == 1
    assert event["payload"] == completed  # the stored payload, unchanged
    assert event["request_id"] == "req-test-0001"
    assert shown["order"]["id"] == order_id
    assert shown["order"]["status"] == "paid" and shown["order"]["paid_at"] is not None
    assert shown["order"]["stripe_checkout_session_id"] == session["id"]
    assert [a["action"] for a in shown["audit"]] == ["order.paid"]
    assert shown["audit"][0]["stripe_event_id"] == completed["id"]
    assert [b["event_type"] for b in shown["bridge_events"]] == ["ORDER_PAID"]
    assert shown["bridge_events"][0]["payload"]["order_id"] == order_id
    assert [r["state"] for r in shown["reservations"]] == ["committed"]


async def test_show_unknown_event_exits_2(db_pool: asyncpg.Pool, settings: Settings) -> None:
    result = await run_cli(["events", "show", "evt_doesnotexist"], settings)
    assert result.code == 2
    assert result.stdout == ""
    assert "evt_doesnotexist" in result.stderr


async def test_show_event_without_order(db_pool: asyncpg.Pool, settings: Settings) -> None:
    event = make_event("customer.created", {"id": "cus_123", "object": "customer"})
    await deliver(db_pool, event)
    result = await run_cli(["events", "show", event["id"]], settings)
    assert result.code == 0
    assert result.json["event"]["status"] == "ignored"
    assert result.json["order"] is None and result.json["audit"] == [] and result.json["bridge_events"] == []


# ------------------------------------------------------------------ find


@pytest.mark.parametrize("key", ["--session", "--order", "--payment-intent"])
async def test_find_lists_every_event_of_the_order_newest_first(
    db_pool: asyncpg.Pool, settings: Settings, key: str
) -> None:
    order_id, _, session, completed, succeeded = await paid_order(db_pool)
    other = await paid_order(db_pool)  # must not show up
    value = {"--session": session["id"], "--order": order_id, "--payment-intent": session["payment_intent"]}[key]

    result = await run_cli(["events", "find", key, value], settings)

    assert result.code == 0, result.stderr
    found = result.json
    assert [e["stripe_event_id"] for e in found["events"]] == [succeeded["id"], completed["id"]]
    assert other[3]["id"] not in {e["stripe_event_id"] for e in found["events"]}
    assert all("payload" not in e for e in found["events"])
    assert found["order"]["id"] == order_id and found["order"]["status"] == "paid"


async def test_find_with_payload_and_limit(db_pool: asyncpg.Pool, settings: Settings) -> None:
    order_id, _, _, _, succeeded = await paid_order(db_pool)
    result = await run_cli(["events", "find", "--order", order_id, "--limit", "1", "--payload"], settings)
    assert result.code == 0
    assert [e["payload"]["id"] for e in result.json["events"]] == [succeeded["id"]]


async def test_find_session_without_order_still_lists_the_ledger(db_pool: asyncpg.Pool, settings: Settings) -> None:
    session = checkout_session(None, session_id="cs_test_unknownorder")
    event = make_event("checkout.session.expired", {**session, "status": "expired", "payment_status": "unpaid"})
    await deliver(db_pool, event)
    result = await run_cli(["events", "find", "--session", "cs_test_unknownorder"], settings)
    assert result.code == 0
    assert result.json["order"] is None
    assert [e["status"] for e in result.json["events"]] == ["ignored"]


@pytest.mark.parametrize(
    "argv",
    [
        ["events", "find", "--order", "not-a-uuid"],
        ["events", "find", "--session", "cs_test_nothing_here"],
        ["events", "find", "--order", "9b2e5b8e-3f7a-4c1e-9a56-1a2b3c4d5e6f"],
    ],
)
async def test_find_usage_error_or_nothing_found_exits_2(
    db_pool: asyncpg.Pool, settings: Settings, argv: list[str]
) -> None:
    result = await run_cli(argv, settings)
    assert result.code == 2


def test_find_needs_exactly_one_key(settings: Settings) -> None:
    from gateway.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["events", "find", "--session", "cs_1", "--order", "x"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["events", "find"])
    assert exc.value.code == 2


# ------------------------------------------------------------------ replay


def failing_once(calls: list[str]) -> Any:
    async def handler(unit: UnitOfWork, event: StripeEvent) -> Outcome:
        # A real write first, so the test also proves the failed attempt's changes were rolled back.
        await unit.con.execute("UPDATE orders SET status_reason = 'half-done'")
        calls.append(event.id)
        raise RuntimeError("simulated handler bug")

    return handler


async def test_replay_of_a_failed_event_processes_it_once(
    db_pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=5)
        order_id = await create_order(con, [(product, 2)])
    event = make_event("checkout.session.completed", checkout_session(order_id, user_id="user-1"))
    calls: list[str] = []
    monkeypatch.setitem(handlers.HANDLERS, "checkout.session.completed", failing_once(calls))
    with pytest.raises(HandlerFailed):
        await deliver(db_pool, event)
    failed = await ledger_row(db_pool, event["id"])
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert "simulated handler bug" in failed["last_error"]
    assert await order_status(db_pool, order_id) == "pending"

    # Still broken: the replay fails again, is recorded, exit 1.
    again = await run_cli(["events", "replay", event["id"]], settings)
    assert again.code == 1
    assert again.json["outcome"] == "failed" and again.json["status"] == "failed"
    assert again.json["attempts"] == 2 and "simulated handler bug" in again.json["last_error"]
    assert len(calls) == 2

    monkeypatch.undo()  # the fix is deployed
    result = await run_cli(["events", "replay", event["id"]], settings)

    assert result.code == 0, result.stderr
    replayed = result.json
    assert replayed["outcome"] == "processed" and replayed["previous_status"] == "failed"
    assert replayed["status"] == "processed" and replayed["attempts"] == 3 and replayed["last_error"] is None
    assert replayed["order_id"] == order_id
    assert replayed["request_id"].startswith("replay-")
    row = await ledger_row(db_pool, event["id"])
    assert row["status"] == "processed" and row["processed_at"] is not None
    assert row["request_id"] == replayed["request_id"]
    assert await order_status(db_pool, order_id) == "paid"
    assert await stock_of(db_pool, product) == 3
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT status_reason FROM orders WHERE id = $1::uuid", order_id) is None
        audit = await con.fetch("SELECT action, request_id FROM audit_log")
        assert [(a["action"], a["request_id"]) for a in audit] == [("order.paid", replayed["request_id"])]
        assert await con.fetchval("SELECT count(*) FROM bridge_events") == 1
        assert (
            await con.fetchval("SELECT state FROM stock_reservations WHERE order_id = $1::uuid", order_id)
            == "committed"
        )


async def test_replay_of_a_processed_event_changes_nothing(db_pool: asyncpg.Pool, settings: Settings) -> None:
    order_id, product, _, completed, _ = await paid_order(db_pool)
    before_counts = await counts(db_pool)
    before_row = await ledger_row(db_pool, completed["id"])
    before_stock = await stock_of(db_pool, product)

    result = await run_cli(["events", "replay", completed["id"]], settings)

    assert result.code == 0
    assert result.json["outcome"] == "already_done"
    assert result.json["status"] == "processed" and result.json["attempts"] == 1
    assert await counts(db_pool) == before_counts
    assert dict(await ledger_row(db_pool, completed["id"])) == dict(before_row)
    assert await stock_of(db_pool, product) == before_stock
    assert await order_status(db_pool, order_id) == "paid"


async def test_replay_of_ignored_and_stale_events_is_reported_not_reapplied(
    db_pool: asyncpg.Pool, settings: Settings
) -> None:
    order_id, _, session, _, _ = await paid_order(db_pool)
    stale = make_event("checkout.session.expired", {**session, "status": "expired", "payment_status": "unpaid"})
    ignored = make_event("customer.created", {"id": "cus_1", "object": "customer"})
    assert (await deliver(db_pool, stale)).status == "stale"
    assert (await deliver(db_pool, ignored)).status == "ignored"

    for event, status in ((stale, "stale"), (ignored, "ignored")):
        result = await run_cli(["events", "replay", event["id"]], settings)
        assert result.code == 0
        assert (result.json["outcome"], result.json["status"], result.json["attempts"]) == (
            "already_done",
            status,
            1,
        )
    assert await order_status(db_pool, order_id) == "paid"


async def test_replay_failed_batch_oldest_first_with_summary(
    db_pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=10)
        orders = [await create_order(con, [(product, 1)]) for _ in range(3)]
    now = int(time.time())
    # Delivered newest first: the replay must still apply them oldest first.
    events = [
        make_event("checkout.session.completed", checkout_session(o), created=now - 30 + i)
        for i, o in enumerate(orders)
    ]
    calls: list[str] = []
    real = handlers.HANDLERS["checkout.session.completed"]
    monkeypatch.setitem(handlers.HANDLERS, "checkout.session.completed", failing_once(calls))
    for event in reversed(events):
        with pytest.raises(HandlerFailed):
            await deliver(db_pool, event)
    applied: list[str] = []

    async def recording(unit: UnitOfWork, event: StripeEvent) -> Outcome:
        applied.append(event.id)
        return await real(unit, event)

    monkeypatch.setitem(handlers.HANDLERS, "checkout.session.completed", recording)

    result = await run_cli(["events", "replay", "--failed"], settings)

    assert result.code == 0, result.stderr
    assert result.json["selected"] == 3
    assert result.json["outcomes"] == {"processed": 3}
    assert result.json["failed"] == []
    assert applied == [e["id"] for e in events]
    assert [await order_status(db_pool, o) for o in orders] == ["paid"] * 3
    assert await stock_of(db_pool, product) == 7

    again = await run_cli(["events", "replay", "--failed"], settings)
    assert again.code == 0 and again.json["selected"] == 0


async def test_replay_failed_batch_reports_failures_exit_1(
    db_pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=10)
        order_id = await create_order(con, [(product, 1)])
    event = make_event("checkout.session.completed", checkout_session(order_id))
    calls: list[str] = []
    monkeypatch.setitem(handlers.HANDLERS, "checkout.session.completed", failing_once(calls))
    with pytest.raises(HandlerFailed):
        await deliver(db_pool, event)

    result = await run_cli(["events", "replay", "--failed"], settings)

    assert result.code == 1
    assert result.json["outcomes"] == {"failed": 1}
    assert result.json["failed"][0]["event_id"] == event["id"]
    assert result.json["failed"][0]["attempts"] == 2
    assert len(calls) == 2  # taken once per run: no retry loop within a run


@pytest.mark.parametrize(
    "argv",
    [
        ["events", "replay"],
        ["events", "replay", "evt_1", "--pending"],
        ["events", "replay", "evt_doesnotexist"],
        ["events", "replay", "--failed", "--limit", "0"],
    ],
)
async def test_replay_usage_errors_exit_2(db_pool: asyncpg.Pool, settings: Settings, argv: list[str]) -> None:
    result = await run_cli(argv, settings)
    assert result.code == 2
    assert result.stderr


def test_replay_pending_and_failed_are_exclusive() -> None:
    from gateway.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["events", "replay", "--pending", "--failed"])
    assert exc.value.code == 2


# ------------------------------------------------------------------ reservations sweep


async def test_reservations_sweep_command(db_pool: asyncpg.Pool, settings: Settings) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=10)
        for _ in range(3):
            await create_order(con, [(product, 2)], expires_in=timedelta(minutes=-1))
        await create_order(con, [(product, 1)])
    assert await stock_of(db_pool, product) == 3

    result = await run_cli(["reservations", "sweep", "--batch", "2"], settings)

    assert result.code == 0, result.stderr
    assert result.json == {"released": 3}
    assert await stock_of(db_pool, product) == 9
    again = await run_cli(["reservations", "sweep"], settings)
    assert again.json == {"released": 0}
    assert await stock_of(db_pool, product) == 9
