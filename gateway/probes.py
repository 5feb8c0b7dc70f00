"""Kubernetes probes: /health (the process answers) and /ready (database reachable, migrations current, not
draining)."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web

from gateway import keys, metrics
from gateway.db.errors import UNAVAILABLE_ERRORS
from gateway.db.migrate import SELECT_CURRENT_VERSION
from gateway.errors import ServiceUnavailable
from gateway.responses import json_response
from gateway.routing import route_options

RETRY_AFTER_SECONDS = 5
PROBE = {"rate_limit": None, "body": "none", "cors": False, "check_host": False, "access_log": False}


@route_options(**PROBE)
async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@route_options(**PROBE)
async def ready(request: web.Request) -> web.Response:
    app = request.app
    lifecycle = app[keys.LIFECYCLE]
    reasons: list[str] = []
    if lifecycle.draining:
        reasons.append("draining")
    else:
        timeout = app[keys.SETTINGS].ready_db_timeout
        try:
            async with asyncio.timeout(timeout):
                async with app[keys.DB_POOL].acquire() as con:
                    version = await con.fetchval(SELECT_CURRENT_VERSION)
            if version < lifecycle.expected_migration:
                needed = lifecycle.expected_migration
                reasons.append(f"migrations pending (database at {version}, code needs {needed})")
        except asyncpg.UndefinedTableError:
            reasons.append("migrations pending (no schema_migrations table)")
        except UNAVAILABLE_ERRORS:
            reasons.append("database unreachable")
        except asyncpg.PostgresError as exc:  # wrong database, permissions ...: not ready either, never a 500
            reasons.append(f"database error ({type(exc).__name__})")
    metrics.READY.set(0 if reasons else 1)
    if reasons:
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        raise ServiceUnavailable("Not ready", code="not_ready", headers=retry, details={"reasons": reasons})
    return json_response({"status": "ready"})
