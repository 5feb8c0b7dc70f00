"""A local fake of Stripe's HTTP API (the part the gateway calls), as an aiohttp app. Never call the real API.

Start it in a test with the `fake_stripe` fixture below (registered for the whole suite in tests/conftest.py),
or by hand: `fake = FakeStripe(); server = await aiohttp_server(fake.app); fake.base_url =
str(server.make_url(""))`.

Point the official SDK's async client at it (verified with stripe 16.1.0):

    client = stripe.StripeClient(
        "sk_test_...",
        base_addresses={"api": fake.base_url},
        http_client=stripe.AIOHTTPClient(),
        stripe_version="2025-03-31.basil",
        max_network_retries=0,
    )
    session = await client.v1.checkout.sessions.create_async(
        params={"mode": "payment", "line_items": [...], ...},
        options={"idempotency_key": "checkout:<order id>"},
    )
    await client.v1.checkout.sessions.retrieve_async(session.id)
    await client.v1.checkout.sessions.expire_async(session.id)
    page = await client.v1.events.list_async(params={"created": {"gte": ts}, "limit": 100})
    event = await client.v1.events.retrieve_async("evt_...")
    await client._requestor._client.close_async()   # or: fake.sdk_client(...) + close_sdk_client(client)

Endpoints
- POST /v1/checkout/sessions                 create (idempotent by `Idempotency-Key`, see below)
- GET  /v1/checkout/sessions/{id}            retrieve
- POST /v1/checkout/sessions/{id}/expire     expire an open session (400 otherwise, as Stripe)
- GET  /v1/events                            list, newest first: `created` / `created[gte|gt|lte|lt]`, `type`,
                                             `types[]`, `limit` (1..100, default 10), `starting_after`,
                                             `ending_before`, `has_more`
- GET  /v1/events/{id}                       retrieve
- POST /v1/webhook_endpoints                 create (`url`, `enabled_events` required; `api_version` optional); the
                                             `secret` is in this answer only, as Stripe
- GET  /v1/webhook_endpoints                 list, newest first (`limit`, `starting_after`)
- GET  /v1/webhook_endpoints/{id}            retrieve (no secret)
- POST /v1/webhook_endpoints/{id}            update: `url`, `enabled_events`, `disabled`, `description`, `metadata`
                                             only (an endpoint's `api_version` cannot be changed: 400, as Stripe)
- DELETE /v1/webhook_endpoints/{id}          delete
- GET  /v1/subscriptions                     list: `customer`, `status` (default: every status but canceled;
                                             `all`), `limit`, `starting_after`
- GET  /v1/payment_intents/{id}              retrieve (`store_payment_intent`, `add_payment_intent`),
                                             `expand[]=latest_charge`
- GET  /v1/charges/{id}                      retrieve (`store_charge`)
- GET  /v1/subscriptions/{id}                retrieve (`store_subscription`, `add_subscription`)
- POST /v1/subscriptions/{id}                update: `items[][id|price|quantity]`, `proration_behavior`
                                             (create_prorations|none|always_invoice), `cancel_at_period_end`,
                                             `metadata`; a canceled subscription refuses everything else
- DELETE /v1/subscriptions/{id}              cancel now (`invoice_now`, `prorate`); a canceled one answers 400
- POST /v1/subscriptions/{id}/resume         resume a PAUSED subscription only (`billing_cycle_anchor`
                                             now|unchanged, `proration_behavior`)
- POST /v1/billing_portal/sessions           `customer` required and known, `return_url` a valid URL; 400 when
                                             no portal configuration exists (`portal_configured = False`)
- POST /v1/refunds                           `payment_intent` or `charge` required, `amount` 1..what is left,
                                             `reason` duplicate|fraudulent|requested_by_customer
Checkout sessions check the mode rules: `subscription_data` (trial_period_days 1..730) only in subscription
mode, `payment_intent_data` and `customer_creation` only in payment mode, recurring prices only in subscription
mode, `allow_promotion_codes` and `discounts` not together, `automatic_tax[enabled]` /
`tax_id_collection[enabled]` booleans, and with an existing `customer`: `customer_update[address]=auto` (or a
shipping one) for automatic tax and `customer_update[name]=auto` for tax id collection.
Anything else answers Stripe's 404 "Unrecognized request URL".

Every request is recorded in `fake.requests` (method, path, decoded query and form params with Stripe's
bracket notation turned back into nested dicts/lists, headers incl. Idempotency-Key, Stripe-Version,
Authorization).

Idempotency (POST only, scoped by API key): the same key with the same params replays the first answer (same
body and status, header `Idempotent-Replayed: true`); the same key with other params or on another path
answers 400 `idempotency_error`; the same key while the first request is still running answers 409
`idempotency_error`.

Helpers: `complete_session(id, payment_intent=..., promotion_code=..., tax=..., tax_ids=...)` (what Stripe does
when the customer pays: a payment intent and charge, or a customer and a subscription, trialing when the session
asked for a trial), `add_promotion_code(...)`, `add_customer(...)`, `add_subscription(...)`,
`add_payment_intent(...)`,
`add_price(...)` (price ids accepted in `line_items[][price]`; unknown ones answer 400 as Stripe),
`add_event(s)` (preload the Events API), `requests_to(method, path)`, `wait_for_requests(n)`,
`sdk_client(...)` / `close_sdk_client(...)`.

Faults: `fail_next(n, status=500, ...)` answers the next n matching requests with a Stripe error body (a 429
with `retry_after=` carries Stripe's `Retry-After` header);
`delay_next(n, seconds)` delays them. Fault answers are produced before the endpoint runs and are never stored
under the idempotency key (as when Stripe fails before executing), so a retry with the same key succeeds.
"""

from __future__ import annotations

import asyncio
import copy
import re
import secrets
import string
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pytest
import stripe
from aiohttp import web

from gateway.settings import DEFAULT_STRIPE_API_VERSION

_ALPHABET = string.ascii_letters + string.digits
SESSION_DEFAULT_TTL = 24 * 3600
SESSION_MIN_TTL = 30 * 60
SESSION_MAX_TTL = 24 * 3600
EXPIRES_AT_SLACK = 10  # seconds of clock/latency slack the fake grants around Stripe's 30 min .. 24 h window


def _token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


# -------------------------------------------------------------------------------------------- form decoding

_KEY_PART = re.compile(r"\[([^\[\]]*)\]")


def _split_key(key: str) -> list[str]:
    head, bracket, rest = key.partition("[")
    if not bracket:
        return [key]
    return [head, *_KEY_PART.findall("[" + rest)]


