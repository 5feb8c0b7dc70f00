"""CORS through aiohttp-cors: an exact origin allowlist, credentials only for listed origins.

aiohttp-cors answers preflights from an OPTIONS route it adds to each CORS-enabled resource. The middleware
below sends a preflight straight to that handler, so preflights are answered here, before rate limiting, body
limits and authentication. `Vary: Origin` is added to every answer by the security headers signal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp_cors
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from gateway.routing import declared_options
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
    cors = aiohttp_cors.setup(app, defaults=defaults)
    # aiohttp-cors looks the route's configuration up for every answer before it checks for an Origin header. A
    # request without one (webhooks, probes, server-to-server calls) is no CORS request: skip that work.
    app.on_response_prepare[signals_before:] = [
        _with_origin_only(receiver) for receiver in app.on_response_prepare[signals_before:]
    ]
    for route in list(app.router.routes()):
        options = declared_options(route.handler)
        if route.method != hdrs.METH_OPTIONS and options is not None and options.cors:
            cors.add(route)


def _with_origin_only(
    receiver: Callable[[web.Request, web.StreamResponse], Awaitable[object]],
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
        if hdrs.ORIGIN in request.headers:
            await receiver(request, response)

    return on_response_prepare


def is_preflight(request: web.Request) -> bool:
    return (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ORIGIN in request.headers
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    )


def cors_preflight_middleware() -> Middleware:
    @web.middleware
    async def cors_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_preflight(request) and request.match_info.http_exception is None:
            return await request.match_info.handler(request)
        return await handler(request)

    return cors_preflight
