"""`GET /openapi.json`: the OpenAPI document (`gateway/openapi/openapi.yaml`), converted to JSON once."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from gateway.middleware import add_routes
from gateway.routing import route_options

DOCUMENT_PATH = Path(__file__).resolve().parent / "openapi.yaml"


@cache
def document() -> dict[str, Any]:
    data = yaml.safe_load(DOCUMENT_PATH.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{DOCUMENT_PATH} is not an OpenAPI document")
    return data


@cache
def _document_bytes() -> bytes:
    return orjson.dumps(document())


@route_options(rate_limit="public", auth="none")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(
        body=_document_bytes(),
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )


def register(app: web.Application) -> None:
    document()  # a broken document is a boot error, not a 500
    add_routes(app, [web.get("/openapi.json", openapi_json, name="openapi")])
