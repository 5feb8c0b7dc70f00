"""POST /stripe/webhook: verify the signature on the raw bytes, parse the envelope, ingest in one transaction,
answer 200 only after the commit."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from multidict import istr

from gateway import context, keys, metrics
from gateway.errors import ApiError, BadRequest
from gateway.responses import json_response
from gateway.routing import route_options
from gateway.stripe_account import versions
from gateway.webhooks.envelope import UnstorableEvent, parse_event
from gateway.webhooks.ledger import HandlerFailed, ingest, record_unstorable
from gateway.webhooks.signature import SignatureError, count_failure, verify_signature

log = logging.getLogger("gateway.webhooks")

SIGNATURE_FAILED = "Stripe webhook signature verification failed"
STRIPE_SIGNATURE = istr("Stripe-Signature")


class WebhookProcessingFailed(ApiError):
    status = 500
    code = "webhook_processing_failed"
    message = "The event could not be processed; Stripe will retry it"


@route_options(rate_limit="webhook", body="raw", cors=False)
async def stripe_webhook(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    body = await request.read()
    try:
        secret_index = verify_signature(
            body,
            request.headers.get(STRIPE_SIGNATURE),
            settings.stripe_webhook_secrets,
            settings.stripe_webhook_tolerance,
        )
    except SignatureError as exc:
        count_failure(exc)
        log.warning(SIGNATURE_FAILED, extra={"reason": exc.reason})
        raise BadRequest("Invalid Stripe signature", code="invalid_signature") from None
    metrics.WEBHOOK_SECRET_MATCHES.labels(str(secret_index)).inc()

    try:
        event = parse_event(body, required_livemode=settings.stripe_livemode)
    except UnstorableEvent as exc:
        context.bind(stripeEventId=exc.unstorable.id)
        kept = await record_unstorable(request.app[keys.DB_POOL], exc.unstorable, request_id=context.request_id())
        metrics.WEBHOOK_EVENTS.labels(exc.unstorable.type, kept.status).inc()
        return json_response({"status": kept.status, "event_id": exc.unstorable.id, "reason": kept.reason})
    versions.observe_event_version(event.api_version, settings.stripe_api_version)
    context.bind(stripeEventId=event.id)
    metrics.WEBHOOK_DELIVERY_LAG.observe(max(0.0, time.time() - event.created))

    started = time.perf_counter()
    try:
        result = await ingest(
            request.app[keys.DB_POOL],
            event,
            request_id=context.request_id(),
            handlers_enabled=settings.webhook_handlers_enabled,
            app_source=settings.app_source,
        )
    except HandlerFailed:
        metrics.WEBHOOK_EVENTS.labels(event.type, "failed").inc()
        raise WebhookProcessingFailed() from None
    metrics.WEBHOOK_PROCESSING.observe(time.perf_counter() - started)
    metrics.WEBHOOK_EVENTS.labels(event.type, result.status).inc()
    context.bind(orderId=result.order_id)
    log.info(
        "stripe event handled",
        extra={"status": result.status, "eventType": event.type, "reason": result.reason},
    )
    if result.status == "waiting":
        log.info("stripe event kept until its order is known", extra={"eventType": event.type})
    return json_response({"status": result.status, "event_id": event.id})
