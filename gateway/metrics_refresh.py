"""Gauges that need the database (ledger rows waiting, open disputes, e-mails waiting, outbox backlog and relay
lag) are refreshed by a background task, never by a scrape: `/metrics` answers at once whatever the database
does, the gauges keep their last value while it cannot be read, and `gateway_metrics_refresh_errors_total` and
`gateway_metrics_refresh_age_seconds` say so (alert: GatewayMetricsStale).

Areas add their own gauges with a hook (`keys.GAUGE_REFRESH_HOOKS`): the relay registers its backlog and lag, so
they keep growing while its target is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from aiohttp import web

from gateway import keys, metrics
from gateway.db.errors import UNAVAILABLE_ERRORS

log = logging.getLogger("gateway.metrics")

# Ledger rows not applied yet and the oldest kept event's age; open disputes and the earliest evidence due date.
COUNT_WAITING_EVENTS = """
SELECT status, count(*) AS n, extract(epoch FROM now() - min(received_at))::float8 AS oldest
FROM webhook_events WHERE status IN ('failed', 'received', 'waiting') GROUP BY status
"""
EMAILS_WAITING = "SELECT count(*) FROM email_deliveries WHERE status = 'waiting_address'"
OPEN_DISPUTES = """
SELECT status, count(*) AS n, extract(epoch FROM min(evidence_due_by) - now())::float8 AS due
FROM disputes WHERE status IN ('needs_response', 'warning_needs_response', 'under_review', 'warning_under_review')
GROUP BY status
"""
REFRESH_TIMEOUT_SECONDS = 5.0

GaugeHook = Callable[[asyncpg.Connection], Awaitable[None]]


async def refresh_ledger_gauges(con: asyncpg.Connection) -> None:
    """Ledger rows waiting, open disputes, e-mails waiting for an address."""
    rows = await con.fetch(COUNT_WAITING_EVENTS)
    disputes = await con.fetch(OPEN_DISPUTES)
    emails_waiting = await con.fetchval(EMAILS_WAITING)
    counts = {row["status"]: row for row in rows}
    for status in ("failed", "received", "waiting"):
        metrics.LEDGER_ROWS.labels(status).set(counts[status]["n"] if status in counts else 0)
    metrics.WEBHOOK_WAITING_OLDEST.set(counts["waiting"]["oldest"] if "waiting" in counts else 0)
    by_status = {row["status"]: row for row in disputes}
    for status in ("needs_response", "warning_needs_response", "under_review", "warning_under_review"):
        metrics.DISPUTES_OPEN.labels(status).set(by_status[status]["n"] if status in by_status else 0)
    due = [row["due"] for row in disputes if row["due"] is not None]
    metrics.DISPUTE_EVIDENCE_DUE.set(min(due) if due else float("inf"))
    metrics.EMAILS_WAITING_ADDRESS.set(emails_waiting)


async def refresh_database_gauges(con: asyncpg.Connection, hooks: list[GaugeHook]) -> None:
    """One refresh of every database-backed gauge: the ledger's and the areas' (`hooks`)."""
    await refresh_ledger_gauges(con)
    for hook in list(hooks):
        await hook(con)


class GaugeRefresher:
    """Refreshes the database-backed gauges every `interval` seconds, each round on one pooled connection."""

    def __init__(self, pool: asyncpg.Pool, hooks: list[GaugeHook], *, interval: float) -> None:
        self.pool = pool
        self.hooks = hooks
        self.interval = interval
        self.rounds = 0
        self.last_success: float | None = None  # time.monotonic()
        self._started = time.monotonic()
        self._round_done = asyncio.Condition()

    def age(self) -> float:
        """Seconds since the last successful refresh (since start, before the first one)."""
        return time.monotonic() - (self.last_success if self.last_success is not None else self._started)

    async def refresh_once(self) -> bool:
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_SECONDS), self.pool.acquire() as con:
                await refresh_database_gauges(con, self.hooks)
        except asyncio.CancelledError:
            raise
        except (*UNAVAILABLE_ERRORS, asyncpg.PostgresError) as exc:
            reason = "database_unavailable" if isinstance(exc, UNAVAILABLE_ERRORS) else "query_failed"
            metrics.METRICS_REFRESH_ERRORS.labels(reason).inc()
            log.warning("metrics refresh failed; gauges keep their last values", extra={"code": reason})
            return False
        finally:
            async with self._round_done:
                self.rounds += 1
                self._round_done.notify_all()
        self.last_success = time.monotonic()
        return True

    async def run_forever(self) -> None:
        while True:
            await self.refresh_once()
            await asyncio.sleep(self.interval)

    async def wait_rounds(self, count: int) -> None:
        """Until `count` more rounds have ended (for tests and tools driving the real loop)."""
        async with self._round_done:
            target = self.rounds + count
            await self._round_done.wait_for(lambda: self.rounds >= target)


async def metrics_refresh_ctx(app: web.Application) -> AsyncIterator[None]:
    refresher = GaugeRefresher(
        app[keys.DB_POOL], app[keys.GAUGE_REFRESH_HOOKS], interval=app[keys.SETTINGS].metrics_refresh_interval_seconds
    )
    app[keys.GAUGE_REFRESHER] = refresher
    metrics.METRICS_REFRESH_AGE.set_function(refresher.age)
    task = asyncio.create_task(refresher.run_forever(), name="metrics-refresh")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
