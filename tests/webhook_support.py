"""Helpers shared by the webhook exactly-once tests: posting signed events, reading back order/stock/bridge state."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.webhooks.envelope import StripeEvent, parse_event
from tests.conftest import TEST_WEBHOOK_SECRET
from tests.factories import create_order, create_product
from tests.stripe_events import event_body, load_fixture, new_id, signed_event

WEBHOOK = "/stripe/webhook"


async def post_event(client: Any, event: dict[str, Any], secret: str = TEST_WEBHOOK_SECRET) -> Any:
    body, headers = signed_event(event, secret)
    return await client.post(WEBHOOK, data=body, headers=headers)


async def deliver(client: Any, event: dict[str, Any], expected: str = "processed") -> dict[str, Any]:
    """Post `event` signed; the answer must be 200 with the ledger status `expected`."""
    response = await post_event(client, event)
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    assert body["status"] == expected, body
    return body


def to_event(event: dict[str, Any]) -> StripeEvent:
    """The parsed envelope `ingest` takes (what the view builds from the verified body)."""
    return parse_event(event_body(event), required_livemode=None)


def fixture_event(name: str, *, fresh_id: bool = True) -> dict[str, Any]:
    """A real fixture envelope (a fresh event id unless told otherwise, so one test may use it twice)."""
    event = load_fixture(name)
    assert event.get("object") == "event", name
    if fresh_id:
        event["id"] = new_id("evt")
    return event


def retarget(event: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A copy of `event` whose data.object has `fields` set (metadata merged, not replaced)."""
    event = copy.deepcopy(event)
    obj = event["data"]["object"]
    for key, value in fields.items():
        if key == "metadata":
            obj["metadata"] = {**(obj.get("metadata") or {}), **value}
        else:
            obj[key] = value
    return event


@dataclass
class Seeded:
    order_id: str
    product_ids: list[int]


async def seed_order(
    con: asyncpg.Connection,
    *,
    stock: int = 10,
    quantity: int = 2,
    unit_amount: int = 1000,
    currency: str = "eur",
    user_id: str = "user-1",
    products: list[int] | None = None,
    session_id: str | None = None,
) -> Seeded:
    """A pending order holding `quantity` of each product (new products unless given)."""
    if products is None:
        products = [
            await create_product(con, new_id("SKU", 10), stock=stock, unit_amount=unit_amount, currency=currency)
        ]
    order_id = await create_order(
        con, [(p, quantity) for p in products], user_id=user_id, currency=currency, session_id=session_id
    )
    return Seeded(order_id, products)


async def order_row(con: asyncpg.Connection, order_id: str) -> asyncpg.Record:
    row = await con.fetchrow("SELECT * FROM orders WHERE id = $1::uuid", order_id)
    assert row is not None
    return row


async def bridge_types(con: asyncpg.Connection, order_id: str) -> list[str]:
    rows = await con.fetch("SELECT event_type FROM bridge_events WHERE payload->>'order_id' = $1 ORDER BY id", order_id)
    return [r["event_type"] for r in rows]


async def audit_actions(con: asyncpg.Connection, order_id: str) -> list[str]:
    rows = await con.fetch("SELECT action FROM audit_log WHERE order_id = $1::uuid ORDER BY id", order_id)
    return [r["action"] for r in rows]


async def reservation_states(con: asyncpg.Connection, order_id: str) -> list[str]:
    rows = await con.fetch(
        "SELECT state FROM stock_reservations WHERE order_id = $1::uuid ORDER BY product_id", order_id
    )
    return [r["state"] for r in rows]


async def stock_of(con: asyncpg.Connection, product_id: int) -> tuple[int, int, int]:
    """(available, held, committed) units of a product."""
    row = await con.fetchrow(
        """
        SELECT p.stock_available,
               coalesce(sum(r.quantity) FILTER (WHERE r.state = 'held'), 0)::int AS held,
               coalesce(sum(r.quantity) FILTER (WHERE r.state = 'committed'), 0)::int AS committed
        FROM products p LEFT JOIN stock_reservations r ON r.product_id = p.id
        WHERE p.id = $1 GROUP BY p.id
        """,
        product_id,
    )
    assert row is not None
    return row["stock_available"], row["held"], row["committed"]


async def ledger_row(con: asyncpg.Connection, event_id: str) -> asyncpg.Record | None:
    return await con.fetchrow("SELECT * FROM webhook_events WHERE stripe_event_id = $1", event_id)
