"""The ONE module that reads Stripe payloads: every field the gateway uses, from any API version.

Stripe renders an event's `data.object` in the API version of the *event* (the account's version at the
time, or the endpoint's pinned version), so one running gateway receives several shapes at once (fixtures in
the test suite span 2019-12-03 to 2025-03-31.basil, plus the Nov 2025 generated examples). Handlers never
index payloads themselves: they call the small functions below, which accept every known shape and return
plain values or None.

Conventions
- Inputs are the plain dicts of the parsed JSON (`Mapping[str, Any]`); nothing is mutated.
- An "id field" may be a string id, an expanded object (`{"id": ..., ...}`, also a deleted customer
  `{"id": ..., "deleted": true}`) or null; `id_of` handles the three.
- Missing keys, nulls and wrong types give None (or an empty tuple), never an exception: a payload we do not
  understand is recorded and skipped by the caller, it must not crash the webhook transaction.
- Each version difference is documented where it is handled (search for "API version").
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

JsonObject = Mapping[str, Any]

# The API versions this module reads, each tested on fixtures of its shape (tests/test_stripe_payload.py), oldest
# first. The last is the newest version a webhook endpoint may be pinned to: `gateway stripe endpoint ensure`
# refuses a newer STRIPE_API_VERSION until fixtures of it are added here and pass (runbook: STRIPE_API_VERSION).
READ_API_VERSIONS: tuple[str, ...] = ("2019-12-03", "2020-03-02", "2020-08-27", "2022-08-01", "2025-03-31.basil")
NEWEST_READ_API_VERSION = READ_API_VERSIONS[-1]


def reads_api_version(version: object) -> bool:
    """Whether payloads of `version` are read here: a listed version, or one between two listed versions."""
    return isinstance(version, str) and READ_API_VERSIONS[0] <= version <= NEWEST_READ_API_VERSION


# ----------------------------------------------------------------------------------------------- primitives


def _obj(value: Any) -> JsonObject | None:
    return value if isinstance(value, Mapping) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _int(value: Any) -> int | None:
    # bool is an int subclass; a boolean is never an amount or a timestamp.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _path(obj: Any, *keys: str) -> Any:
    """obj[k1][k2]... or None as soon as a level is missing or not an object."""
    current = obj
    for key in keys:
        mapping = _obj(current)
        if mapping is None:
            return None
        current = mapping.get(key)
    return current


def _list_data(value: Any) -> list[JsonObject]:
    """The objects of a Stripe list (`{"object": "list", "data": [...]}`) or of a plain JSON array."""
    items = value.get("data") if isinstance(value, Mapping) else value
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, Mapping)]


def id_of(value: Any) -> str | None:
    """An id field: a string id, an expanded object with an `id`, or None."""
    if isinstance(value, str):
        return value or None
    mapping = _obj(value)
    if mapping is not None:
        return _str(mapping.get("id"))
    return None


def object_id(obj: JsonObject) -> str | None:
    return _str(obj.get("id"))


def metadata(obj: JsonObject) -> JsonObject:
    """The object's `metadata` (an empty mapping when absent or null)."""
    return _obj(obj.get("metadata")) or {}


def metadata_value(obj: JsonObject, key: str) -> str | None:
    return _str(metadata(obj).get(key))


# Event type prefix -> object type, for payloads without an `object` key (hand-edited fixtures) and for
# routing. Longest prefix first: `charge.dispute.` and `charge.refund.` before `charge.`.
_TYPE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("checkout.session.", "checkout.session"),
    ("charge.dispute.", "dispute"),
    ("charge.refund.", "refund"),  # charge.refund.updated carries a refund object
    ("charge.", "charge"),
    ("payment_intent.", "payment_intent"),
    ("refund.", "refund"),
    ("customer.subscription.", "subscription"),
    ("invoice.", "invoice"),
)


def object_type(event_type: str, obj: JsonObject) -> str | None:
    """`obj["object"]` when present, else derived from the event type ("charge.dispute.created": dispute)."""
    declared = _str(obj.get("object"))
    if declared is not None:
        return declared
    for prefix, kind in _TYPE_PREFIXES:
        if event_type.startswith(prefix):
            return kind
    return None


# ----------------------------------------------------------------------------------------------- events


