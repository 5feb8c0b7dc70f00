"""The outermost layer of every route, in this order:

1. request id: the request's id and context (client address included), in a contextvar for every log line;
2. error mapper: any exception from the layers inside becomes the one JSON error answer (`errors.error_answer`);
3. access log and HTTP metrics, with the status actually answered;
4. the request id and the security headers stamped on every answer, errors and redirects included, and the
   CORS headers for requests with an Origin header.

They are one layer rather than three nested ones: each layer is a coroutine per request, and these three wrap
every request the gateway answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from gateway import client_address, context
from gateway.metrics import HTTP
from gateway.middleware import access, cors, request_id
from gateway.middleware.errors import error_answer
from gateway.routing import RouteOptions, options_for, route_label
from gateway.settings import Settings

# A route's handler wrapped in the layers that apply to its options (gateway/middleware/__init__.py).
Compose = Callable[[Handler, RouteOptions], Handler]


def _handler_alone(handler: Handler, options: RouteOptions) -> Handler:
    return handler


@dataclass(frozen=True, slots=True)
class Route:
    """What the edge needs of a request's route, worked out once per route."""

    label: str  # metric and log label: the route's name or template
    options: RouteOptions
    handler: Handler  # wrapped in its layers


def edge_middleware(settings: Settings, *, compose: Compose = _handler_alone) -> Middleware:
    trusted = client_address.TrustedProxies(settings.trusted_proxies)
    show_trace = settings.debug and not settings.is_production
    routes: dict[web.AbstractRoute, Route] = {}

    def new_route(request: web.Request, handler: Handler) -> Route:
        options = options_for(request)
        route = Route(route_label(request), options, compose(handler, options))
        match_info = request.match_info
        if match_info.http_exception is None:  # aiohttp makes a new system route for each 404, 405
            routes[match_info.route] = route
        return route

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = routes.get(request.match_info.route) or new_route(request, handler)
        ctx = request_id.new_context(request, trusted, route.label)
        request[context.CONTEXT_KEY] = ctx
        token = context.current.set(ctx)
        started = time.perf_counter()
        status = 500  # unless an answer is made (a cancelled request has none)
        HTTP.in_flight += 1
        try:
            try:
                response = await route.handler(request)
            except Exception as exc:
                response = error_answer(exc, show_trace=show_trace)
            status = response.status
        except web.HTTPException as exc:  # redirects (< 400) leave as exceptions; aiohttp answers them
            status = exc.status
            request_id.stamp(exc.headers, ctx)
            if hdrs.ORIGIN in request.headers:
                await cors.complete_answer(request, exc)
            raise
        finally:
            HTTP.in_flight -= 1
            access.record(request, ctx, status, time.perf_counter() - started, route.options.access_log)
            context.current.reset(token)
        if not response.prepared:
            request_id.stamp(response.headers, ctx)
            if hdrs.ORIGIN in request.headers:
                await cors.complete_answer(request, response)
        return response

    return edge
