"""Checkout: a pending order holding stock, then a Stripe Checkout Session for it, or a compensation.

1. One transaction: (Idempotency-Key: serialise on the key, replay or refuse) lock the products in id order,
   read prices and stock from the database, create the `pending` order, its items and its `held`
   reservations expiring at `expires_at`, audit.
2. Stripe, outside any transaction: `POST /v1/checkout/sessions` with the idempotency key
   `checkout-order:<id>`, `client_reference_id` = user, `metadata.order_id`, `expires_at` = the
   reservations' expiry.
3. One transaction: store the session id and url on the order (and the answer under the Idempotency-Key).
   On a Stripe error or timeout instead: the compensating transaction cancels the order, releases its stock
   and forgets the Idempotency-Key, then 502.

Locks are taken in the webhook handlers' order (order row, its reservations, products by id) so checkout,
webhooks and the sweeper never deadlock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import stripe

from gateway import metrics, stock
from gateway.billing.checkout_options import session_options
from gateway.checkout import holds
from gateway.checkout.validation import CheckoutRequest
from gateway.errors import ApiError, BadGateway, Conflict, ValidationFailed
from gateway.orders import state_machine as t
from gateway.settings import Settings

log = logging.getLogger("gateway.checkout")

# Stripe accepts a Checkout Session expiry between 30 minutes and 24 hours from now.
STRIPE_MIN_EXPIRY = 30 * 60
STRIPE_MAX_EXPIRY = 24 * 3600

IDEMPOTENCY_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('checkout:' || $1 || ':' || $2, 0))"
SELECT_IDEMPOTENT = """
SELECT request_hash, order_id::text, response
FROM checkout_requests
WHERE user_id = $1 AND idempotency_key = $2
"""
INSERT_IDEMPOTENT = """
INSERT INTO checkout_requests (user_id, idempotency_key, request_hash, order_id) VALUES ($1, $2, $3, $4::uuid)
"""
STORE_IDEMPOTENT_RESPONSE = """
UPDATE checkout_requests SET response = $2 WHERE order_id = $1::uuid
"""
DELETE_IDEMPOTENT = "DELETE FROM checkout_requests WHERE order_id = $1::uuid"

LOCK_PRODUCTS = """
SELECT id, name, unit_amount, currency, stock_available, active
FROM products
WHERE id = ANY($1::bigint[])
ORDER BY id
FOR UPDATE
"""

INSERT_ORDER = """
INSERT INTO orders (user_id, amount_total, currency, checkout_expires_at, checkout_client)
VALUES ($1, $2, $3, $4, $5)
RETURNING id::text
"""

# Items, held reservations and the stock they take, for products already locked and checked.
HOLD_ITEMS = """
WITH lines AS (
    SELECT * FROM unnest($2::bigint[], $3::integer[], $4::bigint[]) AS l(product_id, quantity, unit_amount)
), items AS (
    INSERT INTO order_items (order_id, product_id, quantity, unit_amount, currency)
    SELECT $1::uuid, product_id, quantity, unit_amount, $5 FROM lines
), held AS (
    INSERT INTO stock_reservations (order_id, product_id, quantity, expires_at)
    SELECT $1::uuid, product_id, quantity, $6 FROM lines
)
UPDATE products p SET stock_available = p.stock_available - lines.quantity, updated_at = now()
FROM lines
WHERE p.id = lines.product_id
RETURNING p.id
"""

INSERT_AUDIT = """
INSERT INTO audit_log (actor, action, subject_type, subject_id, order_id, request_id, details)
VALUES ($1, $2, 'order', $3::text, $3::text::uuid, $4, $5)
"""

STORE_SESSION = """
UPDATE orders SET
    stripe_checkout_session_id = coalesce(stripe_checkout_session_id, $2),
    checkout_url = $3,
    updated_at = now()
