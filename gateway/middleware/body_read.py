"""The innermost layer of a route that reads a body: invite it (`100 Continue`, when the client waits for that)
and read it within HTTP_BODY_TIMEOUT_SECONDS, once every outer layer (host, rate limit, declared size,
authentication) has let the request through.

A body that does not arrive in time is a 408 (`request_timeout`), counted in
`gateway_slow_clients_total{phase="body"}`. The body read here is kept by the request: the handler's own
`request.read()` returns it without waiting again.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway import metrics
from gateway.errors import ApiError
from gateway.middleware.expect import wants_continue
from gateway.settings import Settings

log = logging.getLogger("gateway.http")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class RequestTimeout(ApiError):
    status = 408
    code = "request_timeout"
    message = "The request body took too long"


def body_read_middleware(settings: Settings) -> Middleware:
    timeout = settings.http_body_timeout_seconds

    @web.middleware
    async def body_read(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            if wants_continue(request):
                await request.writer.write(CONTINUE)
                request.writer.output_size = 0  # the interim answer is not part of the answer
            try:
                async with asyncio.timeout(timeout):
                    await request.read()
            except TimeoutError:
                metrics.SLOW_CLIENTS.labels("body").inc()
                log.info("request body not received in time", extra={"code": RequestTimeout.code})
                raise RequestTimeout() from None
        return await handler(request)

    return body_read
