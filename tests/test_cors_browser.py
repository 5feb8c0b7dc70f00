"""CORS: an exact origin allowlist through aiohttp-cors.

Plain HTTP: preflights are answered before auth and rate limiting, unlisted origins get no
Access-Control-Allow-Origin, `Vary: Origin` on every answer, credentials only for listed origins.
In a real headless Chromium: a page on a listed origin reads the JSON of a cross-origin fetch (preflight too);
a page on another origin is blocked (the fetch rejects).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import context
from gateway.auth.tokens import token_verifier_ctx
from gateway.ratelimit.limiter import rate_limiter_ctx
from gateway.routing import route_options
from gateway.settings import Settings
from tests.conftest import make_settings
from tests.platform_app import tiny_app
from tests.test_auth_jwt import claims, hs256

SHOP = "https://shop.example"
OTHER = "https://evil.example"


@route_options(auth="user")  # CORS on (the default), the "public" rate-limit policy
async def whoami(request: web.Request) -> web.Response:
    return web.json_response({"user": context.get_context(request).user_id})


@route_options(auth="none")
async def catalog(request: web.Request) -> web.Response:
    return web.json_response({"products": [{"sku": "SKU-1"}]})


@route_options(auth="none", rate_limit=None, cors=False)
async def internal(request: web.Request) -> web.Response:
    return web.json_response({"internal": True})


def cors_app(settings: Settings) -> web.Application:
    """The gateway's own stack, assembled as create_app does (edge and layers, limiter, verifier, CORS)."""
    app = tiny_app(
        settings,
        [
            web.get("/v1/whoami", whoami, name="whoami"),
            web.post("/v1/whoami", whoami),
            web.get("/v1/catalog", catalog, name="catalog"),
            web.get("/internal", internal, name="internal"),
        ],
        cors=True,
    )
    app.cleanup_ctx.extend([rate_limiter_ctx, token_verifier_ctx])
    return app


def preflight(origin: str, method: str = "GET", headers: str = "authorization") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {hs256(claims(sub='user-7'))}"}


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    return await aiohttp_client(
        cors_app(make_settings(CORS_ORIGINS=f"{SHOP},https://admin.shop.example", RATE_LIMIT_PUBLIC_MAX="2"))
    )


async def test_preflight_to_an_authenticated_route_is_answered_before_auth(client: Any) -> None:
    response = await client.options("/v1/whoami", headers=preflight(SHOP))
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "GET" in response.headers["Access-Control-Allow-Methods"]
    assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()
    assert "WWW-Authenticate" not in response.headers
    assert "Origin" in response.headers["Vary"]


async def test_preflights_are_not_counted_by_the_rate_limiter(client: Any) -> None:
    for _ in range(10):  # the public policy allows 2 per minute
        response = await client.options("/v1/whoami", headers=preflight(SHOP))
        assert response.status == 200
        assert "RateLimit" not in response.headers
    for _ in range(2):
        response = await client.get("/v1/whoami", headers={"Origin": SHOP, **bearer()})
        assert response.status == 200
        assert await response.json() == {"user": "user-7"}
    response = await client.get("/v1/whoami", headers={"Origin": SHOP, **bearer()})
    assert response.status == 429  # the real requests are counted
    assert response.headers["Access-Control-Allow-Origin"] == SHOP  # the browser may read the refusal


async def test_actual_request_from_a_listed_origin(client: Any) -> None:
    response = await client.get("/v1/whoami", headers={"Origin": SHOP, **bearer()})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    exposed = response.headers["Access-Control-Expose-Headers"].lower()
    assert "x-request-id" in exposed
    assert "Origin" in response.headers["Vary"]


