"""Outermost: give the request its id and context (client address included); stamp every answer with the id and
the security headers."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict

from gateway import client_address, context
from gateway.middleware import security_headers
from gateway.routing import route_label
from gateway.settings import Settings


def _stamp(headers: CIMultiDict[str], ctx: context.RequestContext) -> None:
    headers[context.REQUEST_ID_HEADER] = ctx.request_id
    security_headers.apply(headers, secure=ctx.secure, authenticated=ctx.authenticated)


def request_id_middleware(settings: Settings) -> Middleware:
    trusted = client_address.parse_networks(settings.trusted_proxies)

    @web.middleware
    async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
        headers = request.headers
        if trusted:
            forwarded_for, forwarded_proto = headers.get("X-Forwarded-For"), headers.get("X-Forwarded-Proto")
            address = client_address.resolve(request.remote, forwarded_for, forwarded_proto, request.secure, trusted)
            client_ip, secure = address.ip, address.secure
        else:  # no proxy to believe: the peer is the client
            client_ip, secure = request.remote or client_address.UNKNOWN, request.secure
        ctx = context.RequestContext(
            request_id=context.accept_or_make_request_id(headers.get(context.REQUEST_ID_HEADER)),
            route=route_label(request),
            client_ip=client_ip,
            client_key=client_address.rate_limit_key(client_ip),
            secure=secure,
        )
        request[context.CONTEXT_KEY] = ctx
        token = context.current.set(ctx)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # redirects (< 400) pass the error mapper as exceptions
            _stamp(exc.headers, ctx)
            raise
        finally:
            context.current.reset(token)
        if not response.prepared:
            _stamp(response.headers, ctx)
        return response

    return request_id
