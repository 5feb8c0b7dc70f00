"""Security headers on every answer (200, 404, 500, refusals); HSTS only over HTTPS (direct TLS or a trusted
proxy's
X-Forwarded-Proto); Cache-Control no-store on authenticated answers; the Server header names no software."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from gateway.auth.tokens import token_verifier_ctx
from gateway.ratelimit.limiter import rate_limiter_ctx
from gateway.routing import route_options
from gateway.security_headers import HSTS, STATIC_HEADERS
from gateway.settings import Settings
from tests.conftest import make_settings
from tests.platform_app import tiny_app
from tests.test_auth_jwt import claims, hs256

EXPECTED = {name: value for name, value in STATIC_HEADERS.items() if name != "Server"}


@route_options(rate_limit=None, cors=False)
async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@route_options(rate_limit=None, cors=False)
async def cacheable(request: web.Request) -> web.Response:
    return web.json_response({"catalog": []}, headers={"Cache-Control": "public, max-age=60"})


@route_options(rate_limit=None, cors=False, auth="optional")
async def maybe_me(request: web.Request) -> web.Response:
    return web.json_response({"me": True}, headers={"Cache-Control": "public, max-age=60"})


@route_options(rate_limit=None, cors=False)
async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("unexpected")


def build(settings: Settings) -> web.Application:
    app = tiny_app(
        settings,
        [
            web.get("/ok", ok),
            web.get("/cacheable", cacheable),
            web.get("/me", maybe_me),
            web.get("/boom", boom),
        ],
    )
    app.cleanup_ctx.extend([rate_limiter_ctx, token_verifier_ctx])
    return app


def assert_security_headers(response: Any) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (name, response.status)
    assert "Origin" in response.headers["Vary"]
    server = response.headers.get("Server", "")
    assert "aiohttp" not in server.lower() and "python" not in server.lower()


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    return await aiohttp_client(build(make_settings(TRUSTED_PROXIES="127.0.0.1/32")))


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/ok", {}, 200),
        ("GET", "/nowhere", {}, 404),
        ("POST", "/ok", {}, 405),
        ("GET", "/boom", {}, 500),
        ("GET", "/ok", {"Host": "evil.example"}, 400),
        ("GET", "/me", {"Authorization": "Bearer not-a-token"}, 401),
    ],
)
async def test_every_answer_carries_the_headers(
    client: Any, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    response = await client.request(method, path, headers=headers)
    assert response.status == status
    assert_security_headers(response)
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP


async def test_the_real_app_answers_carry_them(aiohttp_client: Any, app_factory: Any) -> None:
    client = await aiohttp_client(app_factory())
    for path, status in (("/health", 200), ("/nowhere", 404)):
        response = await client.get(path)
        assert response.status == status
        assert_security_headers(response)


async def test_hsts_when_a_trusted_proxy_says_https(client: Any) -> None:
    for path in ("/ok", "/nowhere", "/boom"):
        response = await client.get(path, headers={"X-Forwarded-Proto": "https"})
        assert response.headers["Strict-Transport-Security"] == HSTS


async def test_no_hsts_when_the_proxy_says_http(client: Any) -> None:
    response = await client.get("/ok", headers={"X-Forwarded-Proto": "http"})
    assert "Strict-Transport-Security" not in response.headers


async def test_no_hsts_when_an_untrusted_peer_says_https(aiohttp_client: Any) -> None:
    # The test client connects from 127.0.0.1, which is not in this proxy list: its header is not believed.
    client = await aiohttp_client(build(make_settings(TRUSTED_PROXIES="10.0.0.0/8")))
    response = await client.get("/ok", headers={"X-Forwarded-Proto": "https"})
    assert response.status == 200
    assert "Strict-Transport-Security" not in response.headers
    client2 = await aiohttp_client(build(make_settings()))  # no proxies at all
    response = await client2.get("/ok", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in response.headers


async def test_cache_control_no_store_by_default(client: Any) -> None:
    response = await client.get("/ok")
    assert response.headers["Cache-Control"] == "no-store"
    response = await client.get("/nowhere")
    assert response.headers["Cache-Control"] == "no-store"


async def test_a_public_answer_may_choose_its_cache_policy(client: Any) -> None:
    response = await client.get("/cacheable")
    assert response.headers["Cache-Control"] == "public, max-age=60"
    response = await client.get("/me")  # anonymous
    assert response.headers["Cache-Control"] == "public, max-age=60"


async def test_authenticated_answers_are_never_stored(client: Any) -> None:
    response = await client.get("/me", headers={"Authorization": f"Bearer {hs256(claims())}"})
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"


async def test_vary_keeps_existing_values(aiohttp_client: Any) -> None:
    @route_options(rate_limit=None, cors=False)
    async def varied(request: web.Request) -> web.Response:
        return web.json_response({}, headers={"Vary": "Accept-Encoding"})

    settings = make_settings()
    app = tiny_app(settings, [web.get("/varied", varied)])
    app.cleanup_ctx.extend([rate_limiter_ctx, token_verifier_ctx])
    client = await aiohttp_client(app)
    response = await client.get("/varied")
    vary = [v.strip() for v in response.headers["Vary"].split(",")]
    assert vary == ["Accept-Encoding", "Origin"]
