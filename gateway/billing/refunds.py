"""Refunds from our side: `POST /v1/admin/orders/{id}/refunds` and `gateway orders refund ID [--amount N]`.

1. One transaction, the order row locked: (the Idempotency-Key, scoped by order: replay a finished request,
   refuse another body, or pick up a request whose Stripe call did not finish) the order must be paid or partly
   refunded, with a payment intent; the amount (default: everything left) must not exceed what is left to
   refund: the order's total, minus what is refunded, minus refunds Stripe still processes, minus refunds asked
   here whose webhook has not arrived. The request row is written (`requested`) and audited.
2. Stripe: `POST /v1/refunds` (payment_intent, amount, reason, metadata order_id / refund_request_id) with the
   idempotency key `refund-request:<request id>`, so a retry of the same request never refunds twice.
3. One transaction: the request `created` with Stripe's refund id (or `failed` when Stripe refused it; the
   amount then no longer counts), audited.

A timeout or Stripe failure leaves the request `requested`: its amount stays reserved, and a retry with the
same Idempotency-Key sends the same Stripe call again. The order's status and refunded amount change only when
the refund's webhook arrives (refund.created, charge.refunded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import stripe

from gateway.billing import stripe_calls
from gateway.billing.audit import audit
from gateway.billing.validation import RefundRequest
from gateway.errors import ApiError, Conflict, NotFound
from gateway.orders import state_machine as t
from gateway.settings import Settings

REFUNDABLE_STATUSES = (t.PAID, t.PARTIALLY_REFUNDED)

LOCK_ORDER = """
SELECT id::text, status, amount_total, amount_refunded, currency, stripe_payment_intent_id
FROM orders WHERE id = $1::uuid
FOR UPDATE
"""
# What is left to refund on a locked order (see the module docstring).
LEFT_TO_REFUND = """
SELECT (o.amount_total - o.amount_refunded
     - coalesce((SELECT sum(r.amount) FROM refunds r
                 WHERE r.order_id = o.id AND r.status IN ('pending', 'requires_action')), 0)
     - coalesce((SELECT sum(q.amount) FROM refund_requests q
                 WHERE q.order_id = o.id AND q.status IN ('requested', 'created')
                   AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.stripe_refund_id = q.stripe_refund_id)), 0))::bigint
FROM orders o WHERE o.id = $1::uuid
"""
SELECT_BY_KEY = """
SELECT id::text, request_hash, status, amount, currency, reason, response
FROM refund_requests WHERE order_id = $1::uuid AND idempotency_key = $2
"""
INSERT_REQUEST = """
INSERT INTO refund_requests (order_id, idempotency_key, request_hash, actor, amount, currency, reason, request_id)
VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8)
RETURNING id::text
"""
MARK_CREATED = """
UPDATE refund_requests SET status = 'created', stripe_refund_id = $2, stripe_status = $3, response = $4,
    updated_at = now()
