"""Test helpers: Stripe fixtures, event envelopes, signed webhook headers and minimal realistic objects.

Fixtures live in `tests/fixtures/stripe/` (attribution and licenses in its SOURCES.md):
- `stripe-events/<source>/...json`   real event envelopes, unmodified upstream bytes;
- `stripe-objects/<source>/...json`  objects (or an event's `data` member) without an envelope;
- `constructed/<source>/constructed__...json`  envelopes built by `make_event` around `stripe-objects/`.

`load_fixture` accepts a path relative to that folder or a file name (`.json` optional) unique in it. The
object builders return plain dicts shaped like the fixtures (field names and nesting of real Stripe objects,
not every field), for the gateway's pinned API version unless told otherwise.
"""

from __future__ import annotations

import copy
import json
import secrets
import string
import time
from functools import cache
from pathlib import Path
from typing import Any

from gateway.settings import DEFAULT_STRIPE_API_VERSION
from gateway.webhooks.signature import sign

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures" / "stripe"
BASIL = "2025-03-31.basil"
LEGACY_API_VERSION = "2020-08-27"  # before `latest_charge` (2022-11-15) and before `invoice.parent` (basil)

_ALPHABET = string.ascii_letters + string.digits


# ----------------------------------------------------------------------------------------------- fixtures


@cache
def _index() -> dict[str, list[Path]]:
    by_name: dict[str, list[Path]] = {}
    for path in FIXTURES_DIR.rglob("*.json"):
        by_name.setdefault(path.name, []).append(path)
        by_name.setdefault(path.stem, []).append(path)
    return by_name


def fixture_path(name: str) -> Path:
    """Resolve a fixture: a path relative to tests/fixtures/stripe or a unique file name (.json optional)."""
    direct = FIXTURES_DIR / name
    for candidate in (direct, direct.with_name(direct.name + ".json")):
        if candidate.is_file():
            return candidate
    matches = _index().get(Path(name).name, [])
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise FileNotFoundError(f"no Stripe fixture named {name!r} under {FIXTURES_DIR}")
    raise LookupError(f"fixture name {name!r} is ambiguous: {sorted(str(m) for m in matches)}")


def fixture_bytes(name: str) -> bytes:
    """The exact bytes of a fixture file (what Stripe would have sent, for signing tests)."""
    return fixture_path(name).read_bytes()


def load_fixture(name: str) -> dict[str, Any]:
    """The parsed fixture (a fresh copy every call: tests may mutate it)."""
    data = json.loads(fixture_bytes(name))
    assert isinstance(data, dict)
    return data


def fixture_object(name: str) -> dict[str, Any]:
    """The Stripe object of a fixture: an event's `data.object`, a `data` member's `object`, or the object."""
    data = load_fixture(name)
    if data.get("object") == "event":
        obj = data["data"]["object"]
    elif isinstance(data.get("object"), dict):
        obj = data["object"]
    else:
        obj = data
    assert isinstance(obj, dict)
    return obj


def all_fixture_names(folder: str = "") -> list[str]:
    """Relative paths of every fixture under `folder` (e.g. "stripe-events"), sorted."""
    root = FIXTURES_DIR / folder
    return sorted(str(p.relative_to(FIXTURES_DIR)) for p in root.rglob("*.json"))


# ----------------------------------------------------------------------------------------------- envelopes


def random_token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str, length: int = 24) -> str:
    """A Stripe-looking id: `evt_...`, `pi_...` (prefix given without the trailing underscore)."""
    return f"{prefix}_{random_token(length)}"


