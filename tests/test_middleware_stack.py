"""The stack is composed per route from the layers that apply to it (once, when the route is registered behind the
edge layer); unmatched requests get the layers their options ask for."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
from aiohttp import web

from gateway import keys
from gateway.middleware import Layer, add_routes, compose, finish_routes
from gateway.middleware.edge import edge_layer
from gateway.routing import route_options
from tests.conftest import make_settings


def recording_layers(seen: list[str]) -> list[Layer]:
    def layer(name: str) -> Any:
        @web.middleware
        async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
            seen.append(name)
            return await handler(request)

        return middleware

    return [
        Layer(layer("outer"), lambda options: True),
        Layer(layer("limit"), lambda options: options.rate_limit is not None),
        Layer(layer("auth"), lambda options: options.auth != "none"),
    ]


def stack(layers: list[Layer], routes: list[web.RouteDef]) -> web.Application:
    """`routes` behind the edge layer composing `layers` per route, as `build_edge` sets it up."""
    app = web.Application()
    app[keys.EDGE] = edge_layer(make_settings(), compose=partial(compose, layers))
    add_routes(app, routes)
    finish_routes(app)
    return app


@route_options(rate_limit=None)
async def probe(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@route_options(rate_limit="public", auth="optional")
async def api(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def test_each_route_runs_only_its_layers_in_order(aiohttp_client: Any) -> None:
    seen: list[str] = []
    app = stack(recording_layers(seen), [web.get("/probe", probe), web.get("/api", api)])
    client = await aiohttp_client(app)

    for _ in range(2):
        seen.clear()
        assert (await client.get("/probe")).status == 200
        assert seen == ["outer"]
        seen.clear()
        assert (await client.get("/api")).status == 200
        assert seen == ["outer", "limit", "auth"]


async def test_unmatched_requests_pass_every_layer_their_options_ask_for(aiohttp_client: Any) -> None:
    seen: list[str] = []
    app = stack(recording_layers(seen), [web.get("/probe", probe)])
    client = await aiohttp_client(app)

    assert (await client.get("/nowhere")).status == 404
    assert seen == ["outer", "limit"]  # unmatched: the public policy, no authentication
    seen.clear()
    assert (await client.post("/probe")).status == 405
    assert seen == ["outer", "limit"]


async def test_any_path_and_method_no_route_has_gets_the_json_answer(aiohttp_client: Any) -> None:
    seen: list[str] = []
    client = await aiohttp_client(stack(recording_layers(seen), [web.get("/probe", probe)]))

    # a decoded newline in the path, a method the route has not, the root
    for method, path, status in [("GET", "/a%0Ab", 404), ("PATCH", "/probe", 405), ("DELETE", "/", 404)]:
        response = await client.request(method, path)
        assert response.status == status
        body = await response.json()
        assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_route_added_around_the_edge_stops_the_start(aiohttp_client: Any) -> None:
    app = stack(recording_layers([]), [web.get("/probe", probe)])
    app.router.add_get("/bare", probe)  # not through add_routes: no request id, error shape, metrics

    with pytest.raises(RuntimeError, match="GET /bare"):
        await aiohttp_client(app)
