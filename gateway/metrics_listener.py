"""The metrics listener: a separate port (METRICS_PORT) the public app never serves.

A scrape never waits for the database: the gauges that need it are refreshed in the background
(gateway/metrics_refresh.py); the pool's own gauges are read here, from the pool object.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from gateway import keys, metrics

log = logging.getLogger("gateway.metrics")


def refresh_pool_gauges(app: web.Application) -> None:
    pool = app[keys.DB_POOL]
    metrics.DB_POOL_SIZE.set(pool.get_size())
    metrics.DB_POOL_IN_USE.set(pool.get_size() - pool.get_idle_size())
    metrics.DB_POOL_MAX.set(pool.get_max_size())


def metrics_app(main: web.Application) -> web.Application:
    async def scrape(request: web.Request) -> web.Response:
        refresh_pool_gauges(main)
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
