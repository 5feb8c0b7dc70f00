"""`POST /v1/billing/portal-session`: a Stripe customer portal session for the signed-in user's customer.

The customer is the user's most recent Stripe customer (the customers table, learnt from checkouts and
subscriptions by the webhooks); the return URL is one of BILLING_PORTAL_RETURN_URLS, never a free URL. The
portal URL is a short-lived credential for the customer's billing: it is returned, never logged or stored.
"""

from __future__ import annotations

import asyncpg
import stripe

from gateway.billing import stripe_calls
from gateway.billing.audit import audit
from gateway.errors import NotFound
from gateway.settings import Settings

USER_CUSTOMER = "SELECT stripe_customer_id FROM customers WHERE user_id = $1 ORDER BY created_at DESC LIMIT 1"


async def customer_of(con: asyncpg.Connection, user_id: str) -> str:
    customer: str | None = await con.fetchval(USER_CUSTOMER, user_id)
    if customer is None:
        raise NotFound("No billing account yet: subscribe or buy first", code="billing_customer_not_found")
    return customer


async def create_portal_session(
    client: stripe.StripeClient,
    settings: Settings,
    pool: asyncpg.Pool,
    user_id: str,
    return_url: str,
    *,
    client_key: str | None,
    request_id: str | None,
) -> dict[str, str]:
    async with pool.acquire() as con:
        customer = await customer_of(con, user_id)
    session = await stripe_calls.call(
        settings,
        "customer portal session",
        client.v1.billing_portal.sessions.create_async(
            params={"customer": customer, "return_url": return_url},
            options={"idempotency_key": stripe_calls.idempotency_key("portal", user_id, client_key)},
        ),
    )
    async with pool.acquire() as con:
        await audit(
            con,
            f"user:{user_id}",
            "billing_portal.session_created",
            "customer",
            customer,
            request_id=request_id,
            return_url=return_url,
        )
    return {"url": session.url, "return_url": return_url}
