"""Sample Stripe events for trying the gateway locally, as Stripe's `stripe trigger` sends them: test-mode
envelopes of the pinned API version around objects with the fields and nesting of real ones.

The ids of an order's session, payment intent and charge are derived from its order id, so the events sent for
one order name the same objects: `checkout.session.completed` then `charge.refunded` refund the order it paid.
Without an order id the objects name no order of ours, as after a Payment Link or a dashboard checkout: a completed
session then creates its order.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.settings import DEFAULT_STRIPE_API_VERSION

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Sample:
    """What a sample event is about: an order (or, without one, a checkout of its own: `key`), its amount and
    currency."""

    order_id: str | None
    amount: int = 2000
    currency: str = "eur"
    user_id: str | None = None
    key: str = ""

    def _id(self, prefix: str, length: int = 24) -> str:
        digest = hashlib.sha256(f"{prefix}:{self.order_id or self.key}".encode()).hexdigest()
        return f"{prefix}_{digest[:length]}"

    @property
    def session_id(self) -> str:
        return "cs_test_a1" + hashlib.sha256(f"cs:{self.order_id or self.key}".encode()).hexdigest()[:56]

    @property
    def payment_intent_id(self) -> str:
        return self._id("pi")

    @property
    def charge_id(self) -> str:
        return self._id("ch")

    @property
    def customer_id(self) -> str:
        return self._id("cus", 14)

    @property
    def metadata(self) -> dict[str, str]:
        meta = {"order_id": self.order_id} if self.order_id else {}
        if self.user_id:
            meta["user_id"] = self.user_id
        return meta


def _checkout_session(sample: Sample, now: int, *, status: str, payment_status: str) -> JsonObject:
    paid = payment_status == "paid"
    return {
        "id": sample.session_id,
        "object": "checkout.session",
        "amount_subtotal": sample.amount,
        "amount_total": sample.amount,
        "cancel_url": "http://localhost:3000/cart",
        "client_reference_id": sample.user_id,
        "created": now - 60,
        "currency": sample.currency,
        "customer": sample.customer_id if status == "complete" else None,
        "customer_details": None
        if status != "complete"
        else {"email": "buyer@example.com", "name": "Sample Buyer", "tax_exempt": "none", "tax_ids": []},
        "expires_at": now + 1800 - 60,
        "livemode": False,
        "metadata": sample.metadata,
        "mode": "payment",
        "payment_intent": sample.payment_intent_id if paid or status == "complete" else None,
        "payment_method_types": ["card"],
        "payment_status": payment_status,
        "status": status,
        "success_url": "http://localhost:3000/checkout/success?session_id={CHECKOUT_SESSION_ID}",
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": None,
    }


def _payment_intent(sample: Sample, now: int, *, status: str) -> JsonObject:
    succeeded = status == "succeeded"
    failed = status == "requires_payment_method"
    return {
        "id": sample.payment_intent_id,
        "object": "payment_intent",
        "amount": sample.amount,
        "amount_received": sample.amount if succeeded else 0,
        "canceled_at": now if status == "canceled" else None,
        "cancellation_reason": "abandoned" if status == "canceled" else None,
        "capture_method": "automatic",
        "created": now - 30,
        "currency": sample.currency,
        "customer": sample.customer_id,
        "last_payment_error": {"code": "card_declined", "decline_code": "generic_decline", "type": "card_error"}
        if failed
        else None,
        "latest_charge": sample.charge_id if succeeded else None,
        "livemode": False,
        "metadata": sample.metadata,
        "payment_method_types": ["card"],
        "status": status,
    }


def _charge(sample: Sample, now: int, *, amount_refunded: int = 0, disputed: bool = False) -> JsonObject:
    return {
        "id": sample.charge_id,
        "object": "charge",
        "amount": sample.amount,
        "amount_captured": sample.amount,
        "amount_refunded": amount_refunded,
        "captured": True,
        "created": now - 20,
        "currency": sample.currency,
        "customer": sample.customer_id,
        "disputed": disputed,
        "livemode": False,
        "metadata": sample.metadata,
        "paid": True,
        "payment_intent": sample.payment_intent_id,
        "refunded": amount_refunded >= sample.amount,
        "status": "succeeded",
    }


def _dispute(sample: Sample, now: int) -> JsonObject:
    return {
        "id": sample._id("dp"),
        "object": "dispute",
        "amount": sample.amount,
        "charge": sample.charge_id,
        "created": now,
        "currency": sample.currency,
        "evidence_details": {"due_by": now + 7 * 86400, "has_evidence": False, "past_due": False},
        "livemode": False,
        "metadata": {},
        "payment_intent": sample.payment_intent_id,
        "reason": "fraudulent",
        "status": "needs_response",
    }


_OBJECTS: dict[str, Callable[[Sample, int], JsonObject]] = {
    "checkout.session.completed": lambda s, now: _checkout_session(s, now, status="complete", payment_status="paid"),
    "checkout.session.async_payment_succeeded": lambda s, now: _checkout_session(
        s, now, status="complete", payment_status="paid"
    ),
    "checkout.session.async_payment_failed": lambda s, now: _checkout_session(
        s, now, status="complete", payment_status="unpaid"
    ),
    "checkout.session.expired": lambda s, now: _checkout_session(s, now, status="expired", payment_status="unpaid"),
    "payment_intent.succeeded": lambda s, now: _payment_intent(s, now, status="succeeded"),
    "payment_intent.payment_failed": lambda s, now: _payment_intent(s, now, status="requires_payment_method"),
    "payment_intent.canceled": lambda s, now: _payment_intent(s, now, status="canceled"),
    "charge.refunded": lambda s, now: _charge(s, now, amount_refunded=s.amount),
    "charge.dispute.created": _dispute,
}
SAMPLE_TYPES: tuple[str, ...] = tuple(_OBJECTS)


def sample_event(event_type: str, sample: Sample, *, now: int | None = None) -> JsonObject:
    """A test-mode event envelope of `event_type` about `sample`'s order (KeyError: no sample for that type)."""
    created = int(time.time()) if now is None else now
    obj = _OBJECTS[event_type](sample, created)
    return {
        "id": "evt_" + secrets.token_hex(12),
        "object": "event",
        "api_version": DEFAULT_STRIPE_API_VERSION,
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