async def test_errors_from_a_listed_origin_are_readable(client: Any) -> None:
    response = await client.get("/v1/whoami", headers={"Origin": SHOP})
    assert response.status == 401
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert (await response.json())["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "origin",
    [OTHER, "https://shop.example.evil.test", "http://shop.example", "https://shop.example:8443", "null"],
)
async def test_unlisted_origin_gets_no_cors_headers(client: Any, origin: str) -> None:
    response = await client.options("/v1/whoami", headers=preflight(origin))
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert (await response.json())["error"]["code"] == "forbidden"
    assert "Origin" in response.headers["Vary"]

    response = await client.get("/v1/catalog", headers={"Origin": origin})
    assert response.status == 200  # the server answers; the browser will not hand it to the page
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Origin" in response.headers["Vary"]


async def test_vary_origin_on_every_answer(client: Any) -> None:
    for method, path, headers in [
        ("GET", "/v1/catalog", {}),
        ("GET", "/v1/catalog", {"Origin": SHOP}),
        ("GET", "/v1/whoami", {}),
        ("GET", "/internal", {"Origin": SHOP}),
        ("GET", "/nowhere", {"Origin": SHOP}),
        ("OPTIONS", "/v1/whoami", preflight(SHOP)),
        ("OPTIONS", "/v1/whoami", preflight(OTHER)),
    ]:
        response = await client.request(method, path, headers=headers)
        assert "Origin" in [v.strip() for v in response.headers["Vary"].split(",")], (method, path)


async def test_routes_without_cors(client: Any) -> None:
    response = await client.get("/internal", headers={"Origin": SHOP})
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    response = await client.options("/internal", headers=preflight(SHOP))
    assert response.status == 405
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_star_in_development_never_allows_credentials(aiohttp_client: Any) -> None:
    client = await aiohttp_client(cors_app(make_settings(CORS_ORIGINS="*")))
    response = await client.get("/v1/catalog", headers={"Origin": OTHER})
    assert response.headers.get("Access-Control-Allow-Origin") in {"*", OTHER}
    assert "Access-Control-Allow-Credentials" not in response.headers


async def test_real_app_preflight_to_an_authenticated_route(aiohttp_client: Any, app_factory: Any) -> None:
    client = await aiohttp_client(app_factory(CORS_ORIGINS=SHOP, RATE_LIMIT_PUBLIC_MAX="1"))
    for _ in range(5):
        response = await client.options("/v1/orders", headers=preflight(SHOP))
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == SHOP
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert "Origin" in response.headers["Vary"]
    response = await client.options("/v1/orders", headers=preflight(OTHER))
    assert "Access-Control-Allow-Origin" not in response.headers
    response = await client.options("/stripe/webhook", headers=preflight(SHOP, "POST"))
    assert "Access-Control-Allow-Origin" not in response.headers  # the webhook is not a browser route


# --------------------------------------------------------------------------------------- headless Chromium


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>cors</title></head><body>
<pre id="out">pending</pre>
<script>
const out = document.getElementById("out");
fetch(%(url)s, {headers: %(headers)s, credentials: "include"})
  .then(async (r) => { out.textContent = "OK " + r.status + " " + JSON.stringify(await r.json()); })
  .catch((e) => { out.textContent = "BLOCKED " + e.name; });
