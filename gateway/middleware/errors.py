"""Every non-2xx answer gets one JSON shape: {"error": {"code", "message", "request_id"}}.

This is the only place that turns exceptions into HTTP answers (the outermost layer, `edge`, calls it): the
gateway's own ApiError tree, aiohttp's HTTP exceptions (404, 405, 413 ...), database unavailability (503 with
Retry-After), a client that hung up (499, at INFO: not a server error) and anything unexpected (500, the stack in
the log, never in a production body).

aiohttp answers some requests before any middleware runs: those it cannot parse as HTTP (a bad header, an invalid
character in the path, TLS sent to the plain port). `install_protocol_error_answers` makes those answers the same
JSON shape, with a request id and the security headers (no Server banner), counted in the metrics and logged
once at INFO with the parser's reason: internet noise, not an error with a stack trace.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway import context
from gateway.db.errors import UNAVAILABLE_ERRORS
from gateway.errors import ApiError, DatabaseUnavailable
from gateway.middleware import access, request_id
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
    417: "expectation_failed",
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


# nginx's status for a request whose client hung up before the answer: logged, counted, never a server error.
CLIENT_CLOSED_REQUEST = 499


def client_gone(request: web.BaseRequest) -> bool:
    """The client closed the connection (mid-body, or while waiting for the answer)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def client_closed_status() -> int:
    """Log a client abort (INFO: nothing for the operator to do) and give its status."""
    log.info("client closed the connection before the answer", extra={"code": "client_closed_request"})
    return CLIENT_CLOSED_REQUEST


def error_answer(exc: Exception, *, show_trace: bool, client_closed: bool = False) -> web.Response:
    """The JSON answer for an exception. A redirect (an HTTPException below 400) is raised again.

    `client_closed`: the client hung up, so whatever failed (reading the rest of the body, most often) is the
    client's abort, not the server's or the database's; nobody reads the answer, it is only logged and counted."""
    if client_closed and not isinstance(exc, web.HTTPException | ApiError):
        return error_response(client_closed_status(), "client_closed_request", "The client closed the connection")
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


# The route label of requests aiohttp could not parse (no route was looked up).
MALFORMED_ROUTE = "malformed"


def protocol_error_answer(
    handler: RequestHandler,
    request: web.BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    """The gateway's `RequestHandler.handle_error`: aiohttp calls it for a request it could not parse (4xx, before
    any middleware) and for a handler failure that escaped the middleware stack (500, 504). The connection is
    closed after the answer, as aiohttp does."""
    if request.writer.output_size > 0:  # part of an answer went out already: aiohttp drops the connection
        raise ConnectionError("an answer was partly sent; no error answer can follow it")
    ctx = request.get(context.CONTEXT_KEY)
    counted = ctx is not None  # the edge layer ran: it has counted and logged this request already
    if ctx is None:
        ctx = context.RequestContext(context.accept_or_make_request_id(None), MALFORMED_ROUTE, request.remote or "")
    token = context.current.set(ctx)
    try:
        if status >= 500:
            log.error("request failed outside the middleware stack", exc_info=exc, extra={"code": "internal_error"})
            response = error_response(status, "internal_error", "Internal server error")
        else:
            # The parser's first line ("Invalid character in Content-Length:"), never the raw bytes it quotes.
            lines = (message or "").strip().splitlines()
            ctx.fields["reason"] = (lines[0] if lines else _AIOHTTP_CODES.get(status, "http_error"))[:200]
            response = error_response(status, _AIOHTTP_CODES.get(status, "bad_request"), "Malformed HTTP request")
        request_id.stamp(response.headers, ctx)
        response.force_close()
        if not counted:
            access.record(request, ctx, status, 0.0, True)
    finally:
        context.current.reset(token)
    return response


def install_protocol_error_answers() -> None:
    """Route aiohttp's protocol-level error answers (every server in this process) through
    `protocol_error_answer`. Idempotent."""
    RequestHandler.handle_error = protocol_error_answer  # type: ignore[method-assign,assignment]