WHERE id = $1::uuid
"""
MARK_FAILED = """
UPDATE refund_requests SET status = 'failed', failure_code = $2, response = $3, updated_at = now()
WHERE id = $1::uuid
"""


@dataclass(frozen=True, slots=True)
class PendingRefund:
    request_id: str
    order_id: str
    payment_intent_id: str
    amount: int
    currency: str
    reason: str


@dataclass(frozen=True, slots=True)
class RefundAnswer:
    body: dict[str, Any]
    replayed: bool = False


def _stored_error(response: dict[str, Any]) -> Conflict:
    error = response["error"]
    return Conflict(error["message"], code=error["code"], details=error.get("details"))


async def reserve(
    con: asyncpg.Connection,
    order_id: str,
    req: RefundRequest,
    *,
    idempotency_key: str,
    actor: str,
    request_id: str | None,
) -> PendingRefund | RefundAnswer:
    """Step 1, one transaction."""
    async with con.transaction():
        order = await con.fetchrow(LOCK_ORDER, order_id)
        if order is None:
            raise NotFound("Order not found", code="order_not_found")
        previous = await con.fetchrow(SELECT_BY_KEY, order_id, idempotency_key)
        if previous is not None:
            if previous["request_hash"] != req.fingerprint():
                raise Conflict("This Idempotency-Key was used with another request body", code="idempotency_key_reused")
            if previous["status"] == "failed":
                raise _stored_error(dict(previous["response"]))
            if previous["status"] == "created":
                return RefundAnswer(dict(previous["response"]), replayed=True)
            return PendingRefund(
                previous["id"],
                order_id,
                order["stripe_payment_intent_id"],
                previous["amount"],
                previous["currency"],
                previous["reason"],
            )
        if order["status"] not in REFUNDABLE_STATUSES or order["stripe_payment_intent_id"] is None:
            raise Conflict(
                f"An order in status {order['status']} cannot be refunded",
                code="order_not_refundable",
                details={"status": order["status"]},
            )
        left: int = await con.fetchval(LEFT_TO_REFUND, order_id)
        amount = req.amount if req.amount is not None else left
        if left <= 0 or amount > left:
            raise Conflict(
                "The amount exceeds what is left to refund",
                code="refund_exceeds_remaining",
                details={"left_to_refund": max(left, 0), "requested": amount},
            )
        currency = order["currency"] or ""
        refund_request_id: str = await con.fetchval(
            INSERT_REQUEST,
            order_id,
            idempotency_key,
            req.fingerprint(),
            actor,
            amount,
            currency,
            req.reason,
            request_id,
        )
        await audit(
            con,
            actor,
            "order.refund_requested",
            "order",
            order_id,
            order_id=order_id,
            request_id=request_id,
            refund_request_id=refund_request_id,
            amount=amount,
            reason=req.reason,
            left_to_refund=left,
        )
    return PendingRefund(refund_request_id, order_id, order["stripe_payment_intent_id"], amount, currency, req.reason)


async def send(client: stripe.StripeClient, settings: Settings, pending: PendingRefund) -> stripe.Refund:
    """Step 2: the Stripe refund (ApiError on a Stripe error or timeout)."""
    return await stripe_calls.call(
        settings,
        "refund",
        client.v1.refunds.create_async(
            params={
                "payment_intent": pending.payment_intent_id,
                "amount": pending.amount,
                "reason": pending.reason,
                "metadata": {"order_id": pending.order_id, "refund_request_id": pending.request_id},
            },
            options={"idempotency_key": f"refund-request:{pending.request_id}"},
        ),
    )


async def _audit_step(
    con: asyncpg.Connection, actor: str, action: str, pending: PendingRefund, request_id: str | None, **details: Any
) -> None:
    await audit(
        con,
        actor,
        action,
        "order",
        pending.order_id,
        order_id=pending.order_id,
        request_id=request_id,
        refund_request_id=pending.request_id,
        amount=pending.amount,
        **details,
    )


def answer_body(pending: PendingRefund, refund: stripe.Refund) -> dict[str, Any]:
    return {
        "refund_request_id": pending.request_id,
        "order_id": pending.order_id,
        "amount": pending.amount,
        "currency": pending.currency,
        "reason": pending.reason,
        "status": "created",
        "stripe_refund_id": refund.id,
        "stripe_status": refund.status,
        "confirmed": False,  # the order changes when the refund's webhook arrives
    }


async def settle(
    con: asyncpg.Connection, pending: PendingRefund, refund: stripe.Refund, actor: str, request_id: str | None
) -> dict[str, Any]:
    """Step 3 after Stripe's answer: the request is `created`."""
    body = answer_body(pending, refund)
    async with con.transaction():
        await con.execute(MARK_CREATED, pending.request_id, refund.id, refund.status, body)
        await _audit_step(con, actor, "order.refund_created", pending, request_id, stripe_refund_id=refund.id)
    return body


async def refused(
    con: asyncpg.Connection, pending: PendingRefund, error: ApiError, actor: str, request_id: str | None
) -> None:
    """Step 3 when Stripe refused the refund (409 stripe_rejected): the request is `failed`, its amount freed;
    the same Idempotency-Key answers the same error."""
    stored = {"error": {"code": error.code, "message": error.message, "details": error.details}}
    async with con.transaction():
        await con.execute(MARK_FAILED, pending.request_id, error.code, stored)
        await _audit_step(
            con, actor, "order.refund_refused", pending, request_id, code=error.code, details=error.details
        )


async def request_refund(
    pool: asyncpg.Pool,
    client: stripe.StripeClient,
    settings: Settings,
    order_id: str,
    req: RefundRequest,
    *,
    idempotency_key: str,
    actor: str,
    request_id: str | None,
) -> RefundAnswer:
    """The three steps (the HTTP route and the CLI both call this)."""
    async with pool.acquire() as con:
        result = await reserve(con, order_id, req, idempotency_key=idempotency_key, actor=actor, request_id=request_id)
    if isinstance(result, RefundAnswer):
        return result
    try:
        refund = await send(client, settings, result)
    except Conflict as exc:
        if exc.code == "stripe_rejected":
            async with pool.acquire() as con:
                await refused(con, result, exc, actor, request_id)
        raise
    async with pool.acquire() as con:
        body = await settle(con, result, refund, actor, request_id)
    return RefundAnswer(body)
