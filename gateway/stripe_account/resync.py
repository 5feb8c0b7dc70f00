"""`gateway stripe resync order <id> | subscription sub_... | customer cus_...`: bring one object up to date from
Stripe's API, past the Events API's 30 days.

The current objects are fetched and each is wrapped in a synthetic event of the type that announces its state
(`customer.subscription.updated` for a live subscription, `payment_intent.succeeded` for a paid intent, ...), fed
through the same path as a delivery (gateway.support.reconcile.ingest_fetched_event: ledger row, handler, state
machine, audit, bridge events, one transaction). The event's id is derived from its type and the object's state
(`evt_resync_<sha256>`), so running it again is a duplicate, and a later state is a new event. The state machine
decides as for any event: a resync never moves an order or a subscription backwards.

Timestamps: a subscription's synthetic event is dated now (the fetched object is the newest state there is); an
order's payment events are dated when the money moved (the latest charge's `created`), because `paid_at` is taken
from them.
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import stripe

from gateway import stripe_payload as sp
from gateway.errors import ApiError
from gateway.settings import Settings
from gateway.stripe_client import DEFAULT_BACKOFF, Backoff, raw_object
from gateway.support.reconcile import PAGE_SIZE, ingest_fetched_event
from gateway.webhooks.handlers import HANDLERS
from gateway.webhooks.ledger import HandlerFailed

RESYNC_EVENT_PREFIX = "evt_resync_"
ORDER_STRIPE_IDS = """
SELECT id, stripe_checkout_session_id, stripe_payment_intent_id FROM orders WHERE id = $1::uuid
"""
CUSTOMER_ORDERS = "SELECT id FROM orders WHERE stripe_customer_id = $1 ORDER BY created_at, id"

# A payment intent's status -> the event that announces it (other statuses: nothing to apply yet).
_INTENT_EVENTS = {"succeeded": "payment_intent.succeeded", "canceled": "payment_intent.canceled"}
_SESSION_EVENTS = {"complete": "checkout.session.completed", "expired": "checkout.session.expired"}


class NotFound(Exception):
    """The order is not in the database, or Stripe has no such object."""


def synthetic_event(event_type: str, obj: dict[str, Any], *, created: int, api_version: str) -> dict[str, Any]:
    """An event envelope around `obj`, with an id that only its type and the object's content decide."""
    digest = hashlib.sha256(orjson.dumps([event_type, obj], option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    return {
        "id": RESYNC_EVENT_PREFIX + digest,
        "object": "event",
        "api_version": api_version,
        "created": created,
        "data": {"object": obj},
        "livemode": obj.get("livemode") is True,
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


@dataclass(slots=True)
class ResyncReport:
    target: str
    request_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "request_id": self.request_id, "events": self.events, "failed": self.failed}


@dataclass(slots=True)
class Resync:
    pool: asyncpg.Pool
    client: stripe.StripeClient
    settings: Settings
    report: ResyncReport
    backoff: Backoff = DEFAULT_BACKOFF
    now: Callable[[], float] = time.time

    async def _fetch(self, operation: str, request: Callable[[], Awaitable[stripe.StripeObject]]) -> dict[str, Any]:
        try:
            return raw_object(await self.backoff.call(operation, request))
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                raise NotFound(str(exc.user_message or exc)) from exc
            raise

    async def feed(self, event_type: str, obj: dict[str, Any], *, created: int) -> None:
        assert event_type in HANDLERS, event_type  # only what a handler takes is worth a ledger row
        raw = synthetic_event(event_type, obj, created=created, api_version=self.settings.stripe_api_version)
        entry: dict[str, Any] = {"event_id": raw["id"], "type": event_type, "object": obj.get("id")}
        try:
            result = await ingest_fetched_event(
                self.pool,
                raw,
                origin="resync",
                request_id=self.report.request_id,
                handlers_enabled=self.settings.webhook_handlers_enabled,
                app_source=self.settings.app_source,
                required_livemode=self.settings.stripe_livemode,
            )
        except (ApiError, HandlerFailed) as exc:
            self.report.failed += 1
            entry.update(status="failed", reason=getattr(exc, "message", None) or f"handler failed: {exc}")
        else:
            entry.update(status=result.status, reason=result.reason)
        self.report.events.append(entry)

    # ---- subscriptions

    async def subscription(self, subscription_id: str) -> None:
        sub = await self._fetch(
            "subscriptions.retrieve", functools.partial(self.client.v1.subscriptions.retrieve_async, subscription_id)
        )
        await self._feed_subscription(sub)

    async def _feed_subscription(self, sub: dict[str, Any]) -> None:
        ended = sp.subscription_status(sub) == "canceled"
        event_type = "customer.subscription.deleted" if ended else "customer.subscription.updated"
        await self.feed(event_type, sub, created=int(self.now()))

    # ---- orders

    async def order(self, order_id: str) -> None:
        try:
            key = str(uuid.UUID(order_id))
        except ValueError:
            raise NotFound(f"not an order id: {order_id!r}") from None
        async with self.pool.acquire() as con:
            row = await con.fetchrow(ORDER_STRIPE_IDS, key)
        if row is None:
            raise NotFound(f"no order {key}")
        session: dict[str, Any] | None = None
        if row["stripe_checkout_session_id"]:
            session = await self._fetch(
                "checkout.sessions.retrieve",
                functools.partial(self.client.v1.checkout.sessions.retrieve_async, row["stripe_checkout_session_id"]),
            )
        intent_id = row["stripe_payment_intent_id"] or (
            sp.checkout_session_ids(session).payment_intent_id if session else None
        )
        intent: dict[str, Any] | None = None
        charge: dict[str, Any] | None = None
        if intent_id:
            intent = await self._fetch(
                "payment_intents.retrieve",
                functools.partial(
                    self.client.v1.payment_intents.retrieve_async,
                    intent_id,
                    params={"expand": ["latest_charge"]},
                ),
            )
            latest = intent.get("latest_charge")
            if isinstance(latest, dict):
                charge = latest
                intent["latest_charge"] = latest.get("id")  # as events carry it: an id, never expanded
        # When the money moved: the payment events set `paid_at` from it.
        paid_at = int((charge or intent or session or {}).get("created") or self.now())
        if session is not None and (event_type := _SESSION_EVENTS.get(sp.session_status(session) or "")):
            await self.feed(event_type, session, created=paid_at)
        if intent is not None:
            status = sp.payment_intent_status(intent) or ""
            event_type = _INTENT_EVENTS.get(status)
            if event_type is None and status == "requires_payment_method" and intent.get("last_payment_error"):
                event_type = "payment_intent.payment_failed"
            if event_type is not None:
                await self.feed(event_type, intent, created=paid_at)
        if charge is not None and sp.charge_amount_refunded(charge) > 0:
            await self.feed("charge.refunded", charge, created=int(self.now()))

    # ---- customers

    async def customer(self, customer_id: str) -> None:
        """Every subscription of the customer in Stripe (canceled ones too), then every order of it we know."""
        params: dict[str, Any] = {"customer": customer_id, "status": "all", "limit": PAGE_SIZE}
        while True:
            page = await self.backoff.call(
                "subscriptions.list",
                functools.partial(self.client.v1.subscriptions.list_async, params=dict(params)),  # type: ignore[arg-type]
            )
            subs = [raw_object(item) for item in page.data]
            for sub in subs:
                await self._feed_subscription(sub)
            if not page.has_more or not subs:
                break
            params["starting_after"] = subs[-1]["id"]
        async with self.pool.acquire() as con:
            orders = [str(r["id"]) for r in await con.fetch(CUSTOMER_ORDERS, customer_id)]
        for order_id in orders:
            await self.order(order_id)
