"""The `Expect` header of a request, which aiohttp hands to the route's expect handler before the route's handler
runs (outside the edge layer), and the `100 Continue` a client that sent `Expect: 100-continue` waits for.

The interim answer invites the body, so it goes out only once the request has passed the checks that need no
body: the host, the rate limit, the declared size and the authentication. `continue_middleware` is the innermost
layer of every route that reads a body (gateway/middleware/__init__.py); a request refused before it gets its
error answer and no invitation."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.typedefs import Handler, Middleware

from gateway.routing import EXPECTATION_OPTIONS

if TYPE_CHECKING:
    from gateway.middleware.edge import Wrap

ExpectHandler = Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse | None]]


def expect_handler(wrap: Wrap, label: str) -> ExpectHandler:
    """The route's handling of an `Expect` header, which aiohttp runs before the route's handler: `100-continue`
    is left to `continue_middleware` (aiohttp's own handler would send it at once, before any check); any other
    expectation is refused through the edge (aiohttp's own 417 would be plain text, with its Server banner)."""
    refuse = wrap(_expectation_failed, label, EXPECTATION_OPTIONS)

    async def expect(request: web.Request) -> web.StreamResponse | None:
        if request.version != HttpVersion11 or _wants_continue(request):
            return None
        return await refuse(request)

    return expect


def _wants_continue(request: web.BaseRequest) -> bool:
    return request.version == HttpVersion11 and request.headers.get(hdrs.EXPECT, "").lower() == "100-continue"


def continue_middleware() -> Middleware:
    """Send `100 Continue` to a client waiting for it, once the outer layers have let the request through."""

    @web.middleware
    async def send_continue(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _wants_continue(request) and request.body_exists:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the interim answer is not part of the answer
        return await handler(request)

    return send_continue


async def _expectation_failed(request: web.Request) -> web.StreamResponse:
    raise web.HTTPExpectationFailed()
