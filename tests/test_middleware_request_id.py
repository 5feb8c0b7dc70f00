"""Request id: a well-formed inbound X-Request-ID is echoed, anything else replaced; the id is on the answer,
in
every error body and on every log line of the request."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest
from aiohttp import web

from gateway.errors import Conflict
from gateway.middleware.trusted_hosts import trusted_hosts_middleware
from tests.conftest import make_settings
from tests.platform_app import json_logs, tiny_app

log = logging.getLogger("gateway.test")
GENERATED = re.compile(r"^[0-9a-f]{32}$")


async def ok(request: web.Request) -> web.Response:
    log.info("handler ran", extra={"orderId": "order-1"})
    return web.json_response({"ok": True})


async def conflict(request: web.Request) -> web.Response:
    log.warning("about to refuse")
    raise Conflict("already there")


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("unexpected")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(0.05)
    log.info("slow handler done")
    return web.json_response({"ok": True})


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ok")


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    settings = make_settings()
    app = tiny_app(
        settings,
        [
            web.get("/ok", ok),
            web.post("/conflict", conflict),
            web.get("/boom", boom),
            web.get("/slow", slow),
            web.get("/redirect", redirect),
        ],
        [
            trusted_hosts_middleware(settings),
        ],
    )
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    "inbound",
    ["abcdefgh", "req-2024.01_ABC", "a" * 128, "0f8fad5b-d9cb-469f-a165-70867728950e"],
)
async def test_well_formed_inbound_id_is_echoed(client: Any, inbound: str) -> None:
    response = await client.get("/ok", headers={"X-Request-ID": inbound})
    assert response.status == 200
    assert response.headers["X-Request-ID"] == inbound


@pytest.mark.parametrize(
    "inbound",
    [
        "short",  # under 8 characters
        "abc1234",  # 7
        "a" * 129,  # too long
        "has space in it",
        "semi;colon-1234",
        "slash/inside-1234",
        'quote"inside1234',
        "unicodé-12345678",
        "",
    ],
)
async def test_malformed_inbound_id_is_replaced(client: Any, inbound: str) -> None:
    response = await client.get("/ok", headers={"X-Request-ID": inbound})
    assert response.status == 200
    echoed = response.headers["X-Request-ID"]
    assert echoed != inbound
    assert GENERATED.match(echoed)


async def test_an_id_is_made_when_none_comes_and_each_request_gets_its_own(client: Any) -> None:
    first = (await client.get("/ok")).headers["X-Request-ID"]
    second = (await client.get("/ok")).headers["X-Request-ID"]
    assert GENERATED.match(first) and GENERATED.match(second)
    assert first != second


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),  # aiohttp's own 404
        ("DELETE", "/ok", 405),  # aiohttp's own 405
        ("POST", "/conflict", 409),  # an ApiError
        ("GET", "/boom", 500),  # an unexpected exception
    ],
)
async def test_every_error_body_carries_the_id(client: Any, method: str, path: str, status: int) -> None:
    inbound = "trace-error-0001"
    response = await client.request(method, path, headers={"X-Request-ID": inbound})
    assert response.status == status
    assert response.headers["X-Request-ID"] == inbound
    body = await response.json()
    assert body["error"]["request_id"] == inbound

    response = await client.request(method, path)  # a generated id is in the body too
    assert (await response.json())["error"]["request_id"] == response.headers["X-Request-ID"]


async def test_host_refusal_carries_the_id(client: Any) -> None:
    response = await client.get("/ok", headers={"Host": "evil.example", "X-Request-ID": "host-check-01"})
    assert response.status == 400
    assert response.headers["X-Request-ID"] == "host-check-01"
    assert (await response.json())["error"]["request_id"] == "host-check-01"


async def test_redirects_carry_the_id(client: Any) -> None:
    response = await client.get("/redirect", headers={"X-Request-ID": "redirect-0001"}, allow_redirects=False)
    assert response.status == 302
    assert response.headers["X-Request-ID"] == "redirect-0001"


async def test_every_log_line_of_a_request_carries_the_id(client: Any) -> None:
    with json_logs() as logs:
        await client.get("/ok", headers={"X-Request-ID": "log-line-0001"})
        await client.post("/conflict", headers={"X-Request-ID": "log-line-0002"})
        await client.get("/boom", headers={"X-Request-ID": "log-line-0003"})
    by_message: dict[str, list[dict[str, Any]]] = {}
    for entry in logs.entries:
        by_message.setdefault(entry["message"], []).append(entry)
    assert by_message["handler ran"][0]["requestId"] == "log-line-0001"
    assert by_message["handler ran"][0]["orderId"] == "order-1"
    assert by_message["about to refuse"][0]["requestId"] == "log-line-0002"
    assert by_message["unhandled error"][0]["requestId"] == "log-line-0003"
    access = {e["requestId"]: e for e in by_message["request completed"]}
    assert access["log-line-0001"]["status"] == 200
    assert access["log-line-0002"]["status"] == 409
    assert access["log-line-0003"]["status"] == 500
    for entry in logs.entries:
        if entry["logger"].startswith("gateway"):
            assert entry["requestId"] in {"log-line-0001", "log-line-0002", "log-line-0003"}, entry


async def test_concurrent_requests_keep_their_own_id_in_logs(client: Any) -> None:
    ids = [f"concurrent-{i:04d}" for i in range(10)]
    with json_logs() as logs:
        responses = await asyncio.gather(*(client.get("/slow", headers={"X-Request-ID": i}) for i in ids))
    assert [r.headers["X-Request-ID"] for r in responses] == ids
    done = sorted(e["requestId"] for e in logs.entries if e["message"] == "slow handler done")
    assert done == ids
