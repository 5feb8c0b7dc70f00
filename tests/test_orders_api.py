"""GET /v1/orders/{id} and GET /v1/orders: the owner's orders only (anybody else's is 404), keyset pages."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.factories import create_order, create_product
from tests.fakes.stripe_api import FakeStripe
from tests.test_checkout import bearer, checkout_app_overrides, error_of


@pytest.fixture
async def client(aiohttp_client: Any, app_factory: Any, db_pool: asyncpg.Pool, fake_stripe: FakeStripe) -> Any:
    return await aiohttp_client(app_factory(**checkout_app_overrides(fake_stripe)))


async def test_owner_reads_the_order_with_its_items(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        mug = await create_product(con, "MUG", unit_amount=1250)
        order_id = await create_order(con, [(mug, 2)], user_id="alice")
    response = await client.get(f"/v1/orders/{order_id}", headers=bearer("alice"))
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body["id"] == order_id
    assert body["status"] == "pending"
    assert body["amount_total"] == 2500
    assert body["items"] == [
        {"product_id": mug, "name": "Product MUG", "quantity": 2, "unit_amount": 1250, "currency": "eur"}
    ]
    assert set(body) == {
        "id",
        "status",
        "amount_total",
        "amount_refunded",
        "currency",
        "amount_subtotal",
        "amount_discount",
        "amount_tax",
        "customer_tax_ids",
        "receipt_url",
        "items",
        "checkout_url",
        "expires_at",
        "paid_at",
        "created_at",
        "updated_at",
    }


async def test_another_users_order_is_404(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con)
        order_id = await create_order(con, [(product, 1)], user_id="alice")
    theirs = await client.get(f"/v1/orders/{order_id}", headers=bearer("mallory"))
    missing = await client.get("/v1/orders/00000000-0000-4000-8000-000000000000", headers=bearer("mallory"))
    garbage = await client.get("/v1/orders/not-a-uuid", headers=bearer("mallory"))
    for response in (theirs, missing, garbage):
        error = await error_of(response, 404, "order_not_found")
        assert error["message"] == "Order not found"


async def test_orders_need_a_token(client: Any) -> None:
    await error_of(await client.get("/v1/orders"), 401, "unauthorized")
    await error_of(await client.get("/v1/orders/00000000-0000-4000-8000-000000000000"), 401, "unauthorized")


async def test_list_is_own_orders_newest_first_in_pages(client: Any, db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        product = await create_product(con, stock=100)
        mine = [await create_order(con, [(product, 1)], user_id="alice") for _ in range(5)]
        await create_order(con, [(product, 1)], user_id="bob")

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/orders", params=query, headers=bearer("alice"))
        assert response.status == 200, await response.text()
        body = await response.json()
        pages += 1
        assert len(body["data"]) <= 2
        seen.extend(order["id"] for order in body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(mine))


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"cursor": "nope"}, {"page": "2"}])
async def test_bad_list_queries_are_422(client: Any, query: dict[str, str]) -> None:
    response = await client.get("/v1/orders", params=query, headers=bearer("alice"))
    await error_of(response, 422, "validation_failed")
