"""The billing story against a local gateway (`gateway serve`) and the local fake Stripe, end to end:
a subscription checkout with a trial, the webhooks, a plan change, cancel, resume, and a partial refund of a
one-time order. Never calls the real Stripe. Run from the repository root:

    STORY_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/billing_story .venv/bin/python scripts/billing_story.py

The database named there is dropped and created. The fake runs in this process, so the script plays Stripe's part:
it completes sessions as a customer would and delivers the signed webhooks Stripe would send.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.stripe_api import FakeStripe  # noqa: E402
from tests.stripe_events import make_event, signed_event  # noqa: E402
from tests.test_auth_jwt import claims, hs256  # noqa: E402

SECRET = "whsec_story_" + "s" * 24
JWT_SECRET = "test-jwt-secret-" + "x" * 32
PORT, FAKE_PORT = 18080, 18111
BASE = f"http://127.0.0.1:{PORT}"
USER = "story-user"
clock = int(time.time())


def tick() -> int:
    global clock
    clock += 2
    return clock


def user() -> dict[str, str]:
    return {
        "Authorization": "Bearer " + hs256(claims(sub=USER, iss="https://issuer.test", aud="gateway-test"), JWT_SECRET)
    }


def operator(key: str) -> dict[str, str]:
    token = hs256(
        claims(sub="ops-story", roles=["payments:refund"], iss="https://issuer.test", aud="gateway-test"), JWT_SECRET
    )
    return {"Authorization": "Bearer " + token, "Idempotency-Key": key}


def show(step: str, status: int, body: Any, keys: tuple[str, ...] = ()) -> None:
    shown = {k: body.get(k) for k in keys} if keys and isinstance(body, dict) else body
    print(f"--- {step}: HTTP {status}\n    {json.dumps(shown, default=str)}")


async def webhook(http: aiohttp.ClientSession, type_: str, obj: dict[str, Any]) -> None:
    event = make_event(type_, obj, created=tick())
    body, headers = signed_event(event, SECRET)
    async with http.post(f"{BASE}/stripe/webhook", data=body, headers=headers) as r:
        print(f"    webhook {type_}: HTTP {r.status} {await r.text()}")


async def subscription_state(db: asyncpg.Connection) -> None:
    row = await db.fetchrow(
        "SELECT stripe_subscription_id, plan_id, status, cancel_at_period_end, latest_invoice_hosted_url FROM subscriptions"
    )
    print(f"    subscriptions row: {dict(row) if row else None}")


async def main() -> int:
    url = os.environ.get("STORY_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/billing_story")
    admin = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres")
    name = url.rsplit("/", 1)[1]
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()

    fake = FakeStripe()
    fake.add_price("price_premium_monthly_eur", 999, recurring=True)
    fake.add_price("price_pro_monthly_eur", 1999, recurring=True)
    runner = web.AppRunner(fake.app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", FAKE_PORT).start()
    fake.base_url = f"http://127.0.0.1:{FAKE_PORT}"

    env = {
        **os.environ,
        "APP_ENV": "development",
        "DATABASE_URL": url,
        "PORT": str(PORT),
        "METRICS_PORT": "0",
        "STRIPE_SECRET_KEY": "sk_test_story",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_API_BASE": fake.base_url,
        "JWT_SECRET": JWT_SECRET,
        "JWT_ISSUER": "https://issuer.test",
        "JWT_AUDIENCE": "gateway-test",
        "CORS_ORIGINS": "http://localhost:3000",
        "CHECKOUT_ALLOW_PROMOTION_CODES": "true",
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen([str(ROOT / ".venv/bin/gateway"), "serve"], env=env, cwd=ROOT)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"{BASE}/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            db = await asyncpg.connect(url)

            print("=== 1. subscription checkout, premium with a 14-day trial")
            async with http.post(
                f"{BASE}/v1/checkout/sessions",
                json={"mode": "subscription", "plan_id": "premium", "trial_days": 14},
                headers={**user(), "Idempotency-Key": "story-sub-1"},
            ) as r:
                checkout = await r.json()
                show(
                    "POST /v1/checkout/sessions",
                    r.status,
                    checkout,
                    ("plan_id", "trial_days", "session_id", "checkout_url"),
                )
            sent = fake.requests_to("POST", "/v1/checkout/sessions")[-1]
            print(
                f"    Stripe got: mode={sent.params['mode']} subscription_data={sent.params['subscription_data']} "
                f"allow_promotion_codes={sent.params.get('allow_promotion_codes')} Idempotency-Key={sent.idempotency_key}"
            )
            bridge = await db.fetch(
                "SELECT event_type, payload->>'status' AS status, metadata->>'origin' AS origin FROM bridge_events"
            )
            print(f"    bridge: {[dict(b) for b in bridge]}")
            async with http.post(
                f"{BASE}/v1/checkout/sessions", json={"mode": "subscription", "plan_id": "premium"}, headers=user()
            ) as r:
                show("second checkout of the same plan", r.status, (await r.json())["error"], ("code",))

            print("=== 2. the customer pays; Stripe's webhooks")
            session = fake.complete_session(checkout["session_id"])
            sub_id = session["subscription"]
            await webhook(http, "checkout.session.completed", session)
            await webhook(http, "customer.subscription.created", fake.subscriptions[sub_id])
            await subscription_state(db)
            async with http.get(f"{BASE}/v1/me/entitlements", headers=user()) as r:
                show(
                    "GET /v1/me/entitlements",
                    r.status,
                    await r.json(),
                    ("premium", "plan_id", "status", "latest_invoice_url"),
                )
            async with http.post(
                f"{BASE}/v1/checkout/sessions", json={"mode": "subscription", "plan_id": "premium"}, headers=user()
            ) as r:
                error = (await r.json())["error"]
                show(
                    "checkout again",
                    r.status,
                    {"code": error["code"], "subscription": error["details"]["subscription"]["id"]},
                )

            print("=== 3. plan change premium -> pro")
            async with http.post(
                f"{BASE}/v1/subscriptions/{sub_id}/plan",
                json={"plan_id": "pro"},
                headers={**user(), "Idempotency-Key": "story-plan-1"},
            ) as r:
                show(
                    f"POST /v1/subscriptions/{sub_id}/plan",
                    r.status,
                    (await r.json())["subscription"],
                    ("plan_id", "status", "confirmed"),
                )
            await subscription_state(db)
            await webhook(http, "customer.subscription.updated", fake.subscriptions[sub_id])
            await subscription_state(db)

            print("=== 4. cancel at period end")
            async with http.post(f"{BASE}/v1/subscriptions/{sub_id}/cancel", json={}, headers=user()) as r:
                show("POST .../cancel", r.status, (await r.json())["subscription"], ("status", "cancel_at_period_end"))
            await webhook(http, "customer.subscription.updated", fake.subscriptions[sub_id])
            await subscription_state(db)

            print("=== 5. resume")
            async with http.post(f"{BASE}/v1/subscriptions/{sub_id}/resume", json={}, headers=user()) as r:
                show("POST .../resume", r.status, (await r.json())["subscription"], ("status", "cancel_at_period_end"))
            await webhook(http, "customer.subscription.updated", fake.subscriptions[sub_id])
            await subscription_state(db)

            print("=== 6. customer portal")
            async with http.post(f"{BASE}/v1/billing/portal-session", json={}, headers=user()) as r:
                body = await r.json()
                show(
                    "POST /v1/billing/portal-session",
                    r.status,
                    {"url": body["url"][:40] + "...", "return_url": body["return_url"]},
                )

            print("=== 7. one-time order, paid, then a partial refund")
            product = await db.fetchval(
                "INSERT INTO products (sku, name, unit_amount, currency, stock_available) "
                "VALUES ('STORY-1', 'Story mug', 2500, 'eur', 10) RETURNING id"
            )
            async with http.post(
                f"{BASE}/v1/checkout/sessions", json={"items": [{"product_id": product, "quantity": 2}]}, headers=user()
            ) as r:
                order = await r.json()
                show("POST /v1/checkout/sessions (payment)", r.status, order, ("order_id",))
            session = fake.complete_session(list(fake.sessions)[-1])
            await webhook(http, "checkout.session.completed", session)
            order_id = order["order_id"]
            print(
                f"    order: {dict(await db.fetchrow('SELECT status, amount_total, amount_refunded FROM orders WHERE id = $1::uuid', order_id))}"
            )
            for attempt in (1, 2):
                async with http.post(
                    f"{BASE}/v1/admin/orders/{order_id}/refunds",
                    json={"amount": 1500, "reason": "requested_by_customer"},
                    headers=operator("ticket-4711"),
                ) as r:
                    refund = await r.json()
                    show(
                        f"POST /v1/admin/orders/{{id}}/refunds (attempt {attempt})",
                        r.status,
                        refund,
                        ("amount", "stripe_refund_id", "confirmed"),
                    )
                    print(f"    Idempotent-Replayed: {r.headers.get('Idempotent-Replayed')}")
            print(f"    Stripe refunds made: {len(fake.refunds)}")
            async with http.post(
                f"{BASE}/v1/admin/orders/{order_id}/refunds", json={"amount": 4000}, headers=operator("ticket-4712")
            ) as r:
                show("refund more than is left", r.status, (await r.json())["error"], ("code", "details"))
            print(
                f"    order before the webhook: {dict(await db.fetchrow('SELECT status, amount_refunded FROM orders WHERE id = $1::uuid', order_id))}"
            )
            stripe_refund = fake.refunds[refund["stripe_refund_id"]]
            await webhook(http, "refund.created", {**stripe_refund, "metadata": stripe_refund["metadata"]})
            charge = fake.charges[stripe_refund["charge"]]
            await webhook(http, "charge.refunded", charge)
            print(
                f"    order after the webhook: {dict(await db.fetchrow('SELECT status, amount_refunded, receipt_url FROM orders WHERE id = $1::uuid', order_id))}"
            )
            async with http.get(f"{BASE}/v1/orders/{order_id}", headers=user()) as r:
                show(
                    "GET /v1/orders/{id}",
                    r.status,
                    await r.json(),
                    ("status", "amount_refunded", "amount_discount", "amount_tax", "receipt_url"),
                )
            audit = await db.fetch(
                "SELECT actor, action FROM audit_log WHERE action LIKE 'subscription%' OR action LIKE 'order.refund%' OR action LIKE 'billing%' ORDER BY id"
            )
            print("    audit: " + ", ".join(a["actor"] + " " + a["action"] for a in audit))
            await db.close()
    finally:
        server.terminate()
        server.wait(20)
        await runner.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
