"""Issue 21, item 5 (edge) and the webhook side of item 4, through the real app and raw sockets: strict Host,
absolute-form targets, `100 Continue` only after the size and auth checks, no replaced router method, unsigned
webhook deliveries in their own metric."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from tests.fakes.stripe_api import FakeStripe
from tests.test_auth_jwt import claims, hs256
from tests.test_checkout import checkout_app_overrides
from tests.test_protocol_errors import assert_gateway_error, exchange


@pytest.fixture
async def server(aiohttp_server: Any, app_factory: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe) -> Any:
    return await aiohttp_server(app_factory(**checkout_app_overrides(fake_stripe, JSON_BODY_LIMIT=1000)))


def request(target: str, host: bytes = b"localhost", *extra: bytes, body: bytes = b"") -> bytes:
    head = [f"{target} HTTP/1.1".encode(), b"Host: " + host, b"Connection: close", *extra]
    if body:
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


# ------------------------------------------------------------------ Host


@pytest.mark.parametrize(
    "host", [b"localhost:evil.example", b"localhost:80:80", b"::1", b"localhost:", b"localhost:99999", b"local host"]
)
async def test_a_host_header_that_is_not_one_host_and_a_numeric_port_is_refused(server: Any, host: bytes) -> None:
    status, headers, body = await exchange(server.port, request("GET /v1/products", host))
    assert_gateway_error(status, headers, body, expected=400, code="invalid_host")


async def test_a_trusted_host_with_a_port_is_served(server: Any) -> None:
    for host in (b"localhost:8080", b"[::1]:8080", b"127.0.0.1"):
        status, _, _ = await exchange(server.port, request("GET /v1/products", host))
        assert status == 200, host


# ------------------------------------------------------------------ absolute-form targets


@pytest.mark.parametrize(
    "target", ["http://evil.example/v1/products", "http://evil.example:8080/v1/products", "https://[::2]/v1/products"]
)
async def test_an_absolute_target_naming_a_foreign_host_is_refused(server: Any, target: str) -> None:
    status, headers, body = await exchange(server.port, request(f"GET {target}"))
    assert_gateway_error(status, headers, body, expected=400, code="invalid_host")


async def test_an_absolute_target_naming_our_host_is_served(server: Any) -> None:
    status, _, _ = await exchange(server.port, request("GET http://localhost:8080/v1/products"))
    assert status == 200


def test_the_router_keeps_aiohttps_own_resolve(app_factory: Any) -> None:
    app = app_factory()
    assert "resolve" not in vars(app.router)  # no instance attribute replacing the router's method


# ------------------------------------------------------------------ Expect: 100-continue


def bearer() -> bytes:
    return b"Authorization: Bearer " + hs256(claims(sub="alice")).encode()


async def test_an_oversized_body_is_refused_before_it_is_invited(server: Any) -> None:
    raw = request("POST /v1/checkout/sessions", b"localhost", bearer(), b"Expect: 100-continue", body=b"x" * 5000)
    status, headers, body = await exchange(server.port, raw)
    assert_gateway_error(status, headers, body, expected=413, code="payload_too_large")  # no 100 before it


async def test_an_unauthenticated_body_is_refused_before_it_is_invited(server: Any) -> None:
    raw = request("POST /v1/checkout/sessions", b"localhost", b"Expect: 100-continue", body=b"{}")
    status, headers, body = await exchange(server.port, raw)
    assert_gateway_error(status, headers, body, expected=401, code="unauthorized")


async def test_a_body_that_passed_the_checks_is_invited(server: Any) -> None:
    json = b"Content-Type: application/json"
    raw = request("POST /v1/checkout/sessions", b"localhost", bearer(), json, b"Expect: 100-continue", body=b"{}")
    status, _, rest = await exchange(server.port, raw)
    assert status == 100
    assert rest.startswith(b"HTTP/1.1 422 ")


async def test_the_client_gets_the_refusal_without_sending_its_body(server: Any) -> None:
    """A client that waits for 100 Continue (as curl does) learns of the 401 without sending the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            b"POST /v1/checkout/sessions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        first_line = await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        writer.close()
    assert first_line.startswith(b"HTTP/1.1 413 ") or first_line.startswith(b"HTTP/1.1 401 ")


# ------------------------------------------------------------------ webhook: unsigned deliveries (item 4)


def unsigned_count(reason: str) -> float:
    return REGISTRY.get_sample_value("stripe_webhook_unsigned_total", {"reason": reason}) or 0.0


async def test_unsigned_junk_is_counted_apart_from_wrong_signatures(server: Any) -> None:
    before = unsigned_count("missing_header"), unsigned_count("malformed_header")
    junk = b'{"hello": "world"}'
    for extra in ((), (b"Stripe-Signature: t=1,v1=nothex",)):
        status, headers, body = await exchange(
            server.port,
            request("POST /stripe/webhook", b"localhost", b"Content-Type: application/json", *extra, body=junk),
        )
        assert_gateway_error(status, headers, body, expected=400, code="invalid_signature")
    after = unsigned_count("missing_header"), unsigned_count("malformed_header")
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 1.0)
