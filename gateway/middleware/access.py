"""Access log line and HTTP metrics for every answer, with the status actually answered (the outermost layer,
`edge`, records each answer after the error mapper built it).

Successful answers of routes declared `access_log=False` (the probes, hit every few seconds by the kubelet) are
logged at DEBUG only; they are still counted in the metrics.
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway import context, metrics
from gateway.metrics import HTTP

log = logging.getLogger("gateway.access")

WEBHOOK_ROUTE = "stripe_webhook"
# The method label is bounded: a client may send any token as a method.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def record(
    request: web.BaseRequest, ctx: context.RequestContext, status: int, elapsed: float, log_success: bool
) -> None:
    """Count the answer in the HTTP metrics and write its access line (`log_success`: the route's `access_log`
    option)."""
    method = request.method
    if method not in KNOWN_METHODS:
        method = "OTHER"
    HTTP.observe(ctx.route, method, status, elapsed)
    if ctx.route == WEBHOOK_ROUTE:
        metrics.WEBHOOK_RESPONSES.labels(str(status)).inc()
    level = logging.INFO if status >= 400 or log_success else logging.DEBUG
    if log.isEnabledFor(level):
        log.log(
            level,
            "request completed",
            extra={"route": ctx.route, "method": method, "status": status, "durationMs": round(elapsed * 1000, 2)},
        )