def _listify(value: Any) -> Any:
    if isinstance(value, dict):
        converted = {k: _listify(v) for k, v in value.items()}
        if converted and all(k.isdigit() for k in converted):
            indexes = sorted(int(k) for k in converted)
            if indexes == list(range(len(indexes))):
                return [converted[str(i)] for i in indexes]
        return converted
    return value


def decode_stripe_params(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """`line_items[0][price_data][unit_amount]=100&expand[]=x` -> nested dicts and lists (values: str)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = _split_key(key)
        node = root
        for part in parts[:-1]:
            name = part if part != "" else str(len(node))
            child = node.get(name)
            if not isinstance(child, dict):
                child = {}
                node[name] = child
            node = child
        last = parts[-1] if parts[-1] != "" else str(len(node))
        node[last] = value
    result = _listify(root)
    assert isinstance(result, dict)
    return result


# ----------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, Any]
    params: dict[str, Any]
    headers: dict[str, str]
    raw_body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None

    @property
    def idempotency_key(self) -> str | None:
        return self.header("Idempotency-Key")

    @property
    def stripe_version(self) -> str | None:
        return self.header("Stripe-Version")

    @property
    def authorization(self) -> str | None:
        return self.header("Authorization")


@dataclass
class Fault:
    remaining: int
    status: int | None = None
    error: dict[str, Any] | None = None
    delay: float = 0.0
    method: str | None = None
    path: str | None = None  # exact path or a prefix ending with "*"
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        if self.path is None:
            return True
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path


@dataclass
class _Stored:
    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: dict[str, Any]


# ----------------------------------------------------------------------------------------------- the fake


class StripeFakeError(Exception):
    def __init__(
        self, status: int, type_: str, message: str, *, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {
            "error": {
                "type": type_,
                "message": message,
                "code": code,
                "param": param,
                "doc_url": None,
                "request_log_url": None,
            }
        }


def _int_param(params: dict[str, Any], name: str, *, path: str | None = None) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise StripeFakeError(
            400,
            "invalid_request_error",
            f"Invalid integer: {raw}",
            code="parameter_invalid_integer",
            param=path or name,
        ) from None


def _bool_param(params: dict[str, Any], name: str, *, path: str | None = None) -> bool | None:
    raw = params.get(name)
    if raw is None:
        return None
    if raw in ("true", "false"):
        return raw == "true"
    raise StripeFakeError(
        400, "invalid_request_error", f"Invalid boolean: {raw}", code="parameter_invalid_boolean", param=path or name
    )


def _enum_param(params: dict[str, Any], name: str, allowed: tuple[str, ...], *, path: str | None = None) -> str | None:
    raw = params.get(name)
    if raw is None:
        return None
    if raw not in allowed:
        raise StripeFakeError(
            400,
            "invalid_request_error",
            f"Invalid {path or name}: must be one of {', '.join(allowed)}",
            code="parameter_invalid_string",
            param=path or name,
        )
    return str(raw)


def _missing(param: str) -> StripeFakeError:
    return StripeFakeError(
        400, "invalid_request_error", f"Missing required param: {param}.", code="parameter_missing", param=param
    )


def _no_such(kind: str, object_id: str, param: str) -> StripeFakeError:
    return StripeFakeError(
        404 if param == "id" else 400,
        "invalid_request_error",
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


PRORATION_BEHAVIORS = ("create_prorations", "none", "always_invoice")
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
MAX_TRIAL_PERIOD_DAYS = 730


class FakeStripe:
    """In-memory Stripe: checkout sessions, events, request log, idempotency and fault injection."""

    def __init__(self, *, api_key: str | None = None, livemode: bool = False) -> None:
        self.api_key = api_key  # None: any `Bearer sk_...`/`rk_...` key is accepted
        self.livemode = livemode
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.session_line_items: dict[str, list[dict[str, Any]]] = {}
        self.session_params: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.prices: dict[str, dict[str, Any]] = {}
        self.webhook_endpoints: dict[str, dict[str, Any]] = {}  # without their secret (Stripe shows it once)
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.customers: set[str] = set()
        self.refunds: dict[str, dict[str, Any]] = {}
        self.promotion_codes: dict[str, dict[str, Any]] = {}
        self.portal_configured = True
        self._faults: list[Fault] = []
        self._idempotent: dict[tuple[str, str], _Stored] = {}
        self._in_flight: set[tuple[str, str]] = set()
        self._request_added = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)

    # ---- test controls -------------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        error_type: str | None = None,
        code: str | None = None,
        message: str | None = None,
        method: str | None = None,
        path: str | None = None,
        should_retry: bool | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next `n` matching requests with `status` and a Stripe error body.

        `error_type` defaults from the status: 500 api_error, 429 rate_limit_error (code rate_limit),
        402 card_error, 401 authentication_error, other 4xx invalid_request_error. `should_retry` sets the
        `Stripe-Should-Retry` header the SDK honours.
        """
        default_type = {
            500: "api_error",
            502: "api_error",
            503: "api_error",
            429: "rate_limit_error",
            402: "card_error",
            401: "authentication_error",
        }.get(status, "invalid_request_error")
        if status == 429 and code is None:
            code = "rate_limit"
        headers = {} if should_retry is None else {"Stripe-Should-Retry": "true" if should_retry else "false"}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        self._faults.append(
            Fault(
                remaining=n,
                status=status,
                error={
                    "type": error_type or default_type,
                    "code": code,
                    "message": message or f"Fake Stripe forced error ({status})",
                    "param": None,
                    "doc_url": None,
                    "request_log_url": None,
                },
                method=method,
                path=path,
                headers=headers,
            )
        )

    def delay_next(
        self, n: int = 1, seconds: float = 1.0, *, method: str | None = None, path: str | None = None
    ) -> None:
        """Delay the next `n` matching requests by `seconds` (then answer normally)."""
        self._faults.append(Fault(remaining=n, delay=seconds, method=method, path=path))

    def clear_faults(self) -> None:
        self._faults.clear()

    def add_price(self, price_id: str, unit_amount: int, currency: str = "eur", *, recurring: bool = False) -> None:
        """Declare a price id usable in `line_items[][price]`."""
        self.prices[price_id] = {
            "id": price_id,
            "object": "price",
            "unit_amount": unit_amount,
            "currency": currency,
            "type": "recurring" if recurring else "one_time",
            "recurring": {"interval": "month", "interval_count": 1} if recurring else None,
        }

    def add_event(self, event: dict[str, Any]) -> None:
        """Preload an event for GET /v1/events (listed newest `created` first; ties: latest added first)."""
        self.events.append(copy.deepcopy(event))

    def add_events(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            self.add_event(event)

    def store_subscription(self, subscription: dict[str, Any]) -> None:
        """Store a subscription object as given, for GET /v1/subscriptions[/{id}] (replaces one with the same id)."""
        self.subscriptions[subscription["id"]] = copy.deepcopy(subscription)

    def store_payment_intent(self, payment_intent: dict[str, Any]) -> None:
        """Store a payment intent as given, for GET /v1/payment_intents/{id} (`latest_charge`: an id of
        `store_charge`)."""
        self.payment_intents[payment_intent["id"]] = copy.deepcopy(payment_intent)

    def store_charge(self, charge: dict[str, Any]) -> None:
        self.charges[charge["id"]] = copy.deepcopy(charge)

    async def wait_for_requests(self, count: int) -> None:
        """Wait until at least `count` requests have reached the fake (wrap in asyncio.timeout if needed)."""
        while len(self.requests) < count:
            self._request_added.clear()
            await self._request_added.wait()

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """Recorded requests with this method and path (path may end with `*` for a prefix)."""
        out = []
        for req in self.requests:
            if req.method != method.upper():
                continue
            if (path.endswith("*") and req.path.startswith(path[:-1])) or req.path == path:
                out.append(req)
        return out

    def complete_session(
        self,
        session_id: str,
        *,
        payment_intent: str | None = None,
        customer: str | None = None,
        subscription: str | None = None,
        payment_status: str = "paid",
        promotion_code: str | None = None,
        tax: int = 0,
        tax_ids: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        """Mark a session completed as Stripe does when the customer pays; returns the new session object.

        Payment mode: a payment intent and its charge (refundable). Subscription mode: a customer and a
        subscription (trialing when `subscription_data.trial_period_days` was given). `promotion_code` applies
        one of `add_promotion_code`, `tax` adds that much tax, `tax_ids` are the customer's tax ids."""
        session = self.sessions[session_id]
        params = self.session_params[session_id]
        subtotal = int(session["amount_subtotal"] or 0)
        discount = 0
        if promotion_code is not None:
            promo = self.promotion_codes[promotion_code]
            if promo["percent_off"] is not None:
                discount = subtotal * int(promo["percent_off"]) // 100
            else:
                discount = min(subtotal, int(promo["amount_off"]))
            session["discounts"] = [{"coupon": promo["coupon"]["id"], "promotion_code": promotion_code}]
        session["status"] = "complete"
        session["payment_status"] = payment_status
        session["url"] = None
        session["total_details"] = {"amount_discount": discount, "amount_shipping": 0, "amount_tax": tax}
        session["amount_total"] = subtotal - discount + tax
        if session["customer"] is None and (customer is not None or session["mode"] == "subscription"):
            session["customer"] = customer or "cus_" + _token(14)
        elif customer is not None:
            session["customer"] = customer
        if session["customer"]:
            self.customers.add(session["customer"])
        session["customer_details"] = {
            "address": {"country": "DE"},
            "email": None,
            "name": None,
            "tax_exempt": "none",
            "tax_ids": list(tax_ids or []),
        }
        if session["mode"] == "payment":
            intent = self.add_payment_intent(
                payment_intent or "pi_" + _token(24), session["amount_total"], session["currency"] or "eur"
            )
            session["payment_intent"] = intent["id"]
        if session["mode"] == "subscription":
            data = params.get("subscription_data") if isinstance(params.get("subscription_data"), dict) else {}
            trial_days = _int_param(data, "trial_period_days") or 0
            lines = self.session_line_items[session_id]
            sub = self.add_subscription(
                subscription or "sub_" + _token(24),
                customer=session["customer"],
                price=str(lines[0]["price"]) if lines and isinstance(lines[0]["price"], str) else "price_unknown",
                trial_days=trial_days,
                metadata=dict(data.get("metadata") or {}),
            )
            session["subscription"] = sub["id"]
        return copy.deepcopy(session)

    def add_promotion_code(
        self, promotion_code_id: str, code: str, *, percent_off: int | None = None, amount_off: int | None = None
    ) -> None:
        """Declare an active promotion code usable in `discounts[][promotion_code]` (and at completion)."""
        self.promotion_codes[promotion_code_id] = {
            "id": promotion_code_id,
            "object": "promotion_code",
            "active": True,
            "code": code,
            "coupon": {"id": "co_" + _token(8), "percent_off": percent_off, "amount_off": amount_off},
            "percent_off": percent_off,
            "amount_off": amount_off,
        }

    def add_customer(self, customer_id: str) -> None:
        self.customers.add(customer_id)

    def add_payment_intent(self, payment_intent_id: str, amount: int, currency: str = "eur") -> dict[str, Any]:
        """A succeeded payment intent with one charge (what refunds refer to)."""
        charge_id = "ch_" + _token(24)
        self.charges[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": amount,
            "amount_refunded": 0,
            "currency": currency,
            "payment_intent": payment_intent_id,
            "refunded": False,
            "receipt_url": f"https://pay.stripe.com/receipts/payment/{_token(40)}",
        }
        intent = {
            "id": payment_intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": amount,
            "currency": currency,
            "status": "succeeded",
            "latest_charge": charge_id,
        }
        self.payment_intents[payment_intent_id] = intent
        return copy.deepcopy(intent)

    def add_subscription(
        self,
        subscription_id: str,
        *,
        customer: str | None = None,
        price: str,
        trial_days: int = 0,
        status: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A subscription on one price (declare the price with `add_price(..., recurring=True)` first)."""
        now = int(time.time())
        customer = customer or "cus_" + _token(14)
        self.customers.add(customer)
        period_end = now + (trial_days * 86400 if trial_days else 30 * 86400)
        sub: dict[str, Any] = {
            "id": subscription_id,
            "object": "subscription",
            "cancel_at": None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "created": now,
            "currency": self.prices.get(price, {}).get("currency", "eur"),
            "customer": customer,
            "ended_at": None,
            "items": {
                "object": "list",
                "data": [self._subscription_item(subscription_id, price, now, period_end)],
                "has_more": False,
            },
            "latest_invoice": "in_" + _token(24),
            "livemode": self.livemode,
            "metadata": dict(metadata or {}),
            "pause_collection": None,
            "status": status or ("trialing" if trial_days else "active"),
            "trial_end": period_end if trial_days else None,
            "trial_start": now if trial_days else None,
        }
        self.subscriptions[subscription_id] = sub
        return copy.deepcopy(sub)

    def _subscription_item(self, subscription_id: str, price: str, start: int, end: int) -> dict[str, Any]:
        return {
            "id": "si_" + _token(14),
            "object": "subscription_item",
            "current_period_end": end,
            "current_period_start": start,
            "price": copy.deepcopy(self.prices.get(price, {"id": price, "object": "price"})),
            "quantity": 1,
            "subscription": subscription_id,
        }

    def sdk_client(
        self,
        api_key: str = "sk_test_fake",
        *,
        stripe_version: str = DEFAULT_STRIPE_API_VERSION,
        max_network_retries: int = 0,
    ) -> stripe.StripeClient:
        """An official SDK client aimed at this fake (close it with `close_sdk_client`)."""
        return stripe.StripeClient(
            api_key,
            base_addresses={"api": self.base_url},
            http_client=stripe.AIOHTTPClient(),
            stripe_version=stripe_version,
            max_network_retries=max_network_retries,
        )

    # ---- HTTP ------------------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        params: dict[str, Any] = {}
        content_type = request.headers.get("Content-Type", "")
        if raw and content_type.startswith("application/x-www-form-urlencoded"):
            params = decode_stripe_params(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        query = decode_stripe_params(parse_qsl(request.query_string, keep_blank_values=True))
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=query,
            params=params,
            headers=dict(request.headers),
            raw_body=raw,
        )
        self.requests.append(record)
        self._request_added.set()
        request_id = "req_" + _token(14)
        base_headers = {"Request-Id": request_id}
        if record.stripe_version:
            base_headers["Stripe-Version"] = record.stripe_version

        try:
            api_key = self._authenticate(record)
        except StripeFakeError as exc:
            return web.json_response(exc.body, status=exc.status, headers=base_headers)

        idem_key = record.idempotency_key if request.method == "POST" else None
        slot = (api_key, idem_key) if idem_key else None
        if slot is not None and idem_key is not None:
            stored = self._idempotent.get(slot)
            if stored is not None:
                if stored.path != record.path or stored.method != record.method or stored.params != params:
                    err = StripeFakeError(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters they were "
                        f"first used with. Try using a key other than '{idem_key}' if you meant to execute a "
                        "different request.",
                    )
                    return web.json_response(err.body, status=400, headers=base_headers)
                headers = {**base_headers, "Idempotent-Replayed": "true", "Idempotency-Key": idem_key}
                return web.json_response(copy.deepcopy(stored.body), status=stored.status, headers=headers)
            if slot in self._in_flight:
                err = StripeFakeError(
                    409,
                    "idempotency_error",
                    "There is currently another in-progress request using this Idempotent Key (that probably "
                    "means you submitted twice, and the other request is still going through): "
                    f"{idem_key}. Please try again later.",
                )
                return web.json_response(err.body, status=409, headers=base_headers)
            self._in_flight.add(slot)
        try:
            fault = self._take_fault(record.method, record.path)
            if fault is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status is not None:
                    return web.json_response(
                        {"error": dict(fault.error or {})},
                        status=fault.status,
                        headers={**base_headers, **fault.headers},
                    )
            try:
                status, body = self._route(record)
            except StripeFakeError as exc:
                status, body = exc.status, exc.body
            if slot is not None and status != 404 and not (status == 400 and _is_validation(body)):
                self._idempotent[slot] = _Stored(record.method, record.path, params, status, copy.deepcopy(body))
            headers = dict(base_headers)
            if idem_key:
                headers["Idempotency-Key"] = idem_key
            return web.json_response(body, status=status, headers=headers)
        finally:
            if slot is not None:
                self._in_flight.discard(slot)

    def _authenticate(self, record: RecordedRequest) -> str:
        auth = record.authorization or ""
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise StripeFakeError(
                401,
                "invalid_request_error",
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        if (self.api_key is not None and key != self.api_key) or not key.startswith(("sk_", "rk_")):
            raise StripeFakeError(
                401,
                "invalid_request_error",
                "Invalid API Key provided: " + key[:8] + "****",
                code="api_key_invalid",
            )
        return key

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and fault.matches(method, path):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _route(self, record: RecordedRequest) -> tuple[int, dict[str, Any]]:
        method, path = record.method, record.path
        parts = path.strip("/").split("/")
        if method == "POST" and parts == ["v1", "checkout", "sessions"]:
            return 200, self._create_session(record.params)
        if len(parts) == 4 and parts[:3] == ["v1", "checkout", "sessions"] and method == "GET":
            return 200, copy.deepcopy(self._session(parts[3]))
        if (
            len(parts) == 5
            and parts[:3] == ["v1", "checkout", "sessions"]
            and parts[4] == "expire"
            and method == "POST"
        ):
            return 200, self._expire_session(parts[3])
        if parts == ["v1", "events"] and method == "GET":
            return 200, self._list_events(record.query)
        if len(parts) == 3 and parts[:2] == ["v1", "subscriptions"]:
            if method == "GET":
                return 200, copy.deepcopy(self._subscription(parts[2]))
            if method == "POST":
                return 200, self._update_subscription(parts[2], record.params)
            if method == "DELETE":
                return 200, self._cancel_subscription(parts[2], record.params or record.query)
        if len(parts) == 4 and parts[:2] == ["v1", "subscriptions"] and parts[3] == "resume" and method == "POST":
            return 200, self._resume_subscription(parts[2], record.params)
        if parts == ["v1", "billing_portal", "sessions"] and method == "POST":
            return 200, self._create_portal_session(record.params)
        if parts == ["v1", "refunds"] and method == "POST":
            return 200, self._create_refund(record.params)
        if len(parts) == 3 and parts[:2] == ["v1", "events"] and method == "GET":
            return 200, copy.deepcopy(self._event(parts[2]))
        if parts[:2] == ["v1", "webhook_endpoints"]:
            return self._webhook_endpoints(method, parts[2:], record.params, record.query)
        if parts == ["v1", "subscriptions"] and method == "GET":
            return 200, self._list_subscriptions(record.query)
        if len(parts) == 3 and method == "GET" and parts[1] in ("subscriptions", "payment_intents", "charges"):
            return 200, self._retrieve(parts[1], parts[2], record.query)
        raise StripeFakeError(
            404,
            "invalid_request_error",
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can "
            "help at https://support.stripe.com/.",
        )

    # ---- webhook endpoints -----------------------------------------------------------------------------

    def _webhook_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        return _stored(self.webhook_endpoints, endpoint_id, "webhook endpoint")

    def _webhook_endpoints(
        self, method: str, rest: list[str], params: dict[str, Any], query: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if not rest and method == "POST":
            return 200, self._create_webhook_endpoint(params)
        if not rest and method == "GET":
            ordered = sorted(self.webhook_endpoints.values(), key=lambda e: (-int(e["created"]), e["id"]))
            return 200, _page(ordered, query, "/v1/webhook_endpoints")
        if len(rest) == 1 and method == "GET":
            return 200, copy.deepcopy(self._webhook_endpoint(rest[0]))
        if len(rest) == 1 and method == "POST":
            return 200, self._update_webhook_endpoint(rest[0], params)
        if len(rest) == 1 and method == "DELETE":
            self._webhook_endpoint(rest[0])
            del self.webhook_endpoints[rest[0]]
            return 200, {"id": rest[0], "object": "webhook_endpoint", "deleted": True}
        raise StripeFakeError(404, "invalid_request_error", f"Unrecognized request URL ({method}).")

    def _create_webhook_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, {"url", "enabled_events", "api_version", "description", "metadata", "connect", "expand"})
        url = _url_param(params)
        if url is None:
            raise StripeFakeError(
                400, "invalid_request_error", "Missing required param: url.", code="parameter_missing", param="url"
            )
        events = _enabled_events_param(params)
        if events is None:
            raise StripeFakeError(
                400,
                "invalid_request_error",
                "Missing required param: enabled_events.",
                code="parameter_missing",
                param="enabled_events",
            )
        version = params.get("api_version")
        if version is not None and not _API_VERSION.match(str(version)):
            raise StripeFakeError(
                400,
                "invalid_request_error",
                f"Invalid api_version: {version}",
                code="parameter_invalid",
                param="api_version",
            )
        endpoint_id = "we_" + _token(24)
        endpoint: dict[str, Any] = {
            "id": endpoint_id,
            "object": "webhook_endpoint",
            "api_version": version,
            "application": None,
            "created": int(time.time()),
            "description": params.get("description"),
            "enabled_events": events,
            "livemode": self.livemode,
            "metadata": params.get("metadata") if isinstance(params.get("metadata"), dict) else {},
            "status": "enabled",
            "url": url,
        }
        self.webhook_endpoints[endpoint_id] = endpoint
        return {**copy.deepcopy(endpoint), "secret": "whsec_" + _token(32)}

    def _update_webhook_endpoint(self, endpoint_id: str, params: dict[str, Any]) -> dict[str, Any]:
        endpoint = self._webhook_endpoint(endpoint_id)
        _only(params, {"url", "enabled_events", "disabled", "description", "metadata", "expand"})
        if "url" in params:
            url = _url_param(params)
            if url is None:
                raise StripeFakeError(400, "invalid_request_error", "Invalid URL", param="url")
            endpoint["url"] = url
        if "enabled_events" in params:
            events = _enabled_events_param(params)
            if events is None:
                raise StripeFakeError(400, "invalid_request_error", "Invalid enabled_events", param="enabled_events")
            endpoint["enabled_events"] = events
        if "disabled" in params:
            if params["disabled"] not in ("true", "false"):
                raise StripeFakeError(400, "invalid_request_error", "Invalid boolean", param="disabled")
            endpoint["status"] = "disabled" if params["disabled"] == "true" else "enabled"
        if "description" in params:
            endpoint["description"] = params["description"] or None
        if isinstance(params.get("metadata"), dict):
            endpoint["metadata"].update(params["metadata"])
        return copy.deepcopy(endpoint)

    # ---- objects: subscriptions, payment intents, charges -----------------------------------------------

    def _retrieve(self, resource: str, object_id: str, query: dict[str, Any]) -> dict[str, Any]:
        store = {"subscriptions": self.subscriptions, "payment_intents": self.payment_intents, "charges": self.charges}
        found = _stored(store[resource], object_id, resource.removesuffix("s"))
        result = copy.deepcopy(found)
        expand = query.get("expand") if isinstance(query.get("expand"), list) else []
        if resource == "payment_intents" and "latest_charge" in expand and result.get("latest_charge"):
            result["latest_charge"] = copy.deepcopy(self.charges[result["latest_charge"]])
        return result

    def _list_subscriptions(self, query: dict[str, Any]) -> dict[str, Any]:
        status = str(query.get("status") or "")
        customer = query.get("customer")

        def keep(sub: dict[str, Any]) -> bool:
            if customer is not None and sub.get("customer") != customer:
                return False
            if status == "all":
                return True
            return sub.get("status") == status if status else sub.get("status") != "canceled"

        ordered = sorted(
            (s for s in self.subscriptions.values() if keep(s)), key=lambda s: (-int(s.get("created", 0)), s["id"])
        )
        return _page(ordered, query, "/v1/subscriptions")

    # ---- checkout sessions -------------------------------------------------------------------------------

    def _session(self, session_id: str) -> dict[str, Any]:
        return _stored(self.sessions, session_id, "checkout.session", param="session")

    def _line_amounts(self, items: Any) -> tuple[int, str | None, list[dict[str, Any]]]:
        if not isinstance(items, list) or not items:
            raise StripeFakeError(
                400,
                "invalid_request_error",
                "Missing required param: line_items.",
                code="parameter_missing",
                param="line_items",
            )
        total = 0
        currency: str | None = None
        lines: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise StripeFakeError(400, "invalid_request_error", "Invalid line item", param=f"line_items[{index}]")
            quantity = _int_param(item, "quantity", path=f"line_items[{index}][quantity]") or 1
            if quantity < 1:
                raise StripeFakeError(
                    400,
                    "invalid_request_error",
                    "Quantity must be at least 1",
                    param=f"line_items[{index}][quantity]",
                )
            if "price" in item:
                price = self.prices.get(str(item["price"]))
                if price is None:
                    raise StripeFakeError(
                        400,
                        "invalid_request_error",
                        f"No such price: '{item['price']}'",
                        code="resource_missing",
                        param=f"line_items[{index}][price]",
                    )
                unit, cur = int(price["unit_amount"]), str(price["currency"])
            elif isinstance(item.get("price_data"), dict):
                data = item["price_data"]
                unit_or_none = _int_param(data, "unit_amount", path=f"line_items[{index}][price_data][unit_amount]")
                cur_raw = data.get("currency")
                if unit_or_none is None or not cur_raw:
                    raise StripeFakeError(
                        400,
                        "invalid_request_error",
                        "Missing price_data fields",
                        code="parameter_missing",
                        param=f"line_items[{index}][price_data]",
                    )
                unit, cur = unit_or_none, str(cur_raw).lower()
            else:
                raise StripeFakeError(
                    400,
                    "invalid_request_error",
                    "You must specify either `price` or `price_data` for each line item.",
                    param=f"line_items[{index}]",
                )
            if currency is not None and cur != currency:
                raise StripeFakeError(
                    400,
                    "invalid_request_error",
                    "All line items must use the same currency.",
                    param="line_items",
                )
            currency = cur
            total += unit * quantity
            lines.append(
                {
                    "id": "li_" + _token(24),
                    "object": "item",
                    "amount_subtotal": unit * quantity,
                    "amount_total": unit * quantity,
                    "currency": cur,
                    "quantity": quantity,
                    "price": item.get("price") or {"unit_amount": unit, "currency": cur},
                }
            )
        return total, currency, lines

    def _create_session(self, params: dict[str, Any]) -> dict[str, Any]:
        mode = params.get("mode")
        if mode not in ("payment", "subscription", "setup"):
            raise StripeFakeError(
                400,
                "invalid_request_error",
                "Missing required param: mode." if mode is None else f"Invalid mode: {mode}",
                code="parameter_missing" if mode is None else "parameter_invalid",
                param="mode",
            )
        self._check_session_rules(mode, params)
        now = int(time.time())
        total, currency, lines = (
            (0, params.get("currency"), []) if mode == "setup" else self._line_amounts(params.get("line_items"))
        )
        for index, line in enumerate(lines):
            price = self.prices.get(str(line["price"])) if isinstance(line["price"], str) else None
            recurring = bool(price and price["type"] == "recurring") or bool(
                isinstance(params["line_items"][index].get("price_data"), dict)
                and params["line_items"][index]["price_data"].get("recurring")
            )
            if recurring != (mode == "subscription"):
                raise StripeFakeError(
                    400,
                    "invalid_request_error",
                    "You must provide at least one recurring price in `subscription` mode when using prices."
                    if mode == "subscription"
                    else "You specified `payment` mode but passed a recurring price. Either switch to "
                    "`subscription` mode or use only one-time prices.",
                    param=f"line_items[{index}]",
                )
        expires_at = _int_param(params, "expires_at")
        if expires_at is None:
            expires_at = now + SESSION_DEFAULT_TTL
        elif not (now + SESSION_MIN_TTL - EXPIRES_AT_SLACK <= expires_at <= now + SESSION_MAX_TTL + EXPIRES_AT_SLACK):
            raise StripeFakeError(
                400,
                "invalid_request_error",
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from now.",
                code="parameter_invalid",
                param="expires_at",
            )
        prefix = "cs_live_a1" if self.livemode else "cs_test_a1"
        session_id = prefix + _token(56)
        metadata = params.get("metadata") if isinstance(params.get("metadata"), dict) else {}
        session: dict[str, Any] = {
            "id": session_id,
            "object": "checkout.session",
            "after_expiration": None,
            "allow_promotion_codes": _bool_param(params, "allow_promotion_codes"),
            "amount_subtotal": total,
            "amount_total": total,
            "automatic_tax": {
                "enabled": _bool_param(params.get("automatic_tax") or {}, "enabled") or False,
                "liability": None,
                "status": "requires_location_inputs" if params.get("automatic_tax") else None,
            },
            "discounts": [
                {"promotion_code": d.get("promotion_code"), "coupon": d.get("coupon")}
                for d in params.get("discounts") or []
                if isinstance(d, dict)
            ],
            "tax_id_collection": {
                "enabled": _bool_param(params.get("tax_id_collection") or {}, "enabled") or False,
                "required": "never",
            },
            "billing_address_collection": None,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "client_secret": None,
            "created": now,
            "currency": currency,
            "customer": params.get("customer"),
            "customer_creation": None if params.get("customer") else "if_required",
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "expires_at": expires_at,
            "invoice": None,
            "livemode": self.livemode,
            "locale": params.get("locale"),
            "metadata": metadata,
            "mode": mode,
            "payment_intent": None,  # since 2022-08-01 the intent is created when the customer pays
            "payment_link": None,
            "payment_method_types": params.get("payment_method_types") or ["card"],
            "payment_status": "no_payment_required" if mode == "setup" else "unpaid",
            "recovered_from": None,
            "setup_intent": None,
            "status": "open",
            "submit_type": params.get("submit_type"),
            "subscription": None,
            "success_url": params.get("success_url"),
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": params.get("ui_mode", "hosted"),
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        }
        self.sessions[session_id] = session
        self.session_line_items[session_id] = lines
        self.session_params[session_id] = copy.deepcopy(params)
        return copy.deepcopy(session)

    def _check_session_rules(self, mode: str, params: dict[str, Any]) -> None:
        """The mode-dependent parameter rules of POST /v1/checkout/sessions."""
        if mode != "subscription" and "subscription_data" in params:
            raise StripeFakeError(
                400,
                "invalid_request_error",
                "You can not pass `subscription_data` in `payment` mode.",
                param="subscription_data",
            )
        if mode != "payment":
            for name in ("payment_intent_data", "customer_creation"):
                if name in params:
                    raise StripeFakeError(
                        400,
                        "invalid_request_error",
                        f"You can only pass `{name}` in `payment` mode.",
                        param=name,
                    )
        data = params.get("subscription_data")
        if data is not None:
            if not isinstance(data, dict):
                raise StripeFakeError(400, "invalid_request_error", "Invalid object", param="subscription_data")
            days = _int_param(data, "trial_period_days", path="subscription_data[trial_period_days]")
            if days is not None and not 1 <= days <= MAX_TRIAL_PERIOD_DAYS:
                raise StripeFakeError(
                    400,
                    "invalid_request_error",
                    f"`trial_period_days` must be between 1 and {MAX_TRIAL_PERIOD_DAYS}.",
                    code="parameter_invalid_integer",
                    param="subscription_data[trial_period_days]",
                )
        _enum_param(params, "customer_creation", ("always", "if_required"))
        promotions = _bool_param(params, "allow_promotion_codes")
        discounts = params.get("discounts")
        if promotions and discounts:
            raise StripeFakeError(
                400,
                "invalid_request_error",
                "You may only specify one of these parameters: allow_promotion_codes, discounts.",
                param="discounts",
            )
        for index, discount in enumerate(discounts or []):
            code = discount.get("promotion_code") if isinstance(discount, dict) else None
            if code is not None and code not in self.promotion_codes:
                raise _no_such("promotion code", str(code), f"discounts[{index}][promotion_code]")
        update = params.get("customer_update") if isinstance(params.get("customer_update"), dict) else {}
        for name in ("automatic_tax", "tax_id_collection"):
            block = params.get(name)
            if block is None:
                continue
            if not isinstance(block, dict) or block.get("enabled") is None:
                raise _missing(f"{name}[enabled]")
            enabled = _bool_param(block, "enabled", path=f"{name}[enabled]")
            if not enabled or not params.get("customer"):
                continue
            if name == "automatic_tax" and "auto" not in (update.get("address"), update.get("shipping")):
                raise StripeFakeError(
                    400,
                    "invalid_request_error",
                    "Automatic tax calculation in Checkout requires a valid address on the Customer. Add a valid "
                    "address to the Customer or set either `customer_update[address]` to 'auto' or "
                    "`customer_update[shipping]` to 'auto' to save the address entered in Checkout to the Customer.",
                    param="automatic_tax[enabled]",
                )
            if name == "tax_id_collection" and update.get("name") != "auto":
                raise StripeFakeError(
                    400,
                    "invalid_request_error",
                    "Tax ID collection requires updating business name on the customer. To enable tax ID "
                    "collection for an existing customer, please set `customer_update[name]` to `auto`.",
                    param="tax_id_collection[enabled]",
                )
        if params.get("customer") and str(params["customer"]) not in self.customers:
            raise _no_such("customer", str(params["customer"]), "customer")

    def _expire_session(self, session_id: str) -> dict[str, Any]:
        session = self._session(session_id)
        if session["status"] != "open":
            raise StripeFakeError(
                400,
                "invalid_request_error",
                'Only Checkout Sessions with a status in ["open"] can be expired.',
                code="checkout_session_expired" if session["status"] == "expired" else None,
            )
        session["status"] = "expired"
        session["url"] = None
        return copy.deepcopy(session)

    # ---- subscriptions ---------------------------------------------------------------------------------

    def _subscription(self, subscription_id: str) -> dict[str, Any]:
        sub = self.subscriptions.get(subscription_id)
        if sub is None:
            raise _no_such("subscription", subscription_id, "id")
        return sub

    def _update_subscription(self, subscription_id: str, params: dict[str, Any]) -> dict[str, Any]:
        sub = self._subscription(subscription_id)
        if sub["status"] == "canceled" and set(params) - {"cancellation_details", "metadata", "expand"}:
            raise StripeFakeError(
                400,
                "invalid_request_error",
                "A canceled subscription can only update its cancellation_details and metadata.",
            )
        _enum_param(params, "proration_behavior", PRORATION_BEHAVIORS)
        cancel = _bool_param(params, "cancel_at_period_end")
        items = params.get("items")
        if items is not None:
            if not isinstance(items, list):
                raise StripeFakeError(400, "invalid_request_error", "Invalid array", param="items")
            current = {item["id"]: item for item in sub["items"]["data"]}
            for index, item in enumerate(items):
                item_id = item.get("id") if isinstance(item, dict) else None
                if item_id is None:
                    raise _missing(f"items[{index}][id]")
                if item_id not in current:
                    raise _no_such("subscription item", str(item_id), f"items[{index}][id]")
                price = item.get("price")
                if price is not None:
                    known = self.prices.get(str(price))
                    if known is None:
                        raise _no_such("price", str(price), f"items[{index}][price]")
                    if known["type"] != "recurring":
                        raise StripeFakeError(
                            400,
                            "invalid_request_error",
                            "The price specified is set to `type=one_time` but this field only accepts prices "
                            "with `type=recurring`.",
                            param=f"items[{index}][price]",
                        )
                    current[item_id]["price"] = copy.deepcopy(known)
                    sub["currency"] = known["currency"]
        if cancel is not None:
            period_end = max(item["current_period_end"] for item in sub["items"]["data"])
            sub["cancel_at_period_end"] = cancel
            sub["cancel_at"] = period_end if cancel else None
            sub["canceled_at"] = int(time.time()) if cancel else None
        if isinstance(params.get("metadata"), dict):
            sub["metadata"].update(params["metadata"])
        return copy.deepcopy(sub)

    def _cancel_subscription(self, subscription_id: str, params: dict[str, Any]) -> dict[str, Any]:
        sub = self._subscription(subscription_id)
        _bool_param(params, "invoice_now")
        _bool_param(params, "prorate")
        if sub["status"] == "canceled":
            raise StripeFakeError(
                400,
                "invalid_request_error",
                "A canceled subscription can only update its cancellation_details and metadata.",
            )
        now = int(time.time())
        sub.update(status="canceled", canceled_at=now, ended_at=now, cancel_at_period_end=False, cancel_at=None)
        return copy.deepcopy(sub)

    def _resume_subscription(self, subscription_id: str, params: dict[str, Any]) -> dict[str, Any]:
        sub = self._subscription(subscription_id)
        _enum_param(params, "billing_cycle_anchor", ("now", "unchanged"))
        _enum_param(params, "proration_behavior", PRORATION_BEHAVIORS)
        if sub["status"] != "paused":
            raise StripeFakeError(
                400,
                "invalid_request_error",
                "Only a subscription with status `paused` can be resumed.",
            )
        sub["status"] = "active"
        sub["pause_collection"] = None
        return copy.deepcopy(sub)

    # ---- billing portal ----------------------------------------------------------------------------------

    def _create_portal_session(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = params.get("customer")
        if not customer:
            raise _missing("customer")
        if customer not in self.customers:
            raise _no_such("customer", str(customer), "customer")
        return_url = params.get("return_url")
        if return_url is not None and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", str(return_url)):
            raise StripeFakeError(
                400, "invalid_request_error", "Not a valid URL", code="url_invalid", param="return_url"
            )
        if not self.portal_configured and not params.get("configuration"):
            raise StripeFakeError(
                400,
                "invalid_request_error",
                "No configuration provided and your test mode default configuration has not been created. "
                "Provide a configuration or create your default by saving your customer portal settings in test "
                "mode at https://dashboard.stripe.com/test/settings/billing/portal.",
            )
        session_id = "bps_" + _token(24)
        return {
            "id": session_id,
            "object": "billing_portal.session",
            "configuration": params.get("configuration") or "bpc_" + _token(24),
            "created": int(time.time()),
            "customer": customer,
            "livemode": self.livemode,
            "return_url": return_url,
            "url": f"https://billing.stripe.com/p/session/test_{_token(40)}",
        }

    # ---- refunds -----------------------------------------------------------------------------------------

    def _create_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        intent_id, charge_id = params.get("payment_intent"), params.get("charge")
        if not intent_id and not charge_id:
            raise StripeFakeError(
                400,
                "invalid_request_error",
                "One of the following params should be provided for this request: payment_intent or charge.",
                code="parameter_missing",
            )
        if intent_id:
            intent = self.payment_intents.get(str(intent_id))
            if intent is None:
                raise _no_such("payment_intent", str(intent_id), "payment_intent")
            charge_id = intent["latest_charge"]
        charge = self.charges.get(str(charge_id))
        if charge is None:
            raise _no_such("charge", str(charge_id), "charge")
        reason = _enum_param(params, "reason", REFUND_REASONS)
        left = charge["amount"] - charge["amount_refunded"]
        amount = _int_param(params, "amount")
        if left <= 0:
            raise StripeFakeError(
                400,
                "invalid_request_error",
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        if amount is None:
            amount = left
        if amount < 1:
            raise StripeFakeError(
                400,
                "invalid_request_error",
                "Invalid positive integer",
                code="parameter_invalid_integer",
                param="amount",
            )
        if amount > left:
            raise StripeFakeError(
                400,
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                code="amount_too_large",
                param="amount",
            )
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        refund_id = "re_" + _token(24)
        refund = {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "created": int(time.time()),
            "currency": charge["currency"],
            "metadata": dict(params.get("metadata") or {}),
            "payment_intent": charge["payment_intent"],
            "reason": reason,
            "status": "succeeded",
        }
        self.refunds[refund_id] = refund
        return copy.deepcopy(refund)

    # ---- events ------------------------------------------------------------------------------------------

    def _event(self, event_id: str) -> dict[str, Any]:
        for event in self.events:
            if event.get("id") == event_id:
                return event
        raise StripeFakeError(
            404, "invalid_request_error", f"No such event: '{event_id}'", code="resource_missing", param="id"
        )

    def _list_events(self, query: dict[str, Any]) -> dict[str, Any]:
        # Newest first; equal `created` keeps the latest-added first (Stripe's order for one second is by id).
        ordered = [e for _, e in sorted(enumerate(self.events), key=lambda p: (-int(p[1]["created"]), -p[0]))]
        created = query.get("created")
        bounds: dict[str, int | None]
        if isinstance(created, dict):
            bounds = {op: _int_param(created, op, path=f"created[{op}]") for op in ("gt", "gte", "lt", "lte")}
        elif created is not None:
            exact = _int_param(query, "created")
            bounds = {"gte": exact, "lte": exact}
        else:
            bounds = {}
        types: set[str] = set()
        if query.get("type"):
            types.add(str(query["type"]))
        if isinstance(query.get("types"), list):
            if len(query["types"]) > MAX_EVENT_TYPES_FILTER:
                raise StripeFakeError(
                    400,
                    "invalid_request_error",
                    f"Invalid array: types must have at most {MAX_EVENT_TYPES_FILTER} elements",
                    code="parameter_invalid",
                    param="types",
                )
            types.update(str(t) for t in query["types"])

        def keep(event: dict[str, Any]) -> bool:
            ts = int(event["created"])
            gt, gte, lt, lte = (bounds.get(op) for op in ("gt", "gte", "lt", "lte"))
            if (gt is not None and ts <= gt) or (gte is not None and ts < gte):
                return False
            if (lt is not None and ts >= lt) or (lte is not None and ts > lte):
                return False
            return not types or any(_type_matches(str(event.get("type", "")), t) for t in types)

        return _page([e for e in ordered if keep(e)], query, "/v1/events", "event")


MAX_EVENT_TYPES_FILTER = 20  # `types` of GET /v1/events takes at most 20 event types
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")
_EVENT_TYPE = re.compile(r"^(\*|[a-z_0-9]+(\.[a-z_0-9]+)*(\.\*)?)$")


def _stored(store: dict[str, dict[str, Any]], object_id: str, noun: str, *, param: str = "id") -> dict[str, Any]:
    """The stored object, or Stripe's 404 `resource_missing` answer."""
    found = store.get(object_id)
    if found is None:
        raise StripeFakeError(
            404, "invalid_request_error", f"No such {noun}: '{object_id}'", code="resource_missing", param=param
        )
    return found


def _only(params: dict[str, Any], allowed: set[str]) -> None:
    for name in params:
        if name not in allowed:
            raise StripeFakeError(
                400,
                "invalid_request_error",
                f"Received unknown parameter: {name}",
                code="parameter_unknown",
                param=name,
            )


def _url_param(params: dict[str, Any]) -> str | None:
    url = params.get("url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        return None
    return url


def _enabled_events_param(params: dict[str, Any]) -> list[str] | None:
    events = params.get("enabled_events")
    if not isinstance(events, list) or not events:
        return None
    for index, name in enumerate(events):
        if not isinstance(name, str) or not _EVENT_TYPE.match(name):
            raise StripeFakeError(
                400,
                "invalid_request_error",
                f"Invalid enabled_events[{index}]: {name}",
                code="parameter_invalid",
                param=f"enabled_events[{index}]",
            )
    return [str(e) for e in events]


def _page(items: list[dict[str, Any]], query: dict[str, Any], url: str, noun: str = "object") -> dict[str, Any]:
    """A Stripe list page of `items` (already in list order): `limit` (1..100, default 10), `starting_after`,
    `ending_before`."""
    limit = _int_param(query, "limit")
    limit = 10 if limit is None else limit
    if not 1 <= limit <= 100:
        raise StripeFakeError(
            400,
            "invalid_request_error",
            "Invalid limit: must be between 1 and 100",
            code="parameter_invalid_integer",
            param="limit",
        )
    ids = [item["id"] for item in items]
    for cursor_param in ("starting_after", "ending_before"):
        cursor = query.get(cursor_param)
        if cursor and str(cursor) not in ids:
            raise StripeFakeError(
                400,
                "invalid_request_error",
                f"No such {noun}: '{cursor}'",
                code="resource_missing",
                param=cursor_param,
            )
    if query.get("starting_after"):
        start = ids.index(str(query["starting_after"])) + 1
        page, has_more = items[start : start + limit], start + limit < len(items)
    elif query.get("ending_before"):
        end = ids.index(str(query["ending_before"]))
        page, has_more = items[max(0, end - limit) : end], end - limit > 0
    else:
        page, has_more = items[:limit], limit < len(items)
    return {"object": "list", "data": copy.deepcopy(page), "has_more": has_more, "url": url}


def _type_matches(event_type: str, pattern: str) -> bool:
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return event_type == pattern


def _is_validation(body: dict[str, Any]) -> bool:
    # Stripe keeps no idempotent result when the parameters fail validation; the fake mirrors that for 400s
    # raised before anything was created.
    error = body.get("error")
    return isinstance(error, dict) and error.get("type") == "invalid_request_error"


async def close_sdk_client(client: stripe.StripeClient) -> None:
    """Close the aiohttp session of a client made by `FakeStripe.sdk_client` (SDK has no public close)."""
    http_client = client._requestor._client
    if http_client is not None:
        await http_client.close_async()


# ----------------------------------------------------------------------------------------------- pytest


async def start_fake_stripe(aiohttp_server: Any, **kwargs: Any) -> FakeStripe:
    """Start a FakeStripe on a local port with pytest-aiohttp's `aiohttp_server` fixture."""
    fake = FakeStripe(**kwargs)
    server = await aiohttp_server(fake.app)
    fake.base_url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
async def fake_stripe(aiohttp_server: Any) -> AsyncIterator[FakeStripe]:
    """A running FakeStripe; `fake_stripe.base_url` is the `STRIPE_API_BASE` to give the gateway."""
    yield await start_fake_stripe(aiohttp_server)
