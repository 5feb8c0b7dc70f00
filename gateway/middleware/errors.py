"""Every non-2xx answer gets one JSON shape: {"error": {"code", "message", "request_id"}}.

This is the only place that turns exceptions into HTTP answers (the outermost layer, `edge`, calls it): the
gateway's own ApiError tree, aiohttp's HTTP exceptions (404, 405, 413 ...), database unavailability (503 with
Retry-After) and anything unexpected (500, the stack in the log, never in a production body).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from aiohttp import web

from gateway import context
from gateway.db.errors import UNAVAILABLE_ERRORS
from gateway.errors import ApiError, DatabaseUnavailable
from gateway.responses import json_response

log = logging.getLogger("gateway.errors")

_AIOHTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
}
_PASSED_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, details: Any = None
) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": context.request_id()}
    if details is not None:
        body["details"] = details
    return json_response({"error": body}, status=status, headers=headers)


def error_answer(exc: Exception, *, show_trace: bool) -> web.Response:
    """The JSON answer for an exception. A redirect (an HTTPException below 400) is raised again."""
    if isinstance(exc, ApiError):
        if exc.status >= 500:
            log.error("request failed", extra={"code": exc.code, "status": exc.status})
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers, details=exc.details)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        headers = {k: exc.headers[k] for k in _PASSED_HEADERS if k in exc.headers}
        return error_response(exc.status, _AIOHTTP_CODES.get(exc.status, "http_error"), exc.reason, headers=headers)
    if isinstance(exc, UNAVAILABLE_ERRORS):
        log.error("database unavailable", extra={"code": "database_unavailable", "reason": type(exc).__name__})
        unavailable = DatabaseUnavailable()
        return error_response(unavailable.status, unavailable.code, unavailable.message, headers=unavailable.headers)
    log.error("unhandled error", exc_info=exc, extra={"code": "internal_error"})
    details = "".join(traceback.format_exception(exc)).splitlines() if show_trace else None
    return error_response(500, "internal_error", "Internal server error", details=details)
