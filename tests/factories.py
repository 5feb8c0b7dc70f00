"""Rows the tests start from: products and pending orders holding stock (as the checkout API leaves them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

INSERT_PRODUCT = """
INSERT INTO products (sku, name, unit_amount, currency, stripe_price_id, stock_available)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING id
"""
INSERT_ORDER = """
INSERT INTO orders (user_id, amount_total, currency, stripe_checkout_session_id)
VALUES ($1, $2, $3, $4) RETURNING id::text
"""
INSERT_ITEM = """
INSERT INTO order_items (order_id, product_id, quantity, unit_amount, currency)
SELECT $1::uuid, id, $3, unit_amount, currency FROM products WHERE id = $2
"""
HOLD = """
WITH taken AS (
    UPDATE products SET stock_available = stock_available - $3 WHERE id = $2 RETURNING id
)
INSERT INTO stock_reservations (order_id, product_id, quantity, expires_at)
SELECT $1::uuid, id, $3, $4 FROM taken
"""


async def create_product(
    con: asyncpg.Connection,
    sku: str = "SKU-1",
    *,
    stock: int = 10,
    unit_amount: int = 1000,
    currency: str = "eur",
    price_id: str | None = None,
) -> int:
    product_id: int = await con.fetchval(INSERT_PRODUCT, sku, f"Product {sku}", unit_amount, currency, price_id, stock)
    return product_id


async def create_order(
    con: asyncpg.Connection,
    items: list[tuple[int, int]],
    *,
    user_id: str = "user-1",
    session_id: str | None = None,
    currency: str = "eur",
    expires_in: timedelta = timedelta(minutes=30),
) -> str:
    """A pending order holding stock for `items` [(product_id, quantity)]."""
    async with con.transaction():
        total = 0
        for product_id, quantity in items:
            total += quantity * await con.fetchval("SELECT unit_amount FROM products WHERE id = $1", product_id)
        order_id: str = await con.fetchval(INSERT_ORDER, user_id, total, currency, session_id)
        for product_id, quantity in sorted(items):
            await con.execute(INSERT_ITEM, order_id, product_id, quantity)
            await con.execute(HOLD, order_id, product_id, quantity, datetime.now(UTC) + expires_in)
    return order_id
