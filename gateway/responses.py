"""The one way handlers answer JSON: orjson-encoded bodies (the error middleware uses it for error bodies too)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from gateway.security_headers import JSON_DEFAULTS

NO_STORE = {"Cache-Control": "no-store"}


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """The answer starts from the security headers (the edge layer completes them); `headers` are merged over."""
    if headers:
        merged = CIMultiDict(JSON_DEFAULTS)
        merged.update(headers)
        return web.Response(body=orjson.dumps(data), status=status, headers=merged)
    return web.Response(body=orjson.dumps(data), status=status, headers=JSON_DEFAULTS)  # copied by Response
