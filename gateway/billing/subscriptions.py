"""A user's subscriptions: read them (with the latest invoice's links, from webhooks), change plan, cancel (at
period end, or now where SUBSCRIPTION_CANCEL_NOW_ALLOWED), resume a cancellation at period end.

Ownership comes from the subscriptions table (another user's subscription is 404, as a missing one). What Stripe
holds decides the change: the subscription is read from Stripe first, and a request that asks for the state it
already has answers that state without a second call (so a retry after a lost answer is harmless). The answer is
the subscription as Stripe returned it; the subscriptions row moves when its `customer.subscription.updated` /
`.deleted` webhook arrives, through the state machine.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import stripe

from gateway import stripe_payload as sp
from gateway.billing import stripe_calls
from gateway.billing.audit import audit
from gateway.errors import Conflict, Forbidden, NotFound
from gateway.settings import Settings
from gateway.subscriptions import plans

# Statuses after which a subscription can no longer change (Stripe refuses updates but metadata).
ENDED_STATUSES = ("canceled", "incomplete_expired")

SUBSCRIPTION_COLUMNS = """
SELECT stripe_subscription_id, plan_id, price_id, status, current_period_end, cancel_at_period_end, canceled_at,
       currency, amount, latest_invoice_id, latest_invoice_hosted_url, latest_invoice_pdf, created_at, updated_at
FROM subscriptions
"""
SELECT_OWN = SUBSCRIPTION_COLUMNS + "WHERE stripe_subscription_id = $1 AND user_id = $2\n"
LIST_OWN = SUBSCRIPTION_COLUMNS + "WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT 100\n"
# The subscription of a user and plan that still counts (anything not ended), newest first.
LIVE_FOR_PLAN = (
    SUBSCRIPTION_COLUMNS
    + """WHERE user_id = $1 AND plan_id = $2 AND status <> ALL($3::text[])
