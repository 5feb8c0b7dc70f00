"""The request's id and context (client address included), and the headers stamped on every answer: the id and
the security headers. Used by the outermost layer (`edge`)."""

from __future__ import annotations

from aiohttp import hdrs, web
from multidict import CIMultiDict

from gateway import client_address, context, security_headers


def new_context(request: web.Request, trusted: client_address.TrustedProxies, route: str) -> context.RequestContext:
    headers = request.headers
    if trusted:
        forwarded_for, forwarded_proto = headers.get(hdrs.X_FORWARDED_FOR), headers.get(hdrs.X_FORWARDED_PROTO)
        address = client_address.resolve(request.remote, forwarded_for, forwarded_proto, request.secure, trusted)
        client_ip, secure = address.ip, address.secure
    else:  # no proxy to believe: the peer is the client
        # `scheme` is what `secure` compares, one property look-up less on every request
        client_ip, secure = request.remote or client_address.UNKNOWN, request.scheme == "https"
    return context.RequestContext(  # positional: this runs for every request
        context.accept_or_make_request_id(headers.get(context.REQUEST_ID_HEADER)),
        route,
        client_ip,
        secure,
    )


def stamp(headers: CIMultiDict[str], ctx: context.RequestContext) -> None:
    headers[context.REQUEST_ID_HEADER] = ctx.request_id
    security_headers.apply(headers, secure=ctx.secure, authenticated=ctx.authenticated)
