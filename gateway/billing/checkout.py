"""Subscription checkout: `POST /v1/checkout/sessions` with `mode: subscription`.

1. One transaction, serialised per user and plan: (Idempotency-Key: replay or refuse) a live subscription of
   that plan answers 409 `subscription_exists` with it; an open checkout of that plan answers 409
   `subscription_checkout_open` with its link; else the checkout row is written.
2. Stripe, outside any transaction: a Checkout Session in subscription mode for the plan's price from the plans
   file (never a client's amount), with the trial, `client_reference_id` and metadata naming the user and plan
   (on the session and, through `subscription_data.metadata`, on the subscription), idempotency key
   `checkout-subscription:<checkout id>`.
3. One transaction: the session on the checkout row and the `pending` status published on the bridge
   (SUBSCRIPTION_UPDATED, origin api). On a Stripe error the checkout row is deleted instead (the key may be
   retried), then 502 / 409.

The subscription row itself is written by the webhooks (checkout.session.completed, customer.subscription.*).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import stripe

from gateway import metrics
from gateway.billing import stripe_calls
from gateway.billing.audit import audit
from gateway.billing.checkout_options import session_options
from gateway.billing.subscriptions import live_subscription, subscription_json
from gateway.billing.validation import SubscriptionCheckoutRequest
from gateway.bridge import outbox
from gateway.checkout.service import expiry_seconds
from gateway.errors import ApiError, Conflict
from gateway.settings import Settings

SUBSCRIPTION_UPDATED = "SUBSCRIPTION_UPDATED"

PLAN_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('subscription-checkout:' || $1 || ':' || $2, 0))"
SELECT_BY_KEY = """
SELECT id::text, plan_id, request_hash, response FROM subscription_checkouts
WHERE user_id = $1 AND idempotency_key = $2
"""
# An unexpired checkout of this user and plan whose session has not become a subscription yet.
OPEN_CHECKOUT = """
SELECT c.id::text, c.checkout_url, c.expires_at FROM subscription_checkouts c
WHERE c.user_id = $1 AND c.plan_id = $2 AND c.expires_at > now()
  AND NOT EXISTS (SELECT 1 FROM subscriptions s
                  WHERE s.checkout_session_id = c.stripe_checkout_session_id)
