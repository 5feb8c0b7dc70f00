"""The middleware stack. Its order is set here and nowhere else (outside in).

The edge layer (`edge.py`: request id, error mapper, access log + metrics) wraps every route. Each layer inside
it names the routes it applies to, from the options the route declares (`gateway.routing`); the chain inside the
edge is composed once per route, when the route is registered, from the layers that apply, so a probe does not
pass through host checks, rate limiting, body limits and authentication it has none of. Routes are registered
with `add_routes` (aiohttp-cors's preflight routes through `gateway.middleware.cors`), and `finish_routes` comes
last: a request no route matches (404, 405) gets the layers of `routing.unmatched` (host check, public rate
limit, body limit). The edge also stamps the security headers on every answer, the error mapper's included.
Each route also gets the gateway's handling of the `Expect` header (`expect.py`), which aiohttp runs before the
route's handler; a route that reads a body invites it (`100 Continue`) and reads it within
HTTP_BODY_TIMEOUT_SECONDS in its innermost layer (`body_read.py`), after the host, size and authentication
checks.

A request target that is not a path (`OPTIONS *`, CONNECT's `host:port`, an absolute URL without a path) can
match no route; aiohttp would answer it itself (plain text). One aiohttp middleware, the public hook that sees
every request, sends those to the catch-all route too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from gateway import keys
from gateway.middleware.auth import auth_middleware
from gateway.middleware.body_limit import body_limit_middleware
from gateway.middleware.body_read import body_read_middleware
from gateway.middleware.edge import Wrap, edge_layer, is_behind_edge
from gateway.middleware.expect import expect_handler
from gateway.middleware.rate_limit import rate_limit_middleware
from gateway.middleware.storable import storable_input_middleware
from gateway.middleware.trusted_hosts import trusted_hosts_middleware
from gateway.routing import UNMATCHED_ROUTE, RouteOptions, route_label, unmatched
from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class Layer:
    middleware: Middleware
    applies: Callable[[RouteOptions], bool]


def build_layers(settings: Settings) -> list[Layer]:
    """The layers inside the edge, outside in."""
    return [
        Layer(trusted_hosts_middleware(settings), lambda options: options.check_host),
        Layer(storable_input_middleware(), lambda options: True),
        Layer(rate_limit_middleware(), lambda options: options.rate_limit is not None),
        Layer(body_limit_middleware(settings), lambda options: options.body != "none"),
        Layer(auth_middleware(), lambda options: options.auth != "none"),
        Layer(body_read_middleware(settings), lambda options: options.body != "none"),
    ]


def compose(layers: list[Layer], handler: Handler, options: RouteOptions) -> Handler:
    """`handler` wrapped in the layers that apply to a route with `options`, outside in."""
    for layer in reversed(layers):
        if layer.applies(options):
            handler = partial(layer.middleware, handler=handler)
    return handler


def build_edge(settings: Settings) -> Wrap:
    """Outside in: the edge (request id -> error mapper -> access log + metrics), then the route's layers."""
    return edge_layer(settings, compose=partial(compose, build_layers(settings)))


def add_routes(app: web.Application, routes: Iterable[web.RouteDef]) -> None:
    """Register `routes`, each handler behind the edge (`app[keys.EDGE]`) and the layers its options call for."""
    wrap = app[keys.EDGE]
    for route in routes:
        label = route_label(route.kwargs.get("name"), route.path)
        kwargs = {**route.kwargs, "expect_handler": expect_handler(wrap, label)}
        web.RouteDef(route.method, route.path, wrap(route.handler, label, None), kwargs).register(app.router)


def finish_routes(app: web.Application) -> None:
    """Call after every other route is added: the route of every request no other route matches, and a check at
    start-up that no route was added around the edge (with `app.router` directly)."""
    add_routes(app, [web.route(hdrs.METH_ANY, r"/{path:[\s\S]*}", unmatched, name=UNMATCHED_ROUTE)])
    [catch_all] = list(app.router[UNMATCHED_ROUTE])
    app.middlewares.append(_any_request_target(catch_all.handler))
    app.on_startup.append(_check_every_route_is_behind_the_edge)


def _any_request_target(catch_all: Handler) -> Middleware:
    """Every path that starts with "/" reaches a route (the catch-all last); a target without one (`OPTIONS *`,
    CONNECT's `host:port`, an absolute URL with no path) is sent to the catch-all route, behind the edge, rather
    than answered by aiohttp (plain text, its Server banner)."""

    @web.middleware
    async def any_request_target(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.rel_url.path_safe.startswith("/"):
            return await handler(request)
        return await catch_all(request)

    return any_request_target


async def _check_every_route_is_behind_the_edge(app: web.Application) -> None:
    bare = [
        f"{route.method} {route.resource.canonical}"
        for route in app.router.routes()
        if route.resource and not is_behind_edge(route.handler)
    ]
    if bare:
        raise RuntimeError(f"routes registered without the edge layer (use gateway.middleware.add_routes): {bare}")
