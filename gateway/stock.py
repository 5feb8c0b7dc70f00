"""Stock reservations: held at checkout, committed on payment, released on failure, expiry or cancellation.

`stock_available` counts units neither held nor sold; the CHECK constraint keeps it >= 0. Each statement locks
the reservations of one order first, then products in id order, so concurrent orders cannot deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

# The commit and the release are written as CTEs ($1: the order, NULL for none) so that the unit of work can run
# them inside its single statement (gateway/unit_of_work.py); their names do not clash with its own. The unit of
# work turns `/* gate */` into its condition (nothing is written unless its ledger row is).

# held -> committed, and released -> committed when the stock can be taken again (payment after a release).
COMMIT_CTES = """
stock_commit_res AS (
    SELECT id, product_id, quantity, state FROM stock_reservations
    WHERE order_id = $1::uuid AND state IN ('held', 'released') /* gate */
    ORDER BY product_id
    FOR UPDATE
), stock_commit_locked AS (
    SELECT p.id FROM products p
    WHERE p.id IN (SELECT product_id FROM stock_commit_res WHERE state = 'released')
    ORDER BY p.id
    FOR UPDATE
), stock_retaken AS (
    UPDATE products p SET stock_available = p.stock_available - res.quantity, updated_at = now()
    FROM stock_commit_res res JOIN stock_commit_locked locked ON locked.id = res.product_id
    WHERE p.id = res.product_id AND res.state = 'released' AND p.stock_available >= res.quantity
    RETURNING p.id AS product_id
), stock_committed AS (
    UPDATE stock_reservations r SET state = 'committed', release_reason = NULL, updated_at = now()
    FROM stock_commit_res res
    WHERE r.id = res.id AND (res.state = 'held' OR res.product_id IN (SELECT product_id FROM stock_retaken))
    RETURNING r.product_id, res.state AS previous_state
), stock_oversold AS (
    -- released reservations whose stock is gone meanwhile: the order is paid, the units were sold to others
    SELECT coalesce(array_agg(product_id ORDER BY product_id), '{}') AS products FROM stock_commit_res
    WHERE state = 'released' AND product_id NOT IN (SELECT product_id FROM stock_retaken)
)"""
_COMMIT_RESULT = """
SELECT
    (SELECT count(*) FROM stock_committed WHERE previous_state = 'held') AS committed,
    (SELECT count(*) FROM stock_committed WHERE previous_state = 'released') AS retaken,
    (SELECT products FROM stock_oversold) AS oversold
"""
COMMIT_FOR_ORDER = "".join(["WITH", COMMIT_CTES, _COMMIT_RESULT])

RELEASE_CTES = """
stock_release_res AS (
    UPDATE stock_reservations SET state = 'released', release_reason = $2, updated_at = now()
    WHERE order_id = $1::uuid AND state = 'held' /* gate */
    RETURNING product_id, quantity
), stock_release_locked AS (
    SELECT p.id FROM products p WHERE p.id IN (SELECT product_id FROM stock_release_res) ORDER BY p.id FOR UPDATE
), stock_restocked AS (
    UPDATE products p SET stock_available = p.stock_available + res.quantity, updated_at = now()
    FROM stock_release_res res JOIN stock_release_locked locked ON locked.id = res.product_id
    WHERE p.id = res.product_id
    RETURNING p.id
)"""
RELEASE_FOR_ORDER = "".join(["WITH", RELEASE_CTES, "\nSELECT count(*) FROM stock_restocked\n"])

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


@dataclass(frozen=True, slots=True)
class CommitResult:
    committed: int
    retaken: int
    oversold: list[int]


async def commit_for_order(con: asyncpg.Connection, order_id: str) -> CommitResult:
    row = await con.fetchrow(COMMIT_FOR_ORDER, order_id)
    return CommitResult(row["committed"], row["retaken"], list(row["oversold"]))


async def release_for_order(con: asyncpg.Connection, order_id: str, reason: str) -> int:
    released: int = await con.fetchval(RELEASE_FOR_ORDER, order_id, reason)
    return released


async def release_expired(con: asyncpg.Connection, batch: int = 500) -> int:
    """Release held reservations past their expiry, one batch in one transaction; return how many."""
    async with con.transaction():
        released: int = await con.fetchval(RELEASE_EXPIRED, batch)
    return released
