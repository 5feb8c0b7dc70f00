"""The billing adapters of gateway.stripe_payload (discounts, tax, tax ids, receipts, invoice links) against real
fixtures (tests/fixtures/stripe/SOURCES.md) of several API versions. Objects built with tests.stripe_events are
marked "built": no real fixture has a payment intent with the pre-2022-11-15 `charges` list."""

from __future__ import annotations

import copy

from gateway import stripe_payload as sp
from tests import stripe_events as se

SYNC = "stripe-events/sync-engine/"
RUBY = "stripe-events/stripe-ruby-mock/"
FXA = "stripe-events/fxa/"
PAY = "stripe-objects/pay/"
MOCK = "stripe-objects/stripe-mock/"


def test_session_with_tax_sync_engine_2020_03_02() -> None:
    session = se.fixture_object(SYNC + "checkout.session.completed__2020-03-02_T8nSaZqtPu.json")
    amounts = sp.session_amounts(session)
    assert amounts == sp.SessionAmounts(subtotal=999, discount=0, tax=65, total=session["amount_total"])
    assert sp.session_customer_tax_ids(session) == ()  # collected, none entered


def test_session_with_discount_and_tax_stripe_mock_2025() -> None:
    session = se.fixture_object(MOCK + "checkout.session__fixtures3_cs_test_a1YS1U.json")
    amounts = sp.session_amounts(session)
    assert amounts.discount == 406046392 and amounts.tax == 1424534716
    assert sp.session_customer_tax_ids(session) == ()  # `tax_ids: null`


def test_session_tax_ids_and_missing_totals() -> None:
    session = copy.deepcopy(se.fixture_object(PAY + "checkout.session.completed__data_cs_test_a1UejXx8ebId.json"))
    assert sp.session_amounts(session) == sp.SessionAmounts(subtotal=1900, discount=0, tax=0, total=1900)
    session["customer_details"]["tax_ids"] = [
        {"type": "eu_vat", "value": "DE123456789"},
        {"type": "eu_vat", "value": ""},
        "garbage",
    ]
    assert sp.session_customer_tax_ids(session) == ({"type": "eu_vat", "value": "DE123456789"},)
    del session["total_details"], session["amount_subtotal"]  # sessions older than 2020-08
    assert sp.session_amounts(session) == sp.SessionAmounts(subtotal=None, discount=0, tax=0, total=1900)


def test_charge_receipt_urls() -> None:
    ruby = se.fixture_object(RUBY + "charge.refunded__2020-08-27_0000000000.json")
    assert sp.charge_receipt_url(ruby) == (
        "https://pay.stripe.com/receipts/acct_0000000000000000/ch_000000000000000000000000/"
        "rcpt_0000000000000000000000000000000"
    )
    mock = se.fixture_object(MOCK + "charge__fixtures3_ch_1PgafuB7WZ0.json")
    assert "/receipts/payment/" in (sp.charge_receipt_url(mock) or "")
    assert sp.charge_receipt_url({"receipt_url": None}) is None


def test_payment_intent_receipt_in_each_shape() -> None:
    basil = se.fixture_object(MOCK + "payment_intent__fixtures3_pi_1PgafyB7WZ0.json")
    assert sp.payment_intent_receipt_url(basil) is None  # latest_charge is an id: the charge event brings it
    legacy = se.payment_intent(None, 500, legacy_charges=True)  # built
    legacy["charges"]["data"][0]["receipt_url"] = "https://pay.stripe.com/receipts/legacy"
    assert sp.payment_intent_receipt_url(legacy) == "https://pay.stripe.com/receipts/legacy"
    expanded = {**basil, "latest_charge": se.fixture_object(MOCK + "charge__fixtures3_ch_1PgafuB7WZ0.json")}
    assert sp.payment_intent_receipt_url(expanded) == sp.charge_receipt_url(expanded["latest_charge"])


def test_invoice_links_across_versions() -> None:
    sync = se.fixture_object(SYNC + "invoice.paid__2020-03-02_1KJrGtJDPo.json")
    links = sp.invoice_links(sync)
    assert links.invoice_id == sync["id"] and links.created == 1642645471
    assert links.hosted_url is not None and links.hosted_url.startswith("https://invoice.stripe.com/i/")
    assert links.pdf is not None and links.pdf.endswith("/pdf")
    fxa = sp.invoice_links(se.fixture_object(FXA + "invoice.payment_succeeded__2019-12-03_1GQf15BVqm.json"))
    assert fxa.hosted_url is not None and fxa.pdf is not None and fxa.created == 1585088620
    draft = sp.invoice_links(se.fixture_object(MOCK + "invoice__fixtures3_in_1Pgc6tB7WZ0.json"))
    assert (draft.hosted_url, draft.pdf) == (None, None)
    basil = sp.invoice_links(se.fixture_object(PAY + "invoice.payment_failed__data_in_1234.json"))
    assert basil == sp.InvoiceLinks("in_1234", 1745433962, "https://invoice.stripe.com/", "https://pay.stripe.com/")


def test_subscription_first_item() -> None:
    mock = se.fixture_object(MOCK + "subscription__fixtures3_sub_1Pgc6rB7WZ.json")
    first = sp.subscription_first_item(mock)
    assert first is not None and first[0] == mock["items"]["data"][0]["id"]
    assert first[1] == sp.subscription_price_id(mock)
    assert sp.subscription_first_item({"items": {"data": []}}) is None
