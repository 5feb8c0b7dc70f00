"""Per-request context: the request id and the business ids logged with every line of a request.

A contextvar carries it into every log record; the same object is stored on the request so middlewares that clone
the request (body limit) still share it.
"""

from __future__ import annotations

import contextvars
import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import istr

if TYPE_CHECKING:
    from gateway.auth.identity import TokenCheck

REQUEST_ID_HEADER = istr("X-Request-ID")  # istr: multidict skips case-folding it on each use
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,128}$")
_getrandbits = random.getrandbits  # the module's generator, reseeded in a forked worker


@dataclass(slots=True)
class RequestContext:
    request_id: str
    route: str = "unmatched"
    client_ip: str = ""
    secure: bool = False
    user_id: str | None = None
    roles: frozenset[str] = frozenset()
    authenticated: bool = False
    token_check: TokenCheck | None = None  # bearer token, verified once per request (gateway.auth.identity)
    fields: dict[str, Any] = field(default_factory=dict)


current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("request_context", default=None)

CONTEXT_KEY = web.RequestKey("request_context", RequestContext)


def accept_or_make_request_id(inbound: str | None) -> str:
    if inbound and _REQUEST_ID_RE.match(inbound):
        return inbound
    # An identifier, not a secret: the fast PRNG is enough (no system call per request). 32 hex digits; the
    # bytes' hex() is about twice as fast as formatting the integer.
    return _getrandbits(128).to_bytes(16, "big").hex()


def get_context(request: web.Request) -> RequestContext:
    return request[CONTEXT_KEY]


def request_id() -> str | None:
    ctx = current.get()
    return ctx.request_id if ctx else None


def bind(**fields: Any) -> None:
    """Attach business ids (orderId, stripeEventId, ...) to the current request's log lines."""
    ctx = current.get()
    if ctx is not None:
        ctx.fields.update({k: v for k, v in fields.items() if v is not None})