def make_event(
    type: str,
    obj: dict[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
    api_version: str | None = DEFAULT_STRIPE_API_VERSION,
    livemode: bool = False,
    previous_attributes: dict[str, Any] | None = None,
    request_id: str | None = None,
    idempotency_key: str | None = None,
    pending_webhooks: int = 1,
) -> dict[str, Any]:
    """A Stripe `event` envelope around `obj` (deep-copied), with the key order Stripe uses."""
    data: dict[str, Any] = {"object": copy.deepcopy(obj)}
    if previous_attributes is not None:
        data["previous_attributes"] = copy.deepcopy(previous_attributes)
    return {
        "id": event_id or new_id("evt"),
        "object": "event",
        "api_version": api_version,
        "created": int(time.time()) if created is None else created,
        "data": data,
        "livemode": livemode,
        "pending_webhooks": pending_webhooks,
        "request": {"id": request_id, "idempotency_key": idempotency_key},
        "type": type,
    }


def event_body(event: dict[str, Any]) -> bytes:
    """Serialise an event as Stripe does (pretty-printed JSON, UTF-8)."""
    return json.dumps(event, indent=2, ensure_ascii=False).encode("utf-8")


def signed_headers(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers of a Stripe webhook delivery of `body` signed with `secret` at `timestamp` (default: now)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Stripe-Signature": sign(body, secret, ts),
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }


def signed_event(event: dict[str, Any], secret: str, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """(body, headers) ready to POST to the webhook route."""
    body = event_body(event)
    return body, signed_headers(body, secret, timestamp)


# ----------------------------------------------------------------------------------------------- objects


def _meta(order_id: str | None, user_id: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    meta: dict[str, str] = {}
    if order_id is not None:
        meta["order_id"] = order_id
    if user_id is not None:
        meta["user_id"] = user_id
    meta.update(extra or {})
    return meta


def checkout_session(
    order_id: str | None,
    *,
    amount_total: int = 2000,
    currency: str = "eur",
    session_id: str | None = None,
    status: str = "complete",
    payment_status: str = "paid",
    mode: str = "payment",
    payment_intent: str | None = None,
    subscription: str | None = None,
    customer: str | None = None,
    user_id: str | None = None,
    created: int | None = None,
    expires_at: int | None = None,
    metadata: dict[str, str] | None = None,
    livemode: bool = False,
) -> dict[str, Any]:
    """A checkout.session like the gateway creates: `client_reference_id` = user, `metadata.order_id` = order.

    `payment_intent` defaults to a new id for a paid `payment` session and None otherwise (since 2022-08-01
    an open or expired session has no intent).
    """
    now = int(time.time()) if created is None else created
    if payment_intent is None and mode == "payment" and payment_status == "paid":
        payment_intent = new_id("pi")
    sid = session_id or ("cs_live_a1" if livemode else "cs_test_a1") + random_token(56)
    return {
        "id": sid,
        "object": "checkout.session",
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": amount_total,
        "amount_total": amount_total,
        "automatic_tax": {"enabled": False, "liability": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": "https://shop.example/checkout/cancel",
        "client_reference_id": user_id,
        "client_secret": None,
        "created": now,
        "currency": currency,
        "customer": customer,
        "customer_creation": "if_required",
        "customer_details": None
        if status == "open"
        else {
            "address": None,
            "email": None,
            "name": None,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": None,
        "expires_at": now + 1800 if expires_at is None else expires_at,
        "invoice": None,
        "livemode": livemode,
        "locale": None,
        "metadata": _meta(order_id, None, metadata),
        "mode": mode,
        "payment_intent": payment_intent,
        "payment_link": None,
        "payment_method_types": ["card"],
        "payment_status": payment_status,
        "status": status,
        "submit_type": None,
        "subscription": subscription,
        "success_url": "https://shop.example/checkout/success?session_id={CHECKOUT_SESSION_ID}",
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": None if status != "open" else f"https://checkout.stripe.com/c/pay/{sid}",
    }


def payment_intent(
    order_id: str | None,
    amount: int = 2000,
    *,
    currency: str = "eur",
    pi_id: str | None = None,
    status: str = "succeeded",
    charge_id: str | None = None,
    customer: str | None = None,
    legacy_charges: bool = False,
    created: int | None = None,
    failure_code: str | None = None,
    decline_code: str | None = None,
    cancellation_reason: str | None = None,
    livemode: bool = False,
) -> dict[str, Any]:
    """A payment_intent; `legacy_charges=True` gives the pre-2022-11-15 shape (`charges`, no `latest_charge`).

    A succeeded intent gets a charge id (`charge_id` or a new one); `failure_code` fills `last_payment_error`.
    """
    pid = pi_id or new_id("pi")
    now = int(time.time()) if created is None else created
    if charge_id is None and status == "succeeded":
        charge_id = new_id("ch")
    last_error = None
    if failure_code is not None:
        last_error = {
            "code": failure_code,
            "decline_code": decline_code,
            "doc_url": None,
            "message": "Your card was declined.",
            "param": None,
            "payment_method": None,
            "type": "card_error",
        }
    obj: dict[str, Any] = {
        "id": pid,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": amount if status == "succeeded" else 0,
        "application": None,
        "canceled_at": now if status == "canceled" else None,
        "cancellation_reason": cancellation_reason,
        "capture_method": "automatic",
        "client_secret": f"{pid}_secret_{random_token(25)}",
        "confirmation_method": "automatic",
        "created": now,
        "currency": currency,
        "customer": customer,
        "description": None,
        "invoice": None,
        "last_payment_error": last_error,
        "latest_charge": charge_id,
        "livemode": livemode,
        "metadata": _meta(order_id),
        "next_action": None,
        "payment_method": new_id("pm") if status == "succeeded" else None,
        "payment_method_types": ["card"],
        "status": status,
    }
    if legacy_charges:
        del obj["latest_charge"]
        charges = (
            []
            if charge_id is None
            else [charge(order_id, amount, currency=currency, charge_id=charge_id, payment_intent=pid, created=now)]
        )
        obj["charges"] = {
            "object": "list",
            "data": charges,
            "has_more": False,
            "total_count": len(charges),
            "url": f"/v1/charges?payment_intent={pid}",
        }
    return obj


def charge(
    order_id: str | None,
    amount: int = 2000,
    *,
    currency: str = "eur",
    charge_id: str | None = None,
    payment_intent: str | None = None,
    amount_refunded: int = 0,
    customer: str | None = None,
    status: str = "succeeded",
    disputed: bool = False,
    created: int | None = None,
    livemode: bool = False,
) -> dict[str, Any]:
    """A charge (current shape: no embedded `refunds` list). `refunded` is true only when fully refunded."""
    return {
        "id": charge_id or new_id("ch"),
        "object": "charge",
        "amount": amount,
        "amount_captured": amount if status == "succeeded" else 0,
        "amount_refunded": amount_refunded,
        "application": None,
        "balance_transaction": new_id("txn"),
        "captured": status == "succeeded",
        "created": int(time.time()) if created is None else created,
        "currency": currency,
        "customer": customer,
        "description": None,
        "disputed": disputed,
        "failure_code": None,
        "failure_message": None,
        "livemode": livemode,
        "metadata": _meta(order_id),
        "paid": status == "succeeded",
        "payment_intent": payment_intent,
        "payment_method": new_id("pm"),
        "receipt_url": None,
        "refunded": amount_refunded >= amount > 0,
        "status": status,
    }


def refund(
    amount: int,
    *,
    charge: str | None,
    payment_intent: str | None,
    currency: str = "eur",
    refund_id: str | None = None,
    status: str = "succeeded",
    reason: str | None = None,
    order_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A refund (order id in metadata only when the refund was created with it; usually via the charge)."""
    return {
        "id": refund_id or new_id("re"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": new_id("txn"),
        "charge": charge,
        "created": int(time.time()) if created is None else created,
        "currency": currency,
        "destination_details": {"card": {"reference_status": "pending", "type": "refund"}, "type": "card"},
        "metadata": _meta(order_id),
        "payment_intent": payment_intent,
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": status,
        "transfer_reversal": None,
    }


def dispute(
    amount: int,
    *,
    charge: str,
    payment_intent: str | None,
    currency: str = "eur",
    dispute_id: str | None = None,
    reason: str = "fraudulent",
    status: str = "needs_response",
    created: int | None = None,
    livemode: bool = False,
) -> dict[str, Any]:
    now = int(time.time()) if created is None else created
    return {
        "id": dispute_id or new_id("dp"),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge,
        "created": now,
        "currency": currency,
        "evidence_details": {
            "due_by": now + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": livemode,
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": reason,
        "status": status,
    }


def subscription(
    *,
    price_id: str,
    sub_id: str | None = None,
    customer: str | None = None,
    status: str = "active",
    user_id: str | None = None,
    unit_amount: int = 999,
    currency: str = "eur",
    quantity: int = 1,
    current_period_start: int | None = None,
    current_period_end: int | None = None,
    cancel_at_period_end: bool = False,
    api_version: str = DEFAULT_STRIPE_API_VERSION,
    created: int | None = None,
) -> dict[str, Any]:
    """A subscription with one item. Basil and later put the period on the item; older versions at the top."""
    sid = sub_id or new_id("sub")
    now = int(time.time()) if created is None else created
    start = now if current_period_start is None else current_period_start
    end = start + 30 * 86400 if current_period_end is None else current_period_end
    basil = _is_basil_or_later(api_version)
    item: dict[str, Any] = {
        "id": new_id("si"),
        "object": "subscription_item",
        "created": now,
        "metadata": {},
        "price": {
            "id": price_id,
            "object": "price",
            "active": True,
            "currency": currency,
            "product": new_id("prod"),
            "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
            "type": "recurring",
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount),
        },
        "quantity": quantity,
        "subscription": sid,
    }
    obj: dict[str, Any] = {
        "id": sid,
        "object": "subscription",
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": now if status == "canceled" else None,
        "created": now,
        "currency": currency,
        "customer": customer or new_id("cus", 14),
        "ended_at": now if status == "canceled" else None,
        "items": {
            "object": "list",
            "data": [item],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/subscription_items?subscription={sid}",
        },
        "latest_invoice": None,
        "livemode": False,
        "metadata": {"user_id": user_id} if user_id else {},
        "start_date": now,
        "status": status,
    }
    if basil:
        item["current_period_start"] = start
        item["current_period_end"] = end
    else:
        obj["current_period_start"] = start
        obj["current_period_end"] = end
        item["plan"] = {
            "id": price_id,
            "object": "plan",
            "amount": unit_amount,
            "currency": currency,
            "interval": "month",
        }
        obj["plan"] = item["plan"]
    return obj


def invoice(
    *,
    subscription_id: str | None,
    price_id: str,
    amount_paid: int = 999,
    currency: str = "eur",
    customer: str | None = None,
    invoice_id: str | None = None,
    status: str = "paid",
    billing_reason: str = "subscription_cycle",
    user_id: str | None = None,
    payment_intent: str | None = None,
    api_version: str = DEFAULT_STRIPE_API_VERSION,
    created: int | None = None,
) -> dict[str, Any]:
    """An invoice with one line. Basil: `parent.subscription_details` and `pricing.price_details`; older:
    top-level `subscription` / `payment_intent` and line `price`."""
    iid = invoice_id or new_id("in")
    now = int(time.time()) if created is None else created
    basil = _is_basil_or_later(api_version)
    sub_meta = {"user_id": user_id} if user_id else {}
    line: dict[str, Any] = {
        "id": new_id("il"),
        "object": "line_item",
        "amount": amount_paid,
        "currency": currency,
        "invoice": iid,
        "metadata": dict(sub_meta),
        "period": {"start": now, "end": now + 30 * 86400},
        "quantity": 1,
    }
    obj: dict[str, Any] = {
        "id": iid,
        "object": "invoice",
        "amount_due": amount_paid,
        "amount_paid": amount_paid if status == "paid" else 0,
        "amount_remaining": 0 if status == "paid" else amount_paid,
        "attempt_count": 1,
        "attempted": True,
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "created": now,
        "currency": currency,
        "customer": customer or new_id("cus", 14),
        "lines": {
            "object": "list",
            "data": [line],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/invoices/{iid}/lines",
        },
        "livemode": False,
        "metadata": {},
        "status": status,
        "total": amount_paid,
    }
    if basil:
        obj["parent"] = {
            "quote_details": None,
            "subscription_details": None
            if subscription_id is None
            else {
                "metadata": sub_meta,
                "subscription": subscription_id,
            },
            "type": "subscription_details",
        }
        line["parent"] = {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "subscription": subscription_id,
                "subscription_item": new_id("si"),
            },
            "type": "subscription_item_details",
        }
        line["pricing"] = {
            "price_details": {"price": price_id, "product": new_id("prod")},
            "type": "price_details",
            "unit_amount_decimal": str(amount_paid),
        }
    else:
        obj["subscription"] = subscription_id
        obj["payment_intent"] = payment_intent
        obj["charge"] = None
        line["subscription"] = subscription_id
        line["price"] = {"id": price_id, "object": "price", "currency": currency, "unit_amount": amount_paid}
        line["plan"] = {"id": price_id, "object": "plan", "amount": amount_paid, "currency": currency}
    return obj


def _is_basil_or_later(api_version: str) -> bool:
    return api_version[:10] >= "2025-03-31"
