"""Kill switch (seed 001 rollback): with WEBHOOK_HANDLERS_ENABLED=false deliveries are verified, recorded
`received` and answered 200 with no business change; `gateway events replay --pending` applies them later."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import BASE_ENV, TEST_WEBHOOK_SECRET, make_settings
from tests.factories import create_order, create_product
from tests.stripe_events import checkout_session, make_event, payment_intent, signed_event
from tests.support_helpers import counts, ledger_row, order_status, run_cli, stock_of

WEBHOOK = "/stripe/webhook"
REPO = Path(__file__).resolve().parent.parent


async def post_event(client: Any, event: dict[str, Any]) -> Any:
    body, headers = signed_event(event, TEST_WEBHOOK_SECRET)
    return await client.post(WEBHOOK, data=body, headers=headers)


@pytest.fixture
async def switched_off(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool) -> Any:
    return await aiohttp_client(app_factory(WEBHOOK_HANDLERS_ENABLED="false"))


async def receive_while_switched_off(client: Any, pool: asyncpg.Pool) -> tuple[str, int, list[dict[str, Any]]]:
    async with pool.acquire() as con:
        product = await create_product(con, stock=5)
        order_id = await create_order(con, [(product, 2)])
    session = checkout_session(order_id, user_id="user-1")
    events = [
        make_event("checkout.session.completed", session, created=1_700_000_000),
        make_event(
            "payment_intent.succeeded",
            payment_intent(order_id, 2000, pi_id=session["payment_intent"]),
            created=1_700_000_001,
        ),
    ]
    for event in events:
        response = await post_event(client, event)
        assert response.status == 200, await response.text()
        assert await response.json() == {"status": "received", "event_id": event["id"]}
    return order_id, product, events


async def test_switched_off_records_received_and_changes_nothing(switched_off: Any, db_pool: asyncpg.Pool) -> None:
    order_id, product, events = await receive_while_switched_off(switched_off, db_pool)

    assert await order_status(db_pool, order_id) == "pending"
    assert await stock_of(db_pool, product) == 3  # still held, not committed
    assert await counts(db_pool) == {"audit_log": 0, "bridge_events": 0, "webhook_events": 2, "payments": 0}
    for event in events:
        row = await ledger_row(db_pool, event["id"])
        assert row["status"] == "received" and row["outcome_reason"] == "handlers disabled"
        assert row["processed_at"] is None and row["payload"] == event
    # A retried delivery while switched off is still only recorded.
    again = await post_event(switched_off, events[0])
    assert (await again.json())["status"] == "received"
    assert await order_status(db_pool, order_id) == "pending"


async def test_replay_pending_applies_what_the_switch_held(
    switched_off: Any, db_pool: asyncpg.Pool, database_url: str
) -> None:
    order_id, product, events = await receive_while_switched_off(switched_off, db_pool)
    settings = make_settings(DATABASE_URL=database_url)  # handlers back on

    result = await run_cli(["events", "replay", "--pending"], settings)

    assert result.code == 0, result.stderr
    assert result.json["status"] == "received" and result.json["selected"] == 2
    assert result.json["outcomes"] == {"processed": 2}
    assert await order_status(db_pool, order_id) == "paid"
    assert await stock_of(db_pool, product) == 3
    async with db_pool.acquire() as con:
        assert (
            await con.fetchval("SELECT state FROM stock_reservations WHERE order_id = $1::uuid", order_id)
            == "committed"
        )
        assert [r["event_type"] for r in await con.fetch("SELECT event_type FROM bridge_events")] == ["ORDER_PAID"]
        assert await con.fetchval("SELECT count(*) FROM payments") == 1
    for event in events:
        assert (await ledger_row(db_pool, event["id"]))["status"] == "processed"

    # Idempotent: nothing pending any more; a late redelivery is a duplicate.
    again = await run_cli(["events", "replay", "--pending"], settings)
    assert again.code == 0 and again.json["selected"] == 0
    late = await post_event(switched_off, events[0])
    assert (await late.json())["status"] == "duplicate"
    assert await stock_of(db_pool, product) == 3


@pytest.mark.slow
async def test_replay_pending_as_a_real_process(switched_off: Any, db_pool: asyncpg.Pool, database_url: str) -> None:
    order_id, product, _ = await receive_while_switched_off(switched_off, db_pool)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "WEBHOOK_", "DATABASE_"))}
    env.update(BASE_ENV)
    env.update({"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO)})

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "events",
        "replay",
        "--pending",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)

    assert process.returncode == 0, stderr.decode()
    summary = json.loads(stdout)
    assert summary["selected"] == 2 and summary["outcomes"] == {"processed": 2}
    assert summary["request_id"].startswith("replay-")
    assert await order_status(db_pool, order_id) == "paid"
    assert await stock_of(db_pool, product) == 3
    async with db_pool.acquire() as con:
        audit = await con.fetch("SELECT request_id FROM audit_log")
    assert audit and {a["request_id"] for a in audit} == {summary["request_id"]}
