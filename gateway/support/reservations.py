"""Releasing expired stock reservations: the server's periodic sweeper and `gateway reservations sweep`.

Each batch is one transaction of `gateway.stock.release_expired` (SKIP LOCKED), so several replicas may sweep
at the same time: a reservation is released by exactly one of them, and one being settled by a webhook is left
to it.
"""

from __future__ import annotations

import logging

import asyncpg

from gateway import metrics, stock
from gateway.progress import SILENT, Progress

log = logging.getLogger("gateway.stock")

RELEASE_REASON = "reservation_expired"
DEFAULT_BATCH = 500
# For the progress line only (time left): `stock.RELEASE_EXPIRED` decides what it releases.
COUNT_EXPIRED = "SELECT count(*) FROM stock_reservations WHERE state = 'held' AND expires_at < now()"


async def sweep_expired(
    pool: asyncpg.Pool, *, batch: int = DEFAULT_BATCH, max_batches: int | None = None, progress: Progress = SILENT
) -> int:
    """Release expired held reservations, batch after batch until one comes back short; return how many."""
    total = 0
    batches = 0
    if progress.enabled:
        async with pool.acquire() as con:
            progress.phase("releasing expired reservations", await con.fetchval(COUNT_EXPIRED))
    while max_batches is None or batches < max_batches:
        async with pool.acquire() as con:
            released = await stock.release_expired(con, batch)
        batches += 1
        progress.advance(released)
        if released:
            metrics.RESERVATIONS_RELEASED.labels(RELEASE_REASON).inc(released)
            total += released
        if released < batch:
            break
    if total:
        log.info("expired stock reservations released", extra={"released": total, "reason": RELEASE_REASON})
    return total
