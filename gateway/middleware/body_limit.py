"""Body limits: JSON routes JSON_BODY_LIMIT, the webhook its raw WEBHOOK_BODY_LIMIT.

Content-Length is checked before anything is read; a body without one (chunked) is cut off while being read,
through the request's own `client_max_size`, and answered 413 by the error mapper.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.errors import PayloadTooLarge
from gateway.routing import options_for
from gateway.settings import Settings


def body_limit_middleware(settings: Settings) -> Middleware:
    # "none": the route reads no body; the stack leaves this layer out for it, used alone it counts as JSON.
    limits = {"json": settings.json_body_limit, "raw": settings.webhook_body_limit, "none": settings.json_body_limit}

    @web.middleware
    async def body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        limit = limits[options_for(request).body]
        length = request.content_length
        if length is not None and length > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
        if request.body_exists and limit != request.client_max_size:
            request = request.clone(client_max_size=limit)
        return await handler(request)

    return body_limit