def event_object(event: JsonObject) -> JsonObject:
    """`event.data.object` (an empty mapping when absent)."""
    return _obj(_path(event, "data", "object")) or {}


def event_previous_attributes(event: JsonObject) -> JsonObject | None:
    return _obj(_path(event, "data", "previous_attributes"))


# ---------------------------------------------------------------------------------------- who / which order


def order_id_of(obj: JsonObject) -> str | None:
    """`metadata.order_id`, normalised to the canonical UUID text; None when absent or not a UUID.

    The ledger and the orders table key orders by uuid: a foreign or garbled value must not abort the webhook
    transaction with a cast error, so it is treated as "no order id".
    """
    raw = metadata_value(obj, "order_id")
    if raw is None:
        return None
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError:
        return None


def user_id_of(obj: JsonObject) -> str | None:
    """The gateway user: `client_reference_id` (checkout sessions) or `metadata.user_id`.

    Invoices: the subscription's metadata is copied onto the invoice. API version: up to 2025-02-24 it is
    `invoice.subscription_details.metadata` (added 2022); from 2025-03-31.basil it is
    `invoice.parent.subscription_details.metadata`.
    """
    for value in (
        obj.get("client_reference_id"),
        metadata(obj).get("user_id"),
        _path(obj, "parent", "subscription_details", "metadata", "user_id"),
        _path(obj, "subscription_details", "metadata", "user_id"),
    ):
        found = _str(value)
        if found is not None:
            return found
    return None


def customer_id(obj: JsonObject) -> str | None:
    """`customer`: a string id, an expanded customer (possibly `{"id", "deleted": true}`) or null."""
    return id_of(obj.get("customer"))


# ----------------------------------------------------------------------------------------------- amounts


def currency_of(obj: JsonObject) -> str | None:
    """The lower-case ISO currency of an object.

    Subscriptions: API version: the top-level `subscription.currency` exists only from 2021 on; older
    subscriptions (2019-12-03, 2020-03-02 fixtures) carry it on their items' price/plan only.
    """
    value = _str(obj.get("currency"))
    if value is None:
        first = next(_subscription_items(obj), None)
        if first is not None:
            value = _str(_path(first, "price", "currency")) or _str(_path(first, "plan", "currency"))
    return value.lower() if value else None


def session_amount_total(session: JsonObject) -> int | None:
    return _int(session.get("amount_total"))


def payment_intent_amount(pi: JsonObject) -> int | None:
    """The amount the payment intent asks for (`amount`)."""
    return _int(pi.get("amount"))


def payment_intent_amount_received(pi: JsonObject) -> int | None:
    return _int(pi.get("amount_received"))


def charge_amount(charge: JsonObject) -> int | None:
    return _int(charge.get("amount"))


def charge_amount_refunded(charge: JsonObject) -> int:
    """Cumulative amount refunded on the charge (0 when absent).

    API version: `amount_refunded` exists in every version; the embedded `charge.refunds` list was dropped
    from the default rendering in 2022-11-15, so it is never summed here.
    """
    return _int(charge.get("amount_refunded")) or 0


def charge_refunded_fully(charge: JsonObject) -> bool:
    """`refunded` is true only when the whole charge is refunded."""
    return charge.get("refunded") is True


def refund_amount(refund: JsonObject) -> int | None:
    return _int(refund.get("amount"))


def dispute_amount(dispute: JsonObject) -> int | None:
    return _int(dispute.get("amount"))


def invoice_amount_paid(invoice: JsonObject) -> int | None:
    return _int(invoice.get("amount_paid"))


def amount_of(event_type: str, obj: JsonObject) -> int | None:
    """The amount that matters for the object, in the smallest currency unit."""
    kind = object_type(event_type, obj)
    if kind == "checkout.session":
        return session_amount_total(obj)
    if kind == "payment_intent":
        return payment_intent_amount(obj)
    if kind in ("charge", "refund", "dispute"):
        return _int(obj.get("amount"))
    if kind == "invoice":
        paid = invoice_amount_paid(obj)
        return paid if paid else _int(obj.get("amount_due"))
    if kind == "subscription":
        return subscription_amount(obj)
    return None


# ---------------------------------------------------------------------------------------- checkout sessions


