"""Who is calling: the verified bearer token of a request, checked once per request.

The rate limiter (per-user policies) asks `identify()` before the auth middleware runs; both read the same
`TokenCheck` cached on the request's context, so a token is verified at most once per request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from gateway import context, keys
from gateway.auth.tokens import Identity, KeySourceUnavailable, TokenRejected

log = logging.getLogger("gateway.auth")

TokenState = Literal["absent", "valid", "invalid", "unavailable"]

# Fallback cache for requests without a RequestContext (the request id middleware normally makes one).
_CHECK_KEY = web.RequestKey("token_check", object)


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """The outcome of looking at a request's bearer token.

    absent: no bearer token; valid: `identity` is set; invalid: `reason` / `message` say why (safe to log and
    show, never the token); unavailable: the key source (JWKS) could not be reached.
    """

    state: TokenState
    identity: Identity | None = None
    reason: str | None = None
    message: str | None = None


ABSENT = TokenCheck("absent")


def bearer_token(request: web.Request) -> str | None:
    """The bearer token of the Authorization header: None when there is none, "" when it is malformed."""
    values = request.headers.getall("Authorization", [])
    if not values:
        return None
    if len(values) > 1:
        return ""
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return None  # another scheme (Basic ...): no bearer credentials
    return token.strip()


async def check_token(request: web.Request) -> TokenCheck:
    """Verify the request's bearer token once; later calls for the same request return the cached outcome."""
    ctx: context.RequestContext | None = request.get(context.CONTEXT_KEY)
    if ctx is not None and ctx.token_check is not None:
        return ctx.token_check
    cached = request.get(_CHECK_KEY)
    if isinstance(cached, TokenCheck):
        return cached
    check = await _check(request)
    if ctx is not None:
        ctx.token_check = check
    else:
        request[_CHECK_KEY] = check
    return check


async def _check(request: web.Request) -> TokenCheck:
    token = bearer_token(request)
    if token is None:
        return ABSENT
    verifier = request.config_dict.get(keys.TOKEN_VERIFIER)
    if verifier is None:
        log.error("no token verifier configured", extra={"reason": "missing_verifier"})
        return TokenCheck("unavailable", reason="missing_verifier")
    try:
        identity = await verifier.verify(token)
    except TokenRejected as exc:
        log.info("bearer token rejected", extra={"reason": exc.reason})
        return TokenCheck("invalid", reason=exc.reason, message=exc.message)
    except KeySourceUnavailable:
        return TokenCheck("unavailable", reason="jwks_unavailable")
    except Exception:
        # identify() never raises; the verifier never puts the token in an exception message.
        log.exception("bearer token verification failed", extra={"reason": "verifier_error"})
        return TokenCheck("invalid", reason="verifier_error", message="The access token is invalid")
    return TokenCheck("valid", identity=identity)


async def identify(request: web.Request) -> str | None:
    """The verified user id (`sub`) of the request's bearer token, or None; never raises."""
    try:
        check = await check_token(request)
    except Exception:
        log.exception("identify failed", extra={"reason": "identify_error"})
        return None
    return check.identity.user_id if check.identity is not None else None
