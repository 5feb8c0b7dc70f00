"""The payload adapter reads every API version it claims (`gateway.stripe_payload.READ_API_VERSIONS`), the newest
one included: each claimed version has event fixtures, and on each of them the adapter finds what the handlers
need. Fixtures and their provenance: tests/fixtures/stripe/SOURCES.md (copied with attribution from the shared
collection; the basil and 2022-08-01 envelopes are constructed around real objects, as that page says)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import stripe_payload as sp
from gateway.settings import DEFAULT_STRIPE_API_VERSION
from gateway.webhooks.handlers import HANDLERS
from tests import stripe_events as se


def envelopes_of(version: str) -> list[str]:
    names = []
    for name in se.all_fixture_names():
        data = se.load_fixture(name)
        if data.get("object") == "event" and data.get("api_version") == version:
            names.append(name)
    return names


def essentials(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    """What the handlers need of an object of this event type, read through the adapter."""
    kind = sp.object_type(event_type, obj)
    ids = sp.related_ids(event_type, obj)
    if kind == "checkout.session":
        return {
            "session": ids.checkout_session_id,
            "mode": sp.session_mode(obj),
            "amount": sp.amount_of(event_type, obj),
        }
    if kind == "payment_intent":
        return {
            "intent": ids.payment_intent_id,
            "status": sp.payment_intent_status(obj),
            "amount": sp.payment_intent_amount(obj),
        }
    if kind == "charge":
        return {"charge": ids.charge_id, "amount": sp.charge_amount(obj)}
    if kind == "refund":
        return {"refund": sp.object_id(obj), "charge": ids.charge_id, "status": sp.refund_status(obj)}
    if kind == "dispute":
        return {"dispute": sp.object_id(obj), "charge": ids.charge_id, "amount": sp.dispute_amount(obj)}
    if kind == "subscription":
        return {
            "subscription": ids.subscription_id,
            "status": sp.subscription_status(obj),
            "price": sp.subscription_price_id(obj),
            "period_end": sp.subscription_period_end(obj),
            "currency": sp.currency_of(obj),
        }
    if kind == "invoice":
        return {"invoice": sp.object_id(obj), "customer": ids.customer_id, "currency": sp.currency_of(obj)}
    return {"kind": kind}


@pytest.mark.parametrize("version", sp.READ_API_VERSIONS)
def test_every_claimed_version_is_read_on_its_fixtures(version: str) -> None:
    names = envelopes_of(version)
    assert names, f"no event fixture of API version {version}: add one before claiming it"
    for name in names:
        event = se.load_fixture(name)
        found = essentials(event["type"], sp.event_object(event))
        missing = [key for key, value in found.items() if value is None]
        assert not missing, f"{name}: the adapter finds no {missing}"


def test_the_newest_claimed_version_is_read_with_its_own_shapes() -> None:
    newest = sp.NEWEST_READ_API_VERSION
    assert newest == sp.READ_API_VERSIONS[-1] == max(sp.READ_API_VERSIONS)
    names = envelopes_of(newest)
    assert {se.load_fixture(n)["type"] for n in names} >= {
        "customer.subscription.updated",
        "invoice.payment_failed",
        "payment_intent.payment_failed",
        "refund.created",
        "charge.dispute.created",
    }
    # Basil shapes: the subscription's period on its items, the invoice's subscription under `parent`.
    sub = se.fixture_object("constructed__customer.subscription.updated__2025-03-31.basil__sub_00000000000000")
    assert "current_period_end" not in sub and sp.subscription_period_end(sub) is not None
    invoice = se.fixture_object("constructed__invoice.payment_failed__2025-03-31.basil__in_1234")
    assert "subscription" not in invoice and sp.invoice_subscription(invoice) == "sub_1234"


def test_the_pinned_default_is_a_version_the_adapter_reads() -> None:
    assert sp.reads_api_version(DEFAULT_STRIPE_API_VERSION)
    assert sp.reads_api_version("2022-11-15")  # between two claimed versions
    assert not sp.reads_api_version("2026-10-28.endive")  # newer than any fixture: refused until tested
    assert not sp.reads_api_version("2018-02-28")


def test_every_object_the_handlers_take_has_fixtures() -> None:
    """Every kind of object the dispatch table's types carry is read on real or constructed envelopes, and all
    but the checkout session on envelopes of the newest claimed version (SOURCES.md: no basil session event)."""

    def kinds(names: list[str]) -> set[str | None]:
        return {sp.object_type(e["type"], sp.event_object(e)) for e in map(se.load_fixture, names)}

    handled = {sp.object_type(event_type, {}) for event_type in HANDLERS}
    assert handled <= kinds([n for v in sp.READ_API_VERSIONS for n in envelopes_of(v)])
    assert handled - {"checkout.session"} <= kinds(envelopes_of(sp.NEWEST_READ_API_VERSION))
