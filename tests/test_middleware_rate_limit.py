"""The rate-limit middleware in a tiny app: request id -> errors -> rate limit, plus the limiter context."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from gateway import keys
from gateway.auth import identity
from gateway.errors import BadRequest
from gateway.log import JsonFormatter
from gateway.middleware.rate_limit import rate_limit_middleware
from gateway.ratelimit.limiter import rate_limiter_ctx
from gateway.ratelimit.memory import MemoryStore
from gateway.routing import route_options
from gateway.settings import Settings
from tests.platform_app import tiny_app

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
FROZEN_NOW = 1000.0


@route_options(rate_limit="webhook", body="raw", cors=False)
async def webhook(request: web.Request) -> web.Response:
    return web.json_response({"received": True})


async def public(request: web.Request) -> web.Response:  # no options: the "public" policy
    return web.json_response({"ok": True})


@route_options(rate_limit=None, cors=False)
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@route_options(rate_limit="checkout", auth="user")
async def checkout(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@route_options(rate_limit="auth")
async def refuse(request: web.Request) -> web.Response:
    raise BadRequest("nope")


@route_options(rate_limit="no-such-policy")
async def misconfigured(request: web.Request) -> web.Response:
    return web.json_response({})


def build_app(settings: Settings, *extra_routes: web.RouteDef) -> web.Application:
    app = tiny_app(
        settings,
        [
            web.post("/stripe/webhook", webhook),
            web.get("/public", public),
            web.get("/health", health),
            web.post("/checkout", checkout),
            web.post("/refuse", refuse),
            *extra_routes,
        ],
        [rate_limit_middleware()],
    )
    app.cleanup_ctx.append(rate_limiter_ctx)
    return app


@pytest.fixture
def make_client(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], settings_factory: Callable[..., Settings]
) -> MakeClient:
    async def make(**overrides: Any) -> Client:
        settings = settings_factory(**overrides)
        client = await aiohttp_client(build_app(settings))
        limiter = client.app[keys.RATE_LIMITER]
        if isinstance(limiter.store, MemoryStore):
            # Time stands still: no bucket refills while a test runs, whatever the machine's speed.
            limiter.store = MemoryStore(settings.rate_limit_max_keys, clock=lambda: FROZEN_NOW)
        return client

    return make


class JsonLines(logging.Handler):
    """The log lines exactly as production writes them, formatted while the request's context is current."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    handler = JsonLines()
    logger = logging.getLogger("gateway.ratelimit")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def rate_limited(policy: str) -> float:
    return REGISTRY.get_sample_value("rate_limited_total", {"policy": policy}) or 0.0


def store_errors(decision: str) -> float:
    labels = {"store": "redis", "decision": decision}
    return REGISTRY.get_sample_value("rate_limit_store_errors_total", labels) or 0.0


async def test_webhook_burst_gets_429_with_headers_log_and_metric(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture, log_lines: list[dict[str, Any]]
) -> None:
    client = await make_client(RATE_LIMIT_WEBHOOK_MAX=3)
    before = rate_limited("webhook")

    allowed = [await client.post("/stripe/webhook") for _ in range(3)]
    assert [r.status for r in allowed] == [200, 200, 200]
    assert [r.headers["RateLimit"] for r in allowed] == [
        '"webhook";r=2;t=20',
        '"webhook";r=1;t=40',
        '"webhook";r=0;t=20',
    ]
    assert all(r.headers["RateLimit-Policy"] == '"webhook";q=3;w=60' for r in allowed)
    assert all("Retry-After" not in r.headers for r in allowed)
    assert [r for r in caplog.records if r.name == "gateway.ratelimit"] == []

    refused = await client.post("/stripe/webhook", headers={"X-Request-ID": "req-webhook-429-0001"})
    assert refused.status == 429
    assert refused.headers["X-Request-ID"] == "req-webhook-429-0001"
    assert refused.headers["Retry-After"] == "20"
    assert refused.headers["RateLimit"] == '"webhook";r=0;t=20'
    assert refused.headers["RateLimit-Policy"] == '"webhook";q=3;w=60'
    assert await refused.json() == {
        "error": {
            "code": "rate_limited",
            "message": "Too many requests",
            "request_id": "req-webhook-429-0001",
        }
    }
    assert rate_limited("webhook") == before + 1

    warnings = [r for r in caplog.records if r.name == "gateway.ratelimit"]
    assert [(r.levelno, r.getMessage()) for r in warnings] == [(logging.WARNING, "Webhook rate limit exceeded (429)")]
    assert len(log_lines) == 1
    assert log_lines[0]["message"] == "Webhook rate limit exceeded (429)"
    assert log_lines[0]["requestId"] == "req-webhook-429-0001"
    assert log_lines[0]["status"] == 429


