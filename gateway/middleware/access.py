"""Access log line and HTTP metrics for every answer. The error mapper sits outside this middleware, so an
exception passing through here is counted with the status the mapper will give it."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway import context, metrics
from gateway.middleware.errors import status_for
from gateway.settings import Settings

log = logging.getLogger("gateway.access")

WEBHOOK_ROUTE = "stripe_webhook"


def access_middleware(settings: Settings) -> Middleware:
    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        ctx = context.get_context(request)
        started = time.perf_counter()
        status = 500
        metrics.HTTP_IN_FLIGHT.inc()
        try:
            response = await handler(request)
            status = response.status
            return response
        except Exception as exc:
            status = status_for(exc)
            raise
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            elapsed = time.perf_counter() - started
            metrics.HTTP_REQUESTS.labels(ctx.route, request.method, str(status)).inc()
            metrics.HTTP_DURATION.labels(ctx.route).observe(elapsed)
            if ctx.route == WEBHOOK_ROUTE:
                metrics.WEBHOOK_RESPONSES.labels(str(status)).inc()
            log.info(
                "request completed",
                extra={
                    "route": ctx.route,
                    "method": request.method,
                    "status": status,
                    "durationMs": round(elapsed * 1000, 2),
                },
            )

    return access