ORDER BY c.created_at DESC
LIMIT 1
"""
KNOWN_CUSTOMER = "SELECT stripe_customer_id FROM customers WHERE user_id = $1 ORDER BY created_at DESC LIMIT 1"
INSERT_CHECKOUT = """
INSERT INTO subscription_checkouts (user_id, plan_id, price_id, trial_days, idempotency_key, request_hash, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id::text
"""
STORE_SESSION = """
UPDATE subscription_checkouts SET stripe_checkout_session_id = $2, checkout_url = $3, response = $4
WHERE id = $1::uuid
"""
DELETE_CHECKOUT = "DELETE FROM subscription_checkouts WHERE id = $1::uuid"


@dataclass(frozen=True, slots=True)
class PendingCheckout:
    checkout_id: str
    customer_id: str | None
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Replay:
    body: dict[str, Any]


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def start(
    con: asyncpg.Connection,
    settings: Settings,
    user_id: str,
    req: SubscriptionCheckoutRequest,
    *,
    idempotency_key: str | None,
    request_id: str | None,
) -> PendingCheckout | Replay:
    """Step 1, one transaction."""
    plan_id = req.plan.plan_id
    async with con.transaction():
        await con.execute(PLAN_LOCK, user_id, plan_id)
        if idempotency_key is not None:
            previous = await con.fetchrow(SELECT_BY_KEY, user_id, idempotency_key)
            if previous is not None:
                return _replay(previous, req)
        existing = await live_subscription(con, user_id, plan_id)
        if existing is not None:
            raise Conflict(
                f"You already have a {plan_id} subscription",
                code="subscription_exists",
                details={"subscription": subscription_json(existing)},
            )
        open_checkout = await con.fetchrow(OPEN_CHECKOUT, user_id, plan_id)
        if open_checkout is not None:
            raise Conflict(
                f"A checkout for {plan_id} is already open; finish it or wait until it expires",
                code="subscription_checkout_open",
                details={
                    "checkout_id": open_checkout["id"],
                    "checkout_url": open_checkout["checkout_url"],
                    "expires_at": _iso(open_checkout["expires_at"]),
                },
            )
        customer_id: str | None = await con.fetchval(KNOWN_CUSTOMER, user_id)
        expires_at = datetime.fromtimestamp(int(time.time()) + expiry_seconds(settings), UTC)
        checkout_id: str = await con.fetchval(
            INSERT_CHECKOUT,
            user_id,
            plan_id,
            req.price_id,
            req.trial_days,
            idempotency_key,
            req.fingerprint(),
            expires_at,
        )
        await audit(
            con,
            f"user:{user_id}",
            "subscription_checkout.created",
            "subscription_checkout",
            checkout_id,
            request_id=request_id,
            plan_id=plan_id,
            price_id=req.price_id,
            trial_days=req.trial_days,
        )
    return PendingCheckout(checkout_id, customer_id, expires_at)


def _replay(previous: asyncpg.Record, req: SubscriptionCheckoutRequest) -> Replay:
    if previous["request_hash"] != req.fingerprint():
        raise Conflict("This Idempotency-Key was used with another request body", code="idempotency_key_reused")
    if previous["response"] is None:
        raise Conflict(
            "A request with this Idempotency-Key is still being processed; retry shortly",
            code="idempotency_request_in_progress",
            headers={"Retry-After": "1"},
        )
    return Replay(dict(previous["response"]))


def session_params(
    settings: Settings, user_id: str, req: SubscriptionCheckoutRequest, pending: PendingCheckout
) -> dict[str, Any]:
    metadata = {"user_id": user_id, "plan_id": req.plan.plan_id}
    subscription_data: dict[str, Any] = {"metadata": metadata}
    if req.trial_days > 0:
        subscription_data["trial_period_days"] = req.trial_days
    params: dict[str, Any] = {
        "mode": "subscription",
        "line_items": [{"price": req.price_id, "quantity": 1}],
        "client_reference_id": user_id,
        "metadata": {**metadata, "subscription_checkout_id": pending.checkout_id},
        "subscription_data": subscription_data,
        "expires_at": int(pending.expires_at.timestamp()),
        "success_url": req.success_url,
        "cancel_url": req.cancel_url,
        **session_options(settings, existing_customer=pending.customer_id is not None),
    }
    if pending.customer_id is not None:
        params["customer"] = pending.customer_id
    return params


async def create_session(
    client: stripe.StripeClient,
    settings: Settings,
    user_id: str,
    req: SubscriptionCheckoutRequest,
    pending: PendingCheckout,
) -> stripe.checkout.Session:
    """Step 2 (ApiError on any Stripe error or timeout)."""
    return await stripe_calls.call(
        settings,
        "subscription checkout",
        client.v1.checkout.sessions.create_async(
            params=session_params(settings, user_id, req, pending),  # type: ignore[arg-type]
            options={"idempotency_key": f"checkout-subscription:{pending.checkout_id}"},
        ),
    )


def answer_body(
    req: SubscriptionCheckoutRequest, pending: PendingCheckout, session: stripe.checkout.Session
) -> dict[str, Any]:
    return {
        "checkout_id": pending.checkout_id,
        "mode": "subscription",
        "plan_id": req.plan.plan_id,
        "price_id": req.price_id,
        "trial_days": req.trial_days,
        "session_id": session.id,
        "checkout_url": session.url,
        "expires_at": _iso(pending.expires_at),
    }


async def finish(
    con: asyncpg.Connection,
    settings: Settings,
    user_id: str,
    req: SubscriptionCheckoutRequest,
    pending: PendingCheckout,
    session: stripe.checkout.Session,
    body: dict[str, Any],
) -> None:
    """Step 3, one transaction: the session on the checkout row, `pending` on the bridge."""
    async with con.transaction():
        await con.execute(STORE_SESSION, pending.checkout_id, session.id, session.url, body)
        published = await outbox.publish(
            con,
            event_type=SUBSCRIPTION_UPDATED,
            user_id=user_id,
            payload={
                "session_id": session.id,
                "subscription_id": None,
                "plan_id": req.plan.plan_id,
                "status": "pending",
                "customer_id": pending.customer_id,
                "currency": session.currency,
                "amount": None,
                "trial_days": req.trial_days,
            },
            source_event_id=session.id,  # no Stripe event: the session it announces
            app_source=settings.app_source,
            origin="api",
        )
    if published is not None:
        metrics.BRIDGE_EVENTS_PUBLISHED.labels(SUBSCRIPTION_UPDATED).inc()
        await outbox.announce(con, [published])


async def forget(
    con: asyncpg.Connection, user_id: str, checkout_id: str, error: ApiError, request_id: str | None
) -> None:
    """Compensation after a Stripe error: the checkout row goes (the plan may be bought again, the key retried)."""
    async with con.transaction():
        await con.execute(DELETE_CHECKOUT, checkout_id)
        await audit(
            con,
            f"user:{user_id}",
            "subscription_checkout.failed",
            "subscription_checkout",
            checkout_id,
            request_id=request_id,
            reason=error.code,
        )
