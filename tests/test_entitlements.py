"""Entitlements: premium, cancelled-at-period-end and past_due users, through the real app."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest

from tests.stripe_events import invoice, make_event, subscription
from tests.subscription_helpers import PRICE_PREMIUM, PRICE_PRO, deliver
from tests.subscription_helpers import test_plans as test_plans  # fixture
from tests.test_auth_jwt import claims, hs256

pytestmark = pytest.mark.usefixtures("test_plans")


def bearer(sub: str, *roles: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + hs256(claims(sub=sub, roles=list(roles)))}


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool) -> Any:
    return await aiohttp_client(app_factory(PLANS_FILE="tests/fixtures/plans-test.yaml"))


async def me(client: Any, user: str) -> dict[str, Any]:
    response = await client.get("/v1/me/entitlements", headers=bearer(user))
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_premium_user(client: Any, db_pool: asyncpg.Pool) -> None:
    now = int(time.time())
    await deliver(
        db_pool,
        make_event(
            "customer.subscription.created",
            subscription(
                price_id=PRICE_PREMIUM,
                sub_id="sub_ent_premium",
                user_id="user-premium",
                created=now,
                current_period_end=now + 86400,
            ),
            created=now,
        ),
    )
    body = await me(client, "user-premium")
    assert body["premium"] is True and body["plan_id"] == "premium" and body["status"] == "active"
    assert body["current_period_end"].startswith(time.strftime("%Y-%m-%d", time.gmtime(now + 86400)))
    assert body["cancel_at_period_end"] is False


async def test_cancelled_at_period_end_stays_premium_until_the_end(client: Any, db_pool: asyncpg.Pool) -> None:
    now = int(time.time())
    await deliver(
        db_pool,
        make_event(
            "customer.subscription.updated",
            subscription(
                price_id=PRICE_PRO,
                sub_id="sub_ent_cancel",
                user_id="user-leaving",
                created=now - 100,
                current_period_end=now + 3600,
                cancel_at_period_end=True,
            ),
            created=now,
        ),
    )
    body = await me(client, "user-leaving")
    assert (body["premium"], body["plan_id"], body["cancel_at_period_end"]) == (True, "pro", True)
    # period over but the deletion not received yet: premium ends anyway
    await deliver(
        db_pool,
        make_event(
            "customer.subscription.updated",
            subscription(
                price_id=PRICE_PRO,
                sub_id="sub_ent_cancel",
                user_id="user-leaving",
                created=now - 100,
                current_period_start=now - 7200,
                current_period_end=now - 10,
                cancel_at_period_end=True,
            ),
            created=now + 1,
        ),
    )
    assert (await me(client, "user-leaving"))["premium"] is False
    await deliver(
        db_pool,
        make_event(
            "customer.subscription.deleted",
            subscription(price_id=PRICE_PRO, sub_id="sub_ent_cancel", user_id="user-leaving", status="canceled"),
            created=now + 2,
        ),
    )
    body = await me(client, "user-leaving")
    assert (body["premium"], body["status"]) == (False, "canceled")


async def test_past_due_user_keeps_premium_while_stripe_retries(client: Any, db_pool: asyncpg.Pool) -> None:
    now = int(time.time())
    await deliver(
        db_pool,
        make_event(
            "customer.subscription.created",
            subscription(
                price_id=PRICE_PREMIUM,
                sub_id="sub_ent_pd",
                customer="cus_ent_pd",
                user_id="user-late",
                created=now,
            ),
            created=now,
        ),
    )
    await deliver(
        db_pool,
        make_event(
            "invoice.payment_failed",
            invoice(subscription_id="sub_ent_pd", price_id=PRICE_PREMIUM, customer="cus_ent_pd", status="open"),
            created=now + 1,
        ),
    )
    body = await me(client, "user-late")
    assert (body["premium"], body["status"]) == (True, "past_due")
    await deliver(
        db_pool,
        make_event(
            "customer.subscription.updated",
            subscription(
                price_id=PRICE_PREMIUM,
                sub_id="sub_ent_pd",
                customer="cus_ent_pd",
                user_id="user-late",
                status="unpaid",
                created=now,
            ),
            created=now + 2,
        ),
    )
    body = await me(client, "user-late")
    assert (body["premium"], body["status"]) == (False, "unpaid")


async def test_user_without_subscription_and_the_service_endpoint(client: Any, db_pool: asyncpg.Pool) -> None:
    assert await me(client, "nobody") == {
        "user_id": "nobody",
        "premium": False,
        "plan_id": None,
        "status": None,
        "current_period_end": None,
        "cancel_at_period_end": False,
        "subscription_id": None,
        "latest_invoice_url": None,
        "latest_invoice_pdf": None,
    }
    await deliver(
        db_pool,
        make_event(
            "customer.subscription.created",
            subscription(price_id=PRICE_PREMIUM, sub_id="sub_ent_svc", user_id="user-svc"),
        ),
    )
    response = await client.get("/v1/users/user-svc/entitlements", headers=bearer("svc-rise", "entitlements:read"))
    assert response.status == 200 and (await response.json())["premium"] is True
    assert (await client.get("/v1/users/user-svc/entitlements", headers=bearer("user-other"))).status == 403
    assert (await client.get("/v1/me/entitlements")).status == 401


async def test_several_subscriptions_report_the_premium_one(client: Any, db_pool: asyncpg.Pool) -> None:
    await deliver(
        db_pool,
        make_event(
            "customer.subscription.deleted",
            subscription(price_id=PRICE_PRO, sub_id="sub_ent_old", user_id="user-two", status="canceled"),
        ),
    )
    await deliver(
        db_pool,
        make_event(
            "customer.subscription.created",
            subscription(price_id=PRICE_PREMIUM, sub_id="sub_ent_new", user_id="user-two"),
        ),
    )
    body = await me(client, "user-two")
    assert (body["premium"], body["subscription_id"]) == (True, "sub_ent_new")
