"""Order rows and the rows hanging off them (payments, refunds, disputes): named statements and the functions that
run them. No decision is taken here: gateway/orders/state_machine.py decides, the webhook handlers call these to
read and write.

Lock order (every writer takes rows in this order, so two deliveries never wait on each other in a cycle): the
order row; the order's payment, refund and dispute rows; its stock reservations in product order; products in id
order (gateway/stock.py); the bridge lock (gateway/bridge/outbox.py).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, fields
from datetime import datetime

import asyncpg

from gateway.orders.state_machine import RefundRow

# One indexed look-up per key, in order of preference (the order id first), each one run only if the ones before
# it found nothing (coalesce stops at its first non-NULL argument; every key is unique, so each look-up finds at
# most one row). $1-$4: the keys (lookup_params). The row is locked for the rest of the transaction.
LOCK_ORDER = """
SELECT id::text, user_id, status, status_reason, amount_total, amount_refunded, currency,
       stripe_checkout_session_id, stripe_payment_intent_id, stripe_charge_id, stripe_customer_id, paid_at,
       charge_refunded_amount, charge_refunded_at, amount_subtotal, amount_discount, amount_tax, customer_tax_ids,
       receipt_url
FROM orders
WHERE id = coalesce(
    (SELECT id FROM orders WHERE id = $1::uuid),
    (SELECT id FROM orders WHERE stripe_checkout_session_id = $2),
    (SELECT id FROM orders WHERE stripe_payment_intent_id = $3),
    (SELECT id FROM orders WHERE stripe_charge_id = $4)
)
FOR UPDATE
"""

# A Checkout Session we did not create (Payment Link, dashboard): the order is made from the session itself.
CREATE_ORDER_FROM_SESSION = """
INSERT INTO orders (user_id, amount_total, currency, stripe_checkout_session_id, stripe_customer_id)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (stripe_checkout_session_id) DO NOTHING
"""

SAVE_ORDER = """
UPDATE orders SET
    status = $2, status_reason = $3, amount_total = $4, amount_refunded = $5, currency = $6,
    stripe_checkout_session_id = $7, stripe_payment_intent_id = $8, stripe_charge_id = $9, stripe_customer_id = $10,
    paid_at = $11, charge_refunded_amount = $12, charge_refunded_at = $13, amount_subtotal = $14,
    amount_discount = $15, amount_tax = $16, customer_tax_ids = $17, receipt_url = $18, updated_at = now()
WHERE id = $1::uuid
"""

LOCK_PAYMENT = """
SELECT status, status_at, stripe_charge_id FROM payments WHERE stripe_payment_intent_id = $1 FOR UPDATE
"""
INSERT_PAYMENT = """
INSERT INTO payments (order_id, stripe_payment_intent_id, stripe_charge_id, amount, currency, status, status_at)
VALUES ($1::uuid, $2, $3, $4, $5, $6, $7)
ON CONFLICT (stripe_payment_intent_id) DO NOTHING
RETURNING true
"""
UPDATE_PAYMENT = """
UPDATE payments SET stripe_charge_id = $2, amount = $3, status = $4, status_at = $5, updated_at = now()
WHERE stripe_payment_intent_id = $1
"""

LOCK_REFUND = "SELECT status, status_at FROM refunds WHERE stripe_refund_id = $1 FOR UPDATE"
INSERT_REFUND = """
INSERT INTO refunds (
    stripe_refund_id, order_id, stripe_charge_id, amount, currency, status, status_at, reason, failed_at)
VALUES ($1, $2::uuid, $3, $4, $5, $6, $7, $8, $9)
"""
UPDATE_REFUND = """
UPDATE refunds SET amount = $2, status = $3, status_at = $4, reason = coalesce($5, reason),
    failed_at = coalesce(failed_at, $6), updated_at = now()
WHERE stripe_refund_id = $1
"""
ORDER_REFUNDS = "SELECT amount, status, failed_at FROM refunds WHERE order_id = $1::uuid"

LOCK_DISPUTE = """
SELECT status, status_at, funds_withdrawn_at, funds_reinstated_at FROM disputes WHERE stripe_dispute_id = $1 FOR UPDATE
"""
INSERT_DISPUTE = """
INSERT INTO disputes (
    stripe_dispute_id, order_id, stripe_charge_id, amount, currency, reason, status, status_at, evidence_due_by,
    funds_withdrawn_at, funds_reinstated_at)
