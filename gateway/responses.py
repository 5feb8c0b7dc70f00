"""The one way handlers answer JSON: orjson-encoded bodies (the error middleware uses it for error bodies too)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

NO_STORE = {"Cache-Control": "no-store"}


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)
