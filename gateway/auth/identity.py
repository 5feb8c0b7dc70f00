"""Who is calling: the verified bearer token of a request, checked once per request.

(Placeholder: the JWT verifier fills this in.)"""

from __future__ import annotations

from aiohttp import web


async def identify(request: web.Request) -> str | None:
    """The verified user id (`sub`) of the request's bearer token, or None; never raises."""
    return None
