"""The missed-webhook watchdog: every STRIPE_WATCHDOG_INTERVAL_SECONDS, one replica lists the recent events of the
types the handlers take from Stripe's Events API and feeds those the ledger lacks through the normal path.

It is `gateway events reconcile` (gateway/support/reconcile.py) on a short window, STRIPE_WATCHDOG_LOOKBACK_SECONDS
back and ending `SETTLE_SECONDS` ago (events Stripe is still delivering are not missed yet). A session-level
PostgreSQL advisory lock lets one replica run a round at a time; the others skip it (outcome `locked`). Anything it
finds means deliveries are being missed (endpoint disabled or not subscribed to a type, secret rotated in the
Dashboard, ingress down): it is counted in `stripe_watchdog_missed_events_total`, which the alert
StripeWebhooksMissed watches, and logged. Stripe's 429s wait as `Retry-After` says (gateway.stripe_client.Backoff).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import asyncpg
import stripe
from aiohttp import web

from gateway import keys, metrics
from gateway.settings import Settings
from gateway.stripe_account.endpoint import handled_event_types
from gateway.stripe_client import DEFAULT_BACKOFF, Backoff
from gateway.support.events import new_request_id
from gateway.support.reconcile import ReconcileReport, reconcile

log = logging.getLogger("gateway.stripe.watchdog")

# Any constant shared by every gateway process (pg_try_advisory_lock(bigint)); distinct from the migrations' key.
WATCHDOG_LOCK_KEY = 0x5717E_3A7C
TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
UNLOCK = "SELECT pg_advisory_unlock($1)"
SETTLE_SECONDS = 60  # Stripe delivers within seconds; younger events are not "missed" yet


async def watchdog_round(
    pool: asyncpg.Pool,
    client: stripe.StripeClient,
    settings: Settings,
    *,
    now: float | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> ReconcileReport | None:
    """One round; None when another replica holds the lock."""
    con = await pool.acquire()
    try:
        if not await con.fetchval(TRY_LOCK, WATCHDOG_LOCK_KEY):
            metrics.STRIPE_WATCHDOG_RUNS.labels("locked").inc()
            return None
        try:
            return await _run(pool, client, settings, time.time() if now is None else now, backoff)
        finally:
            try:
                await con.execute(UNLOCK, WATCHDOG_LOCK_KEY)
            except BaseException:
                con.terminate()  # never hand a connection that may still hold the lock back to the pool
                raise
    finally:
        await pool.release(con)


async def _run(
    pool: asyncpg.Pool, client: stripe.StripeClient, settings: Settings, now: float, backoff: Backoff
) -> ReconcileReport:
    report = await reconcile(
        pool,
        client,
        window_seconds=settings.stripe_watchdog_lookback_seconds,
        request_id=new_request_id("watchdog"),
        handlers_enabled=settings.webhook_handlers_enabled,
        app_source=settings.app_source,
        required_livemode=settings.stripe_livemode,
        types=handled_event_types(),
        now=now,
        settle_seconds=SETTLE_SECONDS,
        backoff=backoff,
    )
    metrics.STRIPE_WATCHDOG_MISSED.inc(report.missing)
    if report.missing:
        oldest_age = max(0, int(now) - (report.oldest_missing_created or int(now)))
        log.warning(
            "missed webhook events found by the watchdog",
            extra={
                "code": "webhooks_missed",
                "missing": report.missing,
                "ingested": report.ingested,
                "oldestAgeSeconds": oldest_age,
                "reason": f"ledger rows of request id {report.request_id}",
            },
        )
    if report.error:
        metrics.STRIPE_WATCHDOG_RUNS.labels("error").inc()
        return report
    metrics.STRIPE_WATCHDOG_RUNS.labels("ok").inc()
    metrics.STRIPE_WATCHDOG_LAST_MISSED.set(report.missing)
    metrics.STRIPE_WATCHDOG_OLDEST_MISSED_AGE.set(
        max(0, int(now) - report.oldest_missing_created) if report.oldest_missing_created else 0
    )
    metrics.STRIPE_WATCHDOG_LAST_SUCCESS.set(now)
    return report


async def watchdog_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the watchdog's periodic task (stopped with the other background tasks, gateway/lifecycle.py).
    Off with STRIPE_WATCHDOG_INTERVAL_SECONDS=0 or without STRIPE_SECRET_KEY."""
    settings = app[keys.SETTINGS]
    if settings.stripe_watchdog_interval_seconds > 0 and keys.STRIPE_CLIENT in app:
        pool, client = app[keys.DB_POOL], app[keys.STRIPE_CLIENT]
        app[keys.LIFECYCLE].every(
            "stripe_watchdog",
            settings.stripe_watchdog_interval_seconds,
            lambda: watchdog_round(pool, client, settings),
        )
    yield