@dataclass(frozen=True, slots=True)
class SessionIds:
    session_id: str | None
    payment_intent_id: str | None
    subscription_id: str | None
    customer_id: str | None
    invoice_id: str | None


def checkout_session_ids(session: JsonObject) -> SessionIds:
    """The ids a checkout session links to.

    API version: from 2022-08-01 a session in `payment` mode has no payment intent until the customer confirms
    (`payment_intent` is null on `checkout.session.expired` and on open sessions); before, the intent was
    created with the session. Every id may be expanded.
    """
    return SessionIds(
        session_id=object_id(session),
        payment_intent_id=id_of(session.get("payment_intent")),
        subscription_id=id_of(session.get("subscription")),
        customer_id=customer_id(session),
        invoice_id=id_of(session.get("invoice")),
    )


def session_mode(session: JsonObject) -> str | None:
    """ "payment", "subscription" or "setup"."""
    return _str(session.get("mode"))


def session_status(session: JsonObject) -> str | None:
    """ "open", "complete" or "expired" (absent before 2020-ish sessions; None then)."""
    return _str(session.get("status"))


def session_payment_status(session: JsonObject) -> str | None:
    """ "paid", "unpaid" or "no_payment_required"."""
    return _str(session.get("payment_status"))


def session_is_paid(session: JsonObject) -> bool:
    """Money is captured (or none was due): completed card payments, async_payment_succeeded."""
    return session_payment_status(session) in ("paid", "no_payment_required")


# ------------------------------------------------------------------------------------------ payment intents


def payment_intent_latest_charge(pi: JsonObject) -> str | None:
    """The id of the intent's most recent charge.

    API version: up to 2022-08-01 the intent embeds `charges` (a list, newest first: `charges.data[0]`);
    2022-11-15 removed `charges` and added `latest_charge` (a string id, or the charge object when expanded).
    Some versions in between carry both; `latest_charge` wins when set.
    """
    latest = id_of(pi.get("latest_charge"))
    if latest is not None:
        return latest
    charges = _list_data(pi.get("charges"))
    return id_of(charges[0]) if charges else None


def payment_intent_status(pi: JsonObject) -> str | None:
    return _str(pi.get("status"))


def payment_intent_failure(pi: JsonObject) -> tuple[str | None, str | None]:
    """(code, decline_code) of `last_payment_error`, for an order's status reason. Never the message text."""
    error = _obj(pi.get("last_payment_error")) or {}
    return _str(error.get("code")), _str(error.get("decline_code"))


def payment_intent_cancellation_reason(pi: JsonObject) -> str | None:
    return _str(pi.get("cancellation_reason"))


# ------------------------------------------------------------------------------- charges, refunds, disputes


def charge_payment_intent(charge: JsonObject) -> str | None:
    """`charge.payment_intent`: a string, an expanded intent or null (charges made without an intent)."""
    return id_of(charge.get("payment_intent"))


def refund_charge(refund: JsonObject) -> str | None:
    """`refund.charge`: string or expanded; null for refunds of non-charge payments."""
    return id_of(refund.get("charge"))


def refund_payment_intent(refund: JsonObject) -> str | None:
    """`refund.payment_intent` (present since 2019; null on refunds of charges made without an intent)."""
    return id_of(refund.get("payment_intent"))


def refund_status(refund: JsonObject) -> str | None:
    """ "pending", "requires_action", "succeeded", "failed" or "canceled"."""
    return _str(refund.get("status"))


def dispute_charge(dispute: JsonObject) -> str | None:
    """`dispute.charge`: string or expanded charge."""
    return id_of(dispute.get("charge"))


def dispute_payment_intent(dispute: JsonObject) -> str | None:
    """`dispute.payment_intent` (string, expanded or null; absent on very old versions)."""
    return id_of(dispute.get("payment_intent"))


def dispute_reason(dispute: JsonObject) -> str | None:
    return _str(dispute.get("reason"))


def dispute_status(dispute: JsonObject) -> str | None:
    return _str(dispute.get("status"))


def dispute_evidence_due_by(dispute: JsonObject) -> int | None:
    """`dispute.evidence_details.due_by` (Unix seconds; null once evidence can no longer be submitted)."""
    return _int(_path(dispute, "evidence_details", "due_by"))