</script></body></html>"""


@dataclass
class Browser:
    binary: str
    profile: str

    async def result_of(self, page_url: str) -> str:
        """Load the page in headless Chromium, let its fetch settle, return the text the page wrote."""
        process = await asyncio.create_subprocess_exec(
            self.binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={self.profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        match = re.search(r'<pre id="out">(.*?)</pre>', stdout.decode(), re.S)
        assert match, (stdout.decode()[-2000:], stderr.decode()[-2000:])
        return html.unescape(match[1])


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    binary = chromium_path()
    if binary is None:
        pytest.skip("SKIPPED: chromium is not installed (scripts/install-system-deps.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="gw-chromium-") as profile:
        yield Browser(binary, profile)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sites:
    """Tiny sites, each on its own 127.0.0.1 port (its own origin); the page fetches ?target=."""

    def __init__(self) -> None:
        self.servers: list[TestServer] = []

    async def start(self, port: int | None = None) -> str:
        async def page(request: web.Request) -> web.Response:
            headers = {}
            if request.query.get("token"):
                headers["Authorization"] = "Bearer " + request.query["token"]  # not CORS-safelisted: preflight
            body = PAGE % {"url": json.dumps(request.query["target"]), "headers": json.dumps(headers)}
            return web.Response(text=body, content_type="text/html")

        site = web.Application()
        site.router.add_get("/", page)
        server = TestServer(site, host="127.0.0.1", port=port)
        await server.start_server()
        self.servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    async def close(self) -> None:
        for server in self.servers:
            await server.close()


def page_url(origin: str, target: str, token: str | None = None) -> str:
    query = {"target": target, **({"token": token} if token else {})}
    return f"{origin}/?{urlencode(query)}"


@pytest.fixture
async def sites() -> AsyncIterator[Sites]:
    sites = Sites()
    yield sites
    await sites.close()


def record_requests(app: web.Application) -> list[tuple[str, str, int]]:
    """(method, path, status) of every answer of the gateway, to see what the browser really sent."""
    seen: list[tuple[str, str, int]] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        seen.append((request.method, request.path, response.status))

    app.on_response_prepare.append(record)
    return seen


async def start_gateway(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_browser_allowed_and_blocked_with_preflight(browser: Browser, sites: Sites) -> None:
    allowed_port = free_port()  # chosen first so that CORS_ORIGINS can name the page's origin
    app = cors_app(make_settings(CORS_ORIGINS=f"http://127.0.0.1:{allowed_port}"))
    seen = record_requests(app)
    gateway = await start_gateway(app)
    try:
        allowed = await sites.start(allowed_port)
        other = await sites.start()
        target = f"http://127.0.0.1:{gateway.port}/v1/whoami"
        token = hs256(claims(sub="browser-user"))

        assert await browser.result_of(page_url(allowed, target, token)) == 'OK 200 {"user":"browser-user"}'
        assert seen == [("OPTIONS", "/v1/whoami", 200), ("GET", "/v1/whoami", 200)]

        seen.clear()
        assert await browser.result_of(page_url(other, target, token)) == "BLOCKED TypeError"
        assert seen == [("OPTIONS", "/v1/whoami", 403)]  # refused at the preflight: the GET was never sent

        seen.clear()  # a simple request from the other origin: answered, hidden from the page
        catalog_url = f"http://127.0.0.1:{gateway.port}/v1/catalog"
        assert await browser.result_of(page_url(other, catalog_url)) == "BLOCKED TypeError"
        assert seen == [("GET", "/v1/catalog", 200)]
        assert await browser.result_of(page_url(allowed, catalog_url)) == 'OK 200 {"products":[{"sku":"SKU-1"}]}'
    finally:
        await gateway.close()


async def test_browser_against_the_real_app(browser: Browser, sites: Sites, app_factory: Any, db_pool: Any) -> None:
    allowed_port = free_port()
    app = app_factory(CORS_ORIGINS=f"http://127.0.0.1:{allowed_port}")
    seen = record_requests(app)
    gateway = await start_gateway(app)
    try:
        allowed = await sites.start(allowed_port)
        other = await sites.start()
        orders = f"http://127.0.0.1:{gateway.port}/v1/orders"
        token = hs256(claims(sub="browser-user"))

        result = await browser.result_of(page_url(allowed, orders, token))
        assert result.startswith("OK 200 {"), result
        assert [(m, s) for m, _, s in seen] == [("OPTIONS", 200), ("GET", 200)]

        assert await browser.result_of(page_url(other, orders, token)) == "BLOCKED TypeError"
        # The probes have CORS off: not readable cross-origin, even from the listed origin.
        health = f"http://127.0.0.1:{gateway.port}/health"
        assert await browser.result_of(page_url(allowed, health)) == "BLOCKED TypeError"
    finally:
        await gateway.close()


async def test_a_preflight_with_an_expectation_the_gateway_cannot_meet_gets_the_json_417(client: Any) -> None:
    response = await client.options("/v1/whoami", headers={**preflight(SHOP), "Expect": "something-else"})
    assert response.status == 417
    assert (await response.json())["error"]["code"] == "expectation_failed"
    assert response.headers.get("Server", "") == ""
