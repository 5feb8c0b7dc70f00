"""HTTP routes of billing from our side.

- POST /v1/checkout/sessions with `mode: subscription`   (the checkout route hands the body to
                                                         `create_subscription_checkout`)
- GET  /v1/subscriptions, GET /v1/subscriptions/{id}    user token: own subscriptions, latest invoice links
- POST /v1/subscriptions/{id}/plan | /cancel | /resume  user token: changes, confirmed later by the webhooks
- POST /v1/billing/portal-session                       user token: a Stripe customer portal URL
- POST /v1/admin/orders/{id}/refunds                    role `payments:refund`: a full or partial refund
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import stripe
from aiohttp import web

from gateway import context, keys
from gateway.billing import checkout, portal, refunds, subscriptions, validation
from gateway.checkout.validation import idempotency_key, read_json_object
from gateway.errors import ApiError, BadRequest, NotFound, ServiceUnavailable, Unauthorized
from gateway.middleware import add_routes
from gateway.orders.queries import valid_uuid
from gateway.responses import NO_STORE, json_response
from gateway.routing import route_options
from gateway.subscriptions import plans

log = logging.getLogger("gateway.billing")

REFUND_ROLE = "payments:refund"


def _json(body: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(body, status=status, headers={**NO_STORE, **(headers or {})})


def _user_id(request: web.Request) -> str:
    user_id = context.get_context(request).user_id
    if user_id is None:  # the auth middleware guarantees it on auth="user" and auth="role" routes
        raise Unauthorized("Authentication required")
    return user_id


def _stripe(request: web.Request) -> stripe.StripeClient:
    client: stripe.StripeClient | None = request.app.get(keys.STRIPE_CLIENT)
    if client is None:
        raise ServiceUnavailable("Payments are not configured", code="payments_unavailable")
    return client


# ------------------------------------------------------------------ subscription checkout


async def create_subscription_checkout(
    request: web.Request, user_id: str, body: dict[str, Any], key: str | None
) -> web.Response:
    settings = request.app[keys.SETTINGS]
    req = validation.parse_subscription_checkout(body, settings, plans.current())
    client = _stripe(request)
    request_id = context.request_id()
    pool = request.app[keys.DB_POOL]
    async with pool.acquire() as con:
        result = await checkout.start(con, settings, user_id, req, idempotency_key=key, request_id=request_id)
    if isinstance(result, checkout.Replay):
        return _json(result.body, status=201, headers={"Idempotent-Replayed": "true"})
    try:
        session = await checkout.create_session(client, settings, user_id, req, result)
    except ApiError as exc:
        log.warning("subscription checkout creation failed", extra={"code": exc.code})
        async with pool.acquire() as con:
            await checkout.forget(con, user_id, result.checkout_id, exc, request_id)
        raise
    except asyncio.CancelledError:
        aborted = ApiError("Checkout abandoned", code="checkout_abandoned")

        async def forget() -> None:
            async with pool.acquire() as con:
                await checkout.forget(con, user_id, result.checkout_id, aborted, request_id)

        await asyncio.shield(forget())
        raise
    answer = checkout.answer_body(req, result, session)
    async with pool.acquire() as con:
        await checkout.finish(con, settings, user_id, req, result, session, answer)
    log.info("subscription checkout session created", extra={"stripeSessionId": session.id, "status": "pending"})
    return _json(answer, status=201)


# ------------------------------------------------------------------ subscriptions


@route_options(rate_limit="public", auth="user")
async def list_subscriptions(request: web.Request) -> web.Response:
    user_id = _user_id(request)
    async with request.app[keys.DB_POOL].acquire() as con:
        rows = await con.fetch(subscriptions.LIST_OWN, user_id)
    return _json({"data": [subscriptions.subscription_json(r) for r in rows]})


@route_options(rate_limit="public", auth="user")
async def get_subscription(request: web.Request) -> web.Response:
    user_id = _user_id(request)
    async with request.app[keys.DB_POOL].acquire() as con:
        row = await subscriptions.own_subscription(con, request.match_info["subscription_id"], user_id)
    return _json(subscriptions.subscription_json(row))


async def _change(
    request: web.Request,
) -> tuple[str, Any, dict[str, Any], str | None, subscriptions.SubscriptionChanges]:
    """What every change starts with: the caller, their subscription row, the body, the key, the service."""
    user_id = _user_id(request)
    key = idempotency_key(request)
    body = await read_json_object(request)
    client = _stripe(request)
    async with request.app[keys.DB_POOL].acquire() as con:
        row = await subscriptions.own_subscription(con, request.match_info["subscription_id"], user_id)
    changes = subscriptions.SubscriptionChanges(client, request.app[keys.SETTINGS], request.app[keys.DB_POOL])
    return user_id, row, body, key, changes


@route_options(rate_limit="checkout", auth="user")
async def change_plan(request: web.Request) -> web.Response:
    user_id, row, body, key, changes = await _change(request)
    plan_id, price_id = validation.parse_plan_change(body, plans.current())
    state = await changes.change_plan(row, user_id, plan_id, price_id, key, context.request_id())
    return _json({"subscription": state})


@route_options(rate_limit="checkout", auth="user")
async def cancel_subscription(request: web.Request) -> web.Response:
    user_id, row, body, key, changes = await _change(request)
    at_period_end = validation.parse_cancel(body)
    state = await changes.cancel(row, user_id, at_period_end, key, context.request_id())
    return _json({"subscription": state})


@route_options(rate_limit="checkout", auth="user")
async def resume_subscription(request: web.Request) -> web.Response:
    user_id, row, body, key, changes = await _change(request)
    validation.parse_empty(body)
    state = await changes.resume(row, user_id, key, context.request_id())
    return _json({"subscription": state})


# ------------------------------------------------------------------ customer portal


@route_options(rate_limit="checkout", auth="user")
async def create_portal_session(request: web.Request) -> web.Response:
    user_id = _user_id(request)
    key = idempotency_key(request)
    settings = request.app[keys.SETTINGS]
    return_url = validation.parse_portal(await read_json_object(request), settings)
    client = _stripe(request)
    body = await portal.create_portal_session(
        client,
        settings,
        request.app[keys.DB_POOL],
        user_id,
        return_url,
        client_key=key,
        request_id=context.request_id(),
    )
    return _json(body, status=201)


# ------------------------------------------------------------------ refunds


@route_options(rate_limit="public", auth="role", role=REFUND_ROLE)
async def create_refund(request: web.Request) -> web.Response:
    caller = _user_id(request)
    order_id = valid_uuid(request.match_info["order_id"])
    if order_id is None:
        raise NotFound("Order not found", code="order_not_found")
    key = idempotency_key(request)
    if key is None:
        raise BadRequest("A refund needs an Idempotency-Key header", code="idempotency_key_required")
    req = validation.parse_refund(await read_json_object(request))
    client = _stripe(request)
    context.bind(orderId=order_id)
    answer = await refunds.request_refund(
        request.app[keys.DB_POOL],
        client,
        request.app[keys.SETTINGS],
        order_id,
        req,
        idempotency_key=key,
        actor=f"service:{caller}",
        request_id=context.request_id(),
    )
    headers = {"Location": f"/v1/orders/{order_id}"}
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    else:
        log.info("refund requested", extra={"orderId": order_id, "status": answer.body["stripe_status"]})
    return _json(answer.body, status=201, headers=headers)


def register(app: web.Application) -> None:
    add_routes(
        app,
        [
            web.get("/v1/subscriptions", list_subscriptions, name="subscriptions"),
            web.get("/v1/subscriptions/{subscription_id}", get_subscription, name="subscription"),
            web.post("/v1/subscriptions/{subscription_id}/plan", change_plan, name="subscription_plan"),
            web.post("/v1/subscriptions/{subscription_id}/cancel", cancel_subscription, name="subscription_cancel"),
            web.post("/v1/subscriptions/{subscription_id}/resume", resume_subscription, name="subscription_resume"),
            web.post("/v1/billing/portal-session", create_portal_session, name="billing_portal_session"),
            web.post("/v1/admin/orders/{order_id}/refunds", create_refund, name="order_refunds"),
        ],
    )
