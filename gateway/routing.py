"""Per-route options read by the middleware stack: rate-limit policy, body limit, authentication, CORS.

A handler declares them once with `@route_options(...)`; middlewares look them up through `options_for(request)`.
Also the route every request no other route matches ends on (`unmatched`: 404 or 405).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from aiohttp import web

BodyKind = Literal["json", "raw", "none"]


@dataclass(frozen=True, slots=True)
class RouteOptions:
    rate_limit: str | None = "public"  # policy name, None for no limit (probes)
    body: BodyKind = "json"  # "raw": the webhook limit applies; "none": the route reads no body (probes)
    auth: Literal["none", "optional", "user", "role"] = "none"
    role: str | None = None
    cors: bool = True
    check_host: bool = True  # probes answer whatever Host the kubelet sends (the pod IP)
    access_log: bool = True  # False: successful answers are logged at DEBUG only (probes)


DEFAULT_OPTIONS = RouteOptions()
# aiohttp-cors's OPTIONS route of a CORS resource: a preflight is answered before rate limiting, body limits and
# authentication (gateway/middleware/cors.py).
PREFLIGHT_OPTIONS = RouteOptions(rate_limit=None, body="none", cors=False)
# A request whose Expect header the gateway cannot meet (417), refused before the route's own layers run.
EXPECTATION_OPTIONS = RouteOptions(body="none", cors=False)
UNMATCHED_ROUTE = "unmatched"

_ATTR = "__route_options__"
H = TypeVar("H", bound=Callable[..., object])


def route_options(**kwargs: object) -> Callable[[H], H]:
    options = RouteOptions(**kwargs)  # type: ignore[arg-type]
    if options.auth == "role" and not options.role:
        raise ValueError("auth='role' needs role=")

    def decorate(handler: H) -> H:
        return with_options(handler, options)

    return decorate


def with_options(handler: H, options: RouteOptions) -> H:
    setattr(handler, _ATTR, options)
    return handler


def declared_options(handler: object) -> RouteOptions | None:
    return getattr(handler, _ATTR, None)


def options_for(request: web.Request) -> RouteOptions:
    return declared_options(request.match_info.handler) or DEFAULT_OPTIONS


def route_label(name: str | None, path: str) -> str:
    """The route's name or template for metric labels; never the raw path."""
    return name or path


@route_options(rate_limit="public", cors=False)
async def unmatched(request: web.Request) -> web.StreamResponse:
    """The last route, for every path and method: 405 when another route has the path, else 404 (aiohttp's own
    answers, which the edge layer turns into the JSON error shape)."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()
