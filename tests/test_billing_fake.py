"""The fake Stripe is as strict as the real API about the billing parameters the gateway sends (official SDK
against tests/fakes/stripe_api.py), and its plans-file counterpart: the `plans:` section of PLANS_FILE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import stripe

from gateway.subscriptions import plans
from tests.fakes.stripe_api import FakeStripe, close_sdk_client

PRICE = "price_premium_monthly_eur"
ONE_TIME = "price_one_time"


@pytest.fixture
async def sdk(fake_stripe: FakeStripe) -> AsyncIterator[stripe.StripeClient]:
    fake_stripe.add_price(PRICE, 999, recurring=True)
    fake_stripe.add_price(ONE_TIME, 500)
    fake_stripe.add_customer("cus_known")
    fake_stripe.add_promotion_code("promo_1", "WELCOME", percent_off=10)
    client = fake_stripe.sdk_client()
    yield client
    await close_sdk_client(client)


BASE = {"success_url": "https://shop.example/ok", "cancel_url": "https://shop.example/cart"}
SUB = {**BASE, "mode": "subscription", "line_items": [{"price": PRICE, "quantity": 1}]}


@pytest.mark.parametrize(
    "params, param",
    [
        ({**SUB, "subscription_data": {"trial_period_days": 0}}, "subscription_data[trial_period_days]"),
        ({**SUB, "subscription_data": {"trial_period_days": 731}}, "subscription_data[trial_period_days]"),
        ({**SUB, "payment_intent_data": {"metadata": {"a": "b"}}}, "payment_intent_data"),
        ({**SUB, "customer_creation": "always"}, "customer_creation"),
        ({**SUB, "line_items": [{"price": ONE_TIME, "quantity": 1}]}, "line_items[0]"),
        ({**BASE, "mode": "payment", "line_items": [{"price": PRICE, "quantity": 1}]}, "line_items[0]"),
        (
            {
                **BASE,
                "mode": "payment",
                "line_items": [{"price": ONE_TIME}],
                "subscription_data": {"metadata": {"a": "b"}},
            },
            "subscription_data",
        ),
        ({**SUB, "allow_promotion_codes": True, "discounts": [{"promotion_code": "promo_1"}]}, "discounts"),
        ({**SUB, "discounts": [{"promotion_code": "promo_nope"}]}, "discounts[0][promotion_code]"),
        ({**SUB, "automatic_tax": {"liability": {"type": "self"}}}, "automatic_tax[enabled]"),
        ({**SUB, "customer": "cus_known", "automatic_tax": {"enabled": True}}, "automatic_tax[enabled]"),
        ({**SUB, "customer": "cus_known", "tax_id_collection": {"enabled": True}}, "tax_id_collection[enabled]"),
        ({**SUB, "customer": "cus_unknown"}, "customer"),
    ],
)
async def test_checkout_session_rules(sdk: stripe.StripeClient, params: dict[str, Any], param: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await sdk.v1.checkout.sessions.create_async(params=params)  # type: ignore[arg-type]
    assert caught.value.http_status == 400 and caught.value.param == param


async def test_checkout_with_trial_promotion_and_tax_completes_as_stripe_does(
    sdk: stripe.StripeClient, fake_stripe: FakeStripe
) -> None:
    params = {
        **SUB,
        "customer": "cus_known",
        "subscription_data": {"trial_period_days": 14, "metadata": {"user_id": "u1"}},
        "automatic_tax": {"enabled": True},
        "tax_id_collection": {"enabled": True},
        "customer_update": {"address": "auto", "name": "auto"},
        "discounts": [{"promotion_code": "promo_1"}],
    }
    session = await sdk.v1.checkout.sessions.create_async(params=params)  # type: ignore[arg-type]
    done = fake_stripe.complete_session(
        session.id, promotion_code="promo_1", tax=171, tax_ids=[{"type": "eu_vat", "value": "DE123456789"}]
    )
    assert done["total_details"] == {"amount_discount": 99, "amount_shipping": 0, "amount_tax": 171}
    assert done["amount_total"] == 999 - 99 + 171
    sub = await sdk.v1.subscriptions.retrieve_async(done["subscription"])
    assert sub.status == "trialing" and sub.metadata["user_id"] == "u1" and sub.customer == "cus_known"


async def test_subscription_update_cancel_resume_rules(sdk: stripe.StripeClient, fake_stripe: FakeStripe) -> None:
    fake_stripe.add_subscription("sub_1", customer="cus_known", price=PRICE)
    item = fake_stripe.subscriptions["sub_1"]["items"]["data"][0]["id"]
    for params, param in (
        ({"proration_behavior": "sometimes"}, "proration_behavior"),
        ({"items": [{"id": "si_nope", "price": PRICE}]}, "items[0][id]"),
        ({"items": [{"id": item, "price": ONE_TIME}]}, "items[0][price]"),
        ({"cancel_at_period_end": "maybe"}, "cancel_at_period_end"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            await sdk.v1.subscriptions.update_async("sub_1", params=params)  # type: ignore[arg-type]
        assert caught.value.param == param
    with pytest.raises(stripe.InvalidRequestError, match="paused"):
        await sdk.v1.subscriptions.resume_async("sub_1")
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await sdk.v1.subscriptions.retrieve_async("sub_nope")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    canceled = await sdk.v1.subscriptions.cancel_async("sub_1")
    assert canceled.status == "canceled"
    with pytest.raises(stripe.InvalidRequestError, match="canceled subscription"):
        await sdk.v1.subscriptions.update_async("sub_1", params={"cancel_at_period_end": False})


async def test_portal_and_refund_rules(sdk: stripe.StripeClient, fake_stripe: FakeStripe) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await sdk.v1.billing_portal.sessions.create_async(params={"return_url": "https://shop.example/"})  # type: ignore[typeddict-item]
    assert caught.value.code == "parameter_missing" and caught.value.param == "customer"
    with pytest.raises(stripe.InvalidRequestError, match="Not a valid URL"):
        await sdk.v1.billing_portal.sessions.create_async(params={"customer": "cus_known", "return_url": "nope"})
    fake_stripe.add_payment_intent("pi_1", 1000)
    for params, code in (
        ({}, "parameter_missing"),
        ({"payment_intent": "pi_1", "reason": "changed_mind"}, "parameter_invalid_string"),
        ({"payment_intent": "pi_1", "amount": 1001}, "amount_too_large"),
        ({"payment_intent": "pi_nope"}, "resource_missing"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            await sdk.v1.refunds.create_async(params=params)  # type: ignore[arg-type]
        assert refused.value.code == code
    refund = await sdk.v1.refunds.create_async(params={"payment_intent": "pi_1", "amount": 400})
    assert refund.amount == 400 and refund.status == "succeeded"
    rest = await sdk.v1.refunds.create_async(params={"payment_intent": "pi_1"})
    assert rest.amount == 600
    with pytest.raises(stripe.InvalidRequestError) as done:
        await sdk.v1.refunds.create_async(params={"payment_intent": "pi_1", "amount": 1})
    assert done.value.code == "charge_already_refunded"


# ------------------------------------------------------------------ the plans file's `plans:` section


def test_plans_section_parses_with_bounds() -> None:
    plan_map = plans.parse_plans(
        {
            "version": 1,
            "prices": {"price_a": "premium", "price_b": "premium", "price_c": "pro"},
            "plans": {
                "premium": {"default_price": "price_a", "trial_days": 7, "max_trial_days": 30},
                "pro": {"default_price": "price_c"},
            },
        }
    )
    assert plan_map.sellable["premium"] == plans.SellablePlan("premium", "price_a", 7, 30)
    assert plan_map.sellable["pro"] == plans.SellablePlan("pro", "price_c", 0, 0)
    assert plan_map.prices_of("premium") == {"price_a", "price_b"}


@pytest.mark.parametrize(
    "section, problem",
    [
        ({"premium": {"default_price": "price_c"}}, "must be a price of `prices:` that maps to premium"),
        ({"premium": {"default_price": "price_a", "trial_days": 800}}, "from 0 to 730"),
        ({"premium": {"default_price": "price_a", "trial_days": 10, "max_trial_days": 5}}, "must not exceed"),
        ({"premium": {"default_price": "price_a", "trial": 3}}, "unknown keys"),
        (["premium"], "must be a mapping"),
    ],
)
def test_plans_section_problems(section: object, problem: str) -> None:
    with pytest.raises(plans.PlansFileError) as caught:
        plans.parse_plans({"version": 1, "prices": {"price_a": "premium", "price_c": "pro"}, "plans": section})
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_shipped_plans_files_sell_premium() -> None:
    for path in ("config/plans.yaml", "tests/fixtures/plans-test.yaml"):
        assert plans.load_plans(path).sellable["premium"].trial_days == 7


def test_portal_return_urls_setting_is_checked() -> None:
    from gateway.settings import ConfigError
    from tests.conftest import make_settings

    assert make_settings(
        BILLING_PORTAL_RETURN_URLS="https://a.example/x,https://b.example"
    ).billing_portal_return_urls == (
        "https://a.example/x",
        "https://b.example",
    )
    with pytest.raises(ConfigError) as caught:
        make_settings(BILLING_PORTAL_RETURN_URLS="/account", SUBSCRIPTION_PRORATION_BEHAVIOR="sometimes")
    assert any(p.startswith("BILLING_PORTAL_RETURN_URLS:") for p in caught.value.problems)
    assert any(p.startswith("SUBSCRIPTION_PRORATION_BEHAVIOR:") for p in caught.value.problems)
