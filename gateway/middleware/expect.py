"""The `Expect` header of a request, which aiohttp hands to the route's expect handler before the route's handler
runs (outside the edge layer).

`100 Continue` invites the body, so it goes out only once the request has passed the checks that need no body
(the host, the rate limit, the declared size, the authentication): the innermost layer sends it
(gateway/middleware/body_read.py), and a request refused before gets its error answer and no invitation."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import HttpVersion11, hdrs, web

from gateway.routing import EXPECTATION_OPTIONS

if TYPE_CHECKING:
    from gateway.middleware.edge import Wrap

ExpectHandler = Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse | None]]


def expect_handler(wrap: Wrap, label: str) -> ExpectHandler:
    """The route's handling of an `Expect` header, which aiohttp runs before the route's handler: `100-continue`
    is left to the route's innermost layer (aiohttp's own handler would send it at once, before any check); any other
    expectation is refused through the edge (aiohttp's own 417 would be plain text, with its Server banner)."""
    refuse = wrap(_expectation_failed, label, EXPECTATION_OPTIONS)

    async def expect(request: web.Request) -> web.StreamResponse | None:
        if request.version != HttpVersion11 or wants_continue(request):
            return None
        return await refuse(request)

    return expect


def wants_continue(request: web.BaseRequest) -> bool:
    """An HTTP/1.1 client waiting for `100 Continue` before it sends its body."""
    return request.version == HttpVersion11 and request.headers.get(hdrs.EXPECT, "").lower() == "100-continue"


async def _expectation_failed(request: web.Request) -> web.StreamResponse:
    raise web.HTTPExpectationFailed()
