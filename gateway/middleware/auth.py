"""Per-route authentication from `@route_options(auth=..., role=...)`.

- "none": nothing is checked;
- "optional": a valid bearer token sets the user, no token passes, an invalid token is 401;
- "user": a valid bearer token is required (401 otherwise);
- "role": a valid bearer token carrying `role` is required (401 without a valid token, 403 without the role).

The token is verified once per request (`gateway.auth.identity.check_token`), so a rate limiter that already
asked `identify()` costs no second verification. 401 answers carry `WWW-Authenticate` (RFC 6750): without
credentials no error code, with bad credentials `error="invalid_token"`.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway import context
from gateway.auth.identity import check_token
from gateway.errors import Forbidden, ServiceUnavailable, Unauthorized
from gateway.input_rules import refuse_unstorable
from gateway.routing import options_for

REALM = "gateway"


def _missing_token() -> Unauthorized:
    exc = Unauthorized("Authentication required", code="unauthorized")
    exc.headers["WWW-Authenticate"] = f'Bearer realm="{REALM}"'
    return exc


def _invalid_token(message: str | None) -> Unauthorized:
    exc = Unauthorized(message or "The access token is invalid", code="invalid_token")
    exc.headers["WWW-Authenticate"] = f'Bearer realm="{REALM}", error="invalid_token"'
    return exc


def auth_middleware() -> Middleware:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        options = options_for(request)
        if options.auth == "none":
            return await handler(request)

        check = await check_token(request)
        if check.state == "absent":
            if options.auth == "optional":
                return await handler(request)
            raise _missing_token()
        if check.state == "unavailable":
            raise ServiceUnavailable("Authentication is temporarily unavailable", headers={"Retry-After": "5"})
        identity = check.identity
        if check.state != "valid" or identity is None:
            raise _invalid_token(check.message)
        refuse_unstorable(identity.user_id, "sub")  # a NUL in a signed subject: 422 before any query

        ctx: context.RequestContext | None = request.get(context.CONTEXT_KEY)
        if ctx is not None:
            ctx.user_id = identity.user_id
            ctx.roles = identity.roles
            ctx.authenticated = True
        if options.auth == "role" and options.role not in identity.roles:
            raise Forbidden(
                "This action needs another role",
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope"'},
            )
        return await handler(request)

    return auth
