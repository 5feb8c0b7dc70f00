"""Requests aiohttp cannot parse are answered before any middleware runs. They still get the gateway's JSON
error shape, a request id, the security headers and no Server banner; they are counted and logged once at INFO
with the parser's reason, without a stack trace. A failure that escapes the middleware stack is a JSON 500."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.metrics import HTTP
from gateway.middleware.body_read import body_read_middleware
from gateway.middleware.errors import MALFORMED_ROUTE, install_protocol_error_answers
from tests.conftest import make_settings
from tests.platform_app import json_logs, tiny_app
from tests.test_shutdown import gateway  # noqa: F401  (the `gateway serve` process fixture)

BAD_CONTENT_LENGTH = b"GET /ok HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n"
BAD_PATH = b"GET /o\x01k HTTP/1.1\r\nHost: localhost\r\n\r\n"
TLS_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40


@pytest.fixture
def protocol_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's answers installed for this test; aiohttp's own method is put back afterwards."""
    monkeypatch.setattr(RequestHandler, "handle_error", RequestHandler.handle_error)
    install_protocol_error_answers()


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def fails(request: web.Request) -> web.Response:
    raise RuntimeError("failed outside the stack")


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer until the server closes the connection (it does after an error answer;
    the read would time out otherwise)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)  # EOF: the server closed the connection
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def assert_gateway_error(status: int, headers: dict[str, str], body: bytes, *, expected: int, code: str) -> str:
    assert status == expected
    assert headers["content-type"] == "application/json"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert headers["vary"] == "Origin"
    assert "aiohttp" not in headers.get("server", "") and "python" not in headers.get("server", "").lower()
    error = orjson.loads(body)["error"]
    assert error["code"] == code
    assert error["request_id"] == headers["x-request-id"]
    return str(error["request_id"])


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (BAD_CONTENT_LENGTH, "Invalid character in Content-Length:"),
        (BAD_PATH, "Invalid char in url path:"),
        (TLS_HELLO, "Received HTTPS traffic on an HTTP port"),
    ],
)
async def test_an_unparsable_request_gets_the_json_error_shape(
    protocol_answers: None, aiohttp_server: Any, raw: bytes, reason: str
) -> None:
    settings = make_settings()
    server = await aiohttp_server(tiny_app(settings, [web.get("/ok", ok)], []))
    counted = HTTP.answers.get((MALFORMED_ROUTE, "OTHER", 400), 0)

    with json_logs() as logs:
        status, headers, body = await exchange(server.port, raw)

    request_id = assert_gateway_error(status, headers, body, expected=400, code="bad_request")
    assert orjson.loads(body)["error"]["message"] == "Malformed HTTP request"
    echoed = body.replace(request_id.encode(), b"")  # a random hex id may contain "abc" by chance
    assert b"abc" not in echoed and b"\\x01" not in echoed  # the raw input is not echoed
    assert HTTP.answers[(MALFORMED_ROUTE, "OTHER", 400)] == counted + 1
    # the gateway's lines and aiohttp's error log; not the test server's own access log (`gateway serve` has none)
    entries = [e for e in logs.entries if e["logger"].startswith(("gateway", "aiohttp.server"))]
    assert [(e["level"], e["message"]) for e in entries] == [("info", "request completed")]
    line = entries[0]
    assert line["requestId"] == request_id
    assert (line["route"], line["status"], line["reason"]) == (MALFORMED_ROUTE, 400, reason)
    assert "exception" not in line


async def test_a_failure_outside_the_middleware_stack_is_a_json_500(
    protocol_answers: None, aiohttp_server: Any
) -> None:
    app = web.Application()  # no edge layer
    app.router.add_get("/fails", fails)
    server = await aiohttp_server(app)

    with json_logs() as logs:
        status, headers, body = await exchange(server.port, b"GET /fails HTTP/1.1\r\nHost: localhost\r\n\r\n")

    request_id = assert_gateway_error(status, headers, body, expected=500, code="internal_error")
    assert b"failed outside the stack" not in body
    errors = [e for e in logs.entries if e["level"] == "error"]
    assert [e["message"] for e in errors] == ["request failed outside the middleware stack"]
    assert errors[0]["requestId"] == request_id
    assert "RuntimeError: failed outside the stack" in errors[0]["exception"]