def refund_reason(refund: JsonObject) -> str | None:
    """`refund.reason`: duplicate, fraudulent, requested_by_customer, expired_uncaptured_charge, or null."""
    return _str(refund.get("reason"))


def charge_refunds(charge: JsonObject) -> list[JsonObject]:
    """The refunds a charge lists.

    API version: up to 2022-08-01 a charge embeds `refunds` (a list object); 2022-11-15 dropped it from the
    default rendering, so newer charges list none and only `amount_refunded` tells what was given back.
    """
    return _list_data(charge.get("refunds"))


def invoice_of(obj: JsonObject) -> str | None:
    """The invoice a payment intent or charge pays (a subscription's payment, not an order's).

    API version: `invoice` exists on payment intents and charges up to 2025-02-24.acacia; 2025-03-31.basil
    removed it (invoice payments are separate objects there), so newer payloads give None.
    """
    return id_of(obj.get("invoice"))


# ----------------------------------------------------------------------------------------------- invoices


def invoice_subscription(invoice: JsonObject) -> str | None:
    """The subscription an invoice bills.

    API version: up to 2025-02-24.acacia it is the top-level `invoice.subscription`; 2025-03-31.basil
    removed it and moved it to `invoice.parent.subscription_details.subscription` (the parent also says
    `type: "subscription_details"`). Newer generated examples carry both keys with the top-level one null,
    so the basil location is read first and the old one is the fallback.
    """
    return id_of(_path(invoice, "parent", "subscription_details", "subscription")) or id_of(invoice.get("subscription"))


def _invoice_lines(invoice: JsonObject) -> list[JsonObject]:
    return _list_data(invoice.get("lines"))


def invoice_line_price_id(line: JsonObject) -> str | None:
    """The price of one invoice line.

    API version: up to 2025-02-24 a line has `price` (an object; 2020+) and the legacy `plan` (same id for
    prices created as plans; 2019-12-03 lines carry only `plan`); 2025-03-31.basil replaced both with
    `pricing.price_details.price` (a string id, or the price when expanded).
    """
    return (
        id_of(_path(line, "pricing", "price_details", "price")) or id_of(line.get("price")) or id_of(line.get("plan"))
    )


def invoice_price_ids(invoice: JsonObject) -> tuple[str, ...]:
    """Distinct price ids of the invoice's lines, in line order (only the first page of lines is embedded)."""
    seen: dict[str, None] = {}
    for line in _invoice_lines(invoice):
        price = invoice_line_price_id(line)
        if price is not None:
            seen.setdefault(price, None)
    return tuple(seen)


def invoice_payment_intent(invoice: JsonObject) -> str | None:
    """The payment intent that paid the invoice.

    API version: up to 2025-02-24 it is the top-level `invoice.payment_intent`; 2025-03-31.basil removed it
    in favour of the `payments` list (InvoicePayment objects: `payments.data[].payment.payment_intent`),
    which is only present when expanded, so None is a normal answer for basil invoices.
    """
    direct = id_of(invoice.get("payment_intent"))
    if direct is not None:
        return direct
    for payment in _list_data(invoice.get("payments")):
        found = id_of(_path(payment, "payment", "payment_intent"))
        if found is not None:
            return found
    return None


def invoice_charge(invoice: JsonObject) -> str | None:
    """The charge that paid the invoice.

    API version: `invoice.charge` exists up to 2025-02-24; basil removed it
    (`payments.data[].payment.charge`).
    """
    direct = id_of(invoice.get("charge"))
    if direct is not None:
        return direct
    for payment in _list_data(invoice.get("payments")):
        found = id_of(_path(payment, "payment", "charge"))
        if found is not None:
            return found
    return None


def invoice_billing_reason(invoice: JsonObject) -> str | None:
    """e.g. "subscription_create", "subscription_cycle", "subscription_update", "manual"."""
    return _str(invoice.get("billing_reason"))


def invoice_status(invoice: JsonObject) -> str | None:
    return _str(invoice.get("status"))


# -------------------------------------------------------------------------------------------- subscriptions


def _subscription_items(sub: JsonObject) -> Iterator[JsonObject]:
    yield from _list_data(sub.get("items"))