WHERE id = $1::uuid
"""

LOCK_ORDER_STATUS = "SELECT status FROM orders WHERE id = $1::uuid FOR UPDATE"
CANCEL_ORDER = """
UPDATE orders SET status = 'canceled', status_reason = $2, checkout_url = NULL, updated_at = now()
WHERE id = $1::uuid
"""


@dataclass(frozen=True, slots=True)
class CheckoutAnswer:
    body: dict[str, Any]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class PendingOrder:
    order_id: str
    currency: str
    amount_total: int
    expires_at: datetime
    lines: list[dict[str, Any]]  # Stripe line_items


def expiry_seconds(settings: Settings) -> int:
    """Seconds the reservation (and the Stripe session, which must match it) lasts, in Stripe's window."""
    return min(max(settings.reservation_ttl_seconds, STRIPE_MIN_EXPIRY), STRIPE_MAX_EXPIRY)


def answer_body(order_id: str, checkout_url: str | None, expires_at: datetime) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "checkout_url": checkout_url,
        "expires_at": expires_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


def _out_of_stock(shortages: list[dict[str, Any]]) -> Conflict:
    names = ", ".join(f"{s['name']} (#{s['product_id']})" for s in shortages)
    return Conflict(f"Not enough stock for: {names}", code="out_of_stock", details={"products": shortages})


async def _audit(
    con: asyncpg.Connection, user_id: str, action: str, order_id: str, request_id: str | None, **details: Any
) -> None:
    await con.execute(INSERT_AUDIT, f"user:{user_id}", action, order_id, request_id, details)


async def reserve(
    con: asyncpg.Connection,
    settings: Settings,
    user_id: str,
    req: CheckoutRequest,
    *,
    client: str,
    idempotency_key: str | None,
    request_id: str | None,
) -> PendingOrder | CheckoutAnswer:
    """Step 1, one transaction: the pending order and its held stock (or the stored answer of a replay).

    `client` is the order's client key (`holds.client_key`), for the per-address bound on held stock."""
    product_ids = [i.product_id for i in req.items]
    async with con.transaction():
        if idempotency_key is not None:
            await con.execute(IDEMPOTENCY_LOCK, user_id, idempotency_key)
            previous = await con.fetchrow(SELECT_IDEMPOTENT, user_id, idempotency_key)
            if previous is not None:
                return _replay(previous, req)
        released = await holds.bound_holds(
            con, settings, user_id, client, product_ids, sum(i.quantity for i in req.items)
        )
        for superseded, count in released.items():
            await _audit(
                con,
                user_id,
                "order.holds_released",
                superseded,
                request_id,
                reason=holds.SUPERSEDED_REASON,
                released=count,
            )

        rows = {r["id"]: r for r in await con.fetch(LOCK_PRODUCTS, product_ids)}
        missing = [pid for pid in product_ids if pid not in rows or not rows[pid]["active"]]
        if missing:
            raise ValidationFailed(
                "Unknown or unavailable products",
                code="unknown_product",
                details=[{"field": "items", "problem": f"product {pid} does not exist"} for pid in missing],
            )
        currencies = {rows[pid]["currency"] for pid in product_ids}
        if len(currencies) != 1:
            raise ValidationFailed(
                "All products of a checkout must share one currency",
                code="mixed_currencies",
                details=[{"field": "items", "problem": f"currencies: {', '.join(sorted(currencies))}"}],
            )
        shortages = [
            {
                "product_id": item.product_id,
                "name": rows[item.product_id]["name"],
                "requested": item.quantity,
                "available": rows[item.product_id]["stock_available"],
            }
            for item in req.items
            if rows[item.product_id]["stock_available"] < item.quantity
        ]
        if shortages:
            raise _out_of_stock(shortages)

        currency = currencies.pop()
        amount_total = sum(rows[i.product_id]["unit_amount"] * i.quantity for i in req.items)
        # Whole seconds: Stripe's expires_at is a Unix timestamp and must equal the reservations' expiry.
        expires_at = datetime.fromtimestamp(int(time.time()) + expiry_seconds(settings), UTC)
        order_id: str = await con.fetchval(INSERT_ORDER, user_id, amount_total, currency, expires_at, client)
        await con.fetch(
            HOLD_ITEMS,
            order_id,
            product_ids,
            [i.quantity for i in req.items],
            [rows[i.product_id]["unit_amount"] for i in req.items],
            currency,
            expires_at,
        )
        if idempotency_key is not None:
            await con.execute(INSERT_IDEMPOTENT, user_id, idempotency_key, req.fingerprint(), order_id)
        await _audit(
            con,
            user_id,
            "order.created",
            order_id,
            request_id,
            source="checkout_api",
            amount_total=amount_total,
            currency=currency,
            products=product_ids,
        )
    if released:
        metrics.RESERVATIONS_RELEASED.labels(holds.SUPERSEDED_REASON).inc(sum(released.values()))

    lines = [
        {
            "quantity": item.quantity,
            "price_data": {
                "currency": currency,
                "unit_amount": rows[item.product_id]["unit_amount"],
                "product_data": {
                    "name": rows[item.product_id]["name"],
                    "metadata": {"product_id": str(item.product_id)},
                },
            },
        }
        for item in req.items
    ]
    return PendingOrder(order_id, currency, amount_total, expires_at, lines)