async def test_a_failure_outside_the_edge_keeps_the_request_id_and_one_access_line(
    protocol_answers: None, aiohttp_server: Any
) -> None:
    @web.middleware
    async def breaks_after_the_edge(request: web.Request, handler: Any) -> web.StreamResponse:
        await handler(request)
        raise RuntimeError("broken outside the edge")

    settings = make_settings()
    app = tiny_app(settings, [web.get("/ok", ok)], [], outside=[breaks_after_the_edge])
    server = await aiohttp_server(app)

    with json_logs() as logs:
        status, headers, body = await exchange(server.port, b"GET /ok HTTP/1.1\r\nHost: localhost\r\n\r\n")

    request_id = assert_gateway_error(status, headers, body, expected=500, code="internal_error")
    access_lines = [e for e in logs.entries if e["message"] == "request completed"]
    assert [e["requestId"] for e in access_lines] == [request_id]  # the edge's line, not a second one
    errors = [e for e in logs.entries if e["level"] == "error"]
    assert [(e["message"], e["requestId"]) for e in errors] == [
        ("request failed outside the middleware stack", request_id)
    ]


async def test_gateway_serve_answers_unparsable_requests_with_json(gateway: dict[str, Any]) -> None:  # noqa: F811
    port = int(gateway["base"].rsplit(":", 1)[1])
    status, headers, body = await exchange(port, BAD_CONTENT_LENGTH)
    assert_gateway_error(status, headers, body, expected=400, code="bad_request")
    # the server keeps serving other connections
    status, _, body = await exchange(port, b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert (status, orjson.loads(body)) == (200, {"status": "ok"})


def test_installing_twice_keeps_one_override(protocol_answers: None) -> None:
    install_protocol_error_answers()
    install_protocol_error_answers()
    assert RequestHandler.handle_error.__name__ == "protocol_error_answer"


@pytest.mark.parametrize(
    ("target", "method"),
    [(b"OPTIONS *", "OPTIONS"), (b"CONNECT localhost:443", "OTHER"), (b"GET http://localhost", "GET")],
    ids=["asterisk", "authority", "absolute-without-path"],
)
async def test_a_request_target_no_route_can_match_gets_the_json_404(
    aiohttp_server: Any, target: bytes, method: str
) -> None:
    """aiohttp would answer these itself (plain text, its Server banner): no path starts with "/"."""
    server = await aiohttp_server(tiny_app(make_settings(), [web.get("/ok", ok)], []))
    counted = HTTP.answers.get(("unmatched", method, 404), 0)

    status, headers, body = await exchange(
        server.port, target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )

    assert_gateway_error(status, headers, body, expected=404, code="not_found")
    assert HTTP.answers[("unmatched", method, 404)] == counted + 1


async def test_an_expectation_the_gateway_cannot_meet_gets_the_json_417(aiohttp_server: Any) -> None:
    # 100 Continue comes from the innermost layer of a route that reads a body (tests/test_hostile_edge.py).
    settings = make_settings()
    server = await aiohttp_server(tiny_app(settings, [web.post("/ok", ok)], [body_read_middleware(settings)]))
    head = b"POST /ok HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nConnection: close\r\n"

    status, headers, body = await exchange(server.port, head + b"Expect: something-else\r\n\r\n{}")
    assert_gateway_error(status, headers, body, expected=417, code="expectation_failed")

    status, headers, rest = await exchange(server.port, head + b"Expect: 100-continue\r\n\r\n{}")
    assert status == 100  # the interim answer, then the route's own
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n") and rest.endswith(b'{"ok": true}')
