"""HTTP routes of the checkout area: `POST /v1/checkout/sessions` and the owner's order reads."""

from __future__ import annotations

import asyncio
import logging

import stripe
from aiohttp import web

from gateway import client_address, context, keys
from gateway.billing import routes as billing_routes
from gateway.checkout import holds, orders_api, service
from gateway.checkout.validation import idempotency_key, parse_checkout, read_json_object
from gateway.errors import ApiError, ServiceUnavailable, Unauthorized
from gateway.middleware import add_routes
from gateway.responses import NO_STORE, json_response
from gateway.routing import route_options

log = logging.getLogger("gateway.checkout")


def _json(body: dict[str, object], *, status: int, headers: dict[str, str]) -> web.Response:
    return json_response(body, status=status, headers={**NO_STORE, **headers})


async def _compensate(request: web.Request, user_id: str, order_id: str, error: ApiError) -> None:
    async with request.app[keys.DB_POOL].acquire() as con:
        await service.compensate(con, user_id, order_id, error, context.request_id())


@route_options(rate_limit="checkout", auth="user")
async def create_checkout_session(request: web.Request) -> web.Response:
    ctx = context.get_context(request)
    if ctx.user_id is None:  # the auth middleware guarantees it on auth="user" routes
        raise Unauthorized("Authentication required")
    user_id = ctx.user_id
    settings = request.app[keys.SETTINGS]
    key = idempotency_key(request)
    body = await read_json_object(request)
    if body.get("mode") == "subscription":
        return await billing_routes.create_subscription_checkout(request, user_id, body, key)
    req = parse_checkout(body, settings)
    client: stripe.StripeClient | None = request.app.get(keys.STRIPE_CLIENT)
    if client is None:
        raise ServiceUnavailable("Payments are not configured", code="payments_unavailable")

    async with request.app[keys.DB_POOL].acquire() as con:
        result = await service.reserve(
            con,
            settings,
            user_id,
            req,
            client=holds.client_key(client_address.rate_limit_key(ctx.client_ip)),
            idempotency_key=key,
            request_id=ctx.request_id,
        )
    if isinstance(result, service.CheckoutAnswer):
        context.bind(orderId=result.body.get("order_id"))
        return _json(
            result.body,
            status=201,
            headers={
                "Idempotent-Replayed": "true",
                "Location": f"/v1/orders/{result.body.get('order_id')}",
            },
        )

    order = result
    context.bind(orderId=order.order_id)
    try:
        session = await service.create_session(client, settings, user_id, req, order)
    except ApiError as exc:
        log.warning(
            "checkout session creation failed, order canceled",
            extra={"orderId": order.order_id, "code": exc.code},
        )
        await _compensate(request, user_id, order.order_id, exc)
        raise
    except asyncio.CancelledError:
        # The request was abandoned while Stripe was being asked: do not leave the stock held.
        aborted = ApiError("Checkout abandoned", code="checkout_abandoned")
        await asyncio.shield(_compensate(request, user_id, order.order_id, aborted))
        raise

    body = service.answer_body(order.order_id, session.url, order.expires_at)
    async with request.app[keys.DB_POOL].acquire() as con:
        await service.store_session(con, order, session.id, session.url, body)
    log.info("checkout session created", extra={"orderId": order.order_id, "stripeSessionId": session.id})
    return _json(body, status=201, headers={"Location": f"/v1/orders/{order.order_id}"})


def register(app: web.Application) -> None:
    add_routes(
        app,
        [
            web.post("/v1/checkout/sessions", create_checkout_session, name="checkout_sessions"),
            web.get("/v1/orders", orders_api.list_orders, name="orders"),
            web.get("/v1/orders/{order_id}", orders_api.get_order, name="order"),
        ],
    )
