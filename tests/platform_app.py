"""Helpers of the platform tests: a tiny app with chosen middlewares, and JSON log capture."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway import keys
from gateway.log import JsonFormatter
from gateway.settings import Settings


def tiny_app(
    settings: Settings,
    routes: list[web.RouteDef],
    middlewares: list[Middleware],
    *,
    client_max_size: int = 1024**2,
) -> web.Application:
    app = web.Application(middlewares=middlewares, client_max_size=client_max_size)
    app[keys.SETTINGS] = settings
    app.add_routes(routes)
    return app


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
