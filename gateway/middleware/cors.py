"""CORS through aiohttp-cors: an exact origin allowlist, credentials only for listed origins.

aiohttp-cors answers preflights from an OPTIONS route it adds to each CORS-enabled resource. The middleware
below sends a preflight straight to that handler, so preflights are answered here, before rate limiting, body
limits and authentication. The CORS headers of other answers (errors included) are added by aiohttp-cors's
response hook, which the edge layer calls for requests with an Origin header (`complete_answer`). `Vary: Origin`
is added to every answer with the security headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp_cors
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from gateway import keys
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
