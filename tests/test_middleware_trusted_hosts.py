"""Trusted hosts: exact names, `*.example.com` wildcards, port ignored, IPv6 literals; anything else: 400 JSON
`invalid_host` before any route runs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from gateway.middleware.trusted_hosts import HostMatcher, trusted_hosts_middleware
from tests.conftest import make_settings
from tests.platform_app import tiny_app

PATTERNS = ("api.shop.test", "*.example.com", "127.0.0.1", "::1", "LocalHost")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("api.shop.test", True),
        ("API.Shop.Test", True),
        ("api.shop.test:8443", True),
        ("localhost", True),
        ("localhost:8080", True),
        ("a.example.com", True),
        ("deep.a.example.com", True),
        ("a.example.com:443", True),
        ("example.com", False),  # the wildcard needs a label before it
        (".example.com", False),
        ("evilexample.com", False),
        ("a.example.com.evil.test", False),
        ("example.com.evil.test", False),
        ("shop.test", False),
        ("api.shop.test.evil.test", False),
        ("127.0.0.1", True),
        ("127.0.0.1:8080", True),
        ("127.0.0.2", False),
        ("[::1]", True),
        ("[::1]:8080", True),
        ("::1", False),  # an IPv6 Host must be bracketed: "::1" could be a host and a port
        ("localhost:evil.example", False),  # one host, then a numeric port only
        ("localhost:", False),
        ("localhost:99999", False),
        ("127.0.0.1:8080:1", False),
        ("[::1]evil", False),
        ("[::1]:80:80", False),
        ("local host", False),
        ("[0:0:0:0:0:0:0:1]", True),
        ("[::2]:8080", False),
        ("", False),
        (None, False),
        ("api.shop.test@evil.test", False),
        ("evil.test#api.shop.test", False),
        ("api.shop.test:80:80", False),
    ],
)
def test_matcher(host: str | None, allowed: bool) -> None:
    assert HostMatcher(PATTERNS).allows(host) is allowed


def test_star_allows_everything() -> None:
    assert HostMatcher(("*",)).allows("anything.test")


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    settings = make_settings(TRUSTED_HOSTS=",".join(PATTERNS))
    calls: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(request.host)
        return web.json_response({"host": request.host})

    app = tiny_app(
        settings,
        [web.get("/", handler), web.post("/", handler)],
        [trusted_hosts_middleware(settings)],
    )
    client = await aiohttp_client(app)
    client.calls = calls
    return client


@pytest.mark.parametrize("host", ["api.shop.test", "a.example.com:8080", "[::1]:9000", "127.0.0.1"])
async def test_allowed_hosts_reach_the_handler(client: Any, host: str) -> None:
    response = await client.get("/", headers={"Host": host})
    assert response.status == 200
    assert (await response.json())["host"] == host


@pytest.mark.parametrize(
    "host",
    [
        "evil.test",
        "example.com",
        "evilexample.com",
        "a.example.com.evil.test",
        "[::2]",
        "api.shop.test.",
        "api.shop.test\t.evil",
    ],
)
async def test_other_hosts_are_refused_with_json(client: Any, host: str) -> None:
    response = await client.post("/", headers={"Host": host}, data=b"{}")
    assert response.status == 400
    body = await response.json()
    assert body["error"]["code"] == "invalid_host"
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    assert client.calls == []


async def test_forwarded_host_headers_do_not_override_host(client: Any) -> None:
    response = await client.get(
        "/",
        headers={"Host": "evil.test", "X-Forwarded-Host": "api.shop.test", "Forwarded": "host=api.shop.test"},
    )
    assert response.status == 400
    response = await client.get("/", headers={"Host": "api.shop.test", "X-Forwarded-Host": "evil.test"})
    assert response.status == 200


async def test_absolute_form_target_does_not_bypass_the_host_check(client: Any) -> None:
    """`GET http://api.shop.test/ HTTP/1.1` with `Host: evil.test`: the Host header is what is checked."""
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"GET http://api.shop.test/ HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    status_line = raw.split(b"\r\n", 1)[0]
    assert b" 400 " in status_line, raw
    assert client.calls == []


async def test_duplicate_host_headers_are_refused(client: Any) -> None:
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: evil.test\r\nHost: api.shop.test\r\nConnection: close\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    assert b" 400 " in raw.split(b"\r\n", 1)[0], raw
    assert client.calls == []


async def test_missing_host_is_refused(client: Any) -> None:
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    assert b" 400 " in raw.split(b"\r\n", 1)[0], raw
    assert b"invalid_host" in raw
    assert client.calls == []


async def test_probes_answer_any_host_but_other_routes_do_not(aiohttp_client: Any, app_factory: Any) -> None:
    """The kubelet probes with the pod IP as Host: /health and /ready are exempt, nothing else is."""
    client = await aiohttp_client(app_factory(TRUSTED_HOSTS="pay.example.com"))

    health = await client.get("/health", headers={"Host": "10.1.2.3:8080"})
    webhook = await client.post("/stripe/webhook", data=b"{}", headers={"Host": "10.1.2.3:8080"})

    assert health.status == 200
    assert webhook.status == 400
    assert (await webhook.json())["error"]["code"] == "invalid_host"
