"""Typed application keys: every shared resource of the app is reached through one of these."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from gateway.settings import Settings

if TYPE_CHECKING:
    from stripe import StripeClient

    from gateway.accounts.tokens import AccessTokenIssuer
    from gateway.auth.tokens import TokenVerifier
    from gateway.lifecycle import Lifecycle
    from gateway.metrics_refresh import GaugeRefresher
    from gateway.middleware.edge import Wrap
    from gateway.ratelimit.limiter import RateLimiter

SETTINGS = web.AppKey("settings", Settings)
DB_POOL = web.AppKey("db_pool", asyncpg.Pool)
DATABASE_URL = web.AppKey("database_url", str)
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle")
RATE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("rate_limiter")
TOKEN_VERIFIER: web.AppKey[TokenVerifier] = web.AppKey("token_verifier")
WORKER_INDEX = web.AppKey("worker_index", int)
# Database-backed gauges of an area, refreshed by the background task of gateway/metrics_refresh.py
GAUGE_REFRESH_HOOKS: web.AppKey[list[Callable[[asyncpg.Connection], Awaitable[None]]]] = web.AppKey(
    "gauge_refresh_hooks"
)
GAUGE_REFRESHER: web.AppKey[GaugeRefresher] = web.AppKey("gauge_refresher")
STRIPE_CLIENT: web.AppKey[StripeClient] = web.AppKey("stripe_client")
ACCESS_TOKENS: web.AppKey[AccessTokenIssuer] = web.AppKey("access_tokens")  # local accounts only
# Puts a route's handler behind the edge layer and its own layers (gateway/middleware/__init__.py: add_routes)
EDGE: web.AppKey[Wrap] = web.AppKey("edge")
# aiohttp-cors's response hooks, called by the edge layer for requests with an Origin (gateway/middleware/cors.py)
CORS_RESPONSE_HOOKS: web.AppKey[list[Callable[[web.Request, web.StreamResponse], Awaitable[object]]]] = web.AppKey(
    "cors_response_hooks"
)
