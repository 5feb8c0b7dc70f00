"""gateway.stripe_payload against real fixtures of several API versions (2019-12-03 .. 2025 basil shapes).

Fixture provenance: tests/fixtures/stripe/SOURCES.md. Objects built with tests.stripe_events helpers are
marked "built" in the test names or comments; they cover shapes no real fixture has (e.g. the
pre-2022-11-15 `payment_intent.charges` list).
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from gateway import stripe_payload as sp
from tests import stripe_events as se

SYNC = "stripe-events/sync-engine/"
RUBY = "stripe-events/stripe-ruby-mock/"
FXA = "stripe-events/fxa/"
PAY = "stripe-objects/pay/"
MOCK = "stripe-objects/stripe-mock/"
BUILT = "constructed/"


def obj(name: str) -> dict[str, Any]:
    return se.fixture_object(name)


# ---- ids and ledger


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            SYNC + "checkout.session.completed__2020-03-02_T8nSaZqtPu.json",
            sp.RelatedIds(
                checkout_session_id="cs_live_9RBjcHiy2i5p99Tf1MYM90c3SHK1grU0E6Ae6pKWR2KPA4ZiuKiB2X1Y3X",
                payment_intent_id="pi_1IqxJOJDPojXS6LN9uOebAea",
                customer_id="cus_IhGfebO16cMIGN",
            ),
        ),
        (
            SYNC + "payment_intent.succeeded__2020-03-02_1IlYUUJDPo.json",
            sp.RelatedIds(payment_intent_id="pi_1IqxJOJDPojXS6LN9uOebAea"),
        ),
        (
            SYNC + "payment_intent.payment_failed__2020-03-02_1IlYUUJDPo.json",
            sp.RelatedIds(payment_intent_id="pi_1IqxJOJDPojXS6LN9uOebAea"),
        ),
        (
            SYNC + "payment_intent.canceled__2020-03-02_1IlYUUJDPo.json",
            sp.RelatedIds(payment_intent_id="pi_1IqxJOJDPojXS6LN9uOebAea"),
        ),
        (
            RUBY + "charge.refunded__2020-08-27_0000000000.json",
            sp.RelatedIds(charge_id="ch_000000000000000000000000"),
        ),
        (
            SYNC + "refund.created__2020-03-02_1KJrGtJDPo.json",
            sp.RelatedIds(payment_intent_id="pi_1GszsK2eZvKYlo2CfhZyoZLp", charge_id="ch_1NirD82eZvKYlo2CIvbtLWuY"),
        ),
        (
            SYNC + "refund.updated__2020-03-02_1KJrGtJDPo.json",
            sp.RelatedIds(payment_intent_id="pi_1GszsK2eZvKYlo2CfhZyoZLp", charge_id="ch_1NirD82eZvKYlo2CIvbtLWuY"),
        ),
        (
            SYNC + "charge.dispute.created__2020-03-02_3KtQThJDPo.json",
            sp.RelatedIds(payment_intent_id="pi_1IqtG9JDPojXS6LNOGnYrIqq", charge_id="ch_1IqtGAJDPojXS6LNstgEfUji"),
        ),
        (
            SYNC + "customer.subscription.created__2020-03-02_1J02NfJDPo.json",
            sp.RelatedIds(subscription_id="sub_JdIzvfy6o5GZRd", customer_id="cus_IhGfebO16cMIGN"),
        ),
        (
            SYNC + "customer.subscription.deleted__2020-03-02_1J02QdJDPo.json",
            sp.RelatedIds(subscription_id="sub_JdIzvfy6o5GZRd", customer_id="cus_IhGfebO16cMIGN"),
        ),
        (
            FXA + "customer.subscription.updated__2019-12-03_0000000000.json",
            sp.RelatedIds(subscription_id="sub_00000000000000", customer_id="cus_00000000000000"),
        ),
        (
            FXA + "invoice.payment_succeeded__2019-12-03_1GQf15BVqm.json",
            sp.RelatedIds(
                payment_intent_id="pi_1GQL9sBVqmGyQTMaSnFPZJlx",
                charge_id="ch_1GQL9tBVqmGyQTMaNLu55LsR",
                subscription_id="sub_GyHjvuW3xOeaZS",
                customer_id="cus_GyHjGDDQRNpjya",
            ),
        ),
        (
            SYNC + "invoice.paid__2020-03-02_1KJrGtJDPo.json",
            sp.RelatedIds(subscription_id="sub_JsuPyCPhXWfZar", customer_id="cus_JsuO3bmrj0QlAw"),
        ),
        (
            RUBY + "invoice.payment_failed__2020-08-27_0000000000.json",
            sp.RelatedIds(
                payment_intent_id="pi_000000000000000000000000",
                charge_id="ch_000000000000000000000000",
                customer_id="cus_00000000000000",
            ),
        ),
        (
            BUILT + "pay/constructed__invoice.payment_failed__2025-03-31.basil__in_1234.json",
            sp.RelatedIds(subscription_id="sub_1234", customer_id="cus_1234"),
        ),
        (
            BUILT + "pay/constructed__customer.subscription.updated__2025-03-31.basil__sub_00000000000000.json",
            sp.RelatedIds(subscription_id="sub_00000000000000", customer_id="cus_00000000000000"),
        ),
        (
            "constructed__charge.dispute.created__2025-03-31.basil__dp_1Pgc71B7WZ01zgkWMevJiAUx",
            sp.RelatedIds(charge_id="ch_1PgafuB7WZ01zgkWXYmPNZs8"),
        ),
        (
            BUILT + "stripe-mock/constructed__refund.created__2025-03-31.basil__re_1Pgc72B7WZ01zgkWqPvrRrPE.json",
            sp.RelatedIds(charge_id="ch_1PgafuB7WZ01zgkWXYmPNZs8"),
        ),
    ],
    ids=lambda v: v.rsplit("/", 1)[-1][:48] if isinstance(v, str) else "",
)
def test_related_ids_of_real_events(fixture: str, expected: sp.RelatedIds) -> None:
    event = se.load_fixture(fixture)
    assert sp.related_ids(event["type"], sp.event_object(event)) == expected


@pytest.mark.parametrize("fixture", se.all_fixture_names(), ids=lambda n: n.rsplit("/", 1)[-1][:60])
def test_every_fixture_reads_without_error(fixture: str) -> None:
    data = se.load_fixture(fixture)
    event_type = data.get("type", "") if data.get("object") == "event" else ""
    o = se.fixture_object(fixture)
    ids = sp.related_ids(event_type, o)
    for value in (
        ids.checkout_session_id,
        ids.payment_intent_id,
        ids.charge_id,
        ids.subscription_id,
        ids.customer_id,
    ):
        assert value is None or (isinstance(value, str) and value)
    assert ids.order_id is None  # no upstream fixture carries our metadata
    sp.amount_of(event_type, o)
    sp.currency_of(o)
    sp.user_id_of(o)


def test_object_type_from_event_type_when_object_key_missing() -> None:
    # pay's charge fixture was hand-edited upstream and has no "object" key.
    charge = obj(PAY + "charge.refunded__data_ch_chargeid.json")
    assert "object" not in charge
    assert sp.object_type("charge.refunded", charge) == "charge"
    assert sp.related_ids("charge.refunded", charge).charge_id == "ch_chargeid"
    assert sp.object_type("charge.dispute.closed", {}) == "dispute"
    assert sp.object_type("charge.refund.updated", {}) == "refund"
    assert sp.object_type("customer.subscription.paused", {}) == "subscription"
    assert sp.object_type("product.created", {}) is None


def test_unknown_object_type_keeps_metadata_and_customer() -> None:
    order = str(uuid.uuid4())
    ids = sp.related_ids("customer.created", {"object": "customer", "id": "cus_1", "metadata": {"order_id": order}})
    assert ids == sp.RelatedIds(order_id=order)


# ---- checkout sessions


def test_checkout_session_ids_payment_mode() -> None:
    ids = sp.checkout_session_ids(obj(SYNC + "checkout.session.completed__2020-03-02_T8nSaZqtPu.json"))
    assert ids == sp.SessionIds(
        session_id="cs_live_9RBjcHiy2i5p99Tf1MYM90c3SHK1grU0E6Ae6pKWR2KPA4ZiuKiB2X1Y3X",
        payment_intent_id="pi_1IqxJOJDPojXS6LN9uOebAea",
        subscription_id=None,
        customer_id="cus_IhGfebO16cMIGN",
        invoice_id="in_1KJqKBJDPojXS6LNJbvLUgEy",
    )


def test_checkout_session_subscription_mode() -> None:
    session = obj(PAY + "checkout.session.completed__data_cs_test_a1UejXx8ebId.json")
    ids = sp.checkout_session_ids(session)
    assert ids.subscription_id == "sub_1LNkeSKXBGcbgpbZ7jMqOPSi"
    assert ids.payment_intent_id is None
    assert sp.session_mode(session) == "subscription"
    assert sp.session_is_paid(session)
    assert sp.session_amount_total(session) == 1900
    assert sp.currency_of(session) == "usd"


def test_open_session_from_stripe_mock() -> None:
    session = obj(MOCK + "checkout.session__fixtures3_cs_test_a1YS1U.json")
    assert sp.session_status(session) == "open"
    assert not sp.session_is_paid(session)
    assert sp.checkout_session_ids(session).payment_intent_id == "pi_1PgafyB7WZ01zgkWSjxsAJo3"


def test_checkout_session_expanded_ids() -> None:
    session = obj(SYNC + "checkout.session.completed__2020-03-02_T8nSaZqtPu.json")
    session["payment_intent"] = {"id": "pi_expanded", "object": "payment_intent"}
    session["customer"] = {"id": "cus_deleted", "object": "customer", "deleted": True}
    ids = sp.checkout_session_ids(session)
    assert ids.payment_intent_id == "pi_expanded"
    assert ids.customer_id == "cus_deleted"


def test_user_and_order_ids_of_built_session() -> None:
    order = str(uuid.uuid4())
    session = se.checkout_session(order, user_id="user-42", amount_total=4200, currency="EUR")
    assert sp.order_id_of(session) == order
    assert sp.user_id_of(session) == "user-42"
    assert sp.amount_of("checkout.session.completed", session) == 4200
    assert sp.currency_of(session) == "eur"
    assert sp.related_ids("checkout.session.completed", session).order_id == order


def test_order_id_is_normalised_or_dropped() -> None:
    order = uuid.uuid4()
    assert sp.order_id_of({"metadata": {"order_id": str(order).upper()}}) == str(order)
    assert sp.order_id_of({"metadata": {"order_id": " " + str(order) + " "}}) == str(order)
    assert sp.order_id_of({"metadata": {"order_id": "1234"}}) is None
    assert sp.order_id_of({"metadata": {"order_id": ""}}) is None
    assert sp.order_id_of({"metadata": None}) is None
    assert sp.order_id_of({}) is None


def test_user_id_from_metadata_when_no_client_reference() -> None:
    assert sp.user_id_of({"client_reference_id": None, "metadata": {"user_id": "u1"}}) == "u1"
    assert sp.user_id_of({"client_reference_id": "u2", "metadata": {"user_id": "u1"}}) == "u2"
    assert sp.user_id_of(obj(SYNC + "checkout.session.completed__2020-03-02_T8nSaZqtPu.json")) is None


# ---- payment intents


def test_payment_intent_without_charge_real_2020_fixture() -> None:
    pi = obj(SYNC + "payment_intent.succeeded__2020-03-02_1IlYUUJDPo.json")
    assert "charges" not in pi and pi["latest_charge"] is None
    assert sp.payment_intent_latest_charge(pi) is None
    assert sp.payment_intent_amount(pi) == 1000
    assert sp.currency_of(pi) == "usd"


def test_payment_intent_legacy_charges_list_built_from_real_2020_object() -> None:
    # No real fixture carries `charges`; add the pre-2022-11-15 list (newest first) to the real 2020 object.
    pi = obj(SYNC + "payment_intent.succeeded__2020-03-02_1IlYUUJDPo.json")
    del pi["latest_charge"]
    pi["charges"] = {
        "object": "list",
        "data": [{"id": "ch_newest", "object": "charge"}, {"id": "ch_older", "object": "charge"}],
        "has_more": False,
        "total_count": 2,
        "url": "/v1/charges?payment_intent=pi_1IqxJOJDPojXS6LN9uOebAea",
    }
    assert sp.payment_intent_latest_charge(pi) == "ch_newest"
    assert sp.related_ids("payment_intent.succeeded", pi).charge_id == "ch_newest"
    pi["charges"]["data"] = []
    assert sp.payment_intent_latest_charge(pi) is None


def test_payment_intent_legacy_vs_latest_charge_built() -> None:
    order = str(uuid.uuid4())
    old = se.payment_intent(order, 1500, charge_id="ch_old_shape", legacy_charges=True)
    new = se.payment_intent(order, 1500, charge_id="ch_new_shape")
    assert "latest_charge" not in old and "charges" not in new
    assert sp.payment_intent_latest_charge(old) == "ch_old_shape"
    assert sp.payment_intent_latest_charge(new) == "ch_new_shape"
    assert sp.related_ids("payment_intent.succeeded", new) == sp.RelatedIds(
        order_id=order, payment_intent_id=new["id"], charge_id="ch_new_shape"
    )


def test_payment_intent_latest_charge_expanded_and_preferred() -> None:
    pi = obj(MOCK + "payment_intent__fixtures3_pi_1PgafyB7WZ0.json")
    assert sp.payment_intent_latest_charge(pi) is None
    pi["latest_charge"] = {"id": "ch_expanded", "object": "charge"}
    assert sp.payment_intent_latest_charge(pi) == "ch_expanded"
    pi["charges"] = {"object": "list", "data": [{"id": "ch_from_list"}]}
    assert sp.payment_intent_latest_charge(pi) == "ch_expanded"


def test_payment_intent_failure_fields() -> None:
    pi = obj(SYNC + "payment_intent.payment_failed__2020-03-02_1IlYUUJDPo.json")
    assert sp.payment_intent_failure(pi) == (None, None)
    built = se.payment_intent(
        None,
        status="requires_payment_method",
        failure_code="card_declined",
        decline_code="insufficient_funds",
    )
    assert sp.payment_intent_failure(built) == ("card_declined", "insufficient_funds")
    canceled = obj(SYNC + "payment_intent.canceled__2020-03-02_1IlYUUJDPo.json")
    assert sp.payment_intent_cancellation_reason(canceled) is None


# ---- charges, refunds, disputes


def test_charge_refunded_2020_with_embedded_refunds() -> None:
    charge = obj(RUBY + "charge.refunded__2020-08-27_0000000000.json")
    assert sp.charge_amount_refunded(charge) == 100
    assert sp.charge_refunded_fully(charge)
    assert sp.charge_payment_intent(charge) is None  # charge made without a payment intent
    assert sp.charge_amount(charge) == 100


def test_charge_partially_refunded_pay() -> None:
    charge = obj(PAY + "charge.refunded__data_ch_chargeid.json")
    assert sp.charge_amount_refunded(charge) == 500
    assert not sp.charge_refunded_fully(charge)
    assert sp.customer_id(charge) == "cus_0dUMWLtzCTagWs"


def test_charge_current_shape() -> None:
    charge = obj(MOCK + "charge__fixtures3_ch_1PgafuB7WZ0.json")
    assert sp.charge_amount_refunded(charge) == 0
    assert not sp.charge_refunded_fully(charge)
    built = se.charge(str(uuid.uuid4()), 2000, payment_intent="pi_x", amount_refunded=2000)
    assert sp.charge_payment_intent(built) == "pi_x"
    assert sp.charge_refunded_fully(built)
    built["payment_intent"] = {"id": "pi_expanded", "object": "payment_intent"}
    assert sp.charge_payment_intent(built) == "pi_expanded"


def test_refund_fields() -> None:
    refund = obj(SYNC + "refund.created__2020-03-02_1KJrGtJDPo.json")
    assert sp.refund_charge(refund) == "ch_1NirD82eZvKYlo2CIvbtLWuY"
    assert sp.refund_payment_intent(refund) == "pi_1GszsK2eZvKYlo2CfhZyoZLp"
    assert sp.refund_amount(refund) == 1000
    assert sp.refund_status(refund) == "succeeded"
    mock = obj(MOCK + "refund__fixtures3_re_1Pgc72B7WZ0.json")
    assert sp.refund_charge(mock) == "ch_1PgafuB7WZ01zgkWXYmPNZs8"
    assert sp.refund_payment_intent(mock) is None
    expanded = se.refund(500, charge=None, payment_intent=None)
    expanded["charge"] = {"id": "ch_exp", "object": "charge"}
    assert sp.refund_charge(expanded) == "ch_exp"


def test_dispute_fields() -> None:
    dispute = obj(SYNC + "charge.dispute.created__2020-03-02_3KtQThJDPo.json")
    assert sp.dispute_charge(dispute) == "ch_1IqtGAJDPojXS6LNstgEfUji"
    assert sp.dispute_payment_intent(dispute) == "pi_1IqtG9JDPojXS6LNOGnYrIqq"
    assert sp.dispute_amount(dispute) == 1000
    assert sp.dispute_reason(dispute) == "general"
    assert sp.dispute_status(dispute) == "warning_needs_response"
    mock = obj(MOCK + "dispute__fixtures3_dp_1Pgc71B7WZ0.json")
    assert sp.dispute_charge(mock) == "ch_1PgafuB7WZ01zgkWXYmPNZs8"


# ---- invoices


def test_invoice_subscription_old_top_level() -> None:
    assert sp.invoice_subscription(obj(FXA + "invoice.payment_succeeded__2019-12-03_1GQf15BVqm.json")) == (
        "sub_GyHjvuW3xOeaZS"
    )
    assert sp.invoice_subscription(obj(SYNC + "invoice.paid__2020-03-02_1KJrGtJDPo.json")) == "sub_JsuPyCPhXWfZar"
    # A one-off invoice (Stripe CLI `invoice.paid`): no subscription at all.
    assert sp.invoice_subscription(obj(RUBY + "invoice.paid__2020-08-27_0000000000.json")) is None


def test_invoice_subscription_basil_parent() -> None:
    invoice = obj(PAY + "invoice.payment_failed__data_in_1234.json")
    assert "subscription" not in invoice
    assert sp.invoice_subscription(invoice) == "sub_1234"
    # stripe-mock's Nov 2025 example carries both keys: the basil parent wins over the null top-level key.
    mock = obj(MOCK + "invoice__fixtures3_in_1Pgc6tB7WZ0.json")
    assert mock["subscription"] is None
    assert sp.invoice_subscription(mock) == "subscription"  # stripe-mock's placeholder value


def test_invoice_price_ids_across_versions() -> None:
    # 2019-12-03: lines carry only the legacy `plan`.
    assert sp.invoice_price_ids(obj(FXA + "invoice.payment_succeeded__2019-12-03_1GQf15BVqm.json")) == (
        "plan_GqM9N6qyhvxaVk",
    )
    # 2020: `price` object on the line.
    assert sp.invoice_price_ids(obj(SYNC + "invoice.paid__2020-03-02_1KJrGtJDPo.json")) == (
        "price_1IDQm5JDPojXS6LNM31hxKzp",
    )
    assert sp.invoice_price_ids(obj(RUBY + "invoice.paid__2020-08-27_0000000000.json")) == (
        "price_000000000000000000000000",
    )
    # basil: `pricing.price_details.price`.
    assert sp.invoice_price_ids(obj(PAY + "invoice.payment_failed__data_in_1234.json")) == ("price_1234",)


def test_invoice_payment_intent_and_charge_old_vs_basil() -> None:
    old = obj(FXA + "invoice.payment_succeeded__2019-12-03_1GQf15BVqm.json")
    assert sp.invoice_payment_intent(old) == "pi_1GQL9sBVqmGyQTMaSnFPZJlx"
    assert sp.invoice_charge(old) == "ch_1GQL9tBVqmGyQTMaNLu55LsR"
    basil = obj(PAY + "invoice.payment_failed__data_in_1234.json")
    assert sp.invoice_payment_intent(basil) is None
    assert sp.invoice_charge(basil) is None
    expanded = copy.deepcopy(basil)
    expanded["payments"] = {
        "object": "list",
        "data": [
            {
                "object": "invoice_payment",
                "payment": {"type": "payment_intent", "payment_intent": "pi_basil"},
            },
        ],
    }
    assert sp.invoice_payment_intent(expanded) == "pi_basil"


def test_invoice_amounts_and_reason() -> None:
    fxa = obj(FXA + "invoice.payment_succeeded__2019-12-03_1GQf15BVqm.json")
    assert sp.invoice_amount_paid(fxa) == 500
    assert sp.invoice_billing_reason(fxa) == "subscription_create"
    basil = obj(PAY + "invoice.payment_failed__data_in_1234.json")
    assert sp.invoice_amount_paid(basil) == 0
    assert sp.amount_of("invoice.payment_failed", basil) == 24900  # nothing paid: the amount due
    assert sp.invoice_status(basil) == "open"


def test_invoice_user_id_old_and_basil_built() -> None:
    basil = se.invoice(subscription_id="sub_b", price_id="price_b", user_id="user-b", api_version=se.BASIL)
    assert sp.invoice_subscription(basil) == "sub_b"
    assert sp.user_id_of(basil) == "user-b"
    assert sp.invoice_price_ids(basil) == ("price_b",)
    old = se.invoice(subscription_id="sub_o", price_id="price_o", api_version=se.LEGACY_API_VERSION)
    old["subscription_details"] = {"metadata": {"user_id": "user-o"}}
    assert sp.invoice_subscription(old) == "sub_o"
    assert sp.user_id_of(old) == "user-o"
    assert sp.invoice_price_ids(old) == ("price_o",)


# ---- subscriptions


def test_subscription_period_end_old_top_level() -> None:
    assert sp.subscription_period_end(obj(FXA + "customer.subscription.updated__2019-12-03_0000000000.json")) == (
        1588530900
    )
    sub = obj(SYNC + "customer.subscription.updated__2020-03-02_1IlavxJDPo.json")
    assert sp.subscription_period_end(sub) == 1621572344
    assert sp.subscription_period_start(sub) == sub["current_period_start"]


def test_subscription_period_end_basil_items() -> None:
    pay = obj(PAY + "customer.subscription.updated__data_sub_00000000000000.json")
    assert "current_period_end" not in pay
    assert sp.subscription_period_end(pay) == 1488987924
    assert sp.subscription_period_start(pay) == 1486568724
    mock = obj(MOCK + "subscription__fixtures3_sub_1Pgc6rB7WZ.json")
    assert sp.subscription_period_end(mock) == 976287773


def test_subscription_period_end_latest_item_wins_built() -> None:
    sub = se.subscription(price_id="price_a", current_period_start=100, current_period_end=200, api_version=se.BASIL)
    second = copy.deepcopy(sub["items"]["data"][0])
    second["current_period_start"], second["current_period_end"] = 50, 300
    sub["items"]["data"].append(second)
    assert sp.subscription_period_end(sub) == 300
    assert sp.subscription_period_start(sub) == 50
    old = se.subscription(price_id="price_a", current_period_end=999, api_version=se.LEGACY_API_VERSION)
    assert sp.subscription_period_end(old) == 999


def test_subscription_price_id_across_versions() -> None:
    assert sp.subscription_price_id(obj(FXA + "customer.subscription.updated__2019-12-03_0000000000.json")) == (
        "plan_00000000000000"
    )
    assert sp.subscription_price_id(obj(SYNC + "customer.subscription.created__2020-03-02_1J02NfJDPo.json")) == (
        "price_1IDQm5JDPojXS6LNM31hxKzp"
    )
    assert sp.subscription_price_id(obj(MOCK + "subscription__fixtures3_sub_1Pgc6rB7WZ.json")) == (
        "price_1PgafmB7WZ01zgkW6dKueIc5"
    )
    assert sp.subscription_price_id(obj(PAY + "customer.subscription.updated__data_sub_00000000000000.json")) == (
        "FFBEGINNER_00000000000000"
    )
    assert sp.subscription_price_ids(obj(SYNC + "customer.subscription.created__2020-03-02_1J02NfJDPo.json")) == (
        "price_1IDQm5JDPojXS6LNM31hxKzp",
    )
    assert sp.subscription_price_id({"items": {"data": []}, "plan": {"id": "plan_legacy"}}) == "plan_legacy"


def test_subscription_status_currency_amount() -> None:
    deleted = obj(SYNC + "customer.subscription.deleted__2020-03-02_1J02QdJDPo.json")
    assert sp.subscription_status(deleted) == "canceled"
    # 2020-03-02 subscriptions have no top-level currency: read from the item's price.
    assert "currency" not in deleted
    assert sp.currency_of(deleted) == "usd"
    fxa = obj(FXA + "customer.subscription.updated__2019-12-03_0000000000.json")
    assert sp.subscription_amount(fxa) == 500000  # legacy plan.amount x quantity 1
    mock = obj(MOCK + "subscription__fixtures3_sub_1Pgc6rB7WZ.json")
    assert sp.subscription_amount(mock) == 2000
    assert sp.subscription_cancel_at_period_end(mock)
    built = se.subscription(price_id="p", unit_amount=999, quantity=3, user_id="u-9")
    assert sp.subscription_amount(built) == 2997
    assert sp.user_id_of(built) == "u-9"


# ---- robustness


@pytest.mark.parametrize(
    "garbage",
    [
        {},
        {"object": "invoice", "lines": "x", "parent": []},
        {"object": "subscription", "items": {"data": [1, None]}},
        {"object": "payment_intent", "charges": {"data": "no"}, "latest_charge": 5},
        {"object": "charge", "amount_refunded": True, "amount": "100"},
    ],
)
def test_unexpected_shapes_give_none(garbage: dict[str, Any]) -> None:
    for event_type in (
        "invoice.paid",
        "customer.subscription.updated",
        "payment_intent.succeeded",
        "charge.refunded",
    ):
        sp.related_ids(event_type, garbage)
        sp.amount_of(event_type, garbage)
    assert sp.invoice_subscription(garbage) is None
    assert sp.invoice_price_ids(garbage) == ()
    assert sp.subscription_period_end(garbage) is None
    assert sp.payment_intent_latest_charge(garbage) is None
    assert sp.charge_amount_refunded(garbage) == 0
    assert sp.charge_amount(garbage) is None


def test_event_helpers() -> None:
    event = se.load_fixture(
        PAY.replace("stripe-objects", "constructed")
        + "constructed__customer.subscription.updated__2025-03-31.basil__sub_00000000000000.json"
    )
    assert sp.event_object(event)["id"] == "sub_00000000000000"
    previous = sp.event_previous_attributes(event)
    assert previous is not None and previous["plan"]["id"] == "OLD_00000000000000"
    assert (
        sp.event_previous_attributes(
            se.load_fixture(SYNC + "customer.subscription.created__2020-03-02_1J02NfJDPo.json")
        )
        is None
    )
