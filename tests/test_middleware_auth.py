"""The auth middleware on tiny apps: 401/403 shapes and headers, optional auth, roles, identify() once."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Handler

from gateway import context, keys
from gateway.auth.identity import identify
from gateway.auth.tokens import Identity, TokenVerifier, token_verifier_ctx
from gateway.middleware.auth import auth_middleware
from gateway.routing import route_options
from gateway.settings import Settings
from tests.conftest import make_settings
from tests.platform_app import tiny_app
from tests.test_auth_jwt import JwksServer, claims, es256, hs256, hs256_with_rsa_public_key, rs256

# jwks_server is a fixture of the verifier tests
from tests.test_auth_jwt import jwks_server as jwks_server

REQUEST_ID = "req-0123456789abcdef"

ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def _who(request: web.Request) -> dict[str, Any]:
    ctx = context.get_context(request)
    return {"user": ctx.user_id, "roles": sorted(ctx.roles), "authenticated": ctx.authenticated}


@route_options(auth="none")
async def public(request: web.Request) -> web.Response:
    return web.json_response(_who(request))


@route_options(auth="optional")
async def optional(request: web.Request) -> web.Response:
    return web.json_response(_who(request))


@route_options(auth="user")
async def user_only(request: web.Request) -> web.Response:
    body = _who(request)
    body["identified"] = await identify(request)
    return web.json_response(body)


@route_options(auth="role", role="admin")
async def admin_only(request: web.Request) -> web.Response:
    return web.json_response(_who(request))


def build_app(settings: Settings, *, before_auth: list[Any] | None = None) -> web.Application:
    app = tiny_app(
        settings,
        [
            web.get("/public", public),
            web.get("/optional", optional),
            web.get("/me", user_only),
            web.get("/admin", admin_only),
        ],
        [*(before_auth or []), auth_middleware()],
    )
    app.cleanup_ctx.append(token_verifier_ctx)
    return app


@pytest.fixture
def make_client(aiohttp_client: ClientFactory) -> MakeClient:
    async def factory(settings: Settings | None = None, **kwargs: Any) -> TestClient[web.Request, web.Application]:
        return await aiohttp_client(build_app(settings or make_settings(), **kwargs))

    return factory


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Request-ID": REQUEST_ID}


async def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "request_id"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    return dict(body["error"])


# ---------------------------------------------------------------- 401


async def test_missing_token_is_401_with_bearer_challenge(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/me", headers={"X-Request-ID": REQUEST_ID})
    error = await assert_error(response, 401, "unauthorized")
    assert error["request_id"] == REQUEST_ID
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'


async def test_other_scheme_counts_as_missing(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    await assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer not.a.jwt", "bearer abc"])
async def test_malformed_token_is_invalid_token(make_client: MakeClient, value: str) -> None:
    client = await make_client()
    response = await client.get("/me", headers={"Authorization": value})
    await assert_error(response, 401, "invalid_token")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


async def test_expired_token_is_401(make_client: MakeClient) -> None:
    import time

    now = int(time.time())
    client = await make_client()
    response = await client.get("/me", headers=bearer(hs256(claims(iat=now - 900, exp=now - 600))))
    error = await assert_error(response, 401, "invalid_token")
    assert error["message"] == "The access token has expired"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="gateway", error="invalid_token"'


@pytest.mark.parametrize(
    "bad",
    [
        claims(iss="https://evil.test"),
        claims(aud="someone-else"),
        claims(sub=None),
        claims(exp=None),
    ],
    ids=["wrong-iss", "wrong-aud", "no-sub", "no-exp"],
)
async def test_invalid_claims_are_401(make_client: MakeClient, bad: dict[str, Any]) -> None:
    client = await make_client()
    response = await client.get("/me", headers=bearer(hs256(bad)))
    await assert_error(response, 401, "invalid_token")


async def test_token_is_not_logged(make_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    client = await make_client()
    token = hs256(claims(aud="someone-else"))
    with caplog.at_level(logging.DEBUG):
        response = await client.get("/me", headers=bearer(token))
    assert response.status == 401
    assert "bearer token rejected" in caplog.text
    for record in caplog.records:
        assert token not in record.getMessage()
        assert all(token not in str(value) for value in record.__dict__.values())


# ---------------------------------------------------------------- success, roles


async def test_valid_hs256_sets_the_context(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/me", headers=bearer(hs256(claims(roles=["buyer"]))))
    assert response.status == 200
    assert await response.json() == {
        "user": "user-1",
        "roles": ["buyer"],
        "authenticated": True,
        "identified": "user-1",
    }


async def test_public_route_ignores_tokens(make_client: MakeClient) -> None:
    client = await make_client()
    for headers in ({}, bearer("garbage"), bearer(hs256(claims()))):
        response = await client.get("/public", headers=headers)
        assert response.status == 200
        assert (await response.json())["authenticated"] is False


async def test_role_present_and_missing(make_client: MakeClient) -> None:
    client = await make_client()
    ok = await client.get("/admin", headers=bearer(hs256(claims(roles=["admin"]))))
    assert ok.status == 200
    assert (await ok.json())["roles"] == ["admin"]

    single = await client.get("/admin", headers=bearer(hs256(claims(roles="admin"))))
    assert single.status == 200

    denied = await client.get("/admin", headers=bearer(hs256(claims(roles=["buyer"]))))
    await assert_error(denied, 403, "forbidden")
    assert 'error="insufficient_scope"' in denied.headers["WWW-Authenticate"]

    no_roles = await client.get("/admin", headers=bearer(hs256(claims())))
    await assert_error(no_roles, 403, "forbidden")

    anonymous = await client.get("/admin")
    await assert_error(anonymous, 401, "unauthorized")

    invalid = await client.get("/admin", headers=bearer(hs256(claims(roles=["admin"], aud="x"))))
    await assert_error(invalid, 401, "invalid_token")


async def test_nested_roles_claim(make_client: MakeClient) -> None:
    client = await make_client(make_settings(JWT_ROLES_CLAIM="app_metadata.roles"))
    nested = hs256(claims(app_metadata={"roles": ["admin"]}))
    top_level = hs256(claims(roles=["admin"]))
    assert (await client.get("/admin", headers=bearer(nested))).status == 200
    await assert_error(await client.get("/admin", headers=bearer(top_level)), 403, "forbidden")


async def test_supabase_style_token(make_client: MakeClient) -> None:
    settings = make_settings(
        JWT_ISSUER="https://abcd.supabase.co/auth/v1",
        JWT_AUDIENCE="authenticated",
        JWT_ROLES_CLAIM="app_metadata.roles",
    )
    client = await make_client(settings)
    token = hs256(
        claims(
            sub="8f14e45f-ceea-467f-a0e4-3f1d9b2f5c11",
            iss="https://abcd.supabase.co/auth/v1",
            aud="authenticated",
            role="authenticated",
            app_metadata={"provider": "email", "providers": ["email"], "roles": ["admin"]},
        )
    )
    response = await client.get("/admin", headers=bearer(token))
    assert response.status == 200
    assert (await response.json())["user"] == "8f14e45f-ceea-467f-a0e4-3f1d9b2f5c11"


async def test_rs256_and_es256_via_jwks(make_client: MakeClient, jwks_server: JwksServer) -> None:
    settings = make_settings(JWT_ALGORITHMS="HS256,RS256,ES256", JWT_JWKS_URL=jwks_server.url)
    client = await make_client(settings)
    for token in (rs256(claims(roles=["admin"])), es256(claims(roles=["admin"]))):
        assert (await client.get("/admin", headers=bearer(token))).status == 200
    assert jwks_server.fetches == 1

    forged = hs256_with_rsa_public_key(claims(roles=["admin"]))
    await assert_error(await client.get("/admin", headers=bearer(forged)), 401, "invalid_token")

    unknown = rs256(claims(), kid="rsa-9")
    for _ in range(3):
        await assert_error(await client.get("/me", headers=bearer(unknown)), 401, "invalid_token")
    assert jwks_server.fetches == 2  # one refetch for the unknown kid, then the cooldown


async def test_jwks_down_is_503(make_client: MakeClient, jwks_server: JwksServer) -> None:
    jwks_server.status = 503
    settings = make_settings(JWT_ALGORITHMS="HS256,RS256", JWT_JWKS_URL=jwks_server.url)
    client = await make_client(settings)
    response = await client.get("/me", headers=bearer(rs256(claims())))
    await assert_error(response, 503, "service_unavailable")
    assert "Retry-After" in response.headers
    # HMAC tokens still work
    assert (await client.get("/me", headers=bearer(hs256(claims())))).status == 200


# ---------------------------------------------------------------- optional


async def test_optional_auth(make_client: MakeClient) -> None:
    client = await make_client()
    anonymous = await client.get("/optional")
    assert anonymous.status == 200
    assert await anonymous.json() == {"user": None, "roles": [], "authenticated": False}

    signed_in = await client.get("/optional", headers=bearer(hs256(claims(sub="u-7"))))
    assert signed_in.status == 200
    assert (await signed_in.json())["user"] == "u-7"

    invalid = await client.get("/optional", headers=bearer(hs256(claims(aud="nope"))))
    await assert_error(invalid, 401, "invalid_token")
    assert 'error="invalid_token"' in invalid.headers["WWW-Authenticate"]


# ---------------------------------------------------------------- identify(): once per request, never raises


def counting(verifier: TokenVerifier) -> list[int]:
    calls = [0]
    original = verifier.verify

    async def verify(token: str) -> Identity:
        calls[0] += 1
        return await original(token)

    verifier.verify = verify  # type: ignore[method-assign]
    return calls


async def test_identify_before_auth_verifies_once(make_client: MakeClient) -> None:
    seen: list[str | None] = []

    @web.middleware
    async def fake_rate_limiter(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append(await identify(request))
        seen.append(await identify(request))
        return await handler(request)

    client = await make_client(before_auth=[fake_rate_limiter])
    calls = counting(client.app[keys.TOKEN_VERIFIER])

    response = await client.get("/me", headers=bearer(hs256(claims(sub="u-1"))))
    assert response.status == 200
    assert (await response.json())["identified"] == "u-1"
    assert seen == ["u-1", "u-1"]
    assert calls[0] == 1

    # an invalid token: identify() answers None, the middleware still answers 401, one verification
    response = await client.get("/me", headers=bearer(hs256(claims(aud="nope"))))
    assert response.status == 401
    assert seen[-2:] == [None, None]
    assert calls[0] == 2

    # no token: nothing to verify
    response = await client.get("/me")
    assert response.status == 401
    assert seen[-2:] == [None, None]
    assert calls[0] == 2


async def test_identify_never_raises(make_client: MakeClient) -> None:
    seen: list[str | None] = []

    @web.middleware
    async def fake_rate_limiter(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append(await identify(request))
        return await handler(request)

    client = await make_client(before_auth=[fake_rate_limiter])

    async def broken(token: str) -> Identity:
        raise RuntimeError("verifier bug")

    client.app[keys.TOKEN_VERIFIER].verify = broken  # type: ignore[method-assign]
    response = await client.get("/me", headers=bearer(hs256(claims())))
    assert seen == [None]
    await assert_error(response, 401, "invalid_token")


async def test_identify_without_context_or_token() -> None:
    from aiohttp.test_utils import make_mocked_request

    request = make_mocked_request("GET", "/", headers={})
    assert await identify(request) is None
