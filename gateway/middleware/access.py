"""Access log line and HTTP metrics for every answer. The error mapper sits outside this middleware, so an
exception passing through here is counted with the status the mapper will give it.

Successful answers of routes declared `access_log=False` (the probes, hit every few seconds by the kubelet) are
logged at DEBUG only; they are still counted in the metrics.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway import context, metrics
from gateway.metrics import HTTP
from gateway.middleware.errors import status_for
from gateway.routing import options_for
from gateway.settings import Settings

log = logging.getLogger("gateway.access")

WEBHOOK_ROUTE = "stripe_webhook"
# The method label is bounded: a client may send any token as a method.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def access_middleware(settings: Settings) -> Middleware:
    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        ctx = context.get_context(request)
        started = time.perf_counter()
        status = 500
        HTTP.in_flight += 1
        try:
            response = await handler(request)
            status = response.status
            return response
        except Exception as exc:
            status = status_for(exc)
            raise
        finally:
            HTTP.in_flight -= 1
            elapsed = time.perf_counter() - started
            method = request.method if request.method in KNOWN_METHODS else "OTHER"
            HTTP.observe(ctx.route, method, status, elapsed)
            if ctx.route == WEBHOOK_ROUTE:
                metrics.WEBHOOK_RESPONSES.labels(str(status)).inc()
            level = logging.INFO if status >= 400 or options_for(request).access_log else logging.DEBUG
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "request completed",
                    extra={
                        "route": ctx.route,
                        "method": method,
                        "status": status,
                        "durationMs": round(elapsed * 1000, 2),
                    },
                )

    return access