def _item_ints(sub: JsonObject, key: str) -> list[int]:
    values = (_int(item.get(key)) for item in _subscription_items(sub))
    return [value for value in values if value is not None]


def subscription_status(sub: JsonObject) -> str | None:
    """incomplete, incomplete_expired, trialing, active, past_due, canceled, unpaid or paused."""
    return _str(sub.get("status"))


def subscription_period_end(sub: JsonObject) -> int | None:
    """End of the current billing period (Unix seconds).

    API version: up to 2025-02-24 it is the top-level `subscription.current_period_end`; 2025-03-31.basil
    moved it to each item (`items.data[].current_period_end`), since items may bill on different periods.
    The latest item end is returned (access lasts as long as any item is paid for). The top-level value wins
    when present.
    """
    top = _int(sub.get("current_period_end"))
    if top is not None:
        return top
    ends = _item_ints(sub, "current_period_end")
    return max(ends) if ends else None


def subscription_period_start(sub: JsonObject) -> int | None:
    """Start of the current period; moved like `subscription_period_end` (earliest item start for basil)."""
    top = _int(sub.get("current_period_start"))
    if top is not None:
        return top
    starts = _item_ints(sub, "current_period_start")
    return min(starts) if starts else None


def subscription_price_id(sub: JsonObject) -> str | None:
    """The price of the subscription's first item.

    API version: items carry `price` since 2020-08 (prices API) and the legacy `plan` (2019-12-03 items
    carry only `plan`); very old single-plan subscriptions also have a top-level `plan`. Price first, then
    plan.
    """
    for item in _subscription_items(sub):
        found = id_of(item.get("price")) or id_of(item.get("plan"))
        if found is not None:
            return found
    return id_of(sub.get("plan"))


def subscription_first_item(sub: JsonObject) -> tuple[str, str | None] | None:
    """(item id, price id) of the subscription's first item, the one a plan change swaps; None without items."""
    for item in _subscription_items(sub):
        item_id = object_id(item)
        if item_id is not None:
            return item_id, id_of(item.get("price")) or id_of(item.get("plan"))
    return None


def subscription_price_ids(sub: JsonObject) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for item in _subscription_items(sub):
        found = id_of(item.get("price")) or id_of(item.get("plan"))
        if found is not None:
            seen.setdefault(found, None)
    return tuple(seen)


def subscription_amount(sub: JsonObject) -> int | None:
    """Per-period amount: sum of `unit_amount * quantity` over items (legacy plans: `plan.amount`)."""
    total = 0
    found = False
    for item in _subscription_items(sub):
        unit = _int(_path(item, "price", "unit_amount"))
        if unit is None:
            unit = _int(_path(item, "plan", "amount"))
        if unit is None:
            continue
        quantity = _int(item.get("quantity"))
        total += unit * (quantity if quantity is not None else 1)
        found = True
    return total if found else None


def subscription_cancel_at_period_end(sub: JsonObject) -> bool:
    return sub.get("cancel_at_period_end") is True


# --------------------------------------------------------------- billing: discounts, tax, receipts, invoices


@dataclass(frozen=True, slots=True)
class SessionAmounts:
    """What a completed Checkout Session says the customer was charged (smallest currency unit)."""

    subtotal: int | None  # before discounts and tax
    discount: int  # total_details.amount_discount (promotion codes, coupons)
    tax: int  # total_details.amount_tax (Stripe Tax, tax rates)
    total: int | None  # amount_total: what was charged


def session_amounts(session: JsonObject) -> SessionAmounts:
    """`amount_subtotal`, `total_details.amount_discount|amount_tax` and `amount_total`.

    API version: `total_details` appears on sessions created from 2020-08 on, whatever the event's version; an
    older session has neither it nor `amount_subtotal` (0 discount and tax, subtotal None). `amount_shipping`
    and the breakdown (`total_details.breakdown`, only when expanded) are not read.
    """
    return SessionAmounts(
        subtotal=_int(session.get("amount_subtotal")),
        discount=_int(_path(session, "total_details", "amount_discount")) or 0,
        tax=_int(_path(session, "total_details", "amount_tax")) or 0,
        total=session_amount_total(session),
    )


