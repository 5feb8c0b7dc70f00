"""Billing from our side, through the real app against the local fake Stripe: subscription checkout (trials, one
live subscription per plan, the pending bridge event), plan changes, cancel, resume, the customer portal and
refunds. Each endpoint: success, Stripe 4xx and 5xx, idempotent retry, authorisation failures. The API never
writes the subscription row or the order's status: tests check the rows stay as the webhooks left them."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from tests.conftest import make_settings
from tests.fakes.stripe_api import FakeStripe
from tests.support_helpers import run_cli
from tests.test_auth_jwt import claims, hs256
from tests.test_checkout import error_of

FRONTEND = "https://shop.example"
PREMIUM = "price_premium_monthly_eur"
PRO = "price_pro_monthly_eur"
CHECKOUT = "/v1/checkout/sessions"
PORTAL = "/v1/billing/portal-session"
ACCOUNT = "http://localhost:3000/account"


def bearer(user_id: str = "user-1", *roles: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + hs256(claims(sub=user_id, roles=list(roles)))}


def keyed(key: str, user_id: str = "user-1", *roles: str) -> dict[str, str]:
    return {**bearer(user_id, *roles), "Idempotency-Key": key}


def overrides(fake: FakeStripe, **more: Any) -> dict[str, Any]:
    return {
        "STRIPE_API_BASE": fake.base_url,
        "CORS_ORIGINS": FRONTEND,
        "PLANS_FILE": "tests/fixtures/plans-test.yaml",
        "RATE_LIMIT_CHECKOUT_MAX": 1000,
        "RATE_LIMIT_PUBLIC_MAX": 1000,
        **more,
    }


@pytest.fixture
def fake(fake_stripe: FakeStripe) -> FakeStripe:
    fake_stripe.add_price(PREMIUM, 999, recurring=True)
    fake_stripe.add_price(PRO, 1999, recurring=True)
    return fake_stripe


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, fake: FakeStripe) -> Any:
    return await aiohttp_client(app_factory(**overrides(fake)))


async def subscription_row(
    pool: asyncpg.Pool,
    sub_id: str,
    *,
    user_id: str = "user-1",
    price: str = PREMIUM,
    plan: str = "premium",
    status: str = "active",
    customer: str = "cus_billing1",
    session_id: str | None = None,
) -> None:
    """What the webhooks would have written for a subscription (the webhook core is tested on its own)."""
    async with pool.acquire() as con:
        await con.execute(
            """INSERT INTO subscriptions (stripe_subscription_id, user_id, stripe_customer_id, price_id, plan_id,
                   status, checkout_session_id, currency, amount, current_period_end)
               VALUES ($1, $2, $3, $4, $5, $6, $7, 'eur', 999, now() + interval '30 days')""",
            sub_id,
            user_id,
            customer,
            price,
            plan,
            status,
            session_id,
        )
        await con.execute(
            "INSERT INTO customers (stripe_customer_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            customer,
            user_id,
        )


async def live_subscription(pool: asyncpg.Pool, fake: FakeStripe, sub_id: str = "sub_billing1", **kw: Any) -> str:
    fake.add_subscription(sub_id, customer=kw.get("customer", "cus_billing1"), price=kw.get("price", PREMIUM))
    await subscription_row(pool, sub_id, **kw)
    return sub_id


async def bridge_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as con:
        return await con.fetch("SELECT * FROM bridge_events ORDER BY id")


async def audit_actions(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as con:
        return [r["action"] for r in await con.fetch("SELECT action FROM audit_log ORDER BY id")]


# ================================================================== subscription checkout


async def test_subscription_checkout_with_the_plan_trial_publishes_pending(
    client: Any, db_pool: asyncpg.Pool, fake: FakeStripe
) -> None:
    response = await client.post(CHECKOUT, json={"mode": "subscription", "plan_id": "premium"}, headers=bearer())
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["plan_id"] == "premium" and body["price_id"] == PREMIUM and body["trial_days"] == 7
    assert body["checkout_url"].startswith("https://checkout.stripe.com/")

    [sent] = fake.requests_to("POST", "/v1/checkout/sessions")
    assert sent.params["mode"] == "subscription"
    assert sent.params["line_items"] == [{"price": PREMIUM, "quantity": "1"}]
    assert sent.params["subscription_data"] == {
        "metadata": {"user_id": "user-1", "plan_id": "premium"},
        "trial_period_days": "7",
    }
    assert sent.params["client_reference_id"] == "user-1"
    assert sent.idempotency_key == f"checkout-subscription:{body['checkout_id']}"
    assert "payment_intent_data" not in sent.params and "customer" not in sent.params

    [event] = await bridge_rows(db_pool)
    assert event["event_type"] == "SUBSCRIPTION_UPDATED" and event["user_id"] == "user-1"
    assert event["payload"]["status"] == "pending" and event["payload"]["session_id"] == body["session_id"]
    assert event["payload"]["plan_id"] == "premium" and event["payload"]["trial_days"] == 7
    assert event["metadata"] == {"version": "v1", "origin": "api"}
    assert event["source_event_id"] == body["session_id"]
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM subscriptions") == 0  # the webhooks write it
    assert "subscription_checkout.created" in await audit_actions(db_pool)


async def test_requested_trial_within_the_plan_bound(client: Any, fake: FakeStripe) -> None:
    ok = await client.post(
        CHECKOUT, json={"mode": "subscription", "plan_id": "premium", "trial_days": 30}, headers=bearer("u-trial")
    )
    assert ok.status == 201
    assert fake.requests_to("POST", "/v1/checkout/sessions")[0].params["subscription_data"]["trial_period_days"] == "30"
    too_long = await client.post(
        CHECKOUT, json={"mode": "subscription", "plan_id": "premium", "trial_days": 31}, headers=bearer("u-2")
    )
    problem = await error_of(too_long, 422, "validation_failed")
    assert problem["details"] == [{"field": "trial_days", "problem": "an integer from 0 to 30 for this plan"}]
    # pro: no trial by default and none may be asked for
    no_trial = await client.post(CHECKOUT, json={"mode": "subscription", "plan_id": "pro"}, headers=bearer("u-3"))
    assert no_trial.status == 201
    assert "trial_period_days" not in fake.requests_to("POST", "/v1/checkout/sessions")[1].params["subscription_data"]
    await error_of(
        await client.post(
            CHECKOUT, json={"mode": "subscription", "plan_id": "pro", "trial_days": 1}, headers=bearer("u-4")
        ),
        422,
        "validation_failed",
    )


@pytest.mark.parametrize(
    "body, field",
    [
        ({"mode": "subscription", "plan_id": "gold"}, "plan_id"),
        ({"mode": "subscription", "plan_id": "premium", "price_id": PRO}, "price_id"),
        ({"mode": "subscription", "plan_id": "premium", "amount": 1}, "amount"),
        ({"mode": "subscription", "plan_id": "premium", "success_url": "https://evil.example/x"}, "success_url"),
        ({"mode": "rental", "items": [{"product_id": 1, "quantity": 1}]}, "mode"),
    ],
)
async def test_subscription_checkout_validation(
    client: Any, fake: FakeStripe, body: dict[str, Any], field: str
) -> None:
    problem = await error_of(await client.post(CHECKOUT, json=body, headers=bearer()), 422, "validation_failed")
    assert field in [d["field"] for d in problem["details"]]
    assert fake.requests_to("POST", "/v1/checkout/sessions") == []


async def test_one_live_subscription_per_user_and_plan(client: Any, db_pool: asyncpg.Pool, fake: FakeStripe) -> None:
    await subscription_row(db_pool, "sub_live_1", status="trialing")
    fake.add_customer("cus_billing1")
    fake.add_customer("cus_2")
    problem = await error_of(
        await client.post(CHECKOUT, json={"mode": "subscription", "plan_id": "premium"}, headers=bearer()),
        409,
        "subscription_exists",
    )
    assert problem["details"]["subscription"]["id"] == "sub_live_1"
    assert problem["details"]["subscription"]["status"] == "trialing"
    assert fake.requests_to("POST", "/v1/checkout/sessions") == []
    # another plan, or another user, is not blocked; an ended subscription does not block either
    assert (
        await client.post(CHECKOUT, json={"mode": "subscription", "plan_id": "pro"}, headers=bearer())
    ).status == 201
    await subscription_row(db_pool, "sub_old", user_id="user-2", status="canceled", customer="cus_2")
    again = await client.post(CHECKOUT, json={"mode": "subscription", "plan_id": "premium"}, headers=bearer("user-2"))
    assert again.status == 201
    # the known customer is reused, with the address and name Checkout collects saved on it when tax is on
    assert fake.requests_to("POST", "/v1/checkout/sessions")[-1].params["customer"] == "cus_2"


async def test_second_checkout_while_one_is_open_answers_its_link(client: Any, fake: FakeStripe) -> None:
    first = await (
        await client.post(CHECKOUT, json={"mode": "subscription", "plan_id": "premium"}, headers=bearer())
    ).json()
    problem = await error_of(
        await client.post(CHECKOUT, json={"mode": "subscription", "plan_id": "premium"}, headers=bearer()),
        409,
        "subscription_checkout_open",
    )
    assert problem["details"]["checkout_url"] == first["checkout_url"]
    assert len(fake.requests_to("POST", "/v1/checkout/sessions")) == 1


async def test_subscription_checkout_idempotent_retry(client: Any, db_pool: asyncpg.Pool, fake: FakeStripe) -> None:
    body = {"mode": "subscription", "plan_id": "premium", "trial_days": 3}
    first = await client.post(CHECKOUT, json=body, headers=keyed("sub-key-1"))
    again = await client.post(CHECKOUT, json=body, headers=keyed("sub-key-1"))
    assert first.status == again.status == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == await first.json()
    assert len(fake.requests_to("POST", "/v1/checkout/sessions")) == 1
    assert len(await bridge_rows(db_pool)) == 1
    other = await client.post(CHECKOUT, json={**body, "trial_days": 4}, headers=keyed("sub-key-1"))
    await error_of(other, 409, "idempotency_key_reused")


@pytest.mark.parametrize("status, code, http", [(500, "stripe_error", 502), (400, "stripe_rejected", 409)])
async def test_subscription_checkout_stripe_errors_forget_the_checkout(
    client: Any, db_pool: asyncpg.Pool, fake: FakeStripe, status: int, code: str, http: int
) -> None:
    fake.fail_next(status=status, path="/v1/checkout/sessions")
    body = {"mode": "subscription", "plan_id": "premium"}
    problem = await error_of(await client.post(CHECKOUT, json=body, headers=keyed("k-fail")), http, code)
    assert problem["details"]["stripe_status"] == status
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM subscription_checkouts") == 0
    assert await bridge_rows(db_pool) == []
    retried = await client.post(CHECKOUT, json=body, headers=keyed("k-fail"))  # the same key works again
    assert retried.status == 201
    assert "subscription_checkout.failed" in await audit_actions(db_pool)


async def test_subscription_checkout_needs_a_user(client: Any) -> None:
    await error_of(
        await client.post(CHECKOUT, json={"mode": "subscription", "plan_id": "premium"}), 401, "unauthorized"
    )


async def test_promotion_codes_and_tax_settings_reach_both_checkout_modes(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, fake: FakeStripe
) -> None:
    app = app_factory(
        **overrides(
            fake,
            CHECKOUT_ALLOW_PROMOTION_CODES="true",
            CHECKOUT_AUTOMATIC_TAX="true",
            CHECKOUT_TAX_ID_COLLECTION="true",
        )
    )
    client = await aiohttp_client(app)
    await subscription_row(db_pool, "sub_gone", status="canceled", customer="cus_tax")
    fake.add_customer("cus_tax")
    response = await client.post(CHECKOUT, json={"mode": "subscription", "plan_id": "premium"}, headers=bearer())
    assert response.status == 201, await response.text()
    sent = fake.requests_to("POST", "/v1/checkout/sessions")[0].params
    assert sent["allow_promotion_codes"] == "true"
    assert sent["automatic_tax"] == {"enabled": "true"} and sent["tax_id_collection"] == {"enabled": "true"}
    assert sent["customer"] == "cus_tax" and sent["customer_update"] == {"address": "auto", "name": "auto"}

    from tests.factories import create_product

    async with db_pool.acquire() as con:
        product = await create_product(con, "SKU-TAX-1", stock=3)
    one_time = await client.post(CHECKOUT, json={"items": [{"product_id": product, "quantity": 1}]}, headers=bearer())
    assert one_time.status == 201, await one_time.text()
    sent = fake.requests_to("POST", "/v1/checkout/sessions")[1].params
    assert sent["mode"] == "payment" and sent["allow_promotion_codes"] == "true"
    assert sent["automatic_tax"] == {"enabled": "true"} and sent["tax_id_collection"] == {"enabled": "true"}


# ================================================================== subscriptions: read


async def test_subscription_read_returns_the_latest_invoice_links(client: Any, db_pool: asyncpg.Pool) -> None:
    await subscription_row(db_pool, "sub_read_1")
    async with db_pool.acquire() as con:
        await con.execute(
            """UPDATE subscriptions SET latest_invoice_id = 'in_1', latest_invoice_created = now(),
                   latest_invoice_hosted_url = 'https://invoice.stripe.com/i/x', latest_invoice_pdf = 'https://pay.stripe.com/invoice/x/pdf'
               WHERE stripe_subscription_id = 'sub_read_1'"""
        )
    one = await (await client.get("/v1/subscriptions/sub_read_1", headers=bearer())).json()
    assert one["latest_invoice"] == {
        "id": "in_1",
        "hosted_invoice_url": "https://invoice.stripe.com/i/x",
        "invoice_pdf": "https://pay.stripe.com/invoice/x/pdf",
    }
    listed = await (await client.get("/v1/subscriptions", headers=bearer())).json()
    assert [s["id"] for s in listed["data"]] == ["sub_read_1"]
    entitlements = await (await client.get("/v1/me/entitlements", headers=bearer())).json()
    assert entitlements["latest_invoice_url"] == "https://invoice.stripe.com/i/x"
    assert entitlements["latest_invoice_pdf"] == "https://pay.stripe.com/invoice/x/pdf"
    await error_of(
        await client.get("/v1/subscriptions/sub_read_1", headers=bearer("user-2")), 404, "subscription_not_found"
    )
    await error_of(await client.get("/v1/subscriptions"), 401, "unauthorized")


# ================================================================== plan change, cancel, resume


async def test_plan_change_asks_stripe_and_leaves_the_row_to_the_webhook(
    client: Any, db_pool: asyncpg.Pool, fake: FakeStripe
) -> None:
    sub_id = await live_subscription(db_pool, fake)
    response = await client.post(f"/v1/subscriptions/{sub_id}/plan", json={"plan_id": "pro"}, headers=keyed("pc-1"))
    assert response.status == 200, await response.text()
    state = (await response.json())["subscription"]
    assert state["price_id"] == PRO and state["plan_id"] == "pro" and state["confirmed"] is False
    [update] = fake.requests_to("POST", f"/v1/subscriptions/{sub_id}")
    item_id = fake.subscriptions[sub_id]["items"]["data"][0]["id"]
    assert update.params["items"] == [{"id": item_id, "price": PRO}]
    assert update.params["proration_behavior"] == "create_prorations"
    assert update.idempotency_key is not None and update.idempotency_key.startswith(f"subscription-plan:{sub_id}:")
    async with db_pool.acquire() as con:
        row = await con.fetchrow(
            "SELECT plan_id, price_id FROM subscriptions WHERE stripe_subscription_id = $1", sub_id
        )
    assert (row["plan_id"], row["price_id"]) == ("premium", PREMIUM)  # until customer.subscription.updated
    # the retry (same key, answer lost): Stripe already has the price, nothing is sent again
    retry = await client.post(f"/v1/subscriptions/{sub_id}/plan", json={"plan_id": "pro"}, headers=keyed("pc-1"))
    assert retry.status == 200 and (await retry.json())["subscription"]["price_id"] == PRO
    assert len(fake.requests_to("POST", f"/v1/subscriptions/{sub_id}")) == 1
    assert "subscription.plan_change_requested" in await audit_actions(db_pool)


async def test_plan_change_proration_is_a_setting(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, fake: FakeStripe
) -> None:
    client = await aiohttp_client(app_factory(**overrides(fake, SUBSCRIPTION_PRORATION_BEHAVIOR="none")))
    sub_id = await live_subscription(db_pool, fake)
    assert (
        await client.post(f"/v1/subscriptions/{sub_id}/plan", json={"plan_id": "pro"}, headers=bearer())
    ).status == 200
    assert fake.requests_to("POST", f"/v1/subscriptions/{sub_id}")[0].params["proration_behavior"] == "none"


@pytest.mark.parametrize("action, body", [("plan", {"plan_id": "pro"}), ("cancel", {}), ("resume", {})])
async def test_changes_are_for_the_owner_only(
    client: Any, db_pool: asyncpg.Pool, fake: FakeStripe, action: str, body: Any
) -> None:
    sub_id = await live_subscription(db_pool, fake)
    await error_of(await client.post(f"/v1/subscriptions/{sub_id}/{action}", json=body), 401, "unauthorized")
    await error_of(
        await client.post(f"/v1/subscriptions/{sub_id}/{action}", json=body, headers=bearer("user-2")),
        404,
        "subscription_not_found",
    )
    assert fake.requests_to("GET", f"/v1/subscriptions/{sub_id}") == []


@pytest.mark.parametrize(
    "action, body, failing",
    [
        ("plan", {"plan_id": "pro"}, ("POST", "/v1/subscriptions/sub_billing1")),
        ("cancel", {"at_period_end": True}, ("POST", "/v1/subscriptions/sub_billing1")),
        ("cancel", {"at_period_end": False}, ("DELETE", "/v1/subscriptions/sub_billing1")),
        ("plan", {"plan_id": "pro"}, ("GET", "/v1/subscriptions/sub_billing1")),
    ],
)
@pytest.mark.parametrize("status, code, http", [(500, "stripe_error", 502), (400, "stripe_rejected", 409)])
async def test_change_stripe_errors(
    client: Any,
    db_pool: asyncpg.Pool,
    fake: FakeStripe,
    action: str,
    body: Any,
    failing: tuple[str, str],
    status: int,
    code: str,
    http: int,
) -> None:
    sub_id = await live_subscription(db_pool, fake)
    fake.fail_next(status=status, method=failing[0], path=failing[1])
    await error_of(await client.post(f"/v1/subscriptions/{sub_id}/{action}", json=body, headers=bearer()), http, code)
    assert (
        fake.subscriptions[sub_id]["status"] == "active" and fake.subscriptions[sub_id]["cancel_at_period_end"] is False
    )
    assert not [a for a in await audit_actions(db_pool) if a.startswith("subscription.")]


async def test_cancel_at_period_end_then_resume(client: Any, db_pool: asyncpg.Pool, fake: FakeStripe) -> None:
    sub_id = await live_subscription(db_pool, fake)
    cancel = await client.post(f"/v1/subscriptions/{sub_id}/cancel", json={}, headers=keyed("c-1"))
    assert cancel.status == 200
    assert (await cancel.json())["subscription"]["cancel_at_period_end"] is True
    assert fake.requests_to("POST", f"/v1/subscriptions/{sub_id}")[0].params == {"cancel_at_period_end": "true"}
    again = await client.post(f"/v1/subscriptions/{sub_id}/cancel", json={}, headers=keyed("c-1"))
    assert again.status == 200 and len(fake.requests_to("POST", f"/v1/subscriptions/{sub_id}")) == 1

    resume = await client.post(f"/v1/subscriptions/{sub_id}/resume", json={}, headers=keyed("r-1"))
    assert resume.status == 200
    assert (await resume.json())["subscription"]["cancel_at_period_end"] is False
    assert fake.requests_to("POST", f"/v1/subscriptions/{sub_id}")[1].params == {"cancel_at_period_end": "false"}
    nothing = await client.post(f"/v1/subscriptions/{sub_id}/resume", json={}, headers=keyed("r-1"))
    assert nothing.status == 200 and len(fake.requests_to("POST", f"/v1/subscriptions/{sub_id}")) == 2
    async with db_pool.acquire() as con:
        assert (
            await con.fetchval(
                "SELECT cancel_at_period_end FROM subscriptions WHERE stripe_subscription_id = $1", sub_id
            )
            is False
        )
    actions = await audit_actions(db_pool)
    assert actions.count("subscription.cancel_requested") == 1 and actions.count("subscription.resume_requested") == 1


async def test_resume_a_paused_subscription(client: Any, db_pool: asyncpg.Pool, fake: FakeStripe) -> None:
    sub_id = await live_subscription(db_pool, fake)
    fake.subscriptions[sub_id]["status"] = "paused"
    response = await client.post(f"/v1/subscriptions/{sub_id}/resume", json={}, headers=bearer())
    assert response.status == 200 and (await response.json())["subscription"]["status"] == "active"
    [sent] = fake.requests_to("POST", f"/v1/subscriptions/{sub_id}/resume")
    assert sent.params == {"billing_cycle_anchor": "unchanged"} and sent.idempotency_key


async def test_cancel_now(client: Any, db_pool: asyncpg.Pool, fake: FakeStripe) -> None:
    sub_id = await live_subscription(db_pool, fake)
    response = await client.post(f"/v1/subscriptions/{sub_id}/cancel", json={"at_period_end": False}, headers=bearer())
    assert response.status == 200 and (await response.json())["subscription"]["status"] == "canceled"
    [sent] = fake.requests_to("DELETE", f"/v1/subscriptions/{sub_id}")
    assert sent.idempotency_key is not None
    # Stripe says canceled; so does the next request, before the webhook arrives
    await error_of(
        await client.post(f"/v1/subscriptions/{sub_id}/resume", json={}, headers=bearer()), 409, "subscription_ended"
    )


async def test_cancel_now_can_be_switched_off(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, fake: FakeStripe
) -> None:
    client = await aiohttp_client(app_factory(**overrides(fake, SUBSCRIPTION_CANCEL_NOW_ALLOWED="false")))
    sub_id = await live_subscription(db_pool, fake)
    await error_of(
        await client.post(f"/v1/subscriptions/{sub_id}/cancel", json={"at_period_end": False}, headers=bearer()),
        403,
        "cancel_now_not_allowed",
    )
    assert fake.requests_to("DELETE", f"/v1/subscriptions/{sub_id}") == []


async def test_an_ended_subscription_cannot_change(client: Any, db_pool: asyncpg.Pool, fake: FakeStripe) -> None:
    sub_id = await live_subscription(db_pool, fake, status="canceled")
    for action, body in (("plan", {"plan_id": "pro"}), ("cancel", {}), ("resume", {})):
        await error_of(
            await client.post(f"/v1/subscriptions/{sub_id}/{action}", json=body, headers=bearer()),
            409,
            "subscription_ended",
        )
    assert fake.requests_to("GET", f"/v1/subscriptions/{sub_id}") == []


async def test_change_bodies_are_validated(client: Any, db_pool: asyncpg.Pool, fake: FakeStripe) -> None:
    sub_id = await live_subscription(db_pool, fake)
    for action, body in (
        ("plan", {"plan_id": "gold"}),
        ("plan", {"plan_id": "pro", "price_id": PREMIUM}),
        ("cancel", {"at_period_end": "yes"}),
        ("resume", {"now": True}),
    ):
        await error_of(
            await client.post(f"/v1/subscriptions/{sub_id}/{action}", json=body, headers=bearer()),
            422,
            "validation_failed",
        )


# ================================================================== customer portal


async def test_portal_session_for_the_users_customer(client: Any, db_pool: asyncpg.Pool, fake: FakeStripe) -> None:
    await live_subscription(db_pool, fake)
    response = await client.post(PORTAL, json={}, headers=keyed("portal-1"))
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["url"].startswith("https://billing.stripe.com/") and body["return_url"] == ACCOUNT
    [sent] = fake.requests_to("POST", "/v1/billing_portal/sessions")
    assert sent.params == {"customer": "cus_billing1", "return_url": ACCOUNT}
    assert sent.idempotency_key is not None and sent.idempotency_key.startswith("portal:user-1:")
    again = await client.post(PORTAL, json={}, headers=keyed("portal-1"))
    assert again.status == 201 and (await again.json())["url"] == body["url"]  # Stripe replayed its answer
    assert "billing_portal.session_created" in await audit_actions(db_pool)


async def test_portal_return_url_comes_from_the_allowlist(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, fake: FakeStripe
) -> None:
    allowed = "https://shop.example/account,https://shop.example/billing"
    client = await aiohttp_client(app_factory(**overrides(fake, BILLING_PORTAL_RETURN_URLS=allowed)))
    await live_subscription(db_pool, fake)
    ok = await client.post(PORTAL, json={"return_url": "https://shop.example/billing"}, headers=bearer())
    assert ok.status == 201
    assert (
        fake.requests_to("POST", "/v1/billing_portal/sessions")[0].params["return_url"]
        == "https://shop.example/billing"
    )
    problem = await error_of(
        await client.post(PORTAL, json={"return_url": "https://evil.example/"}, headers=bearer()),
        422,
        "validation_failed",
    )
    assert problem["details"][0]["field"] == "return_url"


async def test_portal_without_a_customer_or_a_user(client: Any, fake: FakeStripe) -> None:
    await error_of(await client.post(PORTAL, json={}, headers=bearer("nobody")), 404, "billing_customer_not_found")
    await error_of(await client.post(PORTAL, json={}), 401, "unauthorized")
    assert fake.requests_to("POST", "/v1/billing_portal/sessions") == []


async def test_portal_stripe_errors(client: Any, db_pool: asyncpg.Pool, fake: FakeStripe) -> None:
    await live_subscription(db_pool, fake)
    fake.fail_next(status=503, path="/v1/billing_portal/sessions")
    await error_of(await client.post(PORTAL, json={}, headers=bearer()), 502, "stripe_error")
    fake.portal_configured = False  # the runbook's "portal not configured in this mode"
    await error_of(await client.post(PORTAL, json={}, headers=bearer()), 409, "stripe_rejected")


# ================================================================== refunds


async def paid_order(pool: asyncpg.Pool, fake: FakeStripe, *, amount: int = 5000, status: str = "paid") -> str:
    intent = fake.add_payment_intent("pi_" + uuid.uuid4().hex[:20], amount)
    async with pool.acquire() as con:
        order_id: str = await con.fetchval(
            """INSERT INTO orders (user_id, status, amount_total, currency, stripe_payment_intent_id, paid_at)
               VALUES ('user-1', $1, $2, 'eur', $3, now()) RETURNING id::text""",
            status,
            amount,
            intent["id"],
        )
    return order_id


def refund_url(order_id: str) -> str:
    return f"/v1/admin/orders/{order_id}/refunds"


ADMIN = ("ops-1", "payments:refund")


async def order_state(pool: asyncpg.Pool, order_id: str) -> tuple[str, int]:
    async with pool.acquire() as con:
        row = await con.fetchrow("SELECT status, amount_refunded FROM orders WHERE id = $1::uuid", order_id)
    return row["status"], row["amount_refunded"]


async def test_partial_refund_is_asked_from_stripe_and_the_order_waits_for_the_webhook(
    client: Any, db_pool: asyncpg.Pool, fake: FakeStripe
) -> None:
    order_id = await paid_order(db_pool, fake)
    response = await client.post(
        refund_url(order_id), json={"amount": 2000, "reason": "requested_by_customer"}, headers=keyed("rf-1", *ADMIN)
    )
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["amount"] == 2000 and body["stripe_refund_id"].startswith("re_") and body["confirmed"] is False
    [sent] = fake.requests_to("POST", "/v1/refunds")
    assert sent.params["amount"] == "2000" and sent.params["reason"] == "requested_by_customer"
    assert sent.params["metadata"] == {"order_id": order_id, "refund_request_id": body["refund_request_id"]}
    assert sent.idempotency_key == f"refund-request:{body['refund_request_id']}"
    assert await order_state(db_pool, order_id) == ("paid", 0)
    actions = await audit_actions(db_pool)
    assert "order.refund_requested" in actions and "order.refund_created" in actions
    async with db_pool.acquire() as con:
        actor = await con.fetchval("SELECT actor FROM refund_requests")
    assert actor == "service:ops-1"

    # the retry gets the same answer, Stripe is not asked twice
    retry = await client.post(
        refund_url(order_id), json={"amount": 2000, "reason": "requested_by_customer"}, headers=keyed("rf-1", *ADMIN)
    )
    assert retry.status == 201 and retry.headers["Idempotent-Replayed"] == "true" and await retry.json() == body
    assert len(fake.requests_to("POST", "/v1/refunds")) == 1
    await error_of(
        await client.post(refund_url(order_id), json={"amount": 2500}, headers=keyed("rf-1", *ADMIN)),
        409,
        "idempotency_key_reused",
    )


async def test_refunds_are_bounded_by_what_is_left(client: Any, db_pool: asyncpg.Pool, fake: FakeStripe) -> None:
    order_id = await paid_order(db_pool, fake, amount=5000)
    assert (await client.post(refund_url(order_id), json={"amount": 2000}, headers=keyed("a", *ADMIN))).status == 201
    problem = await error_of(
        await client.post(refund_url(order_id), json={"amount": 3001}, headers=keyed("b", *ADMIN)),
        409,
        "refund_exceeds_remaining",
    )
    assert problem["details"] == {"left_to_refund": 3000, "requested": 3001}
    everything = await client.post(refund_url(order_id), json={}, headers=keyed("c", *ADMIN))  # the rest
    assert everything.status == 201 and (await everything.json())["amount"] == 3000
    await error_of(
        await client.post(refund_url(order_id), json={"amount": 1}, headers=keyed("d", *ADMIN)),
        409,
        "refund_exceeds_remaining",
    )
    assert [r.params["amount"] for r in fake.requests_to("POST", "/v1/refunds")] == ["2000", "3000"]


async def test_refund_authorisation_and_input(client: Any, db_pool: asyncpg.Pool, fake: FakeStripe) -> None:
    order_id = await paid_order(db_pool, fake)
    await error_of(
        await client.post(refund_url(order_id), json={}, headers={"Idempotency-Key": "x"}), 401, "unauthorized"
    )
    await error_of(await client.post(refund_url(order_id), json={}, headers=keyed("x", "user-1")), 403, "forbidden")
    await error_of(
        await client.post(refund_url(order_id), json={}, headers=bearer(*ADMIN)), 400, "idempotency_key_required"
    )
    await error_of(
        await client.post(refund_url(str(uuid.uuid4())), json={}, headers=keyed("x", *ADMIN)), 404, "order_not_found"
    )
    await error_of(
        await client.post(refund_url("not-a-uuid"), json={}, headers=keyed("x", *ADMIN)), 404, "order_not_found"
    )
    for body in ({"amount": 0}, {"amount": "10"}, {"reason": "changed_mind"}, {"amount": 10, "note": "x"}):
        await error_of(
            await client.post(refund_url(order_id), json=body, headers=keyed("x", *ADMIN)), 422, "validation_failed"
        )
    pending = await paid_order(db_pool, fake, status="pending")
    await error_of(
        await client.post(refund_url(pending), json={}, headers=keyed("x", *ADMIN)), 409, "order_not_refundable"
    )
    assert fake.requests_to("POST", "/v1/refunds") == []


async def test_refund_after_a_stripe_failure_is_retried_with_the_same_stripe_key(
    client: Any, db_pool: asyncpg.Pool, fake: FakeStripe
) -> None:
    order_id = await paid_order(db_pool, fake)
    fake.fail_next(status=500, path="/v1/refunds")
    await error_of(
        await client.post(refund_url(order_id), json={"amount": 1000}, headers=keyed("k5", *ADMIN)), 502, "stripe_error"
    )
    # the amount stays reserved while the request may still have reached Stripe
    await error_of(
        await client.post(refund_url(order_id), json={"amount": 4001}, headers=keyed("other", *ADMIN)),
        409,
        "refund_exceeds_remaining",
    )
    retried = await client.post(refund_url(order_id), json={"amount": 1000}, headers=keyed("k5", *ADMIN))
    assert retried.status == 201
    first, second = fake.requests_to("POST", "/v1/refunds")
    assert first.idempotency_key == second.idempotency_key
    assert len(fake.refunds) == 1


async def test_refund_refused_by_stripe_frees_the_amount(client: Any, db_pool: asyncpg.Pool, fake: FakeStripe) -> None:
    order_id = await paid_order(db_pool, fake)
    fake.fail_next(status=400, code="charge_already_refunded", path="/v1/refunds")
    problem = await error_of(
        await client.post(refund_url(order_id), json={"amount": 1000}, headers=keyed("k4", *ADMIN)),
        409,
        "stripe_rejected",
    )
    assert problem["details"]["stripe_code"] == "charge_already_refunded"
    again = await error_of(
        await client.post(refund_url(order_id), json={"amount": 1000}, headers=keyed("k4", *ADMIN)),
        409,
        "stripe_rejected",
    )
    assert again["details"]["stripe_code"] == "charge_already_refunded"
    assert len(fake.requests_to("POST", "/v1/refunds")) == 1
    full = await client.post(refund_url(order_id), json={}, headers=keyed("k4b", *ADMIN))
    assert full.status == 201 and (await full.json())["amount"] == 5000
    assert "order.refund_refused" in await audit_actions(db_pool)


async def test_refund_command(db_pool: asyncpg.Pool, fake: FakeStripe, database_url: str) -> None:
    settings = make_settings(DATABASE_URL=database_url, STRIPE_API_BASE=fake.base_url)
    order_id = await paid_order(db_pool, fake)
    result = await run_cli(["orders", "refund", order_id, "--amount", "1500", "--idempotency-key", "cli-1"], settings)
    assert result.code == 0, result.stderr
    assert '"amount": 1500' in result.stdout and '"idempotency_key": "cli-1"' in result.stdout
    again = await run_cli(["orders", "refund", order_id, "--amount", "1500", "--idempotency-key", "cli-1"], settings)
    assert again.code == 0 and '"replayed": true' in again.stdout
    assert len(fake.refunds) == 1
    too_much = await run_cli(["orders", "refund", order_id, "--amount", "4000"], settings)
    assert too_much.code == 1 and "refund_exceeds_remaining" in too_much.stdout
    unknown = await run_cli(["orders", "refund", str(uuid.uuid4())], settings)
    assert unknown.code == 2
    assert (await run_cli(["orders", "refund", "nope"], settings)).code == 2
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT actor FROM refund_requests") == "cli"
    assert await order_state(db_pool, order_id) == ("paid", 0)


# ================================================================== receipts, discounts and tax on the order read


async def test_order_read_returns_receipt_discount_tax_and_tax_ids(
    client: Any, db_pool: asyncpg.Pool, fake: FakeStripe
) -> None:
    order_id = await paid_order(db_pool, fake, amount=1071)
    async with db_pool.acquire() as con:
        await con.execute(
            """UPDATE orders SET amount_subtotal = 999, amount_discount = 99, amount_tax = 171,
                   customer_tax_ids = $2, receipt_url = 'https://pay.stripe.com/receipts/payment/abc'
               WHERE id = $1::uuid""",
            order_id,
            [{"type": "eu_vat", "value": "DE123456789"}],
        )
    body = await (await client.get(f"/v1/orders/{order_id}", headers=bearer())).json()
    assert (body["amount_subtotal"], body["amount_discount"], body["amount_tax"], body["amount_total"]) == (
        999,
        99,
        171,
        1071,
    )
    assert body["customer_tax_ids"] == [{"type": "eu_vat", "value": "DE123456789"}]
    assert body["receipt_url"] == "https://pay.stripe.com/receipts/payment/abc"
    fresh = await paid_order(db_pool, fake)
    plain = await (await client.get(f"/v1/orders/{fresh}", headers=bearer())).json()
    assert (plain["amount_discount"], plain["amount_tax"], plain["customer_tax_ids"], plain["receipt_url"]) == (
        0,
        0,
        [],
        None,
    )
