"""Subscriptions: customer.subscription.*, invoice.* and subscription-mode checkouts move the subscriptions
table and publish SUBSCRIPTION_* bridge events in the webhook's transaction.

Each event becomes an Observation (gateway.subscriptions.ordering: what it says and how recent it is); the
subscription row is locked, each claim of the observation is applied only when it is newer than what the row
holds, and the change, if any, is published:

- SUBSCRIPTION_CANCELLED when the status becomes canceled / incomplete_expired;
- SUBSCRIPTION_ACTIVATED the first time the status is active or trialing;
- SUBSCRIPTION_UPDATED for any other change of what apps see (the user or a payload field: status, plan,
  period end, cancel at period end, session, amount), including `pending` when a checkout completes before
  Stripe's subscription events are applied.

Who is the user: the object's `client_reference_id` / `metadata.user_id`, else the customers table (Stripe
customer -> user, learned from checkouts and subscription metadata), else the user already on the row. When
none is known the event is still applied and published with user_id null, counted and logged.

"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway import metrics
from gateway import stripe_payload as sp
from gateway.subscriptions import ordering as o
from gateway.subscriptions import plans
from gateway.unit_of_work import UnitOfWork
from gateway.webhooks.envelope import StripeEvent
from gateway.webhooks.handlers.base import Handler, Outcome

log = logging.getLogger("gateway.webhooks.subscriptions")

SUBSCRIPTION_ACTIVATED = "SUBSCRIPTION_ACTIVATED"
SUBSCRIPTION_UPDATED = "SUBSCRIPTION_UPDATED"
SUBSCRIPTION_CANCELLED = "SUBSCRIPTION_CANCELLED"
BRIDGE_TYPES = (SUBSCRIPTION_ACTIVATED, SUBSCRIPTION_UPDATED, SUBSCRIPTION_CANCELLED)

INSERT_SKELETON = """
INSERT INTO subscriptions (stripe_subscription_id, status) VALUES ($1, 'pending')
ON CONFLICT (stripe_subscription_id) DO NOTHING
RETURNING *
"""
LOCK_SUBSCRIPTION = "SELECT * FROM subscriptions WHERE stripe_subscription_id = $1 FOR UPDATE"
UPDATE_SUBSCRIPTION = """
UPDATE subscriptions SET
    user_id = $2, stripe_customer_id = $3, checkout_session_id = $4, price_id = $5, plan_id = $6, status = $7,
    current_period_end = $8, cancel_at_period_end = $9, canceled_at = $10, currency = $11, amount = $12,
    state_version = $13, object_version = $14, last_event_created = $15, last_event_id = $16,
    activated_at = $17,
    updated_at = now()
WHERE id = $1
"""
LATEST_INVOICE = """
SELECT latest_invoice_id, latest_invoice_created, latest_invoice_hosted_url, latest_invoice_pdf
FROM subscriptions WHERE stripe_subscription_id = $1
"""
SET_LATEST_INVOICE = """
UPDATE subscriptions SET latest_invoice_id = $2, latest_invoice_created = $3, latest_invoice_hosted_url = $4,
    latest_invoice_pdf = $5, updated_at = now()
WHERE stripe_subscription_id = $1
"""
LEARN_CUSTOMER = """
INSERT INTO customers (stripe_customer_id, user_id, source_event_id) VALUES ($1, $2, $3)
ON CONFLICT (stripe_customer_id) DO NOTHING
"""
CUSTOMER_USER = "SELECT user_id FROM customers WHERE stripe_customer_id = $1"
# Subscriptions of a customer seen before its user was known (rows locked in id order: no deadlock).
BACKFILL_USER = """
UPDATE subscriptions s SET user_id = $2, updated_at = now()
FROM (SELECT id FROM subscriptions
      WHERE stripe_customer_id = $1 AND user_id IS NULL AND stripe_subscription_id <> $3
      ORDER BY id FOR UPDATE) x
