"""The application factory: middlewares, resources (cleanup_ctx), routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import keys, metrics, probes
from gateway.accounts import routes as accounts_routes
from gateway.auth.tokens import token_verifier_ctx
from gateway.billing import routes as billing_routes
from gateway.bridge import routes as bridge_routes
from gateway.bridge.boot import bridge_ctx
from gateway.bridge.relay import relay_ctx
from gateway.catalog import routes as catalog_routes
from gateway.checkout import routes as checkout_routes
from gateway.db.errors import UNAVAILABLE_ERRORS
from gateway.db.migrate import latest_version
from gateway.db.pool import create_pool
from gateway.downstream_probe import downstream_probe_ctx
from gateway.lifecycle import Lifecycle
from gateway.metrics_listener import metrics_listener_ctx
from gateway.metrics_refresh import metrics_refresh_ctx
from gateway.middleware import add_routes, build_edge, finish_routes
from gateway.middleware.cors import setup_cors
from gateway.notifications.order_emails import order_emails_ctx
from gateway.openapi import routes as openapi_routes
from gateway.ratelimit.limiter import rate_limiter_ctx
from gateway.settings import Settings
from gateway.stripe_account.watchdog import watchdog_ctx
from gateway.stripe_client import stripe_client_ctx
from gateway.support.reservations import sweep_expired
from gateway.version import VERSION
from gateway.webhooks.view import stripe_webhook


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    try:
        pool = await create_pool(app[keys.SETTINGS], app[keys.DATABASE_URL])
    except UNAVAILABLE_ERRORS as exc:
        # Start anyway: /health answers, /ready says "database unreachable", the pool connects later.
        logging.getLogger("gateway.db").warning(
            "database unreachable at startup",
            extra={"code": "database_unavailable", "reason": type(exc).__name__},
        )
        pool = await create_pool(app[keys.SETTINGS], app[keys.DATABASE_URL], min_size=0)
    app[keys.DB_POOL] = pool
    yield
    await pool.close()


async def lifecycle_ctx(app: web.Application) -> AsyncIterator[None]:
    lifecycle = app[keys.LIFECYCLE]
    pool = app[keys.DB_POOL]
    # Expired stock reservations whose webhook never came; safe from several replicas at once (SKIP LOCKED).
    lifecycle.every(
        "reservation_sweeper",
        app[keys.SETTINGS].reservation_sweep_interval_seconds,
        lambda: sweep_expired(pool),
    )
    yield
    await lifecycle.stop_tasks()


def create_app(settings: Settings, *, database_url: str, worker_index: int = 0) -> web.Application:
    # The largest body any route accepts; each route's own limit is applied by the body-limit middleware.
    client_max_size = max(settings.json_body_limit, settings.webhook_body_limit)
    # No aiohttp middleware: every route is registered behind the edge layer (gateway/middleware/__init__.py).
    app = web.Application(client_max_size=client_max_size)
    app[keys.SETTINGS] = settings
    app[keys.EDGE] = build_edge(settings)
    app[keys.DATABASE_URL] = database_url
    app[keys.WORKER_INDEX] = worker_index
    app[keys.LIFECYCLE] = Lifecycle(expected_migration=latest_version())
    app[keys.GAUGE_REFRESH_HOOKS] = []
    metrics.BUILD_INFO.info({"version": VERSION, "app_env": settings.app_env})

    # Started in this order, stopped in reverse.
    app.cleanup_ctx.extend(
        [
            database_ctx,
            stripe_client_ctx,
            rate_limiter_ctx,
            token_verifier_ctx,
            bridge_ctx,  # schema registry and PLANS_FILE checked at boot
            relay_ctx,  # EVENT_BRIDGE_DATABASE_URL set: outbox -> external bridge database
            order_emails_ctx,  # SMTP_URL set: ORDER_PAID -> confirmation e-mail
            downstream_probe_ctx,  # SMTP server and bridge target unreachable at boot: one warning line each
            lifecycle_ctx,
            watchdog_ctx,  # STRIPE_WATCHDOG_INTERVAL_SECONDS > 0: missed webhooks fetched from the Events API
            metrics_refresh_ctx,  # database-backed gauges, in the background: a scrape never waits for the database
            metrics_listener_ctx,
        ]
    )

    add_routes(
        app,
        [
            web.get("/health", probes.health, name="health"),
            web.get("/ready", probes.ready, name="ready"),
            web.post(settings.stripe_webhook_path, stripe_webhook, name="stripe_webhook"),
        ],
    )
    checkout_routes.register(app)
    catalog_routes.register(app)
    openapi_routes.register(app)
    accounts_routes.register(app)
    bridge_routes.register(app)
    billing_routes.register(app)

    setup_cors(app, settings)
    finish_routes(app)
    return app
