"""Order rows: find and lock, create from a Stripe Checkout Session, move status, record payments and
refunds."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

# One indexed look-up per key, in order of preference (the order id first), each one run only if the ones before
# it found nothing (coalesce stops at its first non-NULL argument; every key is unique, so each look-up finds at
# most one row). The same (generic) plan serves every call. $1-$4: the keys (lookup_params).
FIND_ORDER = """
SELECT id::text, user_id, status, amount_total, amount_refunded, currency, stripe_checkout_session_id,
       stripe_payment_intent_id, stripe_charge_id, stripe_customer_id, paid_at, xmin AS version
FROM orders
WHERE id = coalesce(
    (SELECT id FROM orders WHERE id = $1::uuid),
    (SELECT id FROM orders WHERE stripe_checkout_session_id = $2),
    (SELECT id FROM orders WHERE stripe_payment_intent_id = $3),
    (SELECT id FROM orders WHERE stripe_charge_id = $4)
)
"""
LOCK_ORDER = FIND_ORDER + "FOR UPDATE\n"

# A Checkout Session we did not create (Payment Link, dashboard): the order is made from the session itself.
CREATE_ORDER_FROM_SESSION = """
INSERT INTO orders (user_id, amount_total, currency, stripe_checkout_session_id, stripe_customer_id)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (stripe_checkout_session_id) DO NOTHING
"""

# Refund statuses only move forward: pending/requires_action -> succeeded | failed | canceled.
UPSERT_REFUND = """
INSERT INTO refunds (stripe_refund_id, order_id, stripe_charge_id, amount, currency, status)
VALUES ($1, $2::uuid, $3, $4, $5, $6)
ON CONFLICT (stripe_refund_id) DO UPDATE SET
    status = EXCLUDED.status,
    amount = EXCLUDED.amount,
    updated_at = now()
WHERE refunds.status IN ('pending', 'requires_action')
"""

SUM_SUCCEEDED_REFUNDS = """
SELECT coalesce(sum(amount), 0)::bigint FROM refunds WHERE order_id = $1::uuid AND status = 'succeeded'
"""

INSERT_DISPUTE = """
INSERT INTO disputes (stripe_dispute_id, order_id, stripe_charge_id, amount, currency, reason, status)
VALUES ($1, $2::uuid, $3, $4, $5, $6, $7)
ON CONFLICT (stripe_dispute_id) DO NOTHING
RETURNING true
"""


@dataclass(slots=True)
class Order:
    id: str
    user_id: str | None
    status: str
    amount_total: int
    amount_refunded: int
    currency: str | None
    stripe_checkout_session_id: str | None
    stripe_payment_intent_id: str | None
    stripe_charge_id: str | None
    stripe_customer_id: str | None
    paid_at: datetime | None
    # The row version read (PostgreSQL's xmin): an optimistic write applies only while the row still has it.
    version: int


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
    """$1-$4 of FIND_ORDER and LOCK_ORDER; None when the event names no order at all."""
    order_id = valid_uuid(keys.order_id)
    if not any((order_id, keys.checkout_session_id, keys.payment_intent_id, keys.charge_id)):
        return None
    return order_id, keys.checkout_session_id, keys.payment_intent_id, keys.charge_id


async def lock_order(con: asyncpg.Connection, keys: OrderKeys) -> Order | None:
    """Find the order an event is about and lock its row for the rest of the transaction.

    Every handler locks the order row first (and products only after it, in id order), so two events about
    one order are serialised and cannot deadlock.
    """
    params = lookup_params(keys)
    if params is None:
        return None
    row = await con.fetchrow(LOCK_ORDER, *params)
    return Order(**dict(row)) if row else None


@dataclass(frozen=True, slots=True)
class Payment:
    """A row of `payments`: one Stripe payment intent of an order."""

    order_id: str
    payment_intent_id: str | None
    charge_id: str | None
    amount: int
    currency: str
    status: str

    def params(self) -> tuple[object, ...]:
        return (self.order_id, self.payment_intent_id, self.charge_id, self.amount, self.currency, self.status)


@dataclass(slots=True)
class OrderChange:
    status: str
    reason: str | None = None
    amount_total: int | None = None
    currency: str | None = None
    checkout_session_id: str | None = None
    payment_intent_id: str | None = None
    charge_id: str | None = None
    customer_id: str | None = None
    paid_at: datetime | None = None
    amount_refunded: int = 0

    def fields(self, order_id: str) -> dict[str, object]:
        """The change of `order_id`, in the order of the unit of work's parameters (gateway/unit_of_work.py)."""
        return {
            "order_id": order_id,
            "status": self.status,
            "reason": self.reason,
            "amount_total": self.amount_total,
            "currency": self.currency,
            "checkout_session_id": self.checkout_session_id,
            "payment_intent_id": self.payment_intent_id,
            "charge_id": self.charge_id,
            "customer_id": self.customer_id,
            "paid_at": self.paid_at,
            "amount_refunded": self.amount_refunded,
        }
