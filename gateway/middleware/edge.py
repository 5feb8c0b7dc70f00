"""The outermost layer of every route, in this order:

1. request id: the request's id and context (client address included), in a contextvar for every log line;
2. error mapper: any exception from the layers inside becomes the one JSON error answer (`errors.error_answer`);
3. access log and HTTP metrics, with the status actually answered;
4. the request id and the security headers stamped on every answer, errors and redirects included, and the
   CORS headers for requests with an Origin header.

They are one layer rather than three nested ones: each layer is a coroutine per request, and these three wrap
every request the gateway answers. The layer wraps each route's handler when the route is registered
(`gateway.middleware.add_routes`) rather than running as an aiohttp middleware: an application with middlewares
also gets aiohttp's own, which only matters for sub-applications and costs every request one more coroutine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from gateway import client_address, context
from gateway.metrics import HTTP
from gateway.middleware import access, cors, request_id
from gateway.middleware.errors import client_closed_status, client_gone, error_answer
from gateway.routing import DEFAULT_OPTIONS, RouteOptions, declared_options, with_options
from gateway.settings import Settings

# A route's handler wrapped in the layers that apply to its options (gateway/middleware/__init__.py).
Compose = Callable[[Handler, RouteOptions], Handler]
# (handler, route label, options or None for those the handler declares) -> the route's handler behind the edge
Wrap = Callable[[Handler, str, RouteOptions | None], Handler]
_BEHIND_EDGE = "__behind_edge__"


def edge_layer(settings: Settings, *, compose: Compose) -> Wrap:
    trusted = client_address.TrustedProxies(settings.trusted_proxies)
    show_trace = settings.debug and not settings.is_production

    def wrap(handler: Handler, label: str, options: RouteOptions | None = None) -> Handler:
        """`handler` behind the edge and its layers; `label` is the route's metric and log label (its name or
        template, never the raw path)."""
        options = options or declared_options(handler) or DEFAULT_OPTIONS
        inner = compose(handler, options)
        log_success = options.access_log

        async def edge(request: web.Request) -> web.StreamResponse:
            ctx = request_id.new_context(request, trusted, label)
            request[context.CONTEXT_KEY] = ctx
            token = context.current.set(ctx)
            started = time.perf_counter()
            status = 500  # unless an answer is made (a cancelled request has none)
            HTTP.in_flight += 1
            try:
                try:
                    response = await inner(request)
                except Exception as exc:
                    response = error_answer(exc, show_trace=show_trace, client_closed=client_gone(request))
                status = response.status
            except asyncio.CancelledError:  # aiohttp cancels the handler of a client that hung up (if configured)
                if client_gone(request):
                    status = client_closed_status()
                raise
            except web.HTTPException as exc:  # redirects (< 400) leave as exceptions; aiohttp answers them
                status = exc.status
                request_id.stamp(exc.headers, ctx)
                if hdrs.ORIGIN in request.headers:
                    await cors.complete_answer(request, exc)
                raise
            finally:
                HTTP.in_flight -= 1
                access.record(request, ctx, status, time.perf_counter() - started, log_success)
                context.current.reset(token)
            if not response.prepared:
                request_id.stamp(response.headers, ctx)
                if hdrs.ORIGIN in request.headers:
                    await cors.complete_answer(request, response)
            return response

        setattr(edge, _BEHIND_EDGE, True)
        return with_options(edge, options)

    return wrap


def is_behind_edge(handler: object) -> bool:
    return getattr(handler, _BEHIND_EDGE, False)
