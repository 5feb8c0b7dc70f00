"""The middleware stack. Its order is set here and nowhere else (outside in).

The edge layer (`edge.py`: request id, error mapper, access log + metrics) wraps every request. Each layer inside
it names the routes it applies to, from the options the route declares (`gateway.routing`); the chain inside the
edge is composed once per route from the layers that apply, so a probe does not pass through host checks, rate
limiting, body limits and authentication it has none of. A request no route matches (404, 405) gets the layers
of `UNMATCHED_OPTIONS`: host check, public rate limit and body limit. The edge also stamps the security headers
on every answer, the error mapper's included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from aiohttp.typedefs import Handler, Middleware

from gateway.middleware.auth import auth_middleware
from gateway.middleware.body_limit import body_limit_middleware
from gateway.middleware.cors import cors_preflight_middleware
from gateway.middleware.edge import edge_middleware
from gateway.middleware.rate_limit import rate_limit_middleware
from gateway.middleware.trusted_hosts import trusted_hosts_middleware
from gateway.routing import RouteOptions
from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class Layer:
    middleware: Middleware
    applies: Callable[[RouteOptions], bool]


def build_layers(settings: Settings) -> list[Layer]:
    """The layers inside the edge, outside in."""
    return [
        Layer(trusted_hosts_middleware(settings), lambda options: options.check_host),
        Layer(cors_preflight_middleware(), lambda options: options.cors),
        Layer(rate_limit_middleware(), lambda options: options.rate_limit is not None),
        Layer(body_limit_middleware(settings), lambda options: options.body != "none"),
        Layer(auth_middleware(), lambda options: options.auth != "none"),
    ]


def compose(layers: list[Layer], handler: Handler, options: RouteOptions) -> Handler:
    """`handler` wrapped in the layers that apply to a route with `options`, outside in."""
    for layer in reversed(layers):
        if layer.applies(options):
            handler = partial(layer.middleware, handler=handler)
    return handler


def build_middlewares(settings: Settings) -> list[Middleware]:
    """Outside in: the edge (request id -> error mapper -> access log + metrics), then the route's layers (the
    edge composes them once per route)."""
    return [edge_middleware(settings, compose=partial(compose, build_layers(settings)))]
