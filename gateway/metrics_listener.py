"""The metrics listener: a separate port (METRICS_PORT) the public app never serves.

Gauges that describe state (pool use, ledger rows waiting, outbox backlog) are refreshed at each scrape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

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
SCRAPE_DB_TIMEOUT = 2.0


async def refresh_state_gauges(app: web.Application) -> None:
    pool = app[keys.DB_POOL]
    metrics.DB_POOL_SIZE.set(pool.get_size())
    metrics.DB_POOL_IN_USE.set(pool.get_size() - pool.get_idle_size())
    metrics.DB_POOL_MAX.set(pool.get_max_size())
    try:
        async with asyncio.timeout(SCRAPE_DB_TIMEOUT):
            async with pool.acquire() as con:
                rows = await con.fetch(COUNT_WAITING_EVENTS)
                disputes = await con.fetch(OPEN_DISPUTES)
                emails_waiting = await con.fetchval(EMAILS_WAITING)
    except UNAVAILABLE_ERRORS:
        log.warning("metrics scrape could not read the ledger", extra={"code": "database_unavailable"})
        return
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
    for refresh in app[keys.SCRAPE_HOOKS]:
        await refresh(app)


def metrics_app(main: web.Application) -> web.Application:
    async def scrape(request: web.Request) -> web.Response:
        await refresh_state_gauges(main)
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app


async def metrics_listener_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    if not settings.metrics_port:
        yield
        return
    runner = web.AppRunner(metrics_app(app), access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner, settings.metrics_host, settings.metrics_port + app[keys.WORKER_INDEX], reuse_address=True
    )
    await site.start()
    log.info("metrics listener started", extra={"port": settings.metrics_port + app[keys.WORKER_INDEX]})
    yield
    await runner.cleanup()
