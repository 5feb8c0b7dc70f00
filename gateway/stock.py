"""Stock reservations: held at checkout, committed on payment, released on failure, expiry or cancellation.

`stock_available` counts units neither held nor sold; the CHECK constraint keeps it >= 0. Each statement locks
the reservations of one order first, then products in id order, so concurrent orders cannot deadlock.
"""

from __future__ import annotations

import asyncpg

# The order's held units go back to stock (failure, expiry, cancellation, a checkout that could not start): its
# reservations first, then products in id order. Returns how many reservations.
RELEASE_FOR_ORDER = """
WITH released AS (
    UPDATE stock_reservations SET state = 'released', release_reason = $2, updated_at = now()
    WHERE order_id = $1::uuid AND state = 'held'
    RETURNING product_id, quantity
), locked AS (
    SELECT p.id FROM products p WHERE p.id IN (SELECT product_id FROM released) ORDER BY p.id FOR UPDATE
), restocked AS (
    UPDATE products p SET stock_available = p.stock_available + released.quantity, updated_at = now()
    FROM released JOIN locked ON locked.id = released.product_id
    WHERE p.id = released.product_id
    RETURNING p.id
)
SELECT count(*) FROM restocked
"""

# A paid order's reservations, locked in product order. Held ones become sales (their units left stock when they
# were reserved); the released ones are returned (the order expired or failed, then was paid after all): they take
# their units again, one by one.
COMMIT_HELD = """
WITH locked AS (
    SELECT id, product_id, quantity, state FROM stock_reservations
    WHERE order_id = $1::uuid AND state IN ('held', 'released')
    ORDER BY product_id
    FOR UPDATE
), committed AS (
    UPDATE stock_reservations r SET state = 'committed', release_reason = NULL, updated_at = now()
    FROM locked WHERE r.id = locked.id AND locked.state = 'held'
)
SELECT id, product_id, quantity FROM locked WHERE state = 'released' ORDER BY product_id
"""
RETAKE_UNITS = """
UPDATE products SET stock_available = stock_available - $2, updated_at = now()
WHERE id = $1 AND stock_available >= $2
"""
COMMIT_RESERVATION = """
UPDATE stock_reservations SET state = 'committed', release_reason = NULL, updated_at = now() WHERE id = $1
"""

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


async def commit_for_order(con: asyncpg.Connection, order_id: str) -> list[int]:
    """The paid order's reservations become sales. Returns the products whose units were released meanwhile and
    sold to others (the order is oversold on them)."""
    oversold = []
    for reservation in await con.fetch(COMMIT_HELD, order_id):  # product order: products are locked in id order
        if await con.execute(RETAKE_UNITS, reservation["product_id"], reservation["quantity"]) == "UPDATE 1":
            await con.execute(COMMIT_RESERVATION, reservation["id"])
        else:
            oversold.append(reservation["product_id"])
    return oversold


async def release_expired(con: asyncpg.Connection, batch: int = 500) -> int:
    """Release held reservations past their expiry, one batch in one transaction; return how many."""
    async with con.transaction():
        released: int = await con.fetchval(RELEASE_EXPIRED, batch)
    return released
