"""The application factory: middlewares, resources (cleanup_ctx), routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway import keys, metrics, probes
from gateway.accounts import routes as accounts_routes
from gateway.auth.tokens import token_verifier_ctx
from gateway.bridge import routes as bridge_routes
from gateway.checkout import routes as checkout_routes
from gateway.db.migrate import latest_version
from gateway.db.pool import create_pool
from gateway.lifecycle import Lifecycle
from gateway.metrics_listener import metrics_listener_ctx
from gateway.middleware import build_middlewares, security_headers
from gateway.middleware.cors import setup_cors
from gateway.ratelimit.limiter import rate_limiter_ctx
from gateway.settings import Settings
from gateway.webhooks.view import stripe_webhook

VERSION = "0.1.0"


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    pool = await create_pool(app[keys.SETTINGS], app[keys.DATABASE_URL])
    app[keys.DB_POOL] = pool
    yield
    await pool.close()


async def lifecycle_ctx(app: web.Application) -> AsyncIterator[None]:
    lifecycle = app[keys.LIFECYCLE]
    yield
    await lifecycle.stop_tasks()


def create_app(settings: Settings, *, database_url: str, worker_index: int = 0) -> web.Application:
    # The largest body any route accepts; each route's own limit is applied by the body-limit middleware.
    client_max_size = max(settings.json_body_limit, settings.webhook_body_limit)
    app = web.Application(middlewares=build_middlewares(settings), client_max_size=client_max_size)
    app[keys.SETTINGS] = settings
    app[keys.DATABASE_URL] = database_url
    app[keys.WORKER_INDEX] = worker_index
    app[keys.LIFECYCLE] = Lifecycle(expected_migration=latest_version())
    app[keys.SCRAPE_HOOKS] = []
    metrics.BUILD_INFO.info({"version": VERSION, "app_env": settings.app_env})

    app.cleanup_ctx.extend(
        [database_ctx, rate_limiter_ctx, token_verifier_ctx, lifecycle_ctx, metrics_listener_ctx]
    )

    app.router.add_get("/health", probes.health, name="health")
    app.router.add_get("/ready", probes.ready, name="ready")
    app.router.add_post(settings.stripe_webhook_path, stripe_webhook, name="stripe_webhook")
    checkout_routes.register(app)
    accounts_routes.register(app)
    bridge_routes.register(app)

    setup_cors(app, settings)
    security_headers.install(app)
    return app
