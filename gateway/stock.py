"""Stock reservations: held at checkout, committed on payment, released on failure, expiry or cancellation.

`stock_available` counts units neither held nor sold; the CHECK constraint keeps it >= 0. Each statement locks
the reservations of one order first, then products in id order, so concurrent orders cannot deadlock.
"""

from __future__ import annotations

import asyncpg

# held -> released, the units back in stock: a server-side function (sql/migrations/0005_unit_of_work_functions.sql),
# which the unit of work's write also calls; the commit of a paid order's reservations is part of that write.
RELEASE_FOR_ORDER = "SELECT stock_release_for_order($1, $2)"

# Reservations whose webhook never came. SKIP LOCKED: a reservation being settled by a webhook right now is left
# to it.
RELEASE_EXPIRED = """
WITH res AS (
    SELECT id, order_id, product_id, quantity FROM stock_reservations
    WHERE state = 'held' AND expires_at < now()
    ORDER BY expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), released AS (
    UPDATE stock_reservations r SET state = 'released', release_reason = 'reservation_expired', updated_at = now()
    FROM res WHERE r.id = res.id
    RETURNING r.order_id, r.product_id, r.quantity
), per_product AS (
    SELECT product_id, sum(quantity) AS quantity FROM released GROUP BY product_id
), locked AS (
    SELECT p.id FROM products p WHERE p.id IN (SELECT product_id FROM per_product) ORDER BY p.id FOR UPDATE
), restocked AS (
    UPDATE products p SET stock_available = p.stock_available + per_product.quantity, updated_at = now()
    FROM per_product JOIN locked ON locked.id = per_product.product_id
    WHERE p.id = per_product.product_id
    RETURNING p.id
), audit AS (
    INSERT INTO audit_log (actor, action, subject_type, subject_id, order_id, details)
    SELECT 'sweeper', 'reservation.released', 'order', order_id::text, order_id,
           jsonb_build_object('reason', 'reservation_expired', 'products', count(*))
    FROM released GROUP BY order_id
)
SELECT count(*) FROM released
"""


async def release_for_order(con: asyncpg.Connection, order_id: str, reason: str) -> int:
    released: int = await con.fetchval(RELEASE_FOR_ORDER, order_id, reason)
    return released


async def release_expired(con: asyncpg.Connection, batch: int = 500) -> int:
    """Release held reservations past their expiry, one batch in one transaction; return how many."""
    async with con.transaction():
        released: int = await con.fetchval(RELEASE_EXPIRED, batch)
    return released