ORDER BY updated_at DESC LIMIT 1
"""
)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value is not None else None


def _iso_unix(value: int | None) -> str | None:
    return _iso(datetime.fromtimestamp(value, UTC)) if value is not None else None


def subscription_json(row: asyncpg.Record) -> dict[str, Any]:
    """A subscriptions row as the API shows it (the converged state the webhooks wrote)."""
    invoice = None
    if row["latest_invoice_id"] is not None:
        invoice = {
            "id": row["latest_invoice_id"],
            "hosted_invoice_url": row["latest_invoice_hosted_url"],
            "invoice_pdf": row["latest_invoice_pdf"],
        }
    return {
        "id": row["stripe_subscription_id"],
        "plan_id": row["plan_id"],
        "price_id": row["price_id"],
        "status": row["status"],
        "current_period_end": _iso(row["current_period_end"]),
        "cancel_at_period_end": row["cancel_at_period_end"],
        "canceled_at": _iso(row["canceled_at"]),
        "currency": row["currency"],
        "amount": row["amount"],
        "latest_invoice": invoice,
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
    }


def stripe_state_json(sub: stripe.Subscription) -> dict[str, Any]:
    """What Stripe answered, read through the payload adapter (the row follows when the webhook arrives)."""
    obj = sub.to_dict()
    price_id = sp.subscription_price_id(obj)
    return {
        "id": sp.object_id(obj),
        "plan_id": plans.current().plan_for(price_id) if price_id else None,
        "price_id": price_id,
        "status": sp.subscription_status(obj),
        "current_period_end": _iso_unix(sp.subscription_period_end(obj)),
        "cancel_at_period_end": sp.subscription_cancel_at_period_end(obj),
        "trial_end": _iso_unix(obj.get("trial_end") if isinstance(obj.get("trial_end"), int) else None),
        "confirmed": False,  # the subscriptions row changes when Stripe's webhook for this change arrives
    }


async def own_subscription(con: asyncpg.Connection, subscription_id: str, user_id: str) -> asyncpg.Record:
    row = await con.fetchrow(SELECT_OWN, subscription_id, user_id)
    if row is None:
        raise NotFound("Subscription not found", code="subscription_not_found")
    return row


async def live_subscription(con: asyncpg.Connection, user_id: str, plan_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await con.fetchrow(LIVE_FOR_PLAN, user_id, plan_id, list(ENDED_STATUSES))
    return row


def _ended(status: str | None) -> Conflict:
    return Conflict(
        "The subscription has ended; start a new checkout", code="subscription_ended", details={"status": status}
    )


def _first_item(sub: stripe.Subscription) -> tuple[str, str | None]:
    first = sp.subscription_first_item(sub.to_dict())
    if first is None:
        raise Conflict("The subscription has no item to change", code="subscription_without_items")
    return first


class SubscriptionChanges:
    """The three changes a user may ask for; each reads Stripe's state, then changes it when needed."""

    def __init__(self, client: stripe.StripeClient, settings: Settings, pool: asyncpg.Pool) -> None:
        self.client = client
        self.settings = settings
        self.pool = pool

    async def _stripe_state(self, subscription_id: str) -> stripe.Subscription:
        sub = await stripe_calls.call(
            self.settings, "subscription read", self.client.v1.subscriptions.retrieve_async(subscription_id)
        )
        if sub.status in ENDED_STATUSES:
            raise _ended(sub.status)
        return sub

    async def _audit(
        self, user_id: str, action: str, subscription_id: str, request_id: str | None, **details: Any
    ) -> None:
        async with self.pool.acquire() as con:
            await audit(
                con, f"user:{user_id}", action, "subscription", subscription_id, request_id=request_id, **details
            )

    async def change_plan(
        self,
        row: asyncpg.Record,
        user_id: str,
        plan_id: str,
        price_id: str,
        client_key: str | None,
        request_id: str | None,
    ) -> dict[str, Any]:
        subscription_id = row["stripe_subscription_id"]
        if row["status"] in ENDED_STATUSES:
            raise _ended(row["status"])
        sub = await self._stripe_state(subscription_id)
        item_id, current_price = _first_item(sub)
        if current_price == price_id:
            return stripe_state_json(sub)
        behavior = self.settings.subscription_proration_behavior
        updated = await stripe_calls.call(
            self.settings,
            "plan change",
            self.client.v1.subscriptions.update_async(
                subscription_id,
                params={
                    "items": [{"id": item_id, "price": price_id}],
                    "proration_behavior": behavior,
                    "metadata": {"plan_id": plan_id, "user_id": user_id},
                },
                options={
                    "idempotency_key": stripe_calls.idempotency_key("subscription-plan", subscription_id, client_key)
                },
            ),
        )
        await self._audit(
            user_id,
            "subscription.plan_change_requested",
            subscription_id,
            request_id,
            plan_id=plan_id,
            price_id=price_id,
            previous_price_id=current_price,
            proration_behavior=behavior,
        )
        return stripe_state_json(updated)

    async def cancel(
        self, row: asyncpg.Record, user_id: str, at_period_end: bool, client_key: str | None, request_id: str | None
    ) -> dict[str, Any]:
        subscription_id = row["stripe_subscription_id"]
        if not at_period_end and not self.settings.subscription_cancel_now_allowed:
            raise Forbidden(
                "Subscriptions end at the end of their period here; cancel with at_period_end true",
                code="cancel_now_not_allowed",
            )
        if row["status"] in ENDED_STATUSES:
            raise _ended(row["status"])
        sub = await self._stripe_state(subscription_id)
        if at_period_end and sub.cancel_at_period_end:
            return stripe_state_json(sub)
        key = stripe_calls.idempotency_key(
            "subscription-cancel" if at_period_end else "subscription-cancel-now", subscription_id, client_key
        )
        if at_period_end:
            changed = await stripe_calls.call(
                self.settings,
                "cancellation",
                self.client.v1.subscriptions.update_async(
                    subscription_id, params={"cancel_at_period_end": True}, options={"idempotency_key": key}
                ),
            )
        else:
            # DELETE is idempotent at Stripe by itself; the key is sent anyway, as on every mutating call.
            changed = await stripe_calls.call(
                self.settings,
                "cancellation",
                self.client.v1.subscriptions.cancel_async(subscription_id, options={"idempotency_key": key}),
            )
        await self._audit(
            user_id, "subscription.cancel_requested", subscription_id, request_id, at_period_end=at_period_end
        )
        return stripe_state_json(changed)

    async def resume(
        self, row: asyncpg.Record, user_id: str, client_key: str | None, request_id: str | None
    ) -> dict[str, Any]:
        subscription_id = row["stripe_subscription_id"]
        if row["status"] in ENDED_STATUSES:
            raise _ended(row["status"])
        sub = await self._stripe_state(subscription_id)
        key = stripe_calls.idempotency_key("subscription-resume", subscription_id, client_key)
        if sub.status == "paused":
            resumed = await stripe_calls.call(
                self.settings,
                "resume",
                self.client.v1.subscriptions.resume_async(
                    subscription_id,
                    params={"billing_cycle_anchor": "unchanged"},  # type: ignore[arg-type]
                    options={"idempotency_key": key},
                ),
            )
        elif sub.cancel_at_period_end:
            resumed = await stripe_calls.call(
                self.settings,
                "resume",
                self.client.v1.subscriptions.update_async(
                    subscription_id, params={"cancel_at_period_end": False}, options={"idempotency_key": key}
                ),
            )
        else:
            return stripe_state_json(sub)  # nothing to resume: already running
        await self._audit(user_id, "subscription.resume_requested", subscription_id, request_id, previous=sub.status)
        return stripe_state_json(resumed)
