"""Per-route options read by the middleware stack: rate-limit policy, body limit, authentication, CORS.

A handler declares them once with `@route_options(...)`; middlewares look them up through `options_for(request)`.
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
UNMATCHED_OPTIONS = RouteOptions(rate_limit="public", cors=False)

_ATTR = "__route_options__"
H = TypeVar("H", bound=Callable[..., object])


def route_options(**kwargs: object) -> Callable[[H], H]:
    options = RouteOptions(**kwargs)  # type: ignore[arg-type]
    if options.auth == "role" and not options.role:
        raise ValueError("auth='role' needs role=")

    def decorate(handler: H) -> H:
        setattr(handler, _ATTR, options)
        return handler

    return decorate


def declared_options(handler: object) -> RouteOptions | None:
    return getattr(handler, _ATTR, None)


def options_for(request: web.Request) -> RouteOptions:
    match_info = request.match_info
    if match_info.http_exception is not None:
        return UNMATCHED_OPTIONS
    return declared_options(match_info.handler) or DEFAULT_OPTIONS


def route_label(request: web.Request) -> str:
    """The route's name or template for metric labels; never the raw path."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    if resource.name:
        return resource.name
    return resource.canonical
