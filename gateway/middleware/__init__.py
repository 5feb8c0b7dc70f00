"""The middleware stack. Its order is set here and nowhere else (outside in).

The edge layer (`edge.py`: request id, error mapper, access log + metrics) wraps every route. Each layer inside
it names the routes it applies to, from the options the route declares (`gateway.routing`); the chain inside the
edge is composed once per route, when the route is registered, from the layers that apply, so a probe does not
pass through host checks, rate limiting, body limits and authentication it has none of. Routes are registered
with `add_routes` (aiohttp-cors's preflight routes through `gateway.middleware.cors`), and `finish_routes` comes
last: a request no route matches (404, 405) gets the layers of `routing.unmatched` (host check, public rate
limit, body limit). The edge also stamps the security headers on every answer, the error mapper's included.
Each route also gets the gateway's handling of the `Expect` header (`expect.py`), which aiohttp runs before the
route's handler.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from gateway import keys
from gateway.middleware.auth import auth_middleware
from gateway.middleware.body_limit import body_limit_middleware
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
    catch_all = app.router[UNMATCHED_ROUTE]
    resolve = app.router.resolve

    def resolve_any_target(request: web.Request) -> Coroutine[Any, Any, web.UrlMappingMatchInfo]:
        # Every path that starts with "/" reaches the catch-all route. A request target without one (`OPTIONS *`,
        # CONNECT's `host:port`, an absolute URL with no path) can match no route, and aiohttp would answer it
        # itself (plain text, its Server banner): it is sent to the catch-all route instead. A plain function, so
        # the usual path costs no extra coroutine.
        if request.rel_url.path_safe.startswith("/"):
            return resolve(request)
        return _match_catch_all(catch_all)

    app.router.resolve = resolve_any_target  # type: ignore[method-assign]
    app.on_startup.append(_check_every_route_is_behind_the_edge)


async def _match_catch_all(resource: web.AbstractResource) -> web.UrlMappingMatchInfo:
    [route] = list(resource)
    return web.UrlMappingMatchInfo({}, route)


async def _check_every_route_is_behind_the_edge(app: web.Application) -> None:
    bare = [
        f"{route.method} {route.resource.canonical}"
        for route in app.router.routes()
        if route.resource and not is_behind_edge(route.handler)
    ]
    if bare:
        raise RuntimeError(f"routes registered without the edge layer (use gateway.middleware.add_routes): {bare}")
