"""HTTP routes of the local accounts (only when AUTH_LOCAL_ENABLED): login, refresh, logout.

- `POST /v1/auth/login` `{email, password}`: argon2id check (an unknown account is checked against a dummy
  hash: same time, same 401 answer as a wrong password); answers a short-lived access JWT and sets the refresh
  cookie.
- `POST /v1/auth/refresh`: rotates the refresh cookie (the presented token dies). A token presented again
  after its rotation revokes its whole family and answers 401.
- `POST /v1/auth/logout`: revokes the cookie's family and clears the cookie (204, also without a cookie).

The refresh cookie is `HttpOnly`, `SameSite=Lax`, `Secure` by AUTH_COOKIE_SECURE and scoped to `/v1/auth`.
The `auth` rate-limit policy applies per client IP (route policy) and, for login, per account as well.
"""

from __future__ import annotations

import hashlib
import logging
from http.cookies import SimpleCookie
from typing import Any

from aiohttp import web

from gateway import client_address, context, keys, metrics
from gateway.accounts import passwords, store
from gateway.accounts.tokens import local_token_verifier_ctx
from gateway.checkout.validation import Problems, read_json_object, refuse_unknown
from gateway.errors import ApiError, RateLimited, Unauthorized
from gateway.middleware import add_routes
from gateway.ratelimit.policies import Policy, ratelimit_header, retry_after_seconds
from gateway.responses import NO_STORE, json_response
from gateway.routing import route_options
from gateway.settings import Settings

log = logging.getLogger("gateway.accounts")

AUTH_PATH = "/v1/auth"
REFRESH_COOKIE = "gateway_refresh"
MAX_EMAIL_LENGTH = 320
# Refresh tokens are URL-safe base64 (ASCII); a cookie with other bytes is no token of ours.
MAX_REFRESH_TOKEN_LENGTH = 256
_LOGIN_FIELDS = frozenset({"email", "password"})

ACCOUNT_POLICY_NAME = "auth_account"
ACCOUNT_ADDRESS_POLICY_NAME = "auth_account_address"


def _cookie_attributes(settings: Settings) -> dict[str, Any]:
    return {"path": AUTH_PATH, "httponly": True, "samesite": "Lax", "secure": settings.auth_cookie_secure}


def _set_refresh_cookie(response: web.StreamResponse, settings: Settings, token: str) -> None:
    response.set_cookie(
        REFRESH_COOKIE, token, max_age=settings.auth_refresh_token_ttl_seconds, **_cookie_attributes(settings)
    )


