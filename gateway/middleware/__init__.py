"""The middleware stack. Its order is set here and nowhere else (outside in).

Each layer names the routes it applies to, from the options the route declares (`gateway.routing`). The stack
is composed once per route from the layers that apply, so a probe does not pass through host checks, rate
limiting, body limits and authentication it has none of. A request no route matches (404, 405) gets the layers
of `UNMATCHED_OPTIONS`: host check, public rate limit and body limit.

The outermost layer (`edge`) is the request id, the error mapper and the access log + metrics, in that order, in
one coroutine; it also stamps the security headers on every answer, the error mapper's included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.middleware.auth import auth_middleware
from gateway.middleware.body_limit import body_limit_middleware
from gateway.middleware.cors import cors_preflight_middleware
from gateway.middleware.edge import edge_middleware
from gateway.middleware.rate_limit import rate_limit_middleware
from gateway.middleware.trusted_hosts import trusted_hosts_middleware
from gateway.routing import UNMATCHED_OPTIONS, RouteOptions, options_for
from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class Layer:
    middleware: Middleware
    applies: Callable[[RouteOptions], bool]


def _every_route(options: RouteOptions) -> bool:
    return True


def build_layers(settings: Settings) -> list[Layer]:
    return [
        Layer(edge_middleware(settings), _every_route),  # request id -> error mapper -> access log + metrics
        Layer(trusted_hosts_middleware(settings), lambda options: options.check_host),
        Layer(cors_preflight_middleware(), lambda options: options.cors),
        Layer(rate_limit_middleware(), lambda options: options.rate_limit is not None),
        Layer(body_limit_middleware(settings), lambda options: options.body != "none"),
        Layer(auth_middleware(), lambda options: options.auth != "none"),
    ]


def compose(layers: list[Layer], handler: Handler, options: RouteOptions) -> Handler:
    for layer in reversed(layers):
        if layer.applies(options):
            handler = partial(layer.middleware, handler=handler)
    return handler


def route_stack(layers: list[Layer]) -> Middleware:
    """One aiohttp middleware that runs, for each route, the layers that apply to it (composed once)."""
    stacks: dict[web.AbstractRoute, Handler] = {}

    @web.middleware
    async def stack(request: web.Request, handler: Handler) -> web.StreamResponse:
        match_info = request.match_info
        if match_info.http_exception is not None:  # aiohttp makes a new system route for each of these
            return await compose(layers, handler, UNMATCHED_OPTIONS)(request)
        route = match_info.route
        composed = stacks.get(route)
        if composed is None:
            composed = stacks[route] = compose(layers, handler, options_for(request))
        return await composed(request)

    return stack


def build_middlewares(settings: Settings) -> list[Middleware]:
    return [route_stack(build_layers(settings))]