WHERE s.id = x.id
"""

_SUB_FIELDS = (
    "user_id",
    "stripe_customer_id",
    "checkout_session_id",
    "price_id",
    "plan_id",
    "status",
    "current_period_end",
    "cancel_at_period_end",
    "canceled_at",
    "currency",
    "amount",
    "state_version",
    "object_version",
    "last_event_created",
    "last_event_id",
    "activated_at",
)


def _ts(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _unix(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


# ------------------------------------------------------------------ observations


def _canceled_at(sub: sp.JsonObject) -> int | None:
    """`subscription.canceled_at` (Unix seconds or null; the same in every API version)."""
    value = sub.get("canceled_at")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _subscription_fields(sub: sp.JsonObject) -> o.ObjectFields:
    return o.ObjectFields(
        customer_id=sp.customer_id(sub),
        price_id=sp.subscription_price_id(sub),
        current_period_end=sp.subscription_period_end(sub),
        cancel_at_period_end=sp.subscription_cancel_at_period_end(sub),
        canceled_at=_canceled_at(sub),
        currency=sp.currency_of(sub),
        amount=sp.subscription_amount(sub),
    )


def observe_subscription(event: StripeEvent) -> o.Observation | None:
    sub = event.object
    sub_id = sp.object_id(sub)
    status = sp.subscription_status(sub)
    if sub_id is None or status not in o.STATUS_RANK or status == o.PENDING:
        return None
    if event.type == "customer.subscription.deleted" and status not in o.ENDED:
        status = "canceled"  # the deleted event is the end, whatever a hand-made payload says
    return o.observe(
        source=o.SOURCE_SUBSCRIPTION,
        subscription_id=sub_id,
        event_id=event.id,
        created=event.created,
        user_id=sp.user_id_of(sub),
        status=status,
        fields=_subscription_fields(sub),
    )


def observe_invoice(event: StripeEvent) -> o.Observation | None:
    invoice = event.object
    sub_id = sp.invoice_subscription(invoice)
    if sub_id is None:
        return None
    status: str | None = None
    if event.type == "invoice.payment_failed":
        status = "incomplete" if sp.invoice_billing_reason(invoice) == "subscription_create" else "past_due"
    elif (sp.invoice_amount_paid(invoice) or 0) > 0:
        status = "active"  # money collected; a $0 invoice (trial start) says nothing about the status
    prices = sp.invoice_price_ids(invoice)
    fields = o.ObjectFields(
        customer_id=sp.customer_id(invoice),
        price_id=prices[0] if prices else None,
        current_period_end=None,
        cancel_at_period_end=False,
        canceled_at=None,
        currency=sp.currency_of(invoice),
        amount=sp.amount_of(event.type, invoice),
    )
    return o.observe(
        source=o.SOURCE_INVOICE,
        subscription_id=sub_id,
        event_id=event.id,
        created=event.created,
        user_id=sp.user_id_of(invoice),
        status=status,
        fields=fields,
    )


def observe_checkout(event: StripeEvent) -> o.Observation | None:
    session = event.object
    ids = sp.checkout_session_ids(session)
    if ids.subscription_id is None:
        return None
    fields = o.ObjectFields(
        customer_id=ids.customer_id,
        price_id=sp.metadata_value(session, "price_id"),
        current_period_end=None,
        cancel_at_period_end=False,
        canceled_at=None,
        currency=sp.currency_of(session),
        amount=sp.session_amount_total(session),
    )
    return o.observe(
        source=o.SOURCE_CHECKOUT,
        subscription_id=ids.subscription_id,
        event_id=event.id,
        created=event.created,
        user_id=sp.user_id_of(session),
        status=o.PENDING,
        fields=fields,
        session_id=ids.session_id,
    )


# ------------------------------------------------------------------ applying


@dataclass(frozen=True, slots=True)
class View:
    """What apps see of a subscription: its user and bridge payload. Any change of it is published, so
    the last bridge event of a subscription always describes its current row, whatever the arrival order."""

    user_id: str | None
    payload: tuple[tuple[str, Any], ...]

    @property
    def status(self) -> str:
        return str(dict(self.payload)["status"])


def _view(row: dict[str, Any]) -> View:
    return View(row["user_id"], tuple(sorted(_payload(row).items())))


async def _lock(con: asyncpg.Connection, sub_id: str) -> tuple[dict[str, Any], bool]:
    created = await con.fetchrow(INSERT_SKELETON, sub_id)
    if created is not None:
        return dict(created), True
    row = await con.fetchrow(LOCK_SUBSCRIPTION, sub_id)
    assert row is not None
    return dict(row), False


async def _learn_customer(unit: UnitOfWork, obs: o.Observation) -> None:
    """Customer -> user, learned before the subscription row is locked (fixed lock order: customers, then
    subscriptions by id)."""
    if obs.customer_id is None or obs.user_id is None:
        return
    await unit.con.execute(LEARN_CUSTOMER, obs.customer_id, obs.user_id, obs.event_id)
    known = await unit.con.fetchval(CUSTOMER_USER, obs.customer_id)
    if known != obs.user_id:
        log.warning(
            "customer already mapped to another user; the event's own user is used",
            extra={"stripeEventId": obs.event_id, "reason": f"customer {obs.customer_id}"},
        )
        return
    await unit.con.execute(BACKFILL_USER, obs.customer_id, obs.user_id, obs.subscription_id)


async def apply_observation(unit: UnitOfWork, event: StripeEvent, obs: o.Observation) -> Outcome:
    await _learn_customer(unit, obs)
    row, is_new = await _lock(unit.con, obs.subscription_id)
    before = None if is_new else _view(row)
    new = dict(row)
    changed: list[str] = []

    if obs.status is not None and obs.state_version is not None and obs.state_version > row["state_version"]:
        new.update(
            status=obs.status,
            state_version=obs.state_version,
            last_event_id=obs.event_id,
            last_event_created=_ts(obs.created),
        )
        changed.append("state")
    fields = obs.fields
    if fields is not None and obs.object_version is not None and obs.object_version > row["object_version"]:
        plan_id = plans.current().plan_for(fields.price_id) if fields.price_id else None
        new.update(
            stripe_customer_id=fields.customer_id,
            price_id=fields.price_id,
            plan_id=plan_id,
            current_period_end=_ts(fields.current_period_end),
            cancel_at_period_end=fields.cancel_at_period_end,
            canceled_at=_ts(fields.canceled_at),
            currency=fields.currency,
            amount=fields.amount,
            object_version=obs.object_version,
        )
        changed.append("object")
    if new["checkout_session_id"] is None and obs.session_id is not None:
        new["checkout_session_id"] = obs.session_id
        changed.append("session")
    if new["user_id"] is None:
        user = obs.user_id
        customer = new["stripe_customer_id"] or obs.customer_id
        if user is None and customer is not None:
            user = await unit.con.fetchval(CUSTOMER_USER, customer)
        if user is not None:
            new["user_id"] = user
            changed.append("user")

    activated = row["activated_at"]
    if obs.status in o.ACTIVE and (activated is None or _ts(obs.created) < activated):
        # The first time Stripe says active or trialing, whatever order its events arrive in.
        new["activated_at"] = _ts(obs.created)
        changed.append("activation")

    if not changed:
        return Outcome("stale", f"subscription already holds newer state ({row['status']})")

    after = _view(new)
    event_type: str | None = None
    if after.status in o.ENDED and (before is None or before.status not in o.ENDED):
        event_type = SUBSCRIPTION_CANCELLED
    elif after.status in o.ACTIVE and activated is None:
        event_type = SUBSCRIPTION_ACTIVATED
        new["activated_at"] = new["activated_at"] or _ts(obs.created)
    elif after != before:
        event_type = SUBSCRIPTION_UPDATED

    await unit.con.execute(UPDATE_SUBSCRIPTION, new["id"], *(new[name] for name in _SUB_FIELDS))
    if event_type is not None:
        if new["user_id"] is None:
            metrics.SUBSCRIPTION_UNRESOLVED_USERS.labels(event.type).inc()
            log.warning(
                "subscription event without a known user; published with user_id null",
                extra={
                    "stripeEventId": event.id,
                    "status": new["status"],
                    "reason": f"subscription {obs.subscription_id} customer {new['stripe_customer_id']}",
                },
            )
        await unit.publish(event_type, new["user_id"], _payload(new))
        await unit.audit(
            f"subscription.{event_type.removeprefix('SUBSCRIPTION_').lower()}",
            "subscription",
            obs.subscription_id,
            previous=before.status if before else None,
            status=new["status"],
            plan_id=new["plan_id"],
        )
    return Outcome("processed", None if event_type else f"recorded ({', '.join(changed)}); nothing to publish")


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "session_id": row["checkout_session_id"],
        "subscription_id": row["stripe_subscription_id"],
        "plan_id": row["plan_id"] or plans.UNKNOWN_PLAN,
        "status": row["status"],
        "customer_id": row["stripe_customer_id"],
        "currency": row["currency"],
        "amount": row["amount"],
        "current_period_end": _unix(row["current_period_end"]),
        "cancel_at_period_end": row["cancel_at_period_end"],
    }


# ------------------------------------------------------------------ handlers


async def subscription_changed(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    obs = observe_subscription(event)
    if obs is None:
        return Outcome("ignored", "subscription without id or with an unknown status")
    return await apply_observation(unit, event, obs)


async def _record_latest_invoice(unit: UnitOfWork, subscription_id: str, links: sp.InvoiceLinks) -> bool:
    """The subscription's latest invoice and its links: the invoice created last wins (same second: the greater
    id); an event of the same invoice fills links it lacked (a finalized invoice gets them). True when changed."""
    if links.invoice_id is None or links.created is None:
        return False
    row = await unit.con.fetchrow(LATEST_INVOICE, subscription_id)  # locked by apply_observation already
    created = _ts(links.created)
    if row["latest_invoice_id"] == links.invoice_id:
        hosted = links.hosted_url or row["latest_invoice_hosted_url"]
        pdf = links.pdf or row["latest_invoice_pdf"]
    elif row["latest_invoice_created"] is None or (created, links.invoice_id) > (
        row["latest_invoice_created"],
        row["latest_invoice_id"],
    ):
        hosted, pdf = links.hosted_url, links.pdf
    else:
        return False
    if (row["latest_invoice_id"], row["latest_invoice_hosted_url"], row["latest_invoice_pdf"]) == (
        links.invoice_id,
        hosted,
        pdf,
    ):
        return False
    await unit.con.execute(SET_LATEST_INVOICE, subscription_id, links.invoice_id, created, hosted, pdf)
    return True


async def invoice_changed(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    obs = observe_invoice(event)
    if obs is None:
        return Outcome("ignored", "invoice not linked to a subscription")
    outcome = await apply_observation(unit, event, obs)
    if await _record_latest_invoice(unit, obs.subscription_id, sp.invoice_links(event.object)):
        if outcome.status == "stale":
            return Outcome("processed", "latest invoice links recorded")
    return outcome


async def checkout_session_completed(unit: UnitOfWork, event: StripeEvent) -> Outcome:
    """`checkout.session.completed` with mode=subscription (called by handlers/orders.py)."""
    obs = observe_checkout(event)
    if obs is None:
        return Outcome("ignored", "subscription checkout without a subscription id")
    return await apply_observation(unit, event, obs)


HANDLERS: dict[str, Handler] = {
    "customer.subscription.created": subscription_changed,
    "customer.subscription.updated": subscription_changed,
    "customer.subscription.deleted": subscription_changed,
    "invoice.paid": invoice_changed,
    "invoice.payment_succeeded": invoice_changed,
    "invoice.payment_failed": invoice_changed,
}
