"""Rate limiting by route policy (placeholder until the limiter lands: lets everything through)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware


def rate_limit_middleware() -> Middleware:
    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request)

    return rate_limit
