"""Per-route authentication (placeholder until the JWT verifier lands)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware


def auth_middleware() -> Middleware:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request)

    return auth
