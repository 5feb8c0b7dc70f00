"""Refuse requests whose Host is not one of ours (exact names or `*.example.com` wildcards; port ignored).

The probes are exempt: the kubelet sends the pod IP as Host, and /health and /ready reveal nothing."""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from gateway.errors import BadRequest
from gateway.routing import options_for
from gateway.settings import Settings


class HostMatcher:
    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.any = "*" in patterns
        self.exact = frozenset(p.lower() for p in patterns if not p.startswith("*."))
        self.suffixes = tuple(p[1:].lower() for p in patterns if p.startswith("*."))

    def allows(self, host_header: str | None) -> bool:
        if self.any:
            return True
        if not host_header:
            return False
        host = _strip_port(host_header.strip().lower())
        return host in self.exact or any(host.endswith(s) and len(host) > len(s) for s in self.suffixes)


def _strip_port(host: str) -> str:
    if host.startswith("["):  # [::1]:8080
        return host[1 : host.index("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def trusted_hosts_middleware(settings: Settings) -> Middleware:
    matcher = HostMatcher(settings.trusted_hosts)

    @web.middleware
    async def trusted_hosts(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not matcher.allows(request.headers.get(hdrs.HOST)) and options_for(request).check_host:
            raise BadRequest("Host not allowed", code="invalid_host")
        return await handler(request)

    return trusted_hosts