async def test_other_policies_are_limited_without_the_webhook_message(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(RATE_LIMIT_PUBLIC_MAX=2)
    before = rate_limited("public")
    statuses = [(await client.get("/public")).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert rate_limited("public") == before + 1
    assert "Webhook rate limit exceeded (429)" not in caplog.messages
    # The webhook has its own bucket.
    assert (await client.post("/stripe/webhook")).status == 200


async def test_unlimited_routes_are_never_limited(make_client: MakeClient) -> None:
    client = await make_client(RATE_LIMIT_PUBLIC_MAX=1)
    for _ in range(5):
        response = await client.get("/health")
        assert response.status == 200
        assert "RateLimit" not in response.headers


async def test_unmatched_paths_spend_the_public_bucket(make_client: MakeClient) -> None:
    client = await make_client(RATE_LIMIT_PUBLIC_MAX=2)
    assert [(await client.get("/missing")).status for _ in range(3)] == [404, 404, 429]


async def test_error_answers_of_allowed_requests_carry_the_ratelimit_headers(make_client: MakeClient) -> None:
    client = await make_client(RATE_LIMIT_AUTH_MAX=10)
    response = await client.post("/refuse")
    assert response.status == 400
    assert response.headers["RateLimit"] == '"auth";r=9;t=6'
    assert response.headers["RateLimit-Policy"] == '"auth";q=10;w=60'


async def test_x_forwarded_for_from_an_untrusted_peer_opens_no_new_bucket(make_client: MakeClient) -> None:
    client = await make_client(RATE_LIMIT_WEBHOOK_MAX=2, TRUSTED_PROXIES="")
    statuses = [
        (await client.post("/stripe/webhook", headers={"X-Forwarded-For": f"198.51.100.{i}"})).status for i in range(4)
    ]
    assert statuses == [200, 200, 429, 429]


async def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(make_client: MakeClient) -> None:
    client = await make_client(RATE_LIMIT_WEBHOOK_MAX=2, TRUSTED_PROXIES="127.0.0.1/32")

    async def post(client_ip: str) -> int:
        # A spoofed hop on the left is ignored: the proxy appended the address it saw.
        forwarded = f"203.0.113.99, {client_ip}"
        return (await client.post("/stripe/webhook", headers={"X-Forwarded-For": forwarded})).status

    assert [await post("198.51.100.1") for _ in range(3)] == [200, 200, 429]
    assert [await post("198.51.100.2") for _ in range(3)] == [200, 200, 429]


async def test_ipv6_clients_of_one_64_share_a_bucket(make_client: MakeClient) -> None:
    client = await make_client(RATE_LIMIT_WEBHOOK_MAX=2, TRUSTED_PROXIES="127.0.0.1/32")

    async def post(client_ip: str) -> int:
        return (await client.post("/stripe/webhook", headers={"X-Forwarded-For": client_ip})).status

    assert await post("2001:db8:1:2::1") == 200
    assert await post("2001:db8:1:2:ffff:ffff:ffff:fffe") == 200
    assert await post("2001:db8:1:2::3") == 429  # same /64, same bucket
    assert await post("2001:db8:1:3::1") == 200  # the next /64 is another client


async def test_checkout_is_limited_per_user_and_per_ip_without_one(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def identify(request: web.Request) -> str | None:
        return request.headers.get("X-Test-User")

    monkeypatch.setattr(identity, "identify", identify)
    client = await make_client(RATE_LIMIT_CHECKOUT_MAX=2)

    async def post(user: str | None) -> int:
        headers = {"X-Test-User": user} if user else {}
        return (await client.post("/checkout", headers=headers)).status

    # Same address, different users: separate buckets.
    assert [await post("user-a") for _ in range(3)] == [200, 200, 429]
    assert [await post("user-b") for _ in range(3)] == [200, 200, 429]
    # No verified user: the client address is the key, a bucket of its own.
    assert [await post(None) for _ in range(3)] == [200, 200, 429]


async def test_a_route_naming_an_unknown_policy_stops_the_boot(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], settings_factory: Callable[..., Settings]
) -> None:
    app = build_app(settings_factory(), web.get("/misconfigured", misconfigured))
    with pytest.raises(LookupError, match="no-such-policy"):
        await aiohttp_client(app)


@pytest.mark.redis
async def test_two_instances_share_buckets_through_redis(make_client: MakeClient, redis_url: str) -> None:
    # Two per minute: the next token is 30 s away, far longer than the test.
    settings = {"RATE_LIMIT_STORE": "redis", "REDIS_URL": redis_url, "RATE_LIMIT_WEBHOOK_MAX": 2}
    first = await make_client(**settings)
    second = await make_client(**settings)
    statuses = []
    for _ in range(3):
        for client in (first, second):
            statuses.append((await client.post("/stripe/webhook")).status)
    assert statuses == [200, 200, 429, 429, 429, 429]  # one bucket for both, not two of two


async def test_unreachable_redis_fails_open(make_client: MakeClient) -> None:
    client = await make_client(
        RATE_LIMIT_STORE="redis",
        REDIS_URL=UNREACHABLE_REDIS,
        RATE_LIMIT_FAIL_OPEN="true",
        RATE_LIMIT_WEBHOOK_MAX=1,
    )
    before = store_errors("allowed")
    responses = [await client.post("/stripe/webhook") for _ in range(3)]
    assert [r.status for r in responses] == [200, 200, 200]
    assert all("RateLimit" not in r.headers for r in responses)
    assert store_errors("allowed") == before + 3


async def test_unreachable_redis_fails_closed(make_client: MakeClient) -> None:
    client = await make_client(RATE_LIMIT_STORE="redis", REDIS_URL=UNREACHABLE_REDIS, RATE_LIMIT_FAIL_OPEN="false")
    before = store_errors("rejected")
    response = await client.post("/stripe/webhook", headers={"X-Request-ID": "req-redis-down-0001"})
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert await response.json() == {
        "error": {
            "code": "rate_limit_unavailable",
            "message": "Rate limiting is unavailable, retry later",
            "request_id": "req-redis-down-0001",
        }
    }
    assert store_errors("rejected") == before + 1
