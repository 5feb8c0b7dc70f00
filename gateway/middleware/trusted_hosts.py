"""Refuse requests whose Host is not one of ours (exact names or `*.example.com` wildcards; port ignored).

The Host header is parsed strictly (RFC 9110 `uri-host [ ":" port ]`): one name (DNS labels), one IPv4 address
or one bracketed IPv6 address, then at most one numeric port. Anything else (`localhost:evil.example`,
`a@b`, `::1` without brackets, two ports) is refused, whatever the allowlist says. A request in absolute form
(`GET http://host/path`) names its host in the target too, and aiohttp takes that one as the request's host:
both must be ours.

The probes are exempt: the kubelet sends the pod IP as Host, and /health and /ready reveal nothing."""

from __future__ import annotations

import ipaddress
import re

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

from gateway.errors import BadRequest
from gateway.routing import options_for
from gateway.settings import Settings

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST = re.compile(rf"(?P<name>{_LABEL}(?:\.{_LABEL})*)|\[(?P<ipv6>[0-9a-f:.]+)\]")
_PORT = re.compile(r"[0-9]{1,5}")


def parse_host(value: str) -> str | None:
    """The host name of a Host header value (lowercase, IPv6 without brackets), or None when it is not exactly
    one host and an optional numeric port."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]") + 1
        host, rest = (value[:end], value[end:]) if end else (value, "")
    else:
        host, colon, port = value.partition(":")
        rest = colon + port
    if rest and (rest[0] != ":" or not _PORT.fullmatch(rest[1:]) or int(rest[1:]) > 65535):
        return None
    match = _HOST.fullmatch(host)
    if match is None:
        return None
    if match["ipv6"] is not None:
        try:
            return str(ipaddress.IPv6Address(match["ipv6"]))
        except ValueError:
            return None
    return match["name"]


class HostMatcher:
    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.any = "*" in patterns
        self.exact = frozenset(_normalise(p) for p in patterns if not p.startswith("*."))
        self.suffixes = tuple(p[1:].lower() for p in patterns if p.startswith("*."))

    def allows(self, host_header: str | None) -> bool:
        if self.any:
            return True
        if not host_header:
            return False
        host = parse_host(host_header)
        if host is None:
            return False
        return host in self.exact or any(host.endswith(s) and len(host) > len(s) for s in self.suffixes)


def _normalise(pattern: str) -> str:
    try:
        return str(ipaddress.ip_address(pattern.strip("[]")))
    except ValueError:
        return pattern.lower()


def absolute_target_host(request: web.BaseRequest) -> str | None:
    """`host[:port]` of an absolute-form request target (`GET http://host/path`), None for the usual origin form
    (`GET /path`) or a target without a host."""
    target = request.raw_path
    if target.startswith("/"):
        return None
    try:
        url = URL(target)
        host = url.raw_host
        port = url.explicit_port
    except ValueError:
        return ""  # not a URL: matches no host
    if host is None:
        return None if not url.scheme else ""
    host = f"[{host}]" if ":" in host else host
    return host if port is None else f"{host}:{port}"


def trusted_hosts_middleware(settings: Settings) -> Middleware:
    matcher = HostMatcher(settings.trusted_hosts)

    @web.middleware
    async def trusted_hosts(request: web.Request, handler: Handler) -> web.StreamResponse:
        if options_for(request).check_host:
            hosts = request.headers.getall(hdrs.HOST, [])
            target_host = absolute_target_host(request)
            if (
                len(hosts) != 1
                or not matcher.allows(hosts[0])
                or (target_host is not None and not matcher.allows(target_host))
            ):
                raise BadRequest("Host not allowed", code="invalid_host")
        return await handler(request)

    return trusted_hosts
