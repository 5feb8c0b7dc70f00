"""Slow and greedy clients, at the connection: a cap on open connections per process and a deadline for the
first request head. The public listener of `gateway serve` (`start_listener`).

aiohttp bounds the rest through its public settings (keyword arguments of `web.AppRunner`: `app_runner`):

- HTTP_KEEPALIVE_TIMEOUT_SECONDS is aiohttp's `keepalive_timeout`: an idle keep-alive connection is closed after
  it, and so is one whose next request head is not complete within it of the previous answer;
- the body of a request is read within HTTP_BODY_TIMEOUT_SECONDS by the innermost layer of the route
  (gateway/middleware/body_read.py: 408).

What is left is here, wrapped around each of aiohttp's protocol objects (`runner.server` makes them):

- HTTP_MAX_CONNECTIONS: a connection beyond it is answered 503 (JSON, `Retry-After`) and closed at once, before
  aiohttp reads a byte of it; counted in `gateway_connections_refused_total`;
- HTTP_HEAD_TIMEOUT_SECONDS: a new connection must have sent a complete request head (the empty line after its
  headers) within this time, or it is answered 408 (JSON) and closed; counted in
  `gateway_slow_clients_total{phase="head"}`.

An ingress in front (nginx, an Envoy or a cloud load balancer) normally buffers requests and applies its own
timeouts and connection limits, so the gateway mostly sees the ingress's few long-lived connections: keep
HTTP_KEEPALIVE_TIMEOUT_SECONDS above the ingress's upstream idle timeout (otherwise the ingress may reuse a
connection the gateway is closing) and HTTP_MAX_CONNECTIONS above what the ingress opens per pod.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

import orjson
from aiohttp import web
from multidict import CIMultiDict

from gateway import context, metrics
from gateway.middleware import request_id
from gateway.security_headers import JSON_DEFAULTS
from gateway.settings import Settings

log = logging.getLogger("gateway.connections")

_END_OF_HEAD = b"\r\n\r\n"
# aiohttp's default: how long an unread body is drained after the answer.
LINGERING_SECONDS = 10.0
# Route label of answers made here (no request was parsed, no route looked up).
CONNECTION_ROUTE = "connection"


def raw_error(status: HTTPStatus, code: str, message: str, *, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 error answer in the gateway's JSON shape, for a connection no request object exists
    for yet; the connection is closed after it."""
    ctx = context.RequestContext(context.accept_or_make_request_id(None), CONNECTION_ROUTE)
    body = orjson.dumps({"error": {"code": code, "message": message, "request_id": ctx.request_id}})
    headers: CIMultiDict[str] = CIMultiDict(JSON_DEFAULTS)
    request_id.stamp(headers, ctx)
    headers["Content-Length"] = str(len(body))
    headers["Connection"] = "close"
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    head = f"HTTP/1.1 {status.value} {status.phrase}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


@dataclass(slots=True)
class ConnectionLimits:
    """What every guarded connection of one listener shares."""

    max_connections: int
    head_timeout: float
    open: int = 0
    refused_answer: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.refused_answer = raw_error(
            HTTPStatus.SERVICE_UNAVAILABLE, "too_many_connections", "Too many connections, retry later", retry_after=1
        )


class GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the connection cap and the first head's deadline."""

    def __init__(self, inner: asyncio.Protocol, limits: ConnectionLimits) -> None:
        self._inner = inner
        self._limits = limits
        self._transport: asyncio.Transport | None = None
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes received while waiting for the end of the first head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        limits = self._limits
        limits.open += 1
        metrics.CONNECTIONS_OPEN.inc()
        if limits.open > limits.max_connections:
            self._refused = True
            metrics.CONNECTIONS_REFUSED.inc()
            log.info("connection refused: too many connections", extra={"code": "too_many_connections"})
            self._transport.write(limits.refused_answer)
            self._transport.close()
            return
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(limits.head_timeout, self._head_too_slow)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._head_timer is not None:
            window = self._tail + data
            if _END_OF_HEAD in window:
                self._head_timer.cancel()
                self._head_timer = None
                self._tail = b""
            else:
                self._tail = window[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._refused else self._inner.eof_received()

    def pause_writing(self) -> None:
        if not self._refused:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if not self._refused:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._limits.open -= 1
        metrics.CONNECTIONS_OPEN.dec()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if not self._refused:
            self._inner.connection_lost(exc)

    def _head_too_slow(self) -> None:
        self._head_timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        metrics.SLOW_CLIENTS.labels("head").inc()
        log.info("request head not received in time, connection closed", extra={"code": "request_timeout"})
        transport.write(raw_error(HTTPStatus.REQUEST_TIMEOUT, "request_timeout", "The request head took too long"))
        transport.close()


def guarded(server: web.Server, limits: ConnectionLimits) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for `loop.create_server`: aiohttp's protocol behind the limits."""
    return lambda: GuardedConnection(server(), limits)


def app_runner(app: web.Application, settings: Settings, *, shutdown_timeout: float = 60.0) -> web.AppRunner:
    """The runner of the public app, with aiohttp's own bounds: `keepalive_timeout` (idle connections and the
    next request's head) and `lingering_time` (after an answer that left part of the body unread, aiohttp reads
    and drops the rest for at most this long before it closes: no longer than the body was given already)."""
    return web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        access_log=None,
        keepalive_timeout=settings.http_keepalive_timeout_seconds,
        lingering_time=min(LINGERING_SECONDS, settings.http_body_timeout_seconds),
    )


async def start_listener(
    runner: web.AppRunner, settings: Settings, host: str, port: int, *, reuse_port: bool = False
) -> asyncio.Server:
    """Listen on host:port for `runner` (set up already) behind the limits; the caller closes the server before
    `runner.cleanup()`."""
    server = runner.server
    if server is None:
        raise RuntimeError("call runner.setup() first")
    limits = ConnectionLimits(settings.http_max_connections, settings.http_head_timeout_seconds)
    loop = asyncio.get_running_loop()
    return await loop.create_server(guarded(server, limits), host, port, reuse_port=reuse_port or None)
