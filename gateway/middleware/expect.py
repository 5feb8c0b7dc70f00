"""The `Expect` header of a request, which aiohttp hands to the route's expect handler before the route's handler
runs (outside the edge layer)."""

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
    gets its interim answer, as aiohttp's own does; any other expectation is refused through the edge (aiohttp's
    own 417 would be plain text, with its Server banner)."""
    refuse = wrap(_expectation_failed, label, EXPECTATION_OPTIONS)

    async def expect(request: web.Request) -> web.StreamResponse | None:
        if request.version != HttpVersion11:
            return None
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            return await refuse(request)
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim answer is not part of the answer
        return None

    return expect


async def _expectation_failed(request: web.Request) -> web.StreamResponse:
    raise web.HTTPExpectationFailed()