def session_customer_tax_ids(session: JsonObject) -> tuple[dict[str, str], ...]:
    """The tax ids the customer entered at checkout (`customer_details.tax_ids`, with tax_id_collection):
    `({"type": "eu_vat", "value": "DE123456789"}, ...)`; empty when none (the list is null on sessions that did
    not collect them)."""
    found: list[dict[str, str]] = []
    for item in _list_data(_path(session, "customer_details", "tax_ids")):
        kind, value = _str(item.get("type")), _str(item.get("value"))
        if kind is not None and value is not None:
            found.append({"type": kind, "value": value})
    return tuple(found)


def charge_receipt_url(charge: JsonObject) -> str | None:
    """`charge.receipt_url` (charge.succeeded, charge.refunded, ...: the same in every API version)."""
    return _str(charge.get("receipt_url"))


def payment_intent_receipt_url(pi: JsonObject) -> str | None:
    """The receipt of the intent's latest charge, when the payload embeds that charge.

    API version: up to 2022-08-01 the intent embeds `charges.data` (newest first); from 2022-11-15 only
    `latest_charge` is left, a string id unless expanded, so the receipt then comes from a charge event.
    """
    latest = _obj(pi.get("latest_charge"))
    if latest is not None:
        return charge_receipt_url(latest)
    charges = _list_data(pi.get("charges"))
    return charge_receipt_url(charges[0]) if charges else None


@dataclass(frozen=True, slots=True)
class InvoiceLinks:
    """An invoice's id, creation time (for "latest invoice" ordering) and the customer-facing links."""

    invoice_id: str | None
    created: int | None
    hosted_url: str | None  # hosted_invoice_url: the page where the customer sees (and pays) the invoice
    pdf: str | None  # invoice_pdf


def invoice_links(invoice: JsonObject) -> InvoiceLinks:
    """`hosted_invoice_url` and `invoice_pdf` (null on a draft invoice: they exist once it is finalized; the
    same fields in every API version)."""
    return InvoiceLinks(
        invoice_id=object_id(invoice),
        created=_int(invoice.get("created")),
        hosted_url=_str(invoice.get("hosted_invoice_url")),
        pdf=_str(invoice.get("invoice_pdf")),
    )


# ----------------------------------------------------------------------------------------------- ledger row


@dataclass(frozen=True, slots=True)
class RelatedIds:
    """The ids stored on the webhook ledger row (`webhook_events`), for support look-ups and locking."""

    order_id: str | None = None
    checkout_session_id: str | None = None
    payment_intent_id: str | None = None
    charge_id: str | None = None
    subscription_id: str | None = None
    customer_id: str | None = None


def related_ids(event_type: str, obj: JsonObject) -> RelatedIds:
    """Every id the event's object names, by object type (unknown types: only what metadata/customer say)."""
    kind = object_type(event_type, obj)
    order = order_id_of(obj)
    customer = customer_id(obj)
    if kind == "checkout.session":
        ids = checkout_session_ids(obj)
        return RelatedIds(
            order_id=order,
            checkout_session_id=ids.session_id,
            payment_intent_id=ids.payment_intent_id,
            subscription_id=ids.subscription_id,
            customer_id=ids.customer_id,
        )
    if kind == "payment_intent":
        return RelatedIds(
            order_id=order,
            payment_intent_id=object_id(obj),
            charge_id=payment_intent_latest_charge(obj),
            customer_id=customer,
        )
    if kind == "charge":
        return RelatedIds(
            order_id=order,
            payment_intent_id=charge_payment_intent(obj),
            charge_id=object_id(obj),
            customer_id=customer,
        )
    if kind == "refund":
        return RelatedIds(
            order_id=order,
            payment_intent_id=refund_payment_intent(obj),
            charge_id=refund_charge(obj),
        )
    if kind == "dispute":
        return RelatedIds(
            order_id=order,
            payment_intent_id=dispute_payment_intent(obj),
            charge_id=dispute_charge(obj),
        )
    if kind == "subscription":
        return RelatedIds(order_id=order, subscription_id=object_id(obj), customer_id=customer)
    if kind == "invoice":
        return RelatedIds(
            order_id=order,
            payment_intent_id=invoice_payment_intent(obj),
            charge_id=invoice_charge(obj),
            subscription_id=invoice_subscription(obj),
            customer_id=customer,
        )
    return RelatedIds(order_id=order, customer_id=customer)