VALUES ($1, $2::uuid, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""
UPDATE_DISPUTE = """
UPDATE disputes SET amount = $2, reason = coalesce($3, reason), status = $4, status_at = $5,
    evidence_due_by = $6, funds_withdrawn_at = $7, funds_reinstated_at = $8, updated_at = now()
WHERE stripe_dispute_id = $1
"""
UPDATE_DISPUTE_FUNDS = """
UPDATE disputes SET funds_withdrawn_at = $2, funds_reinstated_at = $3, updated_at = now() WHERE stripe_dispute_id = $1
"""
# Open ($2) and lost ($3) disputes of an order, and the reason of the newest of them.
ORDER_DISPUTE_COUNTS = """
SELECT count(*) FILTER (WHERE status = ANY ($2::text[]))::int AS open,
       count(*) FILTER (WHERE status = ANY ($3::text[]))::int AS lost,
       (array_agg(reason ORDER BY status_at DESC, stripe_dispute_id DESC)
            FILTER (WHERE status = ANY ($2::text[]) OR status = ANY ($3::text[])))[1] AS reason
FROM disputes WHERE order_id = $1::uuid
"""


@dataclass(slots=True)
class Order:
    id: str
    user_id: str | None
    status: str
    status_reason: str | None
    amount_total: int
    amount_refunded: int
    currency: str | None
    stripe_checkout_session_id: str | None
    stripe_payment_intent_id: str | None
    stripe_charge_id: str | None
    stripe_customer_id: str | None
    paid_at: datetime | None
    charge_refunded_amount: int | None
    charge_refunded_at: datetime | None
    amount_subtotal: int | None
    amount_discount: int
    amount_tax: int
    customer_tax_ids: list[dict[str, str]]
    receipt_url: str | None

    def copy(self) -> Order:
        return Order(**asdict(self))  # deep: the tax ids list too

    def known_ids(self) -> tuple[str | None, str | None, str | None]:
        """The Stripe ids by which events may name this order: session, payment intent, charge."""
        return self.stripe_checkout_session_id, self.stripe_payment_intent_id, self.stripe_charge_id


_SAVED = [f.name for f in fields(Order) if f.name not in ("id", "user_id")]  # SAVE_ORDER's $2-$18


@dataclass(slots=True)
class OrderKeys:
    """Every id by which an event may point at an order."""

    order_id: str | None = None
    checkout_session_id: str | None = None
    payment_intent_id: str | None = None
    charge_id: str | None = None


def valid_uuid(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def lookup_params(keys: OrderKeys) -> tuple[str | None, str | None, str | None, str | None] | None:
    """$1-$4 of LOCK_ORDER; None when the event names no order at all."""
    order_id = valid_uuid(keys.order_id)
    if not any((order_id, keys.checkout_session_id, keys.payment_intent_id, keys.charge_id)):
        return None
    return order_id, keys.checkout_session_id, keys.payment_intent_id, keys.charge_id


async def lock_order(con: asyncpg.Connection, keys: OrderKeys) -> Order | None:
    """The order an event is about, its row locked until the transaction ends (None: no such order)."""
    params = lookup_params(keys)
    if params is None:
        return None
    row = await con.fetchrow(LOCK_ORDER, *params)
    return Order(**dict(row)) if row else None


async def save_order(con: asyncpg.Connection, order: Order) -> None:
    await con.execute(SAVE_ORDER, order.id, *(getattr(order, name) for name in _SAVED))


async def order_refunds(con: asyncpg.Connection, order_id: str) -> list[RefundRow]:
    return [RefundRow(**dict(row)) for row in await con.fetch(ORDER_REFUNDS, order_id)]


@dataclass(frozen=True, slots=True)
class Payment:
    """A row of `payments`: one Stripe payment intent of an order, with its outcome at Stripe time `status_at`."""

    order_id: str
    payment_intent_id: str
    charge_id: str | None  # the charge that succeeded; None for a failed or canceled payment
    amount: int
    currency: str
    status: str
    status_at: datetime


@dataclass(frozen=True, slots=True)
class Refund:
    refund_id: str
    order_id: str
    charge_id: str | None
    amount: int
    currency: str
    status: str
    status_at: datetime
    reason: str | None


@dataclass(frozen=True, slots=True)
class Dispute:
    dispute_id: str
    order_id: str
    charge_id: str | None
    amount: int
    currency: str
    reason: str | None
    status: str
    status_at: datetime
    evidence_due_by: datetime | None
    funds_withdrawn_at: datetime | None
    funds_reinstated_at: datetime | None
