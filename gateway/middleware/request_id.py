"""Outermost: give the request its id and context (client address included) and echo the id on the answer."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway import client_address, context
from gateway.routing import route_label
from gateway.settings import Settings


def request_id_middleware(settings: Settings) -> Middleware:
    trusted = client_address.parse_networks(settings.trusted_proxies)

    @web.middleware
    async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
        address = client_address.resolve(
            request.remote,
            request.headers.get("X-Forwarded-For"),
            request.headers.get("X-Forwarded-Proto"),
            request.secure,
            trusted,
        )
        ctx = context.RequestContext(
            request_id=context.accept_or_make_request_id(request.headers.get(context.REQUEST_ID_HEADER)),
            route=route_label(request),
            client_ip=address.ip,
            client_key=client_address.rate_limit_key(address.ip),
            secure=address.secure,
        )
        request[context.CONTEXT_KEY] = ctx
        token = context.current.set(ctx)
        try:
            response = await handler(request)
            response.headers[context.REQUEST_ID_HEADER] = ctx.request_id
            return response
        except web.HTTPException as exc:  # redirects (< 400) pass the error mapper as exceptions
            exc.headers[context.REQUEST_ID_HEADER] = ctx.request_id
            raise
        finally:
            context.current.reset(token)

    return request_id
