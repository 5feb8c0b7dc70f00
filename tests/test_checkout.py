"""POST /v1/checkout/sessions through the real app, against the local fake Stripe (tests/fakes/stripe_api.py).

Server-side prices and stock, held reservations whose expiry is the Stripe session's, the Stripe request
itself (idempotency key, client_reference_id, metadata, expires_at, pinned version), the compensating
transaction on a Stripe error or timeout, the Idempotency-Key header, and the whole money path: checkout ->
signed checkout.session.completed -> paid, stock committed; checkout -> expired -> stock back.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from gateway import stock
from gateway.settings import DEFAULT_STRIPE_API_VERSION
from tests.conftest import TEST_WEBHOOK_SECRET
from tests.factories import create_product
from tests.fakes.stripe_api import FakeStripe
from tests.stripe_events import make_event, signed_event
from tests.test_auth_jwt import claims, hs256

CHECKOUT = "/v1/checkout/sessions"
FRONTEND = "https://shop.example"


def bearer(user_id: str = "user-1") -> dict[str, str]:
    return {"Authorization": "Bearer " + hs256(claims(sub=user_id))}


async def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    return dict(body["error"])


async def post_event(client: Any, event: dict[str, Any]) -> Any:
    body, headers = signed_event(event, TEST_WEBHOOK_SECRET)
    return await client.post("/stripe/webhook", data=body, headers=headers)


def checkout_app_overrides(fake: FakeStripe, **more: Any) -> dict[str, Any]:
    return {
        "STRIPE_API_BASE": fake.base_url,
        "CORS_ORIGINS": FRONTEND,
        "RATE_LIMIT_CHECKOUT_MAX": 1000,
        "RATE_LIMIT_PUBLIC_MAX": 1000,
        **more,
    }


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe) -> Any:
    return await aiohttp_client(app_factory(**checkout_app_overrides(fake_stripe)))


async def stock_of(pool: asyncpg.Pool, product_id: int) -> int:
    async with pool.acquire() as con:
        value: int = await con.fetchval("SELECT stock_available FROM products WHERE id = $1", product_id)
    return value


async def held_units(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as con:
        value: int = await con.fetchval(
            "SELECT coalesce(sum(quantity), 0) FROM stock_reservations WHERE state = 'held'"
        )
    return value


# ------------------------------------------------------------------ the happy path


async def test_checkout_prices_from_the_database_and_holds_stock(
    client: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe
) -> None:
    async with db_pool.acquire() as con:
        mug = await create_product(con, "MUG", stock=5, unit_amount=1250)
        tee = await create_product(con, "TEE", stock=3, unit_amount=2000)

    response = await client.post(
        CHECKOUT,
        json={
            "items": [{"product_id": tee, "quantity": 1}, {"product_id": mug, "quantity": 2}],
            "success_url": FRONTEND + "/thanks",
            "cancel_url": FRONTEND + "/cart",
        },
        headers=bearer("user-42"),
    )

    assert response.status == 201, await response.text()
    body = await response.json()
    assert set(body) == {"order_id", "checkout_url", "expires_at"}
    order_id = body["order_id"]
    assert response.headers["Location"] == f"/v1/orders/{order_id}"
    assert response.headers["Cache-Control"] == "no-store"

    # The Stripe request: what we rely on, checked on the wire.
    [sent] = fake_stripe.requests_to("POST", "/v1/checkout/sessions")
    assert sent.idempotency_key == f"checkout-order:{order_id}"
    assert sent.stripe_version == DEFAULT_STRIPE_API_VERSION
    assert sent.authorization == "Bearer sk_test_gatewaytests"
    params = sent.params
    assert params["mode"] == "payment"
    assert params["client_reference_id"] == "user-42"
    assert params["metadata"] == {"order_id": order_id, "user_id": "user-42"}
    assert params["payment_intent_data"]["metadata"]["order_id"] == order_id
    assert params["success_url"] == FRONTEND + "/thanks"
    assert params["cancel_url"] == FRONTEND + "/cart"
    lines = sorted((int(li["price_data"]["unit_amount"]), int(li["quantity"])) for li in params["line_items"])
    assert lines == [(1250, 2), (2000, 1)]
    assert {li["price_data"]["currency"] for li in params["line_items"]} == {"eur"}

    session = fake_stripe.sessions[next(iter(fake_stripe.sessions))]
    assert body["checkout_url"] == session["url"]
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert int(expires_at.timestamp()) == int(params["expires_at"]) == session["expires_at"]

    async with db_pool.acquire() as con:
        order = await con.fetchrow("SELECT * FROM orders WHERE id = $1::uuid", order_id)
        reservations = await con.fetch(
            "SELECT product_id, quantity, state, expires_at FROM stock_reservations "
            "WHERE order_id = $1::uuid ORDER BY product_id",
            order_id,
        )
        items = await con.fetch(
            "SELECT product_id, quantity, unit_amount FROM order_items WHERE order_id = $1::uuid ORDER BY product_id",
            order_id,
        )
        audit = await con.fetch("SELECT action, actor, request_id FROM audit_log WHERE order_id = $1::uuid", order_id)
    assert order["status"] == "pending"
    assert order["user_id"] == "user-42"
    assert order["amount_total"] == 2 * 1250 + 2000
    assert order["currency"] == "eur"
    assert order["stripe_checkout_session_id"] == session["id"]
    assert order["checkout_expires_at"] == expires_at
    assert [(r["product_id"], r["quantity"], r["state"]) for r in reservations] == [
        (mug, 2, "held"),
        (tee, 1, "held"),
    ]
    assert {r["expires_at"] for r in reservations} == {expires_at}
    assert [(i["product_id"], i["quantity"], i["unit_amount"]) for i in items] == [
        (mug, 2, 1250),
        (tee, 1, 2000),
    ]
    assert [(a["action"], a["actor"]) for a in audit] == [("order.created", "user:user-42")]
    assert audit[0]["request_id"] == response.headers["X-Request-ID"]
    assert await stock_of(db_pool, mug) == 3
    assert await stock_of(db_pool, tee) == 2


async def test_default_redirect_urls_come_from_the_settings(
    client: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe
) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=1)
    response = await client.post(CHECKOUT, json={"items": [{"product_id": product, "quantity": 1}]}, headers=bearer())
    assert response.status == 201, await response.text()
    [sent] = fake_stripe.requests_to("POST", "/v1/checkout/sessions")
    assert sent.params["success_url"] == "http://localhost:3000/checkout/success?session_id={CHECKOUT_SESSION_ID}"
    assert sent.params["cancel_url"] == "http://localhost:3000/cart"


async def test_paid_checkout_commits_the_stock(client: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=2, unit_amount=1500)
    response = await client.post(
        CHECKOUT, json={"items": [{"product_id": product, "quantity": 2}]}, headers=bearer("buyer")
    )
    assert response.status == 201, await response.text()
    order_id = (await response.json())["order_id"]
    [session_id] = fake_stripe.sessions

    # Stripe says the customer paid: the signed webhook moves the order.
    session = fake_stripe.complete_session(session_id)
    delivered = await post_event(client, make_event("checkout.session.completed", session))
    assert delivered.status == 200, await delivered.text()
    assert (await delivered.json())["status"] == "processed"

    async with db_pool.acquire() as con:
        order = await con.fetchrow("SELECT * FROM orders WHERE id = $1::uuid", order_id)
        states = await con.fetch("SELECT state FROM stock_reservations WHERE order_id = $1::uuid", order_id)
    assert order["status"] == "paid"
    assert order["paid_at"] is not None
    assert order["amount_total"] == 3000
    assert order["stripe_payment_intent_id"] == session["payment_intent"]
    assert [s["state"] for s in states] == ["committed"]
    assert await stock_of(db_pool, product) == 0

    # The owner sees it paid, without a checkout link any more.
    seen = await client.get(f"/v1/orders/{order_id}", headers=bearer("buyer"))
    assert seen.status == 200
    body = await seen.json()
    assert body["status"] == "paid" and body["checkout_url"] is None and body["paid_at"] is not None


async def test_expired_checkout_gives_the_stock_back(
    client: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe
) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=3)
    response = await client.post(CHECKOUT, json={"items": [{"product_id": product, "quantity": 3}]}, headers=bearer())
    assert response.status == 201
    order_id = (await response.json())["order_id"]
    assert await stock_of(db_pool, product) == 0
    [session_id] = fake_stripe.sessions

    fake_stripe.sessions[session_id]["status"] = "expired"
    delivered = await post_event(client, make_event("checkout.session.expired", fake_stripe.sessions[session_id]))
    assert delivered.status == 200, await delivered.text()

    async with db_pool.acquire() as con:
        status = await con.fetchval("SELECT status FROM orders WHERE id = $1::uuid", order_id)
        state = await con.fetchval("SELECT state FROM stock_reservations WHERE order_id = $1::uuid", order_id)
    assert status == "expired"
    assert state == "released"
    assert await stock_of(db_pool, product) == 3


async def test_reservation_whose_webhook_never_came_is_swept_at_its_expiry(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=1)
    response = await client.post(CHECKOUT, json={"items": [{"product_id": product, "quantity": 1}]}, headers=bearer())
    assert response.status == 201
    async with db_pool.acquire() as con:
        assert await stock.release_expired(con) == 0  # not expired yet
        await con.execute("UPDATE stock_reservations SET expires_at = now() - interval '1 second'")
        assert await stock.release_expired(con) == 1
    assert await stock_of(db_pool, product) == 1
    assert await held_units(db_pool) == 0


# ------------------------------------------------------------------ concurrency


async def test_twenty_concurrent_checkouts_for_the_last_unit(
    client: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe
) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, "LAST", stock=1)

    async def attempt(n: int) -> Any:
        return await client.post(
            CHECKOUT, json={"items": [{"product_id": product, "quantity": 1}]}, headers=bearer(f"user-{n}")
        )

    responses = await asyncio.gather(*(attempt(n) for n in range(20)))
    statuses = sorted(r.status for r in responses)
    assert statuses == [201] + [409] * 19
    for r in responses:
        if r.status == 409:
            await error_of(r, 409, "out_of_stock")

    async with db_pool.acquire() as con:
        holders = await con.fetch("SELECT order_id FROM stock_reservations WHERE state = 'held'")
        orders = await con.fetchval("SELECT count(*) FROM orders")
    assert len(holders) == 1
    assert orders == 1
    assert await stock_of(db_pool, product) == 0
    assert len(fake_stripe.requests_to("POST", "/v1/checkout/sessions")) == 1


# ------------------------------------------------------------------ refusals


async def test_out_of_stock_is_409_naming_the_products(
    client: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe
) -> None:
    async with db_pool.acquire() as con:
        plenty = await create_product(con, "PLENTY", stock=10)
        scarce = await create_product(con, "SCARCE", stock=1)
    response = await client.post(
        CHECKOUT,
        json={"items": [{"product_id": plenty, "quantity": 2}, {"product_id": scarce, "quantity": 2}]},
        headers=bearer(),
    )
    error = await error_of(response, 409, "out_of_stock")
    assert "Product SCARCE" in error["message"]
    assert error["details"]["products"] == [
        {"product_id": scarce, "name": "Product SCARCE", "requested": 2, "available": 1}
    ]
    assert await stock_of(db_pool, plenty) == 10
    assert await stock_of(db_pool, scarce) == 1
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM orders") == 0
    assert fake_stripe.requests == []


async def test_unknown_or_inactive_product_is_422(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        retired = await create_product(con, "OLD", stock=5)
        await con.execute("UPDATE products SET active = false WHERE id = $1", retired)
    for product_id in (retired, 999_999):
        response = await client.post(
            CHECKOUT, json={"items": [{"product_id": product_id, "quantity": 1}]}, headers=bearer()
        )
        await error_of(response, 422, "unknown_product")


async def test_checkout_needs_a_user(client: Any) -> None:
    response = await client.post(CHECKOUT, json={"items": [{"product_id": 1, "quantity": 1}]})
    await error_of(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "items"),
        ({"items": []}, "items"),
        ({"items": [{"product_id": i + 1, "quantity": 1} for i in range(51)]}, "items"),
        ({"items": [{"product_id": 1, "quantity": 0}]}, "items[0].quantity"),
        ({"items": [{"product_id": 1, "quantity": 101}]}, "items[0].quantity"),
        ({"items": [{"product_id": 1, "quantity": "1"}]}, "items[0].quantity"),
        ({"items": [{"product_id": 1, "quantity": 1.0}]}, "items[0].quantity"),
        ({"items": [{"product_id": True, "quantity": 1}]}, "items[0].product_id"),
        ({"items": [{"product_id": -3, "quantity": 1}]}, "items[0].product_id"),
        ({"items": [{"product_id": 1, "quantity": 1, "unit_amount": 1}]}, "items[0].unit_amount"),
        ({"items": [{"product_id": 1, "quantity": 1, "price": 1}]}, "items[0].price"),
        (
            {"items": [{"product_id": 1, "quantity": 1}, {"product_id": 1, "quantity": 2}]},
            "items[1].product_id",
        ),
        ({"items": [{"product_id": 1, "quantity": 1}], "amount": 1}, "amount"),
        (
            {"items": [{"product_id": 1, "quantity": 1}], "success_url": "https://evil.example/x"},
            "success_url",
        ),
        ({"items": [{"product_id": 1, "quantity": 1}], "cancel_url": "//evil.example/x"}, "cancel_url"),
        ({"items": [{"product_id": 1, "quantity": 1}], "success_url": "javascript:alert(1)"}, "success_url"),
        (
            {
                "items": [{"product_id": 1, "quantity": 1}],
                "success_url": "https://shop.example@evil.example/",
            },
            "success_url",
        ),
        (
            {
                "items": [{"product_id": 1, "quantity": 1}],
                "success_url": "https://shop.example.evil.example/",
            },
            "success_url",
        ),
    ],
)
async def test_strict_validation(client: Any, fake_stripe: FakeStripe, body: dict[str, Any], field: str) -> None:
    response = await client.post(CHECKOUT, json=body, headers=bearer())
    error = await error_of(response, 422, "validation_failed")
    assert field in {d["field"] for d in error["details"]}
    assert fake_stripe.requests == []


async def test_body_that_is_not_json_is_400(client: Any) -> None:
    response = await client.post(CHECKOUT, data=b"{nope", headers={**bearer(), "Content-Type": "application/json"})
    await error_of(response, 400, "invalid_json")
    response = await client.post(CHECKOUT, json=[1, 2], headers=bearer())
    await error_of(response, 422, "validation_failed")


# ------------------------------------------------------------------ Stripe failures: compensation


async def test_stripe_error_cancels_the_order_and_releases_the_stock(
    client: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe
) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=2)
    fake_stripe.fail_next(1, status=500, path="/v1/checkout/sessions", should_retry=False)

    response = await client.post(CHECKOUT, json={"items": [{"product_id": product, "quantity": 2}]}, headers=bearer())

    await error_of(response, 502, "stripe_error")
    assert await stock_of(db_pool, product) == 2
    assert await held_units(db_pool) == 0
    async with db_pool.acquire() as con:
        order = await con.fetchrow("SELECT status, status_reason FROM orders")
        reservation = await con.fetchrow("SELECT state, release_reason FROM stock_reservations")
        actions = [r["action"] for r in await con.fetch("SELECT action FROM audit_log ORDER BY id")]
    assert (order["status"], order["status_reason"]) == ("canceled", "stripe_error")
    assert (reservation["state"], reservation["release_reason"]) == ("released", "checkout_stripe_error")
    assert actions == ["order.created", "order.canceled"]


async def test_stripe_card_or_request_error_is_502_too(
    client: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe
) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=1)
    fake_stripe.fail_next(1, status=400, path="/v1/checkout/sessions", code="parameter_invalid")
    response = await client.post(CHECKOUT, json={"items": [{"product_id": product, "quantity": 1}]}, headers=bearer())
    error = await error_of(response, 502, "stripe_error")
    assert error["details"] == {"stripe_code": "parameter_invalid"}
    assert await stock_of(db_pool, product) == 1


async def test_stripe_timeout_leaves_no_stock_held(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe
) -> None:
    client = await aiohttp_client(app_factory(**checkout_app_overrides(fake_stripe, STRIPE_TIMEOUT_SECONDS=0.3)))
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=1)
    fake_stripe.delay_next(1, 1.5, path="/v1/checkout/sessions")

    response = await client.post(CHECKOUT, json={"items": [{"product_id": product, "quantity": 1}]}, headers=bearer())

    await error_of(response, 502, "stripe_timeout")
    assert await stock_of(db_pool, product) == 1
    assert await held_units(db_pool) == 0
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT status FROM orders") == "canceled"


# ------------------------------------------------------------------ Idempotency-Key


async def test_same_idempotency_key_and_body_replays_without_a_second_order(
    client: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe
) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=5)
    body = {"items": [{"product_id": product, "quantity": 1}]}
    headers = {**bearer(), "Idempotency-Key": "cart-7f3a"}

    first = await client.post(CHECKOUT, json=body, headers=headers)
    second = await client.post(CHECKOUT, json=body, headers=headers)

    assert first.status == second.status == 201
    assert await first.json() == await second.json()
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(fake_stripe.requests_to("POST", "/v1/checkout/sessions")) == 1
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM orders") == 1
    assert await stock_of(db_pool, product) == 4

    # Another user's same key is another request.
    other = await client.post(CHECKOUT, json=body, headers={**bearer("user-2"), "Idempotency-Key": "cart-7f3a"})
    assert other.status == 201
    assert (await other.json())["order_id"] != (await first.json())["order_id"]


async def test_same_idempotency_key_with_another_body_is_409(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=5)
    headers = {**bearer(), "Idempotency-Key": "k-1"}
    first = await client.post(CHECKOUT, json={"items": [{"product_id": product, "quantity": 1}]}, headers=headers)
    assert first.status == 201
    second = await client.post(CHECKOUT, json={"items": [{"product_id": product, "quantity": 2}]}, headers=headers)
    await error_of(second, 409, "idempotency_key_reused")
    assert await stock_of(db_pool, product) == 4


async def test_concurrent_requests_with_one_idempotency_key_make_one_order(
    client: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe
) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=5)
    body = {"items": [{"product_id": product, "quantity": 1}]}
    headers = {**bearer(), "Idempotency-Key": "double-click"}
    responses = await asyncio.gather(*(client.post(CHECKOUT, json=body, headers=headers) for _ in range(5)))
    statuses = [r.status for r in responses]
    assert statuses.count(201) >= 1
    assert set(statuses) <= {201, 409}
    for r in responses:
        if r.status == 409:
            await error_of(r, 409, "idempotency_request_in_progress")
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM orders") == 1
    assert await stock_of(db_pool, product) == 4
    assert len(fake_stripe.requests_to("POST", "/v1/checkout/sessions")) == 1


async def test_idempotency_key_can_be_retried_after_a_stripe_failure(
    client: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe
) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=1)
    body = {"items": [{"product_id": product, "quantity": 1}]}
    headers = {**bearer(), "Idempotency-Key": "retry-me"}
    fake_stripe.fail_next(1, status=503, path="/v1/checkout/sessions", should_retry=False)
    failed = await client.post(CHECKOUT, json=body, headers=headers)
    await error_of(failed, 502, "stripe_error")
    retried = await client.post(CHECKOUT, json=body, headers=headers)
    assert retried.status == 201, await retried.text()
    assert await stock_of(db_pool, product) == 0


async def test_malformed_idempotency_key_is_400(client: Any) -> None:
    response = await client.post(
        CHECKOUT,
        json={"items": [{"product_id": 1, "quantity": 1}]},
        headers={**bearer(), "Idempotency-Key": "x" * 256},
    )
    await error_of(response, 400, "invalid_idempotency_key")


async def test_checkout_policy_limits_per_user(
    aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe
) -> None:
    client = await aiohttp_client(app_factory(**checkout_app_overrides(fake_stripe, RATE_LIMIT_CHECKOUT_MAX=2)))
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=10)
    body = {"items": [{"product_id": product, "quantity": 1}]}
    statuses = [(await client.post(CHECKOUT, json=body, headers=bearer("greedy"))).status for _ in range(3)]
    assert statuses == [201, 201, 429]
    other = await client.post(CHECKOUT, json=body, headers=bearer("patient"))
    assert other.status == 201


def test_expires_at_is_inside_stripes_window() -> None:
    from gateway.checkout.service import expiry_seconds
    from tests.conftest import make_settings

    assert expiry_seconds(make_settings()) == 1800
    assert expiry_seconds(make_settings(RESERVATION_TTL_SECONDS=60)) == 1800
    assert expiry_seconds(make_settings(RESERVATION_TTL_SECONDS=3600)) == 3600
    assert expiry_seconds(make_settings(RESERVATION_TTL_SECONDS=10**6)) == 86400
    assert datetime.now(UTC).tzinfo is UTC