def _clearing_cookie_header(settings: Settings) -> str:
    """A Set-Cookie value removing the refresh cookie (for error answers built by the error middleware)."""
    jar: SimpleCookie = SimpleCookie()
    jar[REFRESH_COOKIE] = ""
    morsel = jar[REFRESH_COOKIE]
    morsel["path"] = AUTH_PATH
    morsel["max-age"] = "0"
    morsel["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"
    morsel["httponly"] = True
    morsel["samesite"] = "Lax"
    if settings.auth_cookie_secure:
        morsel["secure"] = True
    return morsel.OutputString()


def _refused(settings: Settings, message: str, code: str) -> Unauthorized:
    exc = Unauthorized(message, code=code)
    exc.headers["Set-Cookie"] = _clearing_cookie_header(settings)
    return exc


def _token_answer(request: web.Request, user_id: str, roles: list[str], refresh: store.IssuedRefresh) -> web.Response:
    issuer = request.app[keys.ACCESS_TOKENS]
    body = {"access_token": issuer.issue(user_id, roles), "token_type": "Bearer", "expires_in": issuer.ttl}
    response = json_response(body, headers=NO_STORE)
    _set_refresh_cookie(response, request.app[keys.SETTINGS], refresh.token)
    return response


def _parse_login(body: dict[str, Any]) -> tuple[str, str]:
    problems = Problems()
    refuse_unknown(body, _LOGIN_FIELDS, problems)
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not 3 <= len(email.strip()) <= MAX_EMAIL_LENGTH or "@" not in email:
        problems.add("email", "required, an e-mail address")
    if not isinstance(password, str) or not 1 <= len(password) <= passwords.MAX_PASSWORD_LENGTH:
        problems.add("password", f"required, a string of at most {passwords.MAX_PASSWORD_LENGTH} characters")
    problems.raise_if_any()
    assert isinstance(email, str) and isinstance(password, str)
    return store.normalise_email(email), password


async def _limit_account(request: web.Request, email: str) -> None:
    """Login attempts per account and client address (RATE_LIMIT_AUTH_MAX), then per account from every address
    together (RATE_LIMIT_AUTH_ACCOUNT_MAX, larger): a stranger guessing from a few addresses exhausts their own
    buckets, not the owner's. The route's policy already counted the client address alone."""
    settings = request.app[keys.SETTINGS]
    limiter = request.app[keys.RATE_LIMITER]
    account = hashlib.sha256(email.encode()).hexdigest()[:32]  # never the e-mail itself
    address = client_address.rate_limit_key(context.get_context(request).client_ip)
    per_address = Policy(ACCOUNT_ADDRESS_POLICY_NAME, settings.rate_limit_auth_max, settings.rate_limit_auth_max)
    per_account = Policy(
        ACCOUNT_POLICY_NAME, settings.rate_limit_auth_account_max, settings.rate_limit_auth_account_max, "user"
    )
    for policy, client, reason in (
        (per_address, f"account:{account}:ip:{address}", "limited_account_address"),
        (per_account, f"account:{account}", "limited_account"),
    ):
        decision = await limiter.check(policy, client)
        if decision is not None and not decision.allowed:
            metrics.LOGIN_FAILURES.labels(reason).inc()
            metrics.RATE_LIMITED.labels(policy.name).inc()
            log.info("Rate limit exceeded", extra={"code": RateLimited.code, "reason": policy.name})
            raise RateLimited(
                headers={
                    "Retry-After": str(retry_after_seconds(decision)),
                    "RateLimit-Policy": policy.policy_header(),
                    "RateLimit": ratelimit_header(policy, decision),
                }
            )


@route_options(rate_limit="auth", auth="none")
async def login(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    try:
        email, password = _parse_login(await read_json_object(request))
    except ApiError:
        metrics.LOGIN_FAILURES.labels("invalid_request").inc()
        raise
    await _limit_account(request, email)
    pool = request.app[keys.DB_POOL]
    async with pool.acquire() as con:
        user = await con.fetchrow(store.FIND_USER, email)
    matches, needs_rehash = await passwords.check_password(user["password_hash"] if user else None, password)
    if user is None or not matches or user["disabled_at"] is not None:
        reason = "unknown_account" if user is None else "wrong_password" if not matches else "disabled_account"
        metrics.LOGIN_FAILURES.labels(reason).inc()
        log.info("login refused", extra={"code": "invalid_credentials", "reason": reason})
        raise Unauthorized("Invalid e-mail or password", code="invalid_credentials")
    user_id: str = user["id"]
    async with pool.acquire() as con:
        if needs_rehash:
            await con.execute(store.UPDATE_PASSWORD_HASH, user_id, await passwords.hash_password(password))
        refresh = await store.start_family(con, user_id, settings.auth_refresh_token_ttl_seconds)
    return _token_answer(request, user_id, list(user["roles"]), refresh)


@route_options(rate_limit="auth", auth="none")
async def refresh(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    token = request.cookies.get(REFRESH_COOKIE)
    if not token or len(token) > MAX_REFRESH_TOKEN_LENGTH or not token.isascii():
        raise _refused(settings, "No refresh token", "refresh_token_missing")
    async with request.app[keys.DB_POOL].acquire() as con:
        ttl = settings.auth_refresh_token_ttl_seconds
        rotation = await store.rotate(con, token, ttl, context.request_id())
    if rotation.state == "reused":
        log.warning("refresh token reuse detected, session revoked", extra={"code": "refresh_token_reused"})
        raise _refused(settings, "This refresh token was already used; the session is revoked", "refresh_token_reused")
    if rotation.state != "rotated" or rotation.issued is None or rotation.user_id is None:
        raise _refused(settings, "The refresh token is not valid", "refresh_token_invalid")
    return _token_answer(request, rotation.user_id, list(rotation.roles), rotation.issued)


@route_options(rate_limit="auth", auth="none")
async def logout(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    token = request.cookies.get(REFRESH_COOKIE)
    if token and len(token) <= MAX_REFRESH_TOKEN_LENGTH and token.isascii():
        async with request.app[keys.DB_POOL].acquire() as con:
            await store.revoke(con, token, "logout")
    response = web.Response(status=204, headers={"Cache-Control": "no-store"})
    response.headers["Set-Cookie"] = _clearing_cookie_header(settings)
    return response


def register(app: web.Application) -> None:
    settings = app[keys.SETTINGS]
    if not settings.auth_local_enabled:
        return
    # Wraps the verifier made by token_verifier_ctx (added to cleanup_ctx before the routes are registered).
    app.cleanup_ctx.append(local_token_verifier_ctx)
    add_routes(
        app,
        [
            web.post(f"{AUTH_PATH}/login", login, name="auth_login"),
            web.post(f"{AUTH_PATH}/refresh", refresh, name="auth_refresh"),
            web.post(f"{AUTH_PATH}/logout", logout, name="auth_logout"),
        ],
    )
