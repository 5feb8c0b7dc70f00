"""CORS through aiohttp-cors: an exact origin allowlist, credentials only for listed origins.

aiohttp-cors answers preflights from an OPTIONS route it adds to each CORS-enabled resource. That route is put
behind the edge layer like every other (request id, error shape, metrics, security headers, host check) with the
options `PREFLIGHT_OPTIONS`: a preflight is answered before rate limiting, body limits and authentication, which
it has none of. The CORS headers of other answers (errors included) are added by aiohttp-cors's
response hook, which the edge layer calls for requests with an Origin header (`complete_answer`). `Vary: Origin`
is added to every answer with the security headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp_cors
from aiohttp import hdrs, web
from aiohttp_cors.urldispatcher_router_adapter import ResourcesUrlDispatcherRouterAdapter

from gateway import keys
from gateway.middleware.expect import expect_handler
from gateway.routing import PREFLIGHT_OPTIONS, declared_options, route_label
from gateway.settings import Settings

ALLOWED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID")
EXPOSED_HEADERS = ("X-Request-ID", "Retry-After", "RateLimit", "RateLimit-Policy")


def setup_cors(app: web.Application, settings: Settings) -> None:
    """Enable CORS on every route whose options ask for it. Call after all routes are added."""
    defaults = {
        origin: aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
            allow_credentials=origin != "*",
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            max_age=600,
        )
        for origin in settings.cors_origins
    }
    signals_before = len(app.on_response_prepare)
    adapter = _EdgeRouterAdapter(app, defaults)
    cors = aiohttp_cors.CorsConfig(app, defaults=defaults, router_adapter=adapter)
    # aiohttp-cors installs its response hook as an on_response_prepare signal, run for every answer. A request
    # without an Origin header (webhooks, probes, server-to-server calls) is no CORS request: the edge layer calls
    # the hook only for requests that have one.
    hooks: list[Callable[[web.Request, web.StreamResponse], Awaitable[object]]] = list(
        app.on_response_prepare[signals_before:]
    )
    app[keys.CORS_RESPONSE_HOOKS] = hooks
    del app.on_response_prepare[signals_before:]
    for route in list(app.router.routes()):
        options = declared_options(route.handler)
        if route.method != hdrs.METH_OPTIONS and options is not None and options.cors:
            cors.add(route)


async def complete_answer(request: web.Request, response: web.StreamResponse) -> None:
    """Add the CORS headers of a request with an Origin header to its answer (before the answer is prepared)."""
    for hook in request.config_dict.get(keys.CORS_RESPONSE_HOOKS, ()):
        await hook(request, response)


class _EdgeRouterAdapter(ResourcesUrlDispatcherRouterAdapter):
    """aiohttp-cors's adapter for aiohttp's router, with the preflight route it adds to a resource put behind the
    edge layer (`app[keys.EDGE]`)."""

    def __init__(self, app: web.Application, defaults: dict[str, aiohttp_cors.ResourceOptions]) -> None:
        super().__init__(app.router, defaults)
        self._wrap = app[keys.EDGE]

    def add_preflight_handler(
        self, routing_entity: web.Resource | web.StaticResource | web.ResourceRoute, handler: Any, webview: bool = False
    ) -> None:
        resource = routing_entity.resource if isinstance(routing_entity, web.ResourceRoute) else routing_entity
        if not isinstance(resource, web.Resource) or self.is_cors_for_resource(resource):
            super().add_preflight_handler(routing_entity, handler)
            return
        # The parent's own steps for a resource, with the route behind the edge and its Expect handling
        # (the parent adds the OPTIONS route with aiohttp's defaults).
        if any(route.method in (hdrs.METH_OPTIONS, hdrs.METH_ANY) for route in resource):
            raise ValueError(f"{resource!r} already has an OPTIONS or '*' route")
        label = route_label(resource.name, resource.canonical)
        route = resource.add_route(
            hdrs.METH_OPTIONS,
            self._wrap(handler, label, PREFLIGHT_OPTIONS),
            expect_handler=expect_handler(self._wrap, label),
        )
        self._preflight_routes.add(route)
        self._resources_with_preflight_handlers.add(resource)
