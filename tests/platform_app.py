"""Helpers of the platform tests: a tiny app with chosen layers behind the edge, an app served on 127.0.0.1 as
`gateway serve` runs it, and JSON log capture."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway import keys
from gateway.log import JsonFormatter
from gateway.middleware import Layer, add_routes, build_layers, compose, finish_routes
from gateway.middleware.cors import setup_cors
from gateway.middleware.edge import edge_layer
from gateway.settings import Settings


def tiny_app(
    settings: Settings,
    routes: list[web.RouteDef],
    layers: list[Middleware] | None = None,
    *,
    outside: list[Middleware] | None = None,
    cors: bool = False,
    client_max_size: int = 1024**2,
) -> web.Application:
    """`routes` behind the edge layer and `layers` (outside in, each on every route), or the gateway's own layers
    by route options when `layers` is None; then CORS (`cors`) and the route of unmatched requests, as
    `create_app` does. `outside`: aiohttp middlewares, which run before the edge."""
    app = web.Application(middlewares=outside or [], client_max_size=client_max_size)
    app[keys.SETTINGS] = settings
    chosen = build_layers(settings) if layers is None else [Layer(m, lambda options: True) for m in layers]
    app[keys.EDGE] = edge_layer(settings, compose=partial(compose, chosen))
    add_routes(app, routes)
    if cors:
        setup_cors(app, settings)
    finish_routes(app)
    return app


@asynccontextmanager
async def serving(app: web.Application, *, handler_cancellation: bool = False) -> AsyncIterator[int]:
    """`app` on 127.0.0.1 (an ephemeral port) as `gateway serve` runs it (aiohttp's default: the handler of a client
    that hung up runs on, its body read fails), or with aiohttp's `handler_cancellation` (it is cancelled, as under
    pytest-aiohttp's test server); yields the port."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=handler_cancellation)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


class JsonLines(logging.Handler):
    """Formats every record with the gateway's JsonFormatter as it is emitted (in the request context)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def entries(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines]


@contextmanager
def json_logs(level: int = logging.DEBUG) -> Iterator[JsonLines]:
    handler = JsonLines()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
