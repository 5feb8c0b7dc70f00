"""The stack is composed per route from the layers that apply to it (once, by the edge layer); unmatched requests
get the layers their options ask for."""

from __future__ import annotations

from functools import partial
from typing import Any

from aiohttp import web

from gateway.middleware import Layer, compose
from gateway.middleware.edge import edge_middleware
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


def stack(layers: list[Layer]) -> Any:
    """The edge layer composing `layers` per route, as `build_middlewares` sets it up."""
    return edge_middleware(make_settings(), compose=partial(compose, layers))


@route_options(rate_limit=None)
async def probe(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@route_options(rate_limit="public", auth="optional")
async def api(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def test_each_route_runs_only_its_layers_in_order(aiohttp_client: Any) -> None:
    seen: list[str] = []
    app = web.Application(middlewares=[stack(recording_layers(seen))])
    app.router.add_get("/probe", probe)
    app.router.add_get("/api", api)
    client = await aiohttp_client(app)

    for _ in range(2):  # the second request uses the stack composed by the first
        seen.clear()
        assert (await client.get("/probe")).status == 200
        assert seen == ["outer"]
        seen.clear()
        assert (await client.get("/api")).status == 200
        assert seen == ["outer", "limit", "auth"]


async def test_unmatched_requests_pass_every_layer_their_options_ask_for(aiohttp_client: Any) -> None:
    seen: list[str] = []
    app = web.Application(middlewares=[stack(recording_layers(seen))])
    app.router.add_get("/probe", probe)
    client = await aiohttp_client(app)

    assert (await client.get("/nowhere")).status == 404
    assert seen == ["outer", "limit"]  # unmatched: the public policy, no authentication
    seen.clear()
    assert (await client.post("/probe")).status == 405
    assert seen == ["outer", "limit"]
