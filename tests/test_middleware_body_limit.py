"""Body limits: JSON routes JSON_BODY_LIMIT, the webhook its raw WEBHOOK_BODY_LIMIT; over it: 413 JSON, from
Content-Length before anything is read, or while reading a chunked body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.middleware import add_routes
from gateway.middleware.body_limit import body_limit_middleware
from gateway.routing import route_options
from tests.conftest import make_settings
from tests.platform_app import tiny_app

JSON_LIMIT = 1000
RAW_LIMIT = 5000


async def chunked(total: int, size: int = 256) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b"a" * piece


def json_of_size(size: int) -> bytes:
    """A JSON document of exactly `size` bytes."""
    skeleton = orjson.dumps({"pad": ""})
    return orjson.dumps({"pad": "x" * (size - len(skeleton))})


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    settings = make_settings(JSON_BODY_LIMIT=JSON_LIMIT, WEBHOOK_BODY_LIMIT=RAW_LIMIT)
    calls: list[str] = []

    async def json_route(request: web.Request) -> web.Response:
        calls.append("json")
        body = await request.json()
        return web.json_response({"size": len(orjson.dumps(body))})

    @route_options(body="raw", rate_limit=None, cors=False)
    async def raw_route(request: web.Request) -> web.Response:
        calls.append("raw")
        return web.json_response({"size": len(await request.read())})

    app = tiny_app(
        settings,
        [web.post("/json", json_route), web.post("/raw", raw_route)],
        [body_limit_middleware(settings)],
        client_max_size=max(JSON_LIMIT, RAW_LIMIT),
    )
    client = await aiohttp_client(app)
    client.calls = calls
    return client


def assert_413(body: Any, response: Any) -> None:
    assert body["error"]["code"] == "payload_too_large"
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]


async def test_json_at_the_limit_passes(client: Any) -> None:
    response = await client.post("/json", data=json_of_size(JSON_LIMIT), headers={"Content-Type": "application/json"})
    assert response.status == 200
    assert (await response.json())["size"] == JSON_LIMIT


async def test_json_over_the_limit_with_content_length_is_refused_unread(client: Any) -> None:
    response = await client.post("/json", data=json_of_size(JSON_LIMIT + 1))
    assert response.status == 413
    assert response.content_type == "application/json"
    assert_413(await response.json(), response)
    assert client.calls == []  # refused before the handler (and before the body was read)


async def test_refused_from_the_header_alone(client: Any) -> None:
    """The answer comes although the client never sends the announced body: nothing was read."""
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            b"POST /json HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert b"application/json" in head
    assert client.calls == []


async def test_chunked_json_over_the_limit_is_refused(client: Any) -> None:
    response = await client.post("/json", data=chunked(JSON_LIMIT * 3), headers={"Content-Type": "application/json"})
    assert response.status == 413
    assert response.content_type == "application/json"
    assert_413(await response.json(), response)


async def test_chunked_json_under_the_limit_passes(client: Any) -> None:
    body = json_of_size(JSON_LIMIT)

    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 100):
            yield body[i : i + 100]

    response = await client.post("/json", data=gen(), headers={"Content-Type": "application/json"})
    assert response.status == 200


async def test_raw_route_has_its_own_limit(client: Any) -> None:
    response = await client.post("/raw", data=b"r" * (JSON_LIMIT * 3))  # over the JSON limit, under the raw one
    assert response.status == 200
    assert (await response.json())["size"] == JSON_LIMIT * 3
    response = await client.post("/raw", data=b"r" * RAW_LIMIT)
    assert response.status == 200
    response = await client.post("/raw", data=b"r" * (RAW_LIMIT + 1))
    assert response.status == 413
    assert_413(await response.json(), response)
    response = await client.post("/raw", data=chunked(RAW_LIMIT + 500))
    assert response.status == 413
    assert_413(await response.json(), response)


# ------------------------------------------------------------------------------------- the real application


async def echo_size(request: web.Request) -> web.Response:
    return web.json_response({"size": len(orjson.dumps(await request.json()))})


@pytest.fixture
async def real_client(aiohttp_client: Any, app_factory: Any) -> Any:
    app = app_factory()  # defaults: JSON_BODY_LIMIT 100 KB, WEBHOOK_BODY_LIMIT 512 KB
    add_routes(app, [web.post("/test-only/echo", echo_size)])  # a plain JSON route with the default options
    return await aiohttp_client(app)


async def test_real_app_webhook_over_its_raw_limit(real_client: Any) -> None:
    response = await real_client.post(
        "/stripe/webhook", data=b"{" + b" " * 600_000 + b"}", headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert response.status == 413
    assert_413(await response.json(), response)
    response = await real_client.post(
        "/stripe/webhook", data=chunked(600_000, 65536), headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert response.status == 413
    assert_413(await response.json(), response)


async def test_real_app_webhook_under_its_raw_limit_reaches_the_signature_check(real_client: Any) -> None:
    response = await real_client.post(
        "/stripe/webhook", data=b"{" + b" " * 200_000 + b"}", headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert response.status == 400  # over the JSON limit, under the webhook's: the signature is what fails
    assert (await response.json())["error"]["code"] == "invalid_signature"


async def test_real_app_json_route_limits(real_client: Any) -> None:
    response = await real_client.post(
        "/test-only/echo", data=json_of_size(150 * 1024), headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    assert_413(await response.json(), response)
    response = await real_client.post(
        "/test-only/echo", data=chunked(150 * 1024, 8192), headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    response = await real_client.post(
        "/test-only/echo", data=json_of_size(50 * 1024), headers={"Content-Type": "application/json"}
    )
    assert response.status == 200
    assert (await response.json())["size"] == 50 * 1024


async def test_real_app_unknown_route_with_a_huge_body(real_client: Any) -> None:
    response = await real_client.post("/nowhere", data=b"x" * (150 * 1024))
    assert response.status == 413  # the JSON limit applies to unmatched routes too
    response = await real_client.post("/nowhere", data=b"x" * 1024)
    assert response.status == 404