def _replay(previous: asyncpg.Record, req: CheckoutRequest) -> CheckoutAnswer:
    if previous["request_hash"] != req.fingerprint():
        raise Conflict(
            "This Idempotency-Key was used with another request body",
            code="idempotency_key_reused",
        )
    if previous["response"] is None:
        raise Conflict(
            "A request with this Idempotency-Key is still being processed; retry shortly",
            code="idempotency_request_in_progress",
            headers={"Retry-After": "1"},
        )
    return CheckoutAnswer(dict(previous["response"]), replayed=True)


def session_params(settings: Settings, user_id: str, req: CheckoutRequest, order: PendingOrder) -> dict[str, Any]:
    metadata = {"order_id": order.order_id, "user_id": user_id}
    return {
        "mode": "payment",
        "line_items": order.lines,
        "client_reference_id": user_id,
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        "expires_at": int(order.expires_at.timestamp()),
        "success_url": req.success_url,
        "cancel_url": req.cancel_url,
        **session_options(settings),
    }


def stripe_idempotency_key(order_id: str) -> str:
    return f"checkout-order:{order_id}"


async def create_session(
    client: stripe.StripeClient, settings: Settings, user_id: str, req: CheckoutRequest, order: PendingOrder
) -> stripe.checkout.Session:
    """Step 2: the Stripe Checkout Session (ApiError 502 on any Stripe error or timeout)."""
    params = session_params(settings, user_id, req, order)
    try:
        async with asyncio.timeout(settings.stripe_timeout_seconds):
            return await client.v1.checkout.sessions.create_async(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": stripe_idempotency_key(order.order_id)},
            )
    except TimeoutError:
        raise BadGateway("The payment provider did not answer in time", code="stripe_timeout") from None
    except stripe.StripeError as exc:
        details = {"stripe_code": exc.code} if exc.code else None
        raise BadGateway(
            "The payment provider refused to create the checkout session",
            code="stripe_error",
            details=details,
        ) from None


async def store_session(
    con: asyncpg.Connection, order: PendingOrder, session_id: str, url: str | None, body: dict[str, Any]
) -> None:
    """Step 3: the session on the order and the answer under the Idempotency-Key, one transaction."""
    async with con.transaction():
        await con.execute(STORE_SESSION, order.order_id, session_id, url)
        await con.execute(STORE_IDEMPOTENT_RESPONSE, order.order_id, body)


async def compensate(
    con: asyncpg.Connection, user_id: str, order_id: str, error: ApiError, request_id: str | None
) -> None:
    """The compensating transaction: cancel the pending order, release its held stock, forget the key."""
    async with con.transaction():
        status = await con.fetchval(LOCK_ORDER_STATUS, order_id)
        if status is None:
            return
        released = 0
        if status == t.PENDING:
            await con.execute(CANCEL_ORDER, order_id, error.code)
            released = await stock.release_for_order(con, order_id, f"checkout_{error.code}")
        await con.execute(DELETE_IDEMPOTENT, order_id)
        await _audit(
            con,
            user_id,
            "order.canceled",
            order_id,
            request_id,
            reason=error.code,
            previous=status,
            released=released,
        )
