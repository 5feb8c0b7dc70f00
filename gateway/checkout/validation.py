"""Strict validation of JSON request bodies: exact types, bounds, no unknown fields, all problems at once.

A problem is `{"field": "items[0].quantity", "problem": "..."}`; `ValidationFailed` (422) carries the list in
`details`. The client never sends a price: a checkout body names products and quantities only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from gateway.errors import BadRequest, ValidationFailed
from gateway.input_rules import refuse_unstorable
from gateway.settings import Settings

MAX_ITEMS = 50
MAX_QUANTITY = 100
MAX_URL_LENGTH = 2048
MAX_PRODUCT_ID = 2**63 - 1
IDEMPOTENCY_KEY_MAX = 255


class Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, field: str, problem: str) -> None:
        self.items.append({"field": field, "problem": problem})

    def raise_if_any(self, message: str = "The request body is not valid") -> None:
        if self.items:
            raise ValidationFailed(message, details=self.items)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; 400 when it is not JSON, 422 when it is not an object."""
    ctype = request.content_type
    if ctype not in ("application/json", "") and not ctype.endswith("+json"):
        raise BadRequest("The body must be JSON (Content-Type: application/json)", code="unsupported_content_type")
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("The body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ValidationFailed("The body must be a JSON object", details=[{"field": "", "problem": "not an object"}])
    refuse_unstorable(body)
    return body


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def refuse_unknown(body: Mapping[str, Any], allowed: frozenset[str], problems: Problems, prefix: str = "") -> None:
    for key in sorted(set(body) - allowed):
        problems.add(f"{prefix}{key}", "unknown field")


# ------------------------------------------------------------------ checkout


@dataclass(frozen=True, slots=True)
class CheckoutItem:
    product_id: int
    quantity: int


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    items: tuple[CheckoutItem, ...]  # sorted by product id
    success_url: str
    cancel_url: str

    def fingerprint(self) -> str:
        """A stable hash of what was asked (for Idempotency-Key replays)."""
        canonical = orjson.dumps(
            {
                "items": [[i.product_id, i.quantity] for i in self.items],
                "success_url": self.success_url,
                "cancel_url": self.cancel_url,
            }
        )
        return hashlib.sha256(canonical).hexdigest()


_CHECKOUT_FIELDS = frozenset({"mode", "items", "success_url", "cancel_url"})
_ITEM_FIELDS = frozenset({"product_id", "quantity"})


def _origin(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default_port = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default_port) else "")


def redirect_origins(settings: Settings) -> frozenset[str]:
    """Origins a checkout redirect may point at: the frontend origins (CORS_ORIGINS, never `*`) and the
    origins of the configured default URLs."""
    origins = {_origin(o) for o in settings.cors_origins if o != "*"}
    origins.add(_origin(settings.checkout_success_url))
    origins.add(_origin(settings.checkout_cancel_url))
    return frozenset(o for o in origins if o is not None)


def redirect_url(body: Mapping[str, Any], name: str, default: str, allowed: frozenset[str], problems: Problems) -> str:
    if name not in body:
        return default
    value = body[name]
    if not isinstance(value, str) or not value:
        problems.add(name, "must be a non-empty string")
        return default
    if len(value) > MAX_URL_LENGTH:
        problems.add(name, f"must be at most {MAX_URL_LENGTH} characters")
        return default
    if any(ch in value for ch in "\r\n\t\\ ") or "@" in (urlsplit(value).netloc if "//" in value else ""):
        problems.add(name, "is not an acceptable URL")
        return default
    origin = _origin(value)
    if origin is None or origin not in allowed:
        problems.add(name, "must be an absolute URL on one of the frontend origins")
        return default
    return value


def parse_checkout(body: Mapping[str, Any], settings: Settings) -> CheckoutRequest:
    problems = Problems()
    refuse_unknown(body, _CHECKOUT_FIELDS, problems)
    if body.get("mode", "payment") != "payment":  # mode subscription: gateway/billing/checkout.py
        problems.add("mode", "must be payment or subscription")
    items: list[CheckoutItem] = []
    raw_items = body.get("items")
    if not isinstance(raw_items, list):
        problems.add("items", "required, a list of {product_id, quantity}")
    elif not 1 <= len(raw_items) <= MAX_ITEMS:
        problems.add("items", f"must hold 1 to {MAX_ITEMS} items")
    else:
        seen: set[int] = set()
        for index, raw in enumerate(raw_items):
            where = f"items[{index}]"
            if not isinstance(raw, dict):
                problems.add(where, "must be an object {product_id, quantity}")
                continue
            refuse_unknown(raw, _ITEM_FIELDS, problems, prefix=f"{where}.")
            product_id = raw.get("product_id")
            quantity = raw.get("quantity")
            ok = True
            if not is_int(product_id) or not 1 <= product_id <= MAX_PRODUCT_ID:
                problems.add(f"{where}.product_id", "required, a positive integer")
                ok = False
            elif product_id in seen:
                problems.add(f"{where}.product_id", "appears twice; give one line per product")
                ok = False
            if not is_int(quantity) or not 1 <= quantity <= MAX_QUANTITY:
                problems.add(f"{where}.quantity", f"required, an integer from 1 to {MAX_QUANTITY}")
                ok = False
            if ok and is_int(product_id) and is_int(quantity):
                seen.add(product_id)
                items.append(CheckoutItem(product_id, quantity))
    allowed = redirect_origins(settings)
    success_url = redirect_url(body, "success_url", settings.checkout_success_url, allowed, problems)
    cancel_url = redirect_url(body, "cancel_url", settings.checkout_cancel_url, allowed, problems)
    problems.raise_if_any()
    return CheckoutRequest(tuple(sorted(items, key=lambda i: i.product_id)), success_url, cancel_url)


def idempotency_key(request: web.Request) -> str | None:
    """The `Idempotency-Key` header: None when absent; 400 when malformed (1..255 visible ASCII chars)."""
    values = request.headers.getall("Idempotency-Key", [])
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest("Send one Idempotency-Key header", code="invalid_idempotency_key")
    key = values[0].strip()
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX or not all(33 <= ord(ch) <= 126 for ch in key):
        raise BadRequest(
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters",
            code="invalid_idempotency_key",
        )
    return key
