"""Order reads for their owner: `GET /v1/orders/{order_id}` and `GET /v1/orders` (keyset pagination).

An order of another user, like an order that does not exist or an id that is not a UUID, answers 404: the API
never tells whether somebody else's order exists.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from gateway import context, keys
from gateway.checkout.validation import Problems
from gateway.errors import NotFound, Unauthorized
from gateway.input_rules import parse_ascii_int, timestamp_problem
from gateway.orders import state_machine as t
from gateway.orders.queries import valid_uuid
from gateway.responses import NO_STORE, json_response
from gateway.routing import route_options

DEFAULT_PAGE = 20
MAX_PAGE = 100

# What an owner sees of an order, with its items (both queries below read the same columns).
ORDER_WITH_ITEMS = """
SELECT
    o.id::text AS id, o.status, o.amount_total, o.amount_refunded, o.currency, o.checkout_url,
    o.checkout_expires_at, o.paid_at, o.created_at, o.updated_at,
    o.amount_subtotal, o.amount_discount, o.amount_tax, o.customer_tax_ids, o.receipt_url,
    coalesce((
        SELECT jsonb_agg(jsonb_build_object(
                   'product_id', i.product_id, 'name', p.name, 'quantity', i.quantity,
                   'unit_amount', i.unit_amount, 'currency', i.currency) ORDER BY i.product_id)
        FROM order_items i JOIN products p ON p.id = i.product_id
        WHERE i.order_id = o.id
    ), '[]'::jsonb) AS items
FROM orders o
"""

SELECT_OWN_ORDER = (
    ORDER_WITH_ITEMS
    + """WHERE o.id = $1::uuid AND o.user_id = $2
"""
)

LIST_OWN_ORDERS = (
    ORDER_WITH_ITEMS
    + """WHERE o.user_id = $1
  AND ($2::timestamptz IS NULL OR (o.created_at, o.id) < ($2::timestamptz, $3::uuid))
ORDER BY o.created_at DESC, o.id DESC
LIMIT $4
"""
)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def order_json(row: asyncpg.Record) -> dict[str, Any]:
    expires_at: datetime | None = row["checkout_expires_at"]
    open_checkout = row["status"] == t.PENDING and expires_at is not None and expires_at > datetime.now(UTC)
    return {
        "id": row["id"],
        "status": row["status"],
        "amount_total": row["amount_total"],
        "amount_refunded": row["amount_refunded"],
        "currency": row["currency"],
        "amount_subtotal": row["amount_subtotal"],
        "amount_discount": row["amount_discount"],
        "amount_tax": row["amount_tax"],
        "customer_tax_ids": row["customer_tax_ids"],
        "receipt_url": row["receipt_url"],
        "items": row["items"],
        "checkout_url": row["checkout_url"] if open_checkout else None,
        "expires_at": iso(expires_at),
        "paid_at": iso(row["paid_at"]),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def _user_id(request: web.Request) -> str:
    user_id = context.get_context(request).user_id
    if user_id is None:  # the auth middleware guarantees it on auth="user" routes
        raise Unauthorized("Authentication required")
    return user_id


@route_options(rate_limit="public", auth="user")
async def get_order(request: web.Request) -> web.Response:
    user_id = _user_id(request)
    order_id = valid_uuid(request.match_info["order_id"])
    if order_id is None:
        raise NotFound("Order not found", code="order_not_found")
    async with request.app[keys.DB_POOL].acquire() as con:
        row = await con.fetchrow(SELECT_OWN_ORDER, order_id, user_id)
    if row is None:
        raise NotFound("Order not found", code="order_not_found")
    context.bind(orderId=order_id)
    return json_response(order_json(row), headers=NO_STORE)


def _encode_cursor(created_at: datetime, order_id: str) -> str:
    raw = orjson.dumps([created_at.isoformat(), order_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, order_id = orjson.loads(raw)
        when = datetime.fromisoformat(created)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        return None
    uid = valid_uuid(order_id) if isinstance(order_id, str) else None
    if uid is None or when.tzinfo is None or timestamp_problem(when) is not None:
        return None
    return when, uid


@route_options(rate_limit="public", auth="user")
async def list_orders(request: web.Request) -> web.Response:
    user_id = _user_id(request)
    problems = Problems()
    for name in sorted(set(request.query) - {"limit", "cursor"}):
        problems.add(name, "unknown query parameter")
    limit = DEFAULT_PAGE
    raw_limit = request.query.get("limit")
    if raw_limit is not None:
        parsed = parse_ascii_int(raw_limit)
        if parsed is None or not 1 <= parsed <= MAX_PAGE:
            problems.add("limit", f"an integer from 1 to {MAX_PAGE}")
        else:
            limit = parsed
    after: tuple[datetime, str] | None = None
    raw_cursor = request.query.get("cursor")
    if raw_cursor is not None:
        after = _decode_cursor(raw_cursor) if len(raw_cursor) <= 512 else None
        if after is None:
            problems.add("cursor", "not a cursor this API returned")
    problems.raise_if_any("The query is not valid")

    async with request.app[keys.DB_POOL].acquire() as con:
        rows = await con.fetch(
            LIST_OWN_ORDERS, user_id, after[0] if after else None, after[1] if after else None, limit + 1
        )
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > limit else None
    return json_response({"data": [order_json(r) for r in page], "next_cursor": next_cursor}, headers=NO_STORE)
